"""Protocol version 4 = version 3 with three execution corrections: contracts bound the nesting of the JSON they
parse, the gas of a sub-call is charged however the sub-call ends, and contract calls nest at most 8 deep.

1. Datasets (a schema), CreditRegistry (a scoring rule) and CredentialRegistry (AnonCreds objects) parse caller
   text with ``json.loads``, whose C scanner counts each level of nesting against the interpreter's recursion
   limit; versions 1-3 turn a RecursionError into a revert, so whether a text nested ~980 deep reverts, and
   with which reason, depends on how deep the executing stack already is (the block builder, a replica's
   commit and ``chain verify`` differ), and the receipts root with it. Version 4 measures the nesting first
   (``contracts/json_depth.py``, one linear scan) and reverts above ``JSON_DEPTH_CAP`` = 32 levels, at any
   stack depth; ``recordIssuance`` checks a revocation registry stored under versions 1-3 the same way before
   parsing it.
2. ``CallContext.call`` took the gas a sub-call used only when it returned: work in a sub-call that reverted
   (or whose failure became a revert) cost the transaction nothing, so the block gas limit did not bound it.
   Version 4 charges it on every exit (``GasSchedule.charge_failed_calls``).
3. Calls between contracts were unbounded: a Governance batch calling ``Governance.executeBatch`` again, a few
   hundred levels deep, reached Python's recursion limit on a node executing deeper in its own stack than the
   proposer did. Version 4 reverts a call deeper than ``MAX_CALL_DEPTH`` = 8 (``GasSchedule.max_call_depth``;
   legitimate nesting is 3).

Blocks of versions 1-3 keep re-executing under their own rules. Gas prices and every other rule are version 3's.
"""

from __future__ import annotations

import dataclasses

from chainshare.execution.contracts.credential_registry import CredentialRegistry
from chainshare.execution.contracts.datasets import Datasets
from chainshare.execution.contracts.json_depth import JSON_DEPTH_CAP
from chainshare.execution.forks import v3
from chainshare.execution.runtime import Runtime, SystemContract

VERSION = 4
MAX_CALL_DEPTH = 8  # the deepest legitimate nesting is 3: a proposal's batch calling a contract that calls another
GAS = dataclasses.replace(v3.GAS, charge_failed_calls=True, max_call_depth=MAX_CALL_DEPTH)


class DatasetsV4(Datasets):
    JSON_DEPTH_CAP = JSON_DEPTH_CAP


class CreditRegistryV4(v3.CreditRegistryV3):
    JSON_DEPTH_CAP = JSON_DEPTH_CAP


class CredentialRegistryV4(CredentialRegistry):
    JSON_DEPTH_CAP = JSON_DEPTH_CAP


def _upgrade(contract: SystemContract) -> SystemContract:
    for old, new in ((v3.CreditRegistryV3, CreditRegistryV4), (Datasets, DatasetsV4),
                     (CredentialRegistry, CredentialRegistryV4)):
        if type(contract) is old:
            return new()
    return contract


def build_contracts() -> list[SystemContract]:
    return [_upgrade(c) for c in v3.build_contracts()]


def build_runtime() -> Runtime:
    return Runtime(build_contracts(), GAS, VERSION)
