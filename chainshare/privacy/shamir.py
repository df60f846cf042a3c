"""The one import of MPyC (its prime field and Shamir threshold sharing), contained.

Importing ``mpyc`` runs its command-line set-up: it parses ``sys.argv`` as MPyC options, calls
``logging.basicConfig`` (INFO to stdout) and installs uvloop's event-loop policy process-wide. A
node or a CLI command must keep its own argv meaning, logging and event loop, so the import below
runs with MPyC's quiet options and puts the root logger and the loop policy back as they were."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any


def _import_mpyc() -> tuple[Any, Any]:
    argv, root = sys.argv, logging.getLogger()
    handlers, level = root.handlers[:], root.level
    policy = asyncio.get_event_loop_policy()
    sys.argv = [argv[0] if argv else "chainshare", "--no-log", "--no-uvloop", "--no-numpy"]
    try:
        from mpyc import finfields, thresha
    finally:
        sys.argv = argv
        root.handlers[:] = handlers
        root.setLevel(level)
        asyncio.set_event_loop_policy(policy)
    return finfields, thresha


finfields, thresha = _import_mpyc()

__all__ = ["finfields", "thresha"]
