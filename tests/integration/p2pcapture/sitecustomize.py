"""Test-only: record the plaintext a Python process reads from and writes into its TLS sessions.

Put this directory on PYTHONPATH and set CHAINSHARE_TEST_TLS_CAPTURE=<file> when starting a node
process: every ``ssl.SSLObject`` read and write (what asyncio's TLS transport decrypts from and
encrypts for the network, i.e. the node's P2P frames exactly as the peers exchange them inside
mutual TLS) is appended to <file> as records ``direction (b"<" in, b">" out) | session id (4 bytes) |
length (4 bytes) | bytes``. Nothing of this exists in chainshare itself: without the variable, or
without this directory on the path, the process is untouched.
"""

from __future__ import annotations

import itertools
import os
import ssl
import threading
import weakref
from typing import Any

_PATH = os.environ.get("CHAINSHARE_TEST_TLS_CAPTURE")

if _PATH:
    _lock = threading.Lock()
    _ids: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
    _next = itertools.count(1)
    _read, _write = ssl.SSLObject.read, ssl.SSLObject.write

    def _record(obj: Any, direction: bytes, data: bytes) -> None:
        if not data:
            return
        with _lock:
            session = _ids.get(obj) or _ids.setdefault(obj, next(_next))
            with open(_PATH, "ab") as out:
                out.write(direction + session.to_bytes(4, "big") + len(data).to_bytes(4, "big") + data)

    def _captured_read(self: ssl.SSLObject, len: int = 1024, buffer: Any = None) -> Any:  # noqa: A002
        out = _read(self, len, buffer)
        _record(self, b"<", bytes(buffer[:out]) if buffer is not None else bytes(out))
        return out

    def _captured_write(self: ssl.SSLObject, data: Any) -> int:
        count = _write(self, data)
        _record(self, b">", bytes(memoryview(data)[:count]))
        return count

    ssl.SSLObject.read = _captured_read  # type: ignore[method-assign]
    ssl.SSLObject.write = _captured_write  # type: ignore[method-assign]
