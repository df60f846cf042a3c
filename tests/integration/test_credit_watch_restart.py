"""``chainshare credit watch`` outlives a node restart (a one-node devnet of its own): the node is killed while
the watch runs, records are published once it is back (some before the watch has reconnected, its back-off
growing while the node was down), and the watch delivers every record event exactly once, in chain order,
having warned on stderr while the node was unreachable. Before, the first refused connection ended it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from netkit import Devnet, DevnetPool, cli_command, cli_json, run_cli, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("credit-watch-restart")]

ORG = "91110000600037341L"
PENALTY = "administrative_penalty"


def credit(net: Devnet, *args: Any) -> Any:
    proc = run_cli("credit", *args, "--devnet", net.dir, "--as", "agency1", "--json", timeout=180)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return cli_json(proc)


def govern(net: Devnet, *proposal: Any) -> None:
    """Pass a CreditRegistry setting through Governance as the only agency: propose, vote, execute."""
    pid = credit(net, "govern", *proposal)["proposal"]
    credit(net, "govern", "vote", pid)
    credit(net, "govern", "execute", pid)


def publish(net: Devnet, n: int) -> int:
    out = credit(net, "publish", "--subject", ORG, "--category", PENALTY, "--polarity", "negative",
                 "--severity", 2, "--document", f"DOC-{n}-{time.monotonic_ns()}", "--authority", "Bureau",
                 "--legal-basis", "Art. 1", "--summary", f"penalty {n}", "--max-period", "1095d",
                 "--evidence-hash", "0x" + "cd" * 32)
    assert out["status"] == "success", out
    return int(out["record"])


@pytest.fixture(scope="module")
def net(devnet_pool: DevnetPool) -> Devnet:
    net = devnet_pool.launch("credit-watch", nodes=1)
    govern(net, "set-category", PENALTY, "Administrative penalty")
    govern(net, "set-issuer", PENALTY, "agency1")
    return net


class Reader:
    """The lines a process writes to one of its pipes, read on a thread as they come."""

    def __init__(self, pipe: Any) -> None:
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self.thread.start()

    def _read(self, pipe: Any) -> None:
        for line in pipe:
            self.lines.append(line.rstrip("\n"))


def test_watch_resumes_after_a_node_restart_without_gap_or_duplicate(net: Devnet, tmp_path: Path) -> None:
    start = int(net.rpc("eth_blockNumber"), 16) + 1
    proc = subprocess.Popen([*cli_command(), "credit", "watch", "--devnet", str(net.dir), "--category", PENALTY,
                             "--from-height", str(start), "--max-events", "5", "--poll", "0.1",
                             "--cursor-file", str(tmp_path / "cursor")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    out, err = Reader(proc.stdout), Reader(proc.stderr)
    try:
        published = [publish(net, 1), publish(net, 2)]
        wait_until(lambda: len(out.lines) >= 2, 60, "the first two events")
        net.kill()  # SIGKILL: the node is gone at once
        wait_until(lambda: any("node unreachable" in ln for ln in err.lines), 60, "the watch to notice the outage")
        time.sleep(3)  # the watch keeps retrying with a growing back-off
        assert proc.poll() is None, err.lines
        net.start()
        published += [publish(net, n) for n in (3, 4, 5)]
        proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    out.thread.join(10)
    err.thread.join(10)
    assert proc.returncode == 0, err.lines
    events = [json.loads(line) for line in out.lines]
    assert [e["args"]["id"] for e in events] == published, (events, err.lines)
    assert all(e["event"] == "RecordPublished" for e in events)
    cursors = [tuple(int(x) for x in e["cursor"].split("-")) for e in events]
    assert cursors == sorted(set(cursors))  # strictly increasing: no duplicate, chain order
    warning = next(ln for ln in err.lines if "node unreachable" in ln)
    assert "retrying" in warning
    assert (tmp_path / "cursor").read_text().strip() == events[-1]["cursor"]
