"""``CHAINSHARE_EXIT_WITH_PID``: the variable's validation, and the watch that fires once the supervisor ends."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from chainshare.errors import ConfigError
from chainshare.supervision import ENV_VAR, parse_supervisor_pid, start_supervisor_watch, watch_supervisor


def test_unset_or_empty_variable_names_no_supervisor() -> None:
    assert parse_supervisor_pid({}) is None
    assert parse_supervisor_pid({ENV_VAR: "  "}) is None
    assert parse_supervisor_pid({ENV_VAR: "4242"}) == 4242


@pytest.mark.parametrize("raw", ["abc", "-5", "0", "12.5", "0x10", "٤٢٤٢", "4²"])  # str.isdecimal() takes "٤٢٤٢"
def test_a_variable_that_is_not_a_pid_is_a_config_error(raw: str) -> None:
    with pytest.raises(ConfigError, match=ENV_VAR):
        parse_supervisor_pid({ENV_VAR: raw})


def test_a_process_does_not_watch_itself() -> None:
    assert start_supervisor_watch({ENV_VAR: str(os.getpid())}) is None


def test_the_watch_fires_only_after_the_supervisor_has_ended() -> None:
    supervisor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    watcher = subprocess.Popen(  # started after its supervisor, as every supervised process is
        [sys.executable, "-c", "import sys; from chainshare.supervision import watch_supervisor; "
         "watch_supervisor(int(sys.argv[1]), lambda: print('ended', flush=True), poll_seconds=0.05)",
         str(supervisor.pid)], stdout=subprocess.PIPE, text=True)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            watcher.wait(1.0)  # still watching while the supervisor lives
    finally:
        supervisor.kill()  # not reaped yet: a zombie, which counts as ended
    out, _ = watcher.communicate(timeout=10)
    assert out == "ended\n"
    supervisor.wait()


def test_a_process_started_after_this_one_is_not_its_supervisor() -> None:
    """A pid that names a younger process was reused: the supervisor that started us has ended."""
    younger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ended = threading.Event()
        watch_supervisor(younger.pid, ended.set, poll_seconds=0.05)
        assert ended.is_set()
    finally:
        younger.kill()
        younger.wait()


def test_a_supervisor_already_gone_fires_at_once() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    ended = threading.Event()
    watch_supervisor(gone.pid, ended.set, poll_seconds=0.05)
    assert ended.is_set()


def test_the_cli_refuses_a_malformed_variable_with_a_usage_error() -> None:
    proc = subprocess.run([sys.executable, "-m", "chainshare", "devnet", "status", "--help"],
                          env={**os.environ, ENV_VAR: "not-a-pid"}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert ENV_VAR in proc.stderr and "positive integer" in proc.stderr

