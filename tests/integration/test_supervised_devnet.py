"""``CHAINSHARE_EXIT_WITH_PID`` with real processes: a devnet and its explorer, started by ``chainshare devnet up``
under a supervisor, stop cleanly once that supervisor is SIGKILLed, and the network starts again on its data."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from netkit import DevnetPool, cli_command

from chainshare.bench import free_port_block
from chainshare.explorer.launcher import stop_explorer
from chainshare.supervision import ENV_VAR

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("supervision")]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_supervised_devnet_and_explorer_stop_cleanly_when_the_supervisor_is_killed(
        devnet_pool: DevnetPool, tmp_path: Path) -> None:
    d = tmp_path / "net"
    devnet_pool.register(d)  # stopped at teardown whatever happens below
    up = cli_command() + ["devnet", "up", "--dir", str(d), "--nodes", "1", "--explorer",
                          "--base-port", str(free_port_block(1))]
    script = (f"import os, subprocess, sys, time\n"
              f"env = dict(os.environ, {ENV_VAR}=str(os.getpid()))\n"
              f"rc = subprocess.run({up!r}, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL).returncode\n"
              "print(rc, flush=True)\n"
              "time.sleep(300)\n")
    supervisor = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        _check_supervised_processes_end_with(supervisor, d)
    finally:
        supervisor.kill()
        if (d / "explorer.json").exists():
            stop_explorer(d)


def _check_supervised_processes_end_with(supervisor: subprocess.Popen[str], d: Path) -> None:
    assert supervisor.stdout is not None
    assert supervisor.stdout.readline().strip() == "0", "devnet up failed under the supervisor"
    node_pid = json.loads((d / "devnet.json").read_text())["nodes"][0]["pid"]
    pids = [node_pid, *json.loads((d / "explorer.json").read_text())["pids"].values()]
    assert all(_alive(p) for p in pids)
    time.sleep(1.5)
    assert all(_alive(p) for p in pids), "a supervised process stopped while its supervisor was alive"

    supervisor.kill()
    supervisor.wait()
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids), "processes outlived their supervisor by 20 s"
    assert "node stopped" in (d / "nodes" / "node1" / "node.log").read_text(), "the node did not stop cleanly"

    again = subprocess.run(cli_command() + ["devnet", "up", "--dir", str(d), "--json"], capture_output=True,
                           text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert again.returncode == 0, again.stderr
    assert int(json.loads(again.stdout)["nodes"][0]["pid"]) != node_pid
