"""P2P framing: 4-byte big-endian length + canonical msgpack [msg_type, body]; bounded, timed reads."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chainshare import codec
from chainshare.errors import DecodeError
from chainshare.p2p.errors import FrameError, FrameTimeout, FrameTooLarge, IdleTimeout, PeerClosed
from chainshare.p2p.framing import (
    HEADER_SIZE,
    decode_payload,
    encode_frame,
    encode_payload,
    frame_payload,
    read_frame,
)

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 10))


def fed_reader(data: bytes, *, eof: bool = False) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


canonical_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.binary(max_size=64)
    | st.text(max_size=32),
    lambda inner: st.lists(inner, max_size=5),
    max_leaves=20,
)
msg_types = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=64)


def test_frame_is_big_endian_length_then_canonical_payload() -> None:
    frame = encode_frame("tx", [1, b"\x00\xff", "x"])
    payload = codec.encode(["tx", [1, b"\x00\xff", "x"]])
    assert frame == len(payload).to_bytes(4, "big") + payload
    assert decode_payload(frame[HEADER_SIZE:]) == ("tx", [1, b"\x00\xff", "x"])


@given(msg_types, canonical_values)
def test_any_canonical_message_survives_the_wire(msg_type: str, body: Any) -> None:
    async def roundtrip() -> tuple[str, Any]:
        payload = await read_frame(fed_reader(encode_frame(msg_type, body)), idle_timeout=1, frame_timeout=1)
        return decode_payload(payload)

    assert run(roundtrip()) == (msg_type, body)


def test_encoding_more_than_the_maximum_frame_size_is_refused() -> None:
    with pytest.raises(FrameTooLarge, match="exceeds the maximum frame size of 1024"):
        encode_frame("blob", b"x" * 1024, max_frame_size=1024)
    assert len(frame_payload(b"x" * 1024, max_frame_size=1024)) == 1024 + HEADER_SIZE


@pytest.mark.parametrize("msg_type", ["", "x" * 65, "tx\n", "tx\u00e9", 7, None, b"tx"])
def test_invalid_message_types_are_refused(msg_type: Any) -> None:
    with pytest.raises(FrameError, match="message type"):
        encode_payload(msg_type, None)
    with pytest.raises(FrameError):
        decode_payload(codec.encode([msg_type, None]))


def test_unencodable_bodies_are_refused_before_anything_is_sent() -> None:
    with pytest.raises(TypeError):
        encode_frame("tx", {"a": 1})
    with pytest.raises(TypeError):
        encode_frame("tx", 1.5)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xc1",  # a byte msgpack never uses
        b"\x92\xa2tx",  # truncated array
        codec.encode("tx"),  # not an array
        codec.encode(["tx"]),  # wrong arity
        codec.encode(["tx", 1, 2]),
        codec.encode([1, 2]),  # msg_type not a string
        codec.encode(["tx", 1]) + b"\x00",  # trailing bytes
        b"\x92\xa2tx\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00",  # a float body
        b"\x92\xa2tx\x81\xa1a\x01",  # a map body
    ],
)
def test_garbage_payloads_raise_frame_error(payload: bytes) -> None:
    with pytest.raises(FrameError):
        decode_payload(payload)


@given(st.binary(max_size=256))
def test_random_bytes_never_raise_anything_but_frame_error(payload: bytes) -> None:
    try:
        msg_type, _ = decode_payload(payload)
    except FrameError as exc:
        assert isinstance(exc, DecodeError)  # the one error hierarchy: maps to "bad input"
    else:
        assert isinstance(msg_type, str)


def test_consecutive_frames_are_read_one_at_a_time() -> None:
    async def scenario() -> None:
        reader = fed_reader(encode_frame("a", 1) + encode_frame("b", [b"2"]) + b"\x00\x00")
        assert decode_payload(await read_frame(reader, idle_timeout=1, frame_timeout=1)) == ("a", 1)
        assert decode_payload(await read_frame(reader, idle_timeout=1, frame_timeout=1)) == ("b", [b"2"])

    run(scenario())


def test_an_oversized_length_is_refused_from_the_header_without_reading_the_payload() -> None:
    async def scenario() -> None:
        reader = fed_reader((1025).to_bytes(4, "big") + b"payload bytes")
        with pytest.raises(FrameTooLarge) as info:
            await read_frame(reader, max_frame_size=1024, idle_timeout=1, frame_timeout=1)
        assert (info.value.length, info.value.limit) == (1025, 1024)
        assert await reader.read(100) == b"payload bytes"  # nothing of the payload was consumed

    run(scenario())


def test_a_silent_peer_raises_idle_timeout() -> None:
    async def scenario() -> None:
        with pytest.raises(IdleTimeout):
            await read_frame(fed_reader(b""), idle_timeout=0.05, frame_timeout=5)

    run(scenario())


@pytest.mark.parametrize("sent", [b"\x00\x00", b"\x00\x00\x00\x10" + b"half"])
def test_a_peer_that_stalls_inside_a_frame_raises_frame_timeout(sent: bytes) -> None:
    async def scenario() -> None:
        with pytest.raises(FrameTimeout):
            # No idle limit: only the frame timeout can end this read.
            await read_frame(fed_reader(sent), idle_timeout=None, frame_timeout=0.05)

    run(scenario())


def test_end_of_stream_between_and_inside_frames() -> None:
    async def scenario() -> None:
        with pytest.raises(PeerClosed) as between:
            await read_frame(fed_reader(b"", eof=True), idle_timeout=1, frame_timeout=1)
        assert not between.value.mid_frame
        with pytest.raises(PeerClosed) as inside:
            await read_frame(
                fed_reader(encode_frame("a", b"xyz")[:-1], eof=True), idle_timeout=1, frame_timeout=1
            )
        assert inside.value.mid_frame

    run(scenario())
