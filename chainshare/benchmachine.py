"""What every ``chainshare bench ...`` JSON says about the machine it ran on.

The machines these benchmarks run on are shared virtual machines whose speed swings by up to 2x
within an hour. So each result carries, besides the core count and load, a speed probe taken when
the run ends (after its network stopped): two fixed workloads, each the best of five tries. With
it, two results from different hours or machines can be compared, and a "before/after" that was
really a faster/slower phase can be seen as one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from chainshare.crypto.hashing import keccak256
from chainshare.crypto.secp import recover_address, sign_hash

PROBE_TRIES = 5
_LOOP_ITERATIONS = 500_000
_RECOVERIES = 200


def _best_seconds(work: Callable[[], object]) -> float:
    """The shortest of ``PROBE_TRIES`` timings of ``work()``, in seconds."""
    best = float("inf")
    for _ in range(PROBE_TRIES):
        t0 = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - t0)
    return best


def time_python_loop_ms() -> float:
    """Milliseconds for a fixed pure-Python loop (interpreter speed), best of ``PROBE_TRIES``."""
    def loop() -> int:
        total = 0
        for i in range(_LOOP_ITERATIONS):
            total += i * i
        return total

    return round(_best_seconds(loop) * 1000, 1)


def time_sender_recovery_us() -> float:
    """Microseconds for one secp256k1 sender recovery as the node does it, best of ``PROBE_TRIES``."""
    msg = keccak256(b"chainshare machine probe")
    y, r, s = sign_hash(b"\x01" * 32, msg)

    def recoveries() -> None:
        for _ in range(_RECOVERIES):
            recover_address(msg, y, r, s)

    return round(_best_seconds(recoveries) / _RECOVERIES * 1e6, 1)


def describe_machine(**extra: Any) -> dict[str, Any]:
    """``cpus``, ``load_avg_1m`` (now), ``extra`` fields, and ``probe``: the two timings above."""
    return {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2), **extra,
            "probe": {"python_loop_ms": time_python_loop_ms(), "sender_recovery_us": time_sender_recovery_us()}}
