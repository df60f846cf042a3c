"""A rolling restart of the explorer's api replicas under load loses no request (issue 14): two replicas
behind the balancer (`chainshare explorer up --replicas 2`), clients reading through it without pause,
`chainshare explorer restart` restarts the replicas one at a time (each drains on SIGTERM; the balancer
retries an idempotent GET that a draining or stopped replica fails on the other): errors = 0."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from netkit import Devnet, cli_json, run_cli, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("explorer-rolling")]

PATHS = ("/api/v1/status", "/api/v1/blocks?limit=5", "/healthz")


class Readers(threading.Thread):
    """One client reading PATHS in turn through the balancer until stopped; counts answers and errors."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stopping = url, threading.Event()
        self.ok, self.errors = 0, []

    def run(self) -> None:
        with httpx.Client(timeout=30) as client:
            i = 0
            while not self.stopping.is_set():
                path = PATHS[i % len(PATHS)]
                i += 1
                try:
                    r = client.get(self.url + path)
                    if r.status_code == 200:
                        self.ok += 1
                    else:
                        self.errors.append(f"{path}: HTTP {r.status_code} {r.text[:200]}")
                except httpx.HTTPError as exc:
                    self.errors.append(f"{path}: {type(exc).__name__}: {exc}")


def test_rolling_restart_of_the_api_replicas_under_load_loses_no_request(devnet: Devnet, tmp_path: Path) -> None:
    proc = run_cli("explorer", "up", "--devnet", devnet.dir, "--db", tmp_path / "ex.db", "--replicas", 2, "--json",
                   timeout=240)
    assert proc.returncode == 0, proc.stderr
    up: dict[str, Any] = cli_json(proc)
    try:
        readers = [Readers(up["balancer_url"]) for _ in range(2)]
        for r in readers:
            r.start()
        wait_until(lambda: sum(r.ok for r in readers) >= 50, 60, "the load to be under way")
        proc = run_cli("explorer", "restart", "--devnet", devnet.dir, "--json", timeout=240)
        assert proc.returncode == 0, proc.stderr
        restarted = cli_json(proc)
        before = sum(r.ok for r in readers)
        wait_until(lambda: sum(r.ok for r in readers) >= before + 50, 60, "the load to go on after the restart")
        for r in readers:
            r.stopping.set()
            r.join(30)
        errors = [e for r in readers for e in r.errors]
        served = sum(r.ok for r in readers)
        assert errors == [], errors[:5]
        assert {k: v for k, v in restarted["pids"].items() if k.startswith("api")} != \
            {k: v for k, v in up["pids"].items() if k.startswith("api")}
        # both replicas served again after their restart, and the balancer retried around the drained ones
        counters = httpx.get(up["balancer_url"] + "/_balancer", timeout=10).json()["upstreams"]
        assert all(u["served"] > 0 for u in counters)
        print(json.dumps({"requests_served": served, "errors": len(errors), "away_s": restarted["away_seconds"],
                          "balancer": counters}))
    finally:
        run_cli("explorer", "down", "--devnet", devnet.dir, "--json", timeout=60)
