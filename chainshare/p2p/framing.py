"""Length-prefixed frames: a 4-byte big-endian payload length, then the payload, which is the
canonical msgpack encoding (``chainshare.codec``) of ``[msg_type: str, body]``.

Reading is bounded: a frame's length is checked against the limit before any of its payload is
read, a frame must start within the idle timeout and, once started, be complete within the frame
timeout, so neither a huge announcement nor a stalled (slowloris) peer can hold memory or a reader.
"""

from __future__ import annotations

import asyncio
from typing import Any

from chainshare import codec
from chainshare.errors import DecodeError
from chainshare.p2p.errors import FrameError, FrameTimeout, FrameTooLarge, IdleTimeout, PeerClosed

HEADER_SIZE = 4
DEFAULT_MAX_FRAME_SIZE = 4 * 1024 * 1024
# The codec refuses to decode more than this, so no configuration may allow larger frames.
MAX_FRAME_SIZE_LIMIT = codec.MAX_DECODE_BYTES
MAX_MSG_TYPE_LENGTH = 64


def check_msg_type(msg_type: object) -> str:
    """``msg_type`` if it is a non-empty printable ASCII string of at most 64 characters; else FrameError."""
    if (
        not isinstance(msg_type, str)
        or not 1 <= len(msg_type) <= MAX_MSG_TYPE_LENGTH
        or not msg_type.isascii()
        or not msg_type.isprintable()
    ):
        raise FrameError(
            f"message type must be 1..{MAX_MSG_TYPE_LENGTH} printable ASCII characters, got {msg_type!r:.80}"
        )
    return msg_type


def encode_payload(msg_type: str, body: Any) -> bytes:
    """The canonical payload of a message; TypeError/ValueError if ``body`` is not canonically encodable."""
    check_msg_type(msg_type)
    return codec.encode([msg_type, body])


def frame_payload(payload: bytes, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> bytes:
    """``payload`` with its 4-byte big-endian length in front; FrameTooLarge over ``max_frame_size``."""
    if len(payload) > max_frame_size:
        raise FrameTooLarge(len(payload), max_frame_size)
    return len(payload).to_bytes(HEADER_SIZE, "big") + payload


def encode_frame(msg_type: str, body: Any, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> bytes:
    """The complete wire frame of one message (header + canonical payload)."""
    return frame_payload(encode_payload(msg_type, body), max_frame_size=max_frame_size)


def decode_payload(payload: bytes) -> tuple[str, Any]:
    """``(msg_type, body)`` of a frame payload; FrameError for anything that is not canonical msgpack
    ``[msg_type: str, body]`` (never any other exception, whatever the bytes)."""
    try:
        value = codec.decode(payload)
    except DecodeError as exc:
        raise FrameError(f"undecodable frame payload: {exc.message}") from exc
    if not isinstance(value, list) or len(value) != 2:
        raise FrameError("a frame payload must be the array [msg_type, body]")
    return check_msg_type(value[0]), value[1]


async def read_frame(
    reader: asyncio.StreamReader,
    *,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    idle_timeout: float | None,
    frame_timeout: float,
) -> bytes:
    """The payload of the next frame from ``reader``.

    Guarantees: at most ``HEADER_SIZE + max_frame_size`` bytes are read; FrameTooLarge is raised
    from the header alone; IdleTimeout if no byte arrives within ``idle_timeout`` (None: wait
    forever); FrameTimeout if the frame, once its first byte arrived, is not complete within
    ``frame_timeout``; PeerClosed at end of stream (``mid_frame`` says whether a frame was cut).
    """
    try:
        async with asyncio.timeout(idle_timeout):
            first = await reader.readexactly(1)
    except asyncio.IncompleteReadError as exc:
        raise PeerClosed("the peer closed the connection", mid_frame=False) from exc
    except TimeoutError as exc:
        raise IdleTimeout(f"no frame from the peer within {idle_timeout} s") from exc
    try:
        async with asyncio.timeout(frame_timeout):
            rest = await reader.readexactly(HEADER_SIZE - 1)
            length = int.from_bytes(first + rest, "big")
            if length > max_frame_size:
                raise FrameTooLarge(length, max_frame_size)
            return await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise PeerClosed("the peer closed the connection in the middle of a frame", mid_frame=True) from exc
    except TimeoutError as exc:
        raise FrameTimeout(
            f"the peer started a frame but did not complete it within {frame_timeout} s"
        ) from exc
