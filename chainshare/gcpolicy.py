"""How a long-running chainshare process uses CPython's cyclic garbage collector.

CPython's defaults (a young collection every 700 net container allocations, a full one every 100 of
those) made each validator of a 4-validator devnet spend ~8% of its CPU in the collector, nearly all
in full collections of 60–190 ms that walked the millions of objects the imported libraries and the
node's start-up leave behind and that never die (profiled: `gc.callbacks` timings over a 30,000
transaction `bench ingest`). A full collection also stops the event loop, and with it consensus votes
and API answers, for that long.

``apply_gc_policy`` is called once, when a process has finished starting: it collects what start-up
left as garbage, moves every object then alive to the permanent generation (``gc.freeze``: never
scanned again, never freed, as long-lived as the process anyway), and makes full collections rare
(after 1,000 middle-generation ones instead of 10). The young generations keep CPython's thresholds:
reference cycles made later, such as an exception that holds the frame holding it, are still freed
within a few hundred allocations, and with them whatever large buffer they hold (a young threshold of
50,000 let a flood of refused 128 KiB transactions hold ~100 MB until a collection).
"""

from __future__ import annotations

import gc

GC_THRESHOLDS = (700, 10, 1_000)


def apply_gc_policy() -> int:
    """Freeze what is alive now out of the collector's reach and set ``GC_THRESHOLDS``; returns the
    number of frozen objects. Idempotent: a second call freezes only what was made since."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    return gc.get_freeze_count()
