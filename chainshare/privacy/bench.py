"""``chainshare bench joint``: secure aggregation of count + sum + mean over several agencies' rows
(each owner's local pass over its rows, then the share exchange), one JSON object.

The parties run in one process (``run_joint_in_process``), so the figure is the computation and the
share traffic, not network latency: each owner's local pass (the part that grows with rows) is timed
on its own, and ``bytes_exchanged`` counts every protocol message as it would go on the wire (inside
the TLS records). The opened totals are checked against the plaintext computation (no noise: the
benchmark measures the protocol, not the privacy mechanism, which adds one draw per entry)."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from typing import Any

import psutil

from chainshare.privacy.aggregate import (
    compute_local_vector,
    compute_noise_vector,
    parse_joint_query,
    release_joint_result,
    run_joint_in_process,
)
from chainshare.sharing.schema import validate_schema

SCHEMA = {"columns": [{"name": "district", "kind": "string"}, {"name": "income", "kind": "integer"}], "min_group": 5}
QUERY = {"select": [{"fn": "count"}, {"fn": "sum", "column": "income", "bounds": [0, 200_000]},
                    {"fn": "avg", "column": "income", "bounds": [0, 200_000]}], "epsilon": 1.0}


def _rows(seed: int, count: int, totals: list[int]) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    districts = ("north", "south", "east", "west")
    for _ in range(count):
        income = rng.randrange(0, 200_000)
        totals[0] += 1
        totals[1] += income
        yield {"district": districts[income % 4], "income": income}


def run_joint_bench(agencies: int, rows: int) -> dict[str, Any]:
    """Time and traffic of one joint count + sum + mean over ``agencies`` x ``rows`` rows."""
    jq = parse_joint_query(QUERY, [validate_schema(SCHEMA)] * agencies)
    proc = psutil.Process(os.getpid())
    cpu0 = proc.cpu_times()
    started = time.perf_counter()
    plain = [0, 0]
    vectors, local_s = [], []
    for a in range(agencies):
        t = time.perf_counter()
        vectors.append(compute_local_vector(jq, _rows(a, rows, plain)))
        local_s.append(time.perf_counter() - t)
    traffic = {"messages": 0, "bytes": 0}

    def count(_: int, data: bytes) -> bool:
        traffic["messages"] += 1
        traffic["bytes"] += len(data)
        return True

    t = time.perf_counter()
    totals = run_joint_in_process(jq, 1, vectors, deliver=count)
    mpc_s = time.perf_counter() - t
    total_s = time.perf_counter() - started
    if totals[:2] != plain or totals[2] != plain[0]:
        raise AssertionError(f"joint totals {totals} differ from the plaintext computation {plain}")
    noisy = [v + n for v, n in zip(totals, compute_noise_vector(jq), strict=True)]
    released = release_joint_result(jq, noisy)
    cpu1 = proc.cpu_times()
    return {"scenario": "joint", "agencies": agencies, "rows_per_agency": rows, "query": "count+sum+mean",
            "total_s": round(total_s, 3), "local_pass_s": [round(x, 3) for x in local_s],
            "mpc_s": round(mpc_s, 4), "messages": traffic["messages"], "bytes_exchanged": traffic["bytes"],
            "cpu_s": round((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system), 3),
            "rss_mb": round(proc.memory_info().rss / 2**20, 1), "load_avg_1m": round(os.getloadavg()[0], 2),
            "released_example": released.to_json()["groups"]}
