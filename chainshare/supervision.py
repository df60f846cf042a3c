"""Stop together with a supervising process: ``CHAINSHARE_EXIT_WITH_PID``.

Nodes and explorer services outlive the command that started them by design (``devnet up`` starts
them in their own session and returns). A supervisor that must not leave them behind when it dies,
however it dies (SIGKILL included: the test suite interrupted, a CI job timed out), sets this
variable to its own pid. Every ``chainshare`` command started under it, and every process those start,
inherits it and then sends itself SIGTERM, its normal clean stop, within about a second after that
process has ended; one that is still alive 30 s later sends itself SIGKILL, which the node survives
by construction (every finalized block is on disk). Without the variable nothing happens.

A pid is only trusted together with its identity: a process that started after this one, or that
reuses the pid after the supervisor ended, is not the supervisor, which counts as ended. The stop is
logged (WARNING) with the variable's name, so a stale value left in a service's environment shows.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from chainshare.decimal_text import parse_ascii_decimal
from chainshare.errors import ConfigError

log = logging.getLogger("chainshare.supervision")

ENV_VAR = "CHAINSHARE_EXIT_WITH_PID"
POLL_SECONDS = 1.0
KILL_AFTER_SECONDS = 30.0

_watch_lock = threading.Lock()
_watching: threading.Thread | None = None


def parse_supervisor_pid(environ: Mapping[str, str]) -> int | None:
    """The supervisor's pid named by ``CHAINSHARE_EXIT_WITH_PID`` in ``environ``, or None when it is unset or
    empty; ConfigError when it is not a positive integer."""
    raw = environ.get(ENV_VAR, "").strip()
    if not raw:
        return None
    pid = parse_ascii_decimal(raw, max_digits=10)
    if pid is None or pid <= 0:
        raise ConfigError(f"{ENV_VAR} must be a process id (a positive integer), not {raw!r}")
    return pid


def _supervisor_process(pid: int) -> Any:
    """The live process ``pid`` as a psutil.Process, or None if it has ended (a zombie counts as ended) or
    started after this process did (so it is not the process that started us: the pid was reused)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE or proc.create_time() > psutil.Process().create_time():
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _has_ended(proc: Any) -> bool:
    import psutil

    try:
        # is_running() also tells a reused pid apart (psutil compares the process's identity, on Linux from
        # its start in ticks since boot, which a step of the wall clock does not move).
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return True


def watch_supervisor(pid: int, on_ended: Callable[[], None], *, poll_seconds: float = POLL_SECONDS) -> None:
    """Block until process ``pid`` (the one running now, started before this process) has ended, then call
    ``on_ended``."""
    proc = _supervisor_process(pid)
    while proc is not None and not _has_ended(proc):
        time.sleep(poll_seconds)
    on_ended()


def _terminate_self(pid: int) -> None:
    log.warning("stopping: the supervisor named by %s=%d has ended", ENV_VAR, pid)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(KILL_AFTER_SECONDS)
    log.warning("still running %d s after SIGTERM: SIGKILL", int(KILL_AFTER_SECONDS))
    os.kill(os.getpid(), signal.SIGKILL)


def start_supervisor_watch(environ: Mapping[str, str] = os.environ) -> threading.Thread | None:
    """If ``CHAINSHARE_EXIT_WITH_PID`` names another process, watch it from a daemon thread and stop this
    process (SIGTERM, then SIGKILL after 30 s) once it has ended; returns that thread (the same one on
    every call of a process), or None when there is nothing to watch."""
    global _watching
    pid = parse_supervisor_pid(environ)
    if pid is None or pid == os.getpid():
        return None
    with _watch_lock:
        if _watching is None:
            _watching = threading.Thread(target=watch_supervisor, args=(pid, lambda: _terminate_self(pid)),
                                         name="supervisor-watch", daemon=True)
            _watching.start()
        return _watching
