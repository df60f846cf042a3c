"""System contracts at fixed addresses, and the runtime that holds them all."""

from __future__ import annotations

from chainshare.execution.contracts.access_control import AccessControl
from chainshare.execution.contracts.addresses import (
    ACCESS_CONTROL,
    DATASETS,
    EVIDENCE,
    GOVERNANCE,
    MEMBERSHIP,
    NOTARY,
)
from chainshare.execution.contracts.credential_registry import CredentialRegistry
from chainshare.execution.contracts.credit_registry import CreditRegistry
from chainshare.execution.contracts.datasets import Datasets
from chainshare.execution.contracts.evidence import Evidence
from chainshare.execution.contracts.governance import Governance
from chainshare.execution.contracts.joint import JointCompute
from chainshare.execution.contracts.membership import Membership
from chainshare.execution.contracts.notary import Notary
from chainshare.execution.runtime import Runtime, SystemContract


def all_contracts() -> list[SystemContract]:
    return [Membership(), Governance(), Notary(), Datasets(), AccessControl(), Evidence(), CreditRegistry(),
            JointCompute(), CredentialRegistry()]


def build_runtime() -> Runtime:
    return Runtime(all_contracts())


__all__ = ["ACCESS_CONTROL", "DATASETS", "EVIDENCE", "GOVERNANCE", "MEMBERSHIP", "NOTARY", "all_contracts", "build_runtime"]
