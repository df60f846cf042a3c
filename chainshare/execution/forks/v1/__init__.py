"""Protocol version 1: the rules of the chain from genesis — the system contracts of
``execution/contracts`` with the gas prices of ``execution/runtime`` (``GasSchedule()``)."""

from __future__ import annotations

from chainshare.execution.contracts import all_contracts
from chainshare.execution.runtime import GasSchedule, Runtime, SystemContract

VERSION = 1
GAS = GasSchedule()


def build_contracts() -> list[SystemContract]:
    return all_contracts()


def build_runtime() -> Runtime:
    return Runtime(build_contracts(), GAS, VERSION)
