"""How a long-running chainshare process uses CPython's cyclic garbage collector.

CPython's defaults (a young collection every 700 net container allocations, a full one every 100 of
those) made each validator of a 4-validator devnet spend ~8% of its CPU in the collector, nearly all
in full collections of 60–190 ms that walked the millions of objects the imported libraries and the
node's start-up leave behind and that never die (profiled: `gc.callbacks` timings over a 30,000
transaction `bench ingest`). A full collection also stops the event loop, and with it consensus votes
and API answers, for that long.

``apply_gc_policy`` is called once, when a process has finished starting: it collects what start-up
left as garbage, moves every object then alive to the permanent generation (``gc.freeze``: never
scanned again, never freed, as long-lived as the process anyway), and collects the young generation
every ``GC_THRESHOLDS[0]`` net allocations. Reference cycles made later are still found and freed.
"""

from __future__ import annotations

import gc

GC_THRESHOLDS = (50_000, 20, 100)


def apply_gc_policy() -> int:
    """Freeze what is alive now out of the collector's reach and set ``GC_THRESHOLDS``; returns the
    number of frozen objects. Idempotent: a second call freezes only what was made since."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    return gc.get_freeze_count()
