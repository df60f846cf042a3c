"""Page timings: ``python -m chainshare.explorer.web.bench --db URL`` serves an indexed database with
``chainshare explorer serve`` and times every page type (server time from the pages'
``Server-Timing`` header, and wall time seen by the client), sequentially, after a warm-up."""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from typing import Any

import httpx


def _p95(xs: list[float]) -> float:
    xs = sorted(xs)
    return round(xs[max(0, int(len(xs) * 0.95) - 1)], 1)


def get_page_paths(api: httpx.Client) -> dict[str, str]:
    """One representative URL per page type, picked from the database itself (mid-chain block and tx)."""
    head = api.get("/api/v1/status").json()["indexed_height"]
    mid = head // 2
    tx = api.get("/api/v1/txs", params={"limit": 1, "from_block": mid, "to_block": mid + 50}).json()["items"][0]
    agency = tx["agency"] or api.get("/api/v1/agencies", params={"limit": 1}).json()["items"][0]["name"]
    ds = api.get("/api/v1/datasets", params={"limit": 1}).json()["items"]
    return {
        "home": "/", "blocks": "/blocks", "block": f"/block/{tx['block_height']}", "txs": "/txs",
        "tx": f"/tx/{tx['hash']}", "address": f"/address/{tx['from']}", "agencies": "/agencies",
        "agency": f"/agency/{agency}", "datasets": "/datasets",
        **({"dataset": f"/dataset/{ds[0]['id']}"} if ds else {}),
        "validators": "/validators", "governance": "/governance", "evidence": "/evidence",
        "search_redirect": f"/search?q={tx['hash']}", "not_found": "/tx/0x" + "00" * 32,
    }


def run_pages_bench(db: str, port: int, requests: int = 40) -> dict[str, Any]:
    proc = subprocess.Popen([sys.executable, "-m", "chainshare", "explorer", "serve", "--db", db, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=60, follow_redirects=False) as c:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if c.get("/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the explorer did not start")
                time.sleep(0.2)
            paths = get_page_paths(c)
            out: dict[str, Any] = {}
            for name, path in paths.items():
                c.get(path)  # warm-up
                server, wall, codes = [], [], set()
                for _ in range(requests):
                    t = time.perf_counter()
                    r = c.get(path)
                    wall.append((time.perf_counter() - t) * 1000)
                    codes.add(r.status_code)
                    m = re.search(r"dur=([0-9.]+)", r.headers.get("server-timing", ""))
                    if m:
                        server.append(float(m.group(1)))
                out[name] = {"path": path, "status": sorted(codes),
                             "server_p50_ms": round(statistics.median(server), 1) if server else None,
                             "server_p95_ms": _p95(server) if server else None,
                             "wall_p95_ms": _p95(wall), "n": requests}
            return out
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--db", required=True)
    ap.add_argument("--port", type=int, default=8790)
    ap.add_argument("--requests", type=int, default=40)
    a = ap.parse_args()
    print(json.dumps(run_pages_bench(a.db, a.port, a.requests), indent=1))


if __name__ == "__main__":
    main()
