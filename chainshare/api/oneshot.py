"""uvicorn's httptools HTTP/1.1 protocol, with each response's status line and headers sent in the
same write as its first body bytes.

Stock uvicorn writes the head when the app sends ``http.response.start`` and the body when it sends
``http.response.body``: two send() calls and two TCP segments for every JSON-RPC answer. Here the
head is held until the body's first write (or the end of the response, or a close), then both leave
in one write. Nothing else of the protocol changes: what the client receives is byte for byte the same.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

JOIN_LIMIT = 64 * 1024  # a first body write up to this size is joined to the head (copied once)


class _Collector:
    """Stands in for the transport while uvicorn writes a response head: keeps the bytes."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.chunks.append(bytes(data))


class _HeadFirst:
    """The transport, with ``head`` put before the first write (or sent before a close)."""

    def __init__(self, transport: asyncio.Transport, head: bytes) -> None:
        self._transport = transport
        self.head = head

    def write(self, data: bytes) -> None:
        if self.head and len(data) <= JOIN_LIMIT:
            data, self.head = self.head + data, b""
        self.flush()  # a large first chunk is not copied: the head goes on its own
        self._transport.write(data)

    def flush(self) -> None:
        if self.head:
            head, self.head = self.head, b""
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class OneWriteCycle(RequestResponseCycle):
    """A request/response cycle whose response head leaves together with its first body bytes."""

    _held = b""

    async def send(self, message: Any) -> None:
        if message["type"] == "http.response.start" and not self.response_started and not self.disconnected:
            real, collector = self.transport, _Collector()
            self.transport = collector  # type: ignore[assignment]
            try:
                await super().send(message)
            finally:
                self.transport = real
            self._held = b"".join(collector.chunks)
            return
        if not self._held:
            await super().send(message)
            return
        real, shim = self.transport, _HeadFirst(self.transport, self._held)
        self._held = b""
        self.transport = shim  # type: ignore[assignment]
        try:
            await super().send(message)
        finally:
            self.transport = real
            if not self.disconnected:
                shim.flush()  # no body bytes were written (HEAD, 204, an empty chunk): the head alone


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` whose request/response cycles are ``OneWriteCycle``s."""

    def on_headers_complete(self) -> None:
        before = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not before and type(cycle) is RequestResponseCycle:
            cycle.__class__ = OneWriteCycle  # the same object, before its task first runs
