"""Server-sent events for the explorer's live pages (``/live/blocks``, ``/live/credit``): one polling loop.

A stream polls the index once a ``POLL_SECONDS`` with a caller's ``poll`` (run on a worker thread, never on
the event loop) and sends what it returns as SSE events, a keep-alive comment when there is nothing new, and
a comment when the database cannot be read (the stream stays open and tries again). It ends after
``STREAM_SECONDS`` or as soon as the client disconnects; the browser's EventSource reconnects by itself
(``retry``) and resumes after the last event it received (``Last-Event-ID``, else ``after``). A poll is asked for at most ``MAX_EVENTS_PER_POLL`` events, and an
event whose JSON exceeds ``MAX_EVENT_BYTES`` is replaced by a comment naming it, so a client is never handed
an unbounded burst.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from chainshare.decimal_text import parse_ascii_decimal

STREAM_SECONDS = 600.0  # then the client reconnects (EventSource does), so no stream lives forever
POLL_SECONDS = 1.0
RETRY_MS = 3000
MAX_EVENT_BYTES = 256 * 1024
MAX_EVENTS_PER_POLL = 10
MAX_AFTER = 2**62

# ``?after=N``: resume after this block height / event sequence number (as the last event's id said)
After = Annotated[int | None, Query(ge=0, le=MAX_AFTER, description="Resume after this event id")]


@dataclass(frozen=True)
class LiveEvent:
    """One SSE event: its type, its id (what ``after`` resumes from) and its JSON data."""

    event: str
    id: int
    data: dict[str, Any]


def get_resume_point(request: Request, after: int | None) -> int | None:
    """Where a stream starts: after the ``Last-Event-ID`` an EventSource sends when it reconnects (the id of
    the last event it received), else after ``after`` (None: from what is new from now on)."""
    last_id = parse_ascii_decimal(request.headers.get("last-event-id", ""), max_digits=19)
    if last_id is not None and last_id <= MAX_AFTER:
        return last_id
    return after


def format_event(ev: LiveEvent) -> str:
    """``ev`` in the text/event-stream format (a comment instead if its data exceeds ``MAX_EVENT_BYTES``)."""
    data = json.dumps(ev.data, separators=(",", ":"))  # one line: JSON never holds a raw newline
    if len(data) > MAX_EVENT_BYTES:
        return f": {ev.event} {ev.id} omitted: {len(data)} bytes exceed {MAX_EVENT_BYTES}\n\n"
    return f"event: {ev.event}\nid: {ev.id}\ndata: {data}\n\n"


def stream_live_events(request: Request, poll: Callable[[int], list[LiveEvent]]) -> StreamingResponse:
    """A text/event-stream response that sends what ``poll(MAX_EVENTS_PER_POLL)`` returns each ``POLL_SECONDS``
    (see the module doc). ``poll`` keeps its own position (what it has returned) and returns events oldest
    first, at most as many as it is asked for."""
    async def events() -> AsyncIterator[str]:
        yield f"retry: {RETRY_MS}\n\n"
        deadline = time.monotonic() + STREAM_SECONDS
        while time.monotonic() < deadline and not await request.is_disconnected():
            try:
                new = await run_in_threadpool(poll, MAX_EVENTS_PER_POLL)
            except SQLAlchemyError:
                yield ": database unavailable\n\n"
            else:
                for ev in new:
                    yield format_event(ev)
                if not new:
                    yield ": keep-alive\n\n"
            await asyncio.sleep(POLL_SECONDS)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
