"""Fuzz what a connected peer's bytes go through first: the frame reader, ``decode_payload``, and
the control-message shapes of ``p2p.peers`` (gossip ids).

Contract: ``read_frame`` returns exactly the payload its header announces or raises a ``P2PError``
/ ``FrameError``; ``decode_payload`` returns ``(msg_type, body)`` or raises ``FrameError`` (what
``peers`` catches), nothing else; a gossip frame that passes the shape check gets an id.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable

import _fuzzkit
import atheris

with atheris.instrument_imports(include=["chainshare"]):
    from chainshare.errors import DecodeError
    from chainshare.p2p.errors import FrameError, P2PError
    from chainshare.p2p.framing import decode_payload, encode_frame, read_frame
    from chainshare.p2p.gossip import compute_gossip_id
    from chainshare.p2p.peers import MSG_GOSSIP, MSG_REQUEST, _is_user_type

MAX_FRAME = 4096


def seeds() -> Iterable[bytes]:
    yield encode_frame("consensus", b"\x01" * 40)
    yield encode_frame(MSG_GOSSIP, ["txs", [b"\x02" * 100]])
    yield encode_frame(MSG_REQUEST, [7, "block", b"\x33" * 32])
    yield encode_frame("p2p.hello", [1, 4242, b"\x44" * 32, "node-1"])


async def _read_all(data: bytes) -> list[bytes]:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    frames = []
    while True:
        try:
            frames.append(await read_frame(reader, max_frame_size=MAX_FRAME, idle_timeout=1, frame_timeout=1))
        except (P2PError, DecodeError):
            return frames


def check(data: bytes) -> None:
    frames = asyncio.run(_read_all(data))
    pos = 0
    for payload in frames:  # each frame is its header's length of the input, in order
        length = int.from_bytes(data[pos:pos + 4], "big")
        assert payload == data[pos + 4:pos + 4 + length], data.hex()
        pos += 4 + length
    for payload in frames or [data]:
        try:
            msg_type, body = decode_payload(payload)
        except FrameError:
            continue
        assert isinstance(msg_type, str)
        if msg_type == MSG_GOSSIP and isinstance(body, list) and len(body) == 2 and _is_user_type(body[0]):
            assert len(compute_gossip_id(body[0], body[1])) == 32


if __name__ == "__main__":
    _fuzzkit.run(check, seeds)
    sys.exit(0)
