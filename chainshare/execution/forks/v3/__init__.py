"""Protocol version 3 = version 2 with one CreditRegistry correction: a person's subject is exactly ``P-`` and
64 lower-case hex digits.

Versions 1 and 2 check a handle with ``re.match(r"^P-[0-9a-f]{64}$")``, and Python's ``$`` also matches before
a final newline, so ``"P-<64 hex>\\n"`` was taken as a second subject for the same person. Version 3 takes the
handle and nothing else (``fullmatch``); blocks of versions 1 and 2 keep re-executing under their own rule.
Gas prices and every other contract are version 2's.
"""

from __future__ import annotations

from chainshare.execution.contracts.credit_registry import CreditRegistry
from chainshare.execution.forks import v2
from chainshare.execution.runtime import Runtime, SystemContract

VERSION = 3
GAS = v2.GAS


class CreditRegistryV3(CreditRegistry):
    EXACT_HANDLES = True


def build_contracts() -> list[SystemContract]:
    return [CreditRegistryV3() if isinstance(c, CreditRegistry) else c for c in v2.build_contracts()]


def build_runtime() -> Runtime:
    return Runtime(build_contracts(), GAS, VERSION)
