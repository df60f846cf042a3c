"""Errors of the peer-to-peer transport, in the chainshare hierarchy (each also a matching built-in)."""

from __future__ import annotations

from chainshare.errors import ChainshareError, DecodeError


class P2PError(ChainshareError):
    """Base of every transport error."""


class FrameError(DecodeError):
    """A frame's payload is not ``canonical msgpack [msg_type: str, body]`` (or is otherwise malformed)."""


class FrameTooLarge(FrameError):
    """A frame announces (or would need) more bytes than the configured maximum frame size."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"frame of {length} bytes exceeds the maximum frame size of {limit} bytes")
        self.length = length
        self.limit = limit


class ReadTimeout(P2PError, TimeoutError):
    """A peer did not send in time."""


class IdleTimeout(ReadTimeout):
    """No frame started within the idle timeout (a live peer sends at least pings)."""


class FrameTimeout(ReadTimeout):
    """A frame was started but not completed within the frame timeout (a stalled or slowloris peer)."""


class PeerClosed(P2PError, ConnectionError):
    """The peer closed the connection (``mid_frame`` tells whether it left a frame unfinished)."""

    def __init__(self, message: str, *, mid_frame: bool) -> None:
        super().__init__(message)
        self.mid_frame = mid_frame


class PeerRefused(P2PError, PermissionError):
    """A connection was refused while it was being set up; ``reason`` is a short fixed label for
    metrics (e.g. ``not_allowed``, ``wrong_chain``), ``message`` says what was wrong."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class PeerUnavailable(P2PError, ConnectionError):
    """The peer is not connected (or the connection closed before the answer came)."""

    http_status = 503


class RequestTimeout(P2PError, TimeoutError):
    """A request got no response within its timeout."""

    http_status = 504


class RequestFailed(P2PError, RuntimeError):
    """The peer answered a request with an error; the message is the peer's."""

    http_status = 502
