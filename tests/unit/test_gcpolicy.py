"""The node's garbage-collector policy (chainshare.gcpolicy), in a child interpreter so that this
test run's own collector settings are left alone."""

from __future__ import annotations

import subprocess
import sys

PROGRAM = """
import gc, json
from chainshare.gcpolicy import GC_THRESHOLDS, apply_gc_policy

class Cycle:
    def __init__(self): self.me = self

kept = [Cycle() for _ in range(1000)]           # alive at start-up: frozen, never scanned again
frozen = apply_gc_policy()
young = gc.get_count()[0]
gc.collect()
before = len(gc.get_objects())
for _ in range(100_000):                         # cycles made after start-up are still freed
    Cycle()
gc.collect()
print(json.dumps({"frozen": frozen, "freeze_count": gc.get_freeze_count(), "thresholds": gc.get_threshold(),
                  "expected": GC_THRESHOLDS, "young_after": young, "growth": len(gc.get_objects()) - before,
                  "kept_tracked_by_gc": any(o is kept[0] for o in gc.get_objects())}))
"""


def test_policy_freezes_start_up_objects_and_still_frees_later_cycles() -> None:
    import json

    out = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=60, check=True)
    got = json.loads(out.stdout)
    assert got["frozen"] == got["freeze_count"] > 1000  # the start-up objects (and the 1,000 cycles) are frozen
    assert tuple(got["thresholds"]) == tuple(got["expected"]) == (700, 10, 1_000)
    assert got["young_after"] == 0
    assert not got["kept_tracked_by_gc"]  # frozen objects are out of every generation the collector scans
    assert got["growth"] < 1000  # 100,000 later cycles were collected, not frozen or leaked
