"""Background explorer processes for a devnet: one indexer, N api replicas and, for N > 1, the load
balancer in front of them (``chainshare/ops/balancer.py``).

``start_explorer`` spawns them (``chainshare explorer index`` / ``serve`` / ``balance``), waits until the
index has caught up with the node head it saw at start, and writes ``DIR/explorer.json``
(``{"urls", "balancer_url", "db", "pids", ...}``); ``stop_explorer`` stops them (SIGTERM, then SIGKILL);
``restart_replicas`` restarts the api replicas one at a time (a rolling restart: each drains its
requests on SIGTERM, and the balancer sends the others' way meanwhile).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from chainshare.devnet import is_running, read_devnet
from chainshare.errors import ChainshareError, ConfigError
from chainshare.explorer.db.engine import normalize_db_url, redact_db_url

EXPLORER_FILE = "explorer.json"


def _spawn(args: list[str], log_path: Path) -> int:
    log = open(log_path, "ab")  # noqa: SIM115 (handed to the child)
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    proc = subprocess.Popen([sys.executable, "-m", "chainshare", "explorer", *args], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    log.close()
    return proc.pid


def is_explorer_process(pid: int | None) -> bool:
    """True iff ``pid`` is a live ``chainshare explorer`` process (not a reused pid)."""
    if not is_running(pid):
        return False
    try:
        import psutil

        cmd = psutil.Process(pid).cmdline()
    except Exception:
        return False
    return not cmd or "explorer" in cmd


def read_explorer(directory: Path) -> dict[str, Any] | None:
    path = directory / EXPLORER_FILE
    return json.loads(path.read_text()) if path.exists() else None


def _free_port() -> int:
    from chainshare.bench import free_port_block

    return free_port_block(1)


def start_explorer(directory: Path, db: str | None = None, port: int | None = None, replicas: int = 1,
                   follow: str = "ws", timeout: float = 120.0) -> dict[str, Any]:
    """Start (or find running) the explorer of the devnet in ``directory``; returns explorer.json."""
    info = read_devnet(directory)
    old = read_explorer(directory)
    if old and all(is_explorer_process(pid) for pid in old["pids"].values()):
        return old
    if old:
        stop_explorer(directory)
    if not 1 <= replicas <= 16:
        raise ConfigError("--replicas must be between 1 and 16")
    db_url = normalize_db_url(db or str(directory / "explorer" / "explorer.db"))
    logs = directory / "explorer"
    logs.mkdir(parents=True, exist_ok=True)
    urls = ",".join(n["rpc"] for n in info["nodes"])
    pids: dict[str, int] = {"indexer": _spawn(["index", "--node", urls, "--db", db_url, "--follow", follow],
                                              logs / "indexer.log")}
    ports = [port + i for i in range(replicas)] if port else [_free_port() for _ in range(replicas)]
    for i, p in enumerate(ports):
        pids[f"api{i + 1}"] = _spawn(["serve", "--db", db_url, "--port", str(p), "--node", info["nodes"][0]["rpc"]], logs / f"api{i + 1}.log")
    out = {"urls": [f"http://127.0.0.1:{p}" for p in ports], "db": redact_db_url(db_url), "pids": pids,
           "logs": str(logs)}
    if replicas > 1:
        balancer_port = _free_port()
        pids["balancer"] = _spawn(["balance", "--port", str(balancer_port), "--upstream", ",".join(out["urls"])],
                                  logs / "balancer.log")
        out["balancer_url"] = f"http://127.0.0.1:{balancer_port}"
    (directory / EXPLORER_FILE).write_text(json.dumps(out, indent=2))
    try:
        _wait_caught_up(info, out, timeout)
    except Exception:
        stop_explorer(directory)
        raise
    return out


def _wait_caught_up(info: dict[str, Any], out: dict[str, Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    target = None
    while time.monotonic() < deadline:
        for name, pid in out["pids"].items():
            if not is_running(pid):
                log = Path(out["logs"]) / f"{'indexer' if name == 'indexer' else name}.log"
                tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
                raise ChainshareError(f"explorer {name} (pid {pid}) exited during start-up:\n{tail}")
        try:
            if target is None:
                r = httpx.post(info["nodes"][0]["rpc"], json={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber",
                                                               "params": []}, timeout=5)
                target = int(r.json()["result"], 16)
            ready = True
            for url in out["urls"]:
                st = httpx.get(url + "/api/v1/status", timeout=5).json()
                ready = ready and st.get("indexed_height") is not None and st["indexed_height"] >= target
            if ready:
                return
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            pass
        time.sleep(0.2)
    raise ChainshareError(f"the explorer did not catch up within {timeout:.0f}s (see {out['logs']})")


def restart_replicas(directory: Path, timeout: float = 60.0) -> dict[str, Any]:
    """Restart the api replicas of the devnet's explorer one at a time, each with the command line it
    ran with: SIGTERM (it stops accepting and finishes what it serves), wait until it has exited, start
    it again, wait until it answers ``/healthz``, then the next. Returns the new pids and the seconds
    each replica was away."""
    import psutil

    info = read_explorer(directory)
    if info is None:
        raise ConfigError(f"no explorer runs for {directory}: start it with `chainshare explorer up`")
    away = {}
    for name, url in zip(sorted(n for n in info["pids"] if n.startswith("api")), info["urls"], strict=True):
        pid = info["pids"][name]
        if not is_explorer_process(pid):
            raise ChainshareError(f"explorer {name} (pid {pid}) is not running: `chainshare explorer up` again")
        args = psutil.Process(pid).cmdline()
        args = args[args.index("explorer") + 1:]
        started = time.monotonic()
        _stop_process(pid, timeout)
        info["pids"][name] = _spawn(args, Path(info["logs"]) / f"{name}.log")
        _wait_healthy(url, info["pids"][name], Path(info["logs"]) / f"{name}.log", timeout)
        away[name] = round(time.monotonic() - started, 3)
        (directory / EXPLORER_FILE).write_text(json.dumps(info, indent=2))
    return {"pids": info["pids"], "away_seconds": away}


def _wait_healthy(url: str, pid: int, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_running(pid):
            raise ChainshareError(f"explorer replica {url} exited on restart:\n{log.read_text(errors='replace')[-1500:]}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise ChainshareError(f"explorer replica {url} did not answer /healthz within {timeout:.0f}s (see {log})")


def _stop_process(pid: int, timeout: float) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while is_explorer_process(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if is_explorer_process(pid):
        os.kill(pid, signal.SIGKILL)


def stop_explorer(directory: Path, timeout: float = 10.0) -> dict[str, Any]:
    info = read_explorer(directory)
    if info is None:
        return {"stopped": []}
    stopped = []
    for name, pid in info["pids"].items():
        if not is_explorer_process(pid):
            continue
        _stop_process(pid, timeout)
        stopped.append(name)
    (directory / EXPLORER_FILE).unlink(missing_ok=True)
    return {"stopped": stopped}
