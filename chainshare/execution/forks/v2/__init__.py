"""Protocol version 2 = version 1 with one gas-cost correction: stored bytes pay for the disk they take.

Version 1 charges each 32-byte word of a stored value beyond the first ``G_WORD`` = 3 gas (the price
of EVM memory), so a 64 KiB write (a proposal's data, a Cedar policy) cost about 6,000 gas more than
a 32-byte one, while it holds every node's disk forever. Version 2 charges ``SSTORE_WORD`` = 2,500 gas
per extra word (an eighth of an Ethereum SSTORE of a fresh slot per 32 bytes). Contracts and
everything else are version 1's.
"""

from __future__ import annotations

import dataclasses

from chainshare.execution.forks import v1
from chainshare.execution.runtime import Runtime, SystemContract

VERSION = 2
SSTORE_WORD = 2_500
GAS = dataclasses.replace(v1.GAS, sstore_word=SSTORE_WORD)


def build_contracts() -> list[SystemContract]:
    return v1.build_contracts()


def build_runtime() -> Runtime:
    return Runtime(build_contracts(), GAS, VERSION)
