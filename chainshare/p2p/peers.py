"""The peer-to-peer transport of a node: mutually authenticated TLS 1.3 connections to the other
consortium nodes, carrying length-prefixed canonical msgpack frames.

What a ``P2PNode`` guarantees:
- a peer is up only after TLS 1.3 with a consortium node certificate valid now, the membership
  policy (``is_allowed``) and a hello with the same protocol version, chain id and genesis hash;
  anything else is refused before any application message flows (reason logged and counted);
- at most one connection per peer carries traffic: when both ends dial each other, both keep the
  connection opened by the node whose name sorts first (a newer connection in the same direction
  replaces an older, presumably stale, one);
- per peer, ``on_peer_up`` runs before any ``on_message`` and ``on_peer_down`` after the last one,
  and messages are handed over one at a time in arrival order;
- memory per peer is bounded: frames up to ``max_frame_size``, a bounded send queue (on overflow the
  connection is closed, or the oldest frames dropped, as configured) and a bounded inbound queue
  (when full, reading from that peer pauses: back-pressure);
- a peer that sends an oversized frame, stalls inside a frame, stays silent past the idle timeout,
  or sends ``max_strikes`` undecodable frames is disconnected; no peer can crash the node.
Delivery is at most once: a message queued for a peer that disconnects is lost (consensus and sync
retransmit at their own level).

On the wire every frame is ``[msg_type, body]`` (see ``framing``). Application messages use any type
not starting with ``p2p.``; the transport's own are ``p2p.hello`` (first frame each way),
``p2p.ping``, ``p2p.bye``, ``p2p.req`` / ``p2p.res`` (request/response) and ``p2p.gossip``.

One caution for handlers: ``on_message`` calls for a peer run one at a time and the inbound queue
is bounded, so an ``on_message`` that awaits ``request()`` to the same peer can wait until that
request times out if the peer floods it meanwhile; start such follow-ups as tasks.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import socket
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from chainshare.crypto.ca import CertSubject, check_name, verify_certificate
from chainshare.errors import ChainshareError, ConfigError, CryptoError, InvalidInput
from chainshare.logs import log_event
from chainshare.p2p.errors import (
    FrameError,
    FrameTimeout,
    FrameTooLarge,
    IdleTimeout,
    PeerClosed,
    PeerRefused,
    PeerUnavailable,
    RequestFailed,
    RequestTimeout,
)
from chainshare.p2p.framing import (
    DEFAULT_MAX_FRAME_SIZE,
    HEADER_SIZE,
    MAX_FRAME_SIZE_LIMIT,
    check_msg_type,
    decode_payload,
    encode_frame,
    read_frame,
)
from chainshare.p2p.gossip import GossipFilter, compute_gossip_id
from chainshare.p2p.tls import (
    AllowPolicy,
    TlsIdentity,
    build_client_context,
    build_server_context,
    describe_tls_error,
    verify_peer,
)

log = logging.getLogger("chainshare.p2p")

PROTOCOL_VERSION = 1
CONTROL_PREFIX = "p2p."
MSG_HELLO = "p2p.hello"  # [protocol_version: int, chain_id: int, genesis_hash: bytes, node_name: str]
MSG_PING = "p2p.ping"  # [] (sent when nothing else was sent for ping_interval)
MSG_BYE = "p2p.bye"  # [reason: str] (the sender closes this connection)
MSG_REQUEST = "p2p.req"  # [request_id: int, msg_type: str, body]
MSG_RESPONSE = "p2p.res"  # [request_id: int, ok: bool, body if ok else error message: str]
MSG_GOSSIP = "p2p.gossip"  # [msg_type: str, body]

MAX_HELLO_SIZE = 1024
MAX_ERROR_LENGTH = 512
_STREAM_LIMIT = 256 * 1024
_WRITE_BATCH_BYTES = 256 * 1024
_CLOSE_GRACE = 2.0  # seconds a graceful close may take before the connection is aborted
_RECENT_DELAYS = 16
_MAX_REFUSAL_WARNINGS_PER_SECOND = 20

# Disconnect reasons that are part of normal operation (logged at info, the others at warning).
_BENIGN_REASONS = frozenset({"closed_by_peer", "duplicate", "shutdown", "peer_removed"})

MessageHandler = Callable[[str, str, Any], Awaitable[None]]
"""``on_message(peer_name, msg_type, body)``."""
RequestHandler = Callable[[str, str, Any], Awaitable[Any]]
"""``on_request(peer_name, msg_type, body) -> response body``; raise a ChainshareError to answer an error."""
PeerUpHandler = Callable[[str, CertSubject], Awaitable[None]]
"""``on_peer_up(peer_name, subject)``."""
PeerDownHandler = Callable[[str, str], Awaitable[None]]
"""``on_peer_down(peer_name, reason)``."""
SendOverflow = Literal["close", "drop_oldest"]


class PeerAddress(NamedTuple):
    """A peer to dial: its node name (as its certificate names it), host and TCP port."""

    name: str
    host: str
    port: int


@dataclass(frozen=True)
class P2PConfig:
    """Transport settings; every duration is in seconds. Validated on construction (ConfigError)."""

    node_name: str
    chain_id: int
    genesis_hash: bytes
    listen_host: str = "127.0.0.1"
    listen_port: int = 0  # 0: an ephemeral port, see P2PNode.listen_port
    peers: tuple[PeerAddress, ...] = ()
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    handshake_timeout: float = 10.0  # TCP accept/connect to end of the TLS handshake
    hello_timeout: float = 10.0  # end of TLS to a complete hello from the peer
    frame_timeout: float = 30.0  # a started frame must be complete within this
    idle_timeout: float = 60.0  # a peer silent this long is disconnected (it should ping)
    ping_interval: float = 15.0  # send a ping when nothing else was sent this long
    write_timeout: float = 30.0  # a peer that does not read a batch of frames within this is dropped
    connect_timeout: float = 10.0
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    send_queue_frames: int = 4096
    send_queue_bytes: int = 32 * 1024 * 1024
    send_overflow: SendOverflow = "close"
    inbound_queue_frames: int = 1024
    max_strikes: int = 3
    gossip_cache_size: int = 65536
    max_peers: int = 64
    max_pending_handshakes: int = 32
    max_inflight_requests: int = 16  # requests from one peer served at once; more are answered "busy"
    request_timeout: float = 10.0
    retire_grace: float = 5.0  # how long a duplicate connection may drain before it is aborted

    def __post_init__(self) -> None:
        try:
            check_name(self.node_name, "node name")
        except InvalidInput as exc:
            raise ConfigError(f"p2p: {exc.message}") from exc
        if (
            not isinstance(self.chain_id, int)
            or isinstance(self.chain_id, bool)
            or not 0 <= self.chain_id < 2**64
        ):
            raise ConfigError(f"p2p: chain id must be an integer in 0..2**64-1, got {self.chain_id!r}")
        if not isinstance(self.genesis_hash, bytes) or len(self.genesis_hash) != 32:
            raise ConfigError("p2p: genesis hash must be 32 bytes")
        if not isinstance(self.listen_port, int) or not 0 <= self.listen_port <= 65535:
            raise ConfigError(f"p2p: listen port must be in 0..65535, got {self.listen_port!r}")
        try:
            peers = tuple(PeerAddress(*peer) for peer in self.peers)
        except TypeError as exc:
            raise ConfigError("p2p: each peer must be (node_name, host, port)") from exc
        for peer in peers:
            _check_address(peer)
        object.__setattr__(self, "peers", peers)
        if not 1024 <= self.max_frame_size <= MAX_FRAME_SIZE_LIMIT:
            raise ConfigError(f"p2p: max_frame_size must be in 1024..{MAX_FRAME_SIZE_LIMIT} bytes")
        if self.send_queue_bytes < self.max_frame_size + HEADER_SIZE:
            raise ConfigError("p2p: send_queue_bytes must hold at least one frame of max_frame_size")
        for name in (
            "handshake_timeout",
            "hello_timeout",
            "frame_timeout",
            "idle_timeout",
            "ping_interval",
            "write_timeout",
            "connect_timeout",
            "backoff_base",
            "backoff_cap",
            "request_timeout",
            "retire_grace",
        ):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ConfigError(f"p2p: {name} must be a positive number of seconds, got {value!r}")
        if self.ping_interval >= self.idle_timeout:
            raise ConfigError(
                "p2p: ping_interval must be shorter than idle_timeout (or live peers are dropped)"
            )
        if self.backoff_cap < self.backoff_base:
            raise ConfigError("p2p: backoff_cap must be at least backoff_base")
        for name in (
            "send_queue_frames",
            "inbound_queue_frames",
            "max_strikes",
            "gossip_cache_size",
            "max_peers",
            "max_pending_handshakes",
            "max_inflight_requests",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"p2p: {name} must be a whole number >= 1, got {value!r}")
        if self.send_overflow not in ("close", "drop_oldest"):
            raise ConfigError("p2p: send_overflow must be 'close' or 'drop_oldest'")


@dataclass(frozen=True)
class PeerInfo:
    """A connected peer as seen now."""

    name: str
    agency: str
    outbound: bool  # this node dialed the connection that carries traffic
    remote: str  # host:port of the other end
    connected_since: float  # unix time
    send_queue_frames: int
    send_queue_bytes: int
    strikes: int


@dataclass(frozen=True)
class DialStatus:
    """The dialer of one configured peer address."""

    address: PeerAddress
    connected: bool
    failures: int  # consecutive failed attempts since the last successful hello
    last_error: str | None
    recent_delays: tuple[float, ...]  # the last back-off delays slept, oldest first


def compute_backoff(failures: int, *, base: float, cap: float, rng: random.Random) -> float:
    """The delay before the next dial after ``failures`` consecutive failures (0: after a clean
    disconnect). With ``d = min(cap, base * 2**failures)`` it lies in ``[d/2, d]`` ("equal jitter"):
    it never decreases from one failure to the next until it reaches the cap, and never exceeds it."""
    ceiling = min(cap, base * 2.0 ** min(max(failures, 0), 64))
    return ceiling / 2 + rng.random() * ceiling / 2


# --------------------------------------------------------------------------- internals


class _Connection:
    """One established (authenticated, hello done) TLS connection to a peer."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        conn_id: int,
        outbound: bool,
        subject: CertSubject,
        remote: str,
    ) -> None:
        assert subject.node is not None
        self.reader = reader
        self.writer = writer
        self.id = conn_id
        self.outbound = outbound
        self.subject = subject
        self.peer_name: str = subject.node
        self.remote = remote
        self.connected_since = time.time()
        self.queue: deque[bytes] = deque()
        self.queued_bytes = 0
        self.wakeup = asyncio.Event()
        self.stopping = False  # no new frames: the writer flushes what is queued, then stops
        self.close_after_flush = False
        self.retiring = False  # a duplicate, draining until the peer's bye
        self.peer_retired = False  # the peer said this connection is a duplicate (its bye came first)
        self.closed = False
        self.reason: str | None = None
        self.strikes = 0
        self.inflight = 0
        self.task: asyncio.Task[None] | None = None
        self.writer_task: asyncio.Task[None] | None = None
        self.timers: list[asyncio.TimerHandle] = []


class _Peer:
    """A peer that is up: one active connection (plus duplicates being retired) and its dispatcher."""

    def __init__(
        self, name: str, subject: CertSubject, inbound_frames: int, previous: asyncio.Task[None] | None
    ):
        self.name = name
        self.subject = subject
        self.active: _Connection | None = None
        self.connections: set[_Connection] = set()
        self.inbound: asyncio.Queue[tuple[str, Any] | None] = asyncio.Queue(maxsize=inbound_frames)
        self.up = asyncio.Event()
        self.gone = asyncio.Event()
        self.down_reason = "closed"
        self.previous = previous
        self.dispatcher: asyncio.Task[None] | None = None


class _Dialer:
    def __init__(self, address: PeerAddress) -> None:
        self.address = address
        self.failures = 0
        self.last_error: str | None = None
        self.delays: deque[float] = deque(maxlen=_RECENT_DELAYS)
        self.task: asyncio.Task[None] | None = None


# --------------------------------------------------------------------------- the node


class P2PNode:
    """A node's transport: listens, dials the configured peers (reconnecting with capped, jittered
    exponential back-off), authenticates every peer and moves messages between them.

    All methods must be called from the event loop that ran ``start()``. ``send``, ``broadcast``
    and ``gossip`` never block: they queue frames and return. Message types starting with ``p2p.``
    are reserved for the transport itself.
    """

    def __init__(
        self,
        config: P2PConfig,
        identity: TlsIdentity,
        *,
        is_allowed: AllowPolicy,
        on_message: MessageHandler | None = None,
        on_request: RequestHandler | None = None,
        on_peer_up: PeerUpHandler | None = None,
        on_peer_down: PeerDownHandler | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.config = config
        self.name = config.node_name
        self._is_allowed = is_allowed
        self._on_message = on_message
        self._on_request = on_request
        self._on_peer_up = on_peer_up
        self._on_peer_down = on_peer_down
        self._rng = rng if rng is not None else random.Random()
        self._clock = clock if clock is not None else _utc_now
        self._ca_pem = identity.read_ca_cert()
        self._check_own_certificate(identity)
        self._server_ctx = build_server_context(identity)
        self._client_ctx = build_client_context(identity)
        self._hello_frame = encode_frame(
            MSG_HELLO, [PROTOCOL_VERSION, config.chain_id, config.genesis_hash, config.node_name]
        )
        self._ping_frame = encode_frame(MSG_PING, [])
        self._gossip = GossipFilter(config.gossip_cache_size)
        self._listen_sock: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._listen_port: int | None = None
        self._peers: dict[str, _Peer] = {}
        self._dispatchers: dict[str, asyncio.Task[None]] = {}
        self._conns: set[_Connection] = set()
        self._handshaking: set[socket.socket] = set()
        self._dialers: dict[str, _Dialer] = {}
        self._wanted: dict[str, PeerAddress] = {a.name: a for a in config.peers if a.name != self.name}
        self._pending: dict[tuple[str, int], asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._conn_ids = itertools.count(1)
        self._request_ids = itertools.count(1)
        self._closing = False
        self._closed = False
        self._counters: dict[str, int] = dict.fromkeys(
            (
                "frames_in",
                "frames_out",
                "writes_out",
                "bytes_in",
                "bytes_out",
                "connections_inbound",
                "connections_outbound",
                "handshakes_failed",
                "dial_attempts",
                "dial_failures",
                "send_dropped",
                "strikes",
                "handler_errors",
                "gossip_sent",
                "gossip_received",
                "gossip_duplicates",
                "requests_sent",
                "requests_timed_out",
                "requests_failed",
                "requests_served",
                "requests_busy",
                "responses_unmatched",
            ),
            0,
        )
        self._disconnects: dict[str, int] = {}
        self._refusal_window = 0.0
        self._refusal_logs = 0

    # ----------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Listen on ``listen_host:listen_port`` and start dialing the configured peers."""
        if self._listen_sock is not None or self._closing:
            raise RuntimeError("P2PNode.start() may be called once, before close()")
        self._listen_sock = await _listen(self.config.listen_host, self.config.listen_port)
        self._listen_port = int(self._listen_sock.getsockname()[1])
        self._accept_task = self._spawn(self._accept_loop(self._listen_sock))
        log_event(
            log,
            logging.INFO,
            "p2p listening",
            node=self.name,
            address=f"{self.config.listen_host}:{self._listen_port}",
        )
        self.set_peers(list(self._wanted.values()))

    @property
    def listen_port(self) -> int:
        """The TCP port the node listens on (after ``start()``)."""
        if self._listen_port is None:
            raise RuntimeError("the node is not listening yet: call start() first")
        return self._listen_port

    async def close(self) -> None:
        """Stop listening and dialing, say bye to every peer, close every connection and wait for the
        tasks to end. Messages not yet handed to ``on_message`` are dropped; ``on_peer_down`` is
        called (reason ``shutdown``) for each peer that was up; pending requests fail with
        PeerUnavailable. Idempotent."""
        if self._closed:
            return
        self._closing = True
        if self._accept_task is not None:
            self._accept_task.cancel()
            await asyncio.wait([self._accept_task])
        if self._listen_sock is not None:
            self._listen_sock.close()
        for dialer in self._dialers.values():
            if dialer.task is not None:
                dialer.task.cancel()
        for conn in list(self._conns):
            self._finish(conn, "shutdown", close_after_flush=True)
        conn_tasks = [c.task for c in self._conns if c.task is not None]
        if conn_tasks:
            await asyncio.wait(conn_tasks, timeout=_CLOSE_GRACE)
        for conn in list(self._conns):
            self._close(conn, "shutdown")
        if conn_tasks:
            await asyncio.wait(conn_tasks, timeout=_CLOSE_GRACE)
        dispatchers = [t for t in self._dispatchers.values() if not t.done()]
        if dispatchers:
            await asyncio.wait(dispatchers, timeout=_CLOSE_GRACE)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(PeerUnavailable("the p2p node is closed"))
        self._pending.clear()
        self._closed = True
        log_event(log, logging.INFO, "p2p closed", node=self.name)

    async def __aenter__(self) -> P2PNode:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def set_peers(self, peers: Iterable[PeerAddress | tuple[str, str, int]]) -> None:
        """Dial exactly these peers from now on (by node name; before ``start()`` this replaces
        ``config.peers``): new ones are dialed at once, dialers of peers no longer listed stop (an
        existing connection stays; use ``disconnect`` to drop it)."""
        wanted: dict[str, PeerAddress] = {}
        for item in peers:
            address = PeerAddress(*item)
            _check_address(address)
            if address.name != self.name:
                wanted[address.name] = address
        self._wanted = wanted
        for name, dialer in list(self._dialers.items()):
            if wanted.get(name) != dialer.address:
                if dialer.task is not None:
                    dialer.task.cancel()
                del self._dialers[name]
        if self._closing or self._listen_sock is None:
            return
        for name, address in wanted.items():
            if name not in self._dialers:
                dialer = _Dialer(address)
                self._dialers[name] = dialer
                dialer.task = self._spawn(self._dial_loop(dialer))

    # ----------------------------------------------------------------------- sending

    def send(self, peer_name: str, msg_type: str, body: Any) -> bool:
        """Queue one message for ``peer_name``; False if that peer is not connected (or its queue
        overflowed). Raises FrameError/TypeError/ValueError if the message cannot be framed."""
        frame = encode_frame(_user_type(msg_type), body, max_frame_size=self.config.max_frame_size)
        return self._send_frame(peer_name, frame)

    def broadcast(self, msg_type: str, body: Any, *, exclude: Iterable[str] = ()) -> int:
        """Queue one message for every connected peer not in ``exclude``; the number of peers queued."""
        frame = encode_frame(_user_type(msg_type), body, max_frame_size=self.config.max_frame_size)
        return self._send_to_all(frame, exclude)

    def gossip(self, msg_type: str, body: Any, *, exclude: Iterable[str] = ()) -> int:
        """Send an item to every connected peer not in ``exclude`` unless this node already did (items
        are identified by ``compute_gossip_id``). Receivers deliver it to ``on_message`` once and
        decide themselves whether to forward it (by calling ``gossip`` again, excluding the sender).
        The number of peers queued (0 if already forwarded)."""
        item_id = compute_gossip_id(_user_type(msg_type), body)
        self._gossip.mark_received(item_id)
        if self._gossip.is_forwarded(item_id):
            return 0
        frame = encode_frame(MSG_GOSSIP, [msg_type, body], max_frame_size=self.config.max_frame_size)
        sent = self._send_to_all(frame, exclude)
        if sent:
            self._gossip.mark_forwarded(item_id)
            self._counters["gossip_sent"] += sent
        return sent

    async def request(self, peer_name: str, msg_type: str, body: Any, *, timeout: float | None = None) -> Any:
        """Send a request and return the body of the peer's response (its ``on_request`` result).
        Raises PeerUnavailable if the peer is not connected or disconnects first, RequestTimeout after
        ``timeout`` seconds (default ``request_timeout``), RequestFailed if the peer answered an error."""
        timeout = self.config.request_timeout if timeout is None else timeout
        request_id = next(self._request_ids)
        frame = encode_frame(
            MSG_REQUEST, [request_id, _user_type(msg_type), body], max_frame_size=self.config.max_frame_size
        )
        key = (peer_name, request_id)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            if not self._send_frame(peer_name, frame):
                raise PeerUnavailable(f"not connected to peer {peer_name!r}")
            self._counters["requests_sent"] += 1
            try:
                async with asyncio.timeout(timeout):
                    return await future
            except TimeoutError:
                self._counters["requests_timed_out"] += 1
                raise RequestTimeout(
                    f"peer {peer_name!r} did not answer {msg_type!r} within {timeout} s"
                ) from None
        finally:
            self._pending.pop(key, None)

    # ----------------------------------------------------------------------- peers

    def connected_peers(self) -> list[str]:
        """Names of the peers that are up, sorted."""
        return sorted(name for name, peer in self._peers.items() if peer.active is not None)

    def get_peer_certificate(self, peer_name: str) -> bytes | None:
        """The DER certificate ``peer_name`` presented in the TLS handshake of its live connection
        (None if it is not connected): lets a service bind a request to the authenticated session."""
        peer = self._peers.get(peer_name)
        conn = peer.active if peer is not None else None
        if conn is None:
            return None
        ssl_object = conn.writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        return bytes(der) if der else None

    def is_connected(self, peer_name: str) -> bool:
        """Whether ``peer_name`` is up with a connection that carries traffic."""
        peer = self._peers.get(peer_name)
        return peer is not None and peer.active is not None

    def get_peers(self) -> list[PeerInfo]:
        """Every connected peer, sorted by name."""
        out = []
        for name in self.connected_peers():
            conn = self._peers[name].active
            assert conn is not None
            out.append(
                PeerInfo(
                    name=name,
                    agency=conn.subject.agency,
                    outbound=conn.outbound,
                    remote=conn.remote,
                    connected_since=conn.connected_since,
                    send_queue_frames=len(conn.queue),
                    send_queue_bytes=conn.queued_bytes,
                    strikes=conn.strikes,
                )
            )
        return out

    def get_dial_status(self) -> list[DialStatus]:
        """The dialer of each configured peer, sorted by name."""
        return [
            DialStatus(
                address=d.address,
                connected=self.is_connected(name),
                failures=d.failures,
                last_error=d.last_error,
                recent_delays=tuple(d.delays),
            )
            for name, d in sorted(self._dialers.items())
        ]

    def get_metrics(self) -> dict[str, int | dict[str, int]]:
        """Counters since start (frames and bytes in/out, handshake and dial failures, strikes, gossip and
        request counts), current ``peers``/``connections``, and ``disconnects`` by reason."""
        out: dict[str, int | dict[str, int]] = dict(self._counters)
        out["peers"] = len(self.connected_peers())
        out["connections"] = len(self._conns)
        out["disconnects"] = dict(sorted(self._disconnects.items()))
        return out

    def strike(self, peer_name: str, reason: str) -> None:
        """Count one strike against the peer (e.g. it sent an invalid block); after ``max_strikes`` its
        connection is closed (reason ``misbehaviour``)."""
        peer = self._peers.get(peer_name)
        if peer is not None and peer.active is not None:
            self._strike(peer.active, "misbehaviour", reason)

    def disconnect(self, peer_name: str, reason: str = "peer_removed") -> None:
        """Close every connection to ``peer_name`` (it may reconnect if it is still allowed)."""
        peer = self._peers.get(peer_name)
        if peer is not None:
            for conn in list(peer.connections):
                self._finish(conn, reason, close_after_flush=True)

    def revalidate_peers(self) -> list[str]:
        """Check every connection again (certificate valid now, ``is_allowed``), e.g. after a membership
        change, and close those that fail (reason ``not_allowed`` / ``invalid_certificate``); the names
        of the peers disconnected."""
        dropped = set()
        for conn in list(self._conns):
            if conn.closed:
                continue
            try:
                verify_peer(
                    conn.writer.get_extra_info("ssl_object"),
                    self._ca_pem,
                    at=self._clock(),
                    is_allowed=self._is_allowed,
                )
            except PeerRefused as exc:
                self._close(conn, exc.reason, exc.message)
                dropped.add(conn.peer_name)
        return sorted(dropped)

    # ----------------------------------------------------------------------- accepting and dialing

    async def _accept_loop(self, listen_sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, peername = await loop.sock_accept(listen_sock)
            except OSError as exc:  # e.g. out of file descriptors: keep the listener, slow down
                log_event(log, logging.ERROR, "p2p accept failed", node=self.name, detail=str(exc))
                await asyncio.sleep(0.5)
                continue
            remote = _format_address(peername)
            if len(self._handshaking) >= self.config.max_pending_handshakes:
                self._refused(
                    remote,
                    None,
                    "too_many_handshakes",
                    f"{len(self._handshaking)} handshakes already pending",
                )
                sock.close()
                continue
            self._spawn(self._serve_inbound(sock, remote))

    async def _serve_inbound(self, sock: socket.socket, remote: str) -> None:
        # The TLS handshake runs on the accepted socket before any byte of it is read into a stream,
        # so nothing the peer sent early can be lost (as it can with start_tls on a started stream).
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=_STREAM_LIMIT)
        protocol = asyncio.StreamReaderProtocol(reader)
        self._handshaking.add(sock)
        try:
            try:
                async with asyncio.timeout(self.config.handshake_timeout + 1.0):
                    transport, _ = await loop.connect_accepted_socket(
                        lambda: protocol,
                        sock,
                        ssl=self._server_ctx,
                        ssl_handshake_timeout=self.config.handshake_timeout,
                    )
            except Exception as exc:  # any TLS failure: wrong CA, expired, no certificate, not TLS, timeout
                self._refused(remote, None, "tls_failed", describe_tls_error(exc))
                return
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            conn = await self._establish(reader, writer, outbound=False, expected=None, remote=remote)
        finally:
            self._handshaking.discard(sock)
        if not isinstance(conn, str):
            await self._run_connection(conn)

    async def _dial_loop(self, dialer: _Dialer) -> None:
        name = dialer.address.name
        while not self._closing:
            peer = self._peers.get(name)
            if peer is not None:
                await peer.gone.wait()
                await self._backoff(dialer, 0)
                continue
            if await self._dial_once(dialer):
                dialer.failures = 0
                dialer.last_error = None
                continue
            dialer.failures += 1
            self._counters["dial_failures"] += 1
            await self._backoff(dialer, dialer.failures)

    async def _backoff(self, dialer: _Dialer, failures: int) -> None:
        delay = compute_backoff(
            failures, base=self.config.backoff_base, cap=self.config.backoff_cap, rng=self._rng
        )
        dialer.delays.append(delay)
        await asyncio.sleep(delay)

    async def _dial_once(self, dialer: _Dialer) -> bool:
        host, port = dialer.address.host, dialer.address.port
        remote = f"{host}:{port}"
        self._counters["dial_attempts"] += 1
        try:
            async with asyncio.timeout(self.config.connect_timeout + self.config.handshake_timeout):
                reader, writer = await asyncio.open_connection(
                    host,
                    port,
                    ssl=self._client_ctx,
                    ssl_handshake_timeout=self.config.handshake_timeout,
                    limit=_STREAM_LIMIT,
                )
        except Exception as exc:  # refused, unreachable, TLS failure (wrong CA, expired certificate), timeout
            dialer.last_error = describe_tls_error(exc)
            level = logging.WARNING if isinstance(exc, ssl.SSLError) else logging.INFO
            if isinstance(exc, ssl.SSLError):
                self._counters["handshakes_failed"] += 1
                self._count_disconnect("tls_failed")
            log_event(
                log,
                level,
                "p2p dial failed",
                node=self.name,
                peer=dialer.address.name,
                remote=remote,
                failures=dialer.failures + 1,
                detail=dialer.last_error,
            )
            return False
        conn = await self._establish(
            reader, writer, outbound=True, expected=dialer.address.name, remote=remote
        )
        if isinstance(conn, str):
            dialer.last_error = conn
            return False
        conn.task = self._spawn(self._run_connection(conn))
        return True

    async def _establish(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        outbound: bool,
        expected: str | None,
        remote: str,
    ) -> _Connection | str:
        """Authenticate the peer, exchange hellos and register the connection; if refused, why."""
        try:
            conn = await self._handshake(reader, writer, outbound=outbound, expected=expected, remote=remote)
            refusal = self._register(conn)
            if refusal is not None:
                raise refusal
        except PeerRefused as exc:
            writer.transport.abort()
            return self._refused(remote, expected, exc.reason, exc.message)
        except (ssl.SSLError, ConnectionError, OSError) as exc:
            writer.transport.abort()
            return self._refused(
                remote,
                expected,
                "hello_failed",
                "the connection failed during the hello (the peer may have refused this node's certificate "
                f"or membership): {describe_tls_error(exc)}",
            )
        except Exception as exc:  # never let a peer crash the node
            log.exception(
                "p2p: unexpected error while setting up a connection", extra={"fields": {"remote": remote}}
            )
            writer.transport.abort()
            return self._refused(remote, expected, "internal_error", repr(exc))
        self._counters["connections_outbound" if outbound else "connections_inbound"] += 1
        return conn

    async def _handshake(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        outbound: bool,
        expected: str | None,
        remote: str,
    ) -> _Connection:
        subject = verify_peer(
            writer.get_extra_info("ssl_object"), self._ca_pem, at=self._clock(), is_allowed=self._is_allowed
        )
        name = subject.node
        assert name is not None
        if expected is not None and name != expected:
            raise PeerRefused(
                "unexpected_peer", f"dialed {expected!r} at {remote} but its certificate names node {name!r}"
            )
        if name == self.name:
            raise PeerRefused("self_connection", f"{remote} is this node itself ({name!r})")
        timeout = self.config.hello_timeout
        try:
            async with asyncio.timeout(timeout):
                writer.write(self._hello_frame)
                await writer.drain()
                payload = await read_frame(
                    reader, max_frame_size=MAX_HELLO_SIZE, idle_timeout=None, frame_timeout=timeout
                )
                self._counters["frames_out"] += 1
                self._counters["bytes_out"] += len(self._hello_frame)
                self._counters["frames_in"] += 1
                self._counters["bytes_in"] += HEADER_SIZE + len(payload)
        except TimeoutError as exc:
            raise PeerRefused("hello_timeout", f"no complete hello from {name!r} within {timeout} s") from exc
        except FrameTooLarge as exc:
            raise PeerRefused("frame_too_large", f"hello from {name!r} refused: {exc.message}") from exc
        try:
            msg_type, body = decode_payload(payload)
        except FrameError as exc:
            raise PeerRefused("protocol_error", f"malformed hello from {name!r}: {exc.message}") from exc
        self._check_hello(name, msg_type, body)
        return _Connection(
            reader, writer, conn_id=next(self._conn_ids), outbound=outbound, subject=subject, remote=remote
        )

    def _check_hello(self, name: str, msg_type: str, body: Any) -> None:
        if (
            msg_type != MSG_HELLO
            or not isinstance(body, list)
            or len(body) != 4
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in body[:2])
            or not isinstance(body[2], bytes)
            or not isinstance(body[3], str)
        ):
            raise PeerRefused("protocol_error", f"{name!r} did not start with a well-formed hello")
        version, chain_id, genesis_hash, hello_name = body
        if version != PROTOCOL_VERSION:
            raise PeerRefused(
                "hello_mismatch", f"{name!r} speaks protocol version {version}, this node {PROTOCOL_VERSION}"
            )
        if chain_id != self.config.chain_id:
            raise PeerRefused(
                "wrong_chain", f"{name!r} is on chain id {chain_id}, this node on {self.config.chain_id}"
            )
        if genesis_hash != self.config.genesis_hash:
            raise PeerRefused(
                "wrong_chain",
                f"{name!r} has genesis 0x{genesis_hash.hex()[:64]}, this node 0x{self.config.genesis_hash.hex()}",
            )
        if hello_name != name:
            raise PeerRefused(
                "hello_mismatch", f"hello names node {hello_name[:64]!r} but the certificate names {name!r}"
            )

    def _register(self, conn: _Connection) -> PeerRefused | None:
        if self._closing:
            return PeerRefused("shutdown", "this node is closing")
        peer = self._peers.get(conn.peer_name)
        if peer is None:
            if len(self._peers) >= self.config.max_peers:
                return PeerRefused("too_many_peers", f"already {len(self._peers)} peers (max_peers)")
            peer = _Peer(
                conn.peer_name,
                conn.subject,
                self.config.inbound_queue_frames,
                self._dispatchers.get(conn.peer_name),
            )
            self._peers[peer.name] = peer
            peer.active = conn
            peer.connections.add(conn)
            peer.dispatcher = self._spawn(self._dispatch(peer))
            self._dispatchers[peer.name] = peer.dispatcher
            self._conns.add(conn)
            log_event(
                log,
                logging.INFO,
                "p2p peer up",
                node=self.name,
                peer=peer.name,
                agency=conn.subject.agency,
                remote=conn.remote,
                direction="outbound" if conn.outbound else "inbound",
            )
            return None
        peer.connections.add(conn)
        self._conns.add(conn)
        old = peer.active
        if old is None or self._prefer(conn, old):
            peer.active = conn
            peer.subject = conn.subject
            if old is not None:
                # Frames not yet written move to the surviving connection, in order.
                conn.queue.extend(old.queue)
                conn.queued_bytes += old.queued_bytes
                old.queue.clear()
                old.queued_bytes = 0
                conn.wakeup.set()
                self._retire(old)
        else:
            self._retire(conn)
        return None

    def _prefer(self, new: _Connection, old: _Connection) -> bool:
        """Whether ``new`` should carry the traffic instead of ``old``; both ends decide alike."""
        if old.retiring or old.closed or old.peer_retired:
            return True
        new_dialer = self.name if new.outbound else new.peer_name
        old_dialer = self.name if old.outbound else old.peer_name
        if new_dialer == old_dialer:
            return True  # the peer reconnected: the older connection is likely dead
        return new_dialer == min(self.name, new.peer_name)

    def _retire(self, conn: _Connection) -> None:
        conn.retiring = True
        log_event(
            log,
            logging.DEBUG,
            "p2p retiring a duplicate connection",
            node=self.name,
            peer=conn.peer_name,
            remote=conn.remote,
        )
        # Keep reading until the peer's bye, unless it came already.
        self._finish(conn, "duplicate", close_after_flush=conn.peer_retired)
        conn.timers.append(
            asyncio.get_running_loop().call_later(
                self.config.retire_grace, self._close, conn, "duplicate", "the peer did not say bye in time"
            )
        )

    # ----------------------------------------------------------------------- one connection

    async def _run_connection(self, conn: _Connection) -> None:
        if conn.task is None:
            conn.task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        conn.writer_task = self._spawn(self._write_loop(conn))
        expires_in = (conn.subject.not_after - self._clock()).total_seconds()
        conn.timers.append(
            loop.call_later(
                max(expires_in, 0.0),
                self._close,
                conn,
                "invalid_certificate",
                "the peer's certificate expired",
            )
        )
        try:
            await self._read_loop(conn)
        except FrameTooLarge as exc:
            self._close(conn, "frame_too_large", f"{exc.message}; disconnecting")
        except IdleTimeout as exc:
            self._close(conn, "idle_timeout", exc.message)
        except FrameTimeout as exc:
            self._close(conn, "frame_timeout", exc.message)
        except PeerClosed as exc:
            self._close(conn, "closed_by_peer", exc.message, graceful=True)
        except (ssl.SSLError, ConnectionError, OSError) as exc:
            self._close(conn, "io_error", describe_tls_error(exc))
        except asyncio.CancelledError:
            self._close(conn, "shutdown")
            raise
        except Exception as exc:  # a bug here must cost one connection, never the node
            log.exception("p2p: unexpected error on a connection", extra={"fields": {"peer": conn.peer_name}})
            self._close(conn, "internal_error", repr(exc))
        finally:
            if not conn.closed:
                self._close(conn, "closed_by_peer", graceful=True)
            self._on_connection_ended(conn)

    async def _read_loop(self, conn: _Connection) -> None:
        config = self.config
        while not conn.closed:
            payload = await read_frame(
                conn.reader,
                max_frame_size=config.max_frame_size,
                idle_timeout=config.idle_timeout,
                frame_timeout=config.frame_timeout,
            )
            if conn.closed:
                return
            self._counters["frames_in"] += 1
            self._counters["bytes_in"] += HEADER_SIZE + len(payload)
            try:
                msg_type, body = decode_payload(payload)
            except FrameError as exc:
                self._strike(conn, "garbage", exc.message)
                continue
            if msg_type.startswith(CONTROL_PREFIX):
                await self._on_control(conn, msg_type, body)
            else:
                await self._deliver(conn, msg_type, body)

    async def _on_control(self, conn: _Connection, msg_type: str, body: Any) -> None:
        if msg_type == MSG_PING:
            return
        if msg_type == MSG_BYE:
            said = body[0] if isinstance(body, list) and body and isinstance(body[0], str) else "?"
            if said == "duplicate" and not conn.retiring:
                # The peer already holds the connection both ends prefer; it keeps reading this one
                # until our bye, which we send once that connection is registered here too.
                conn.peer_retired = True
                return
            self._close(conn, "closed_by_peer", f"the peer said bye: {said[:64]!r}", graceful=True)
            return
        if msg_type == MSG_REQUEST:
            self._on_request_frame(conn, body)
            return
        if msg_type == MSG_RESPONSE:
            self._on_response_frame(conn, body)
            return
        if msg_type == MSG_GOSSIP:
            if not (isinstance(body, list) and len(body) == 2 and _is_user_type(body[0])):
                self._strike(conn, "protocol_error", "malformed gossip frame")
                return
            self._counters["gossip_received"] += 1
            if not self._gossip.mark_received(compute_gossip_id(body[0], body[1])):
                self._counters["gossip_duplicates"] += 1
                return
            await self._deliver(conn, body[0], body[1])
            return
        self._strike(conn, "protocol_error", f"unexpected control message {msg_type!r}")

    async def _deliver(self, conn: _Connection, msg_type: str, body: Any) -> None:
        peer = self._peers.get(conn.peer_name)
        if peer is None or conn not in peer.connections or self._closing:
            return
        await peer.inbound.put((msg_type, body))  # waits when full: back-pressure on this peer

    def _on_request_frame(self, conn: _Connection, body: Any) -> None:
        if not (
            isinstance(body, list)
            and len(body) == 3
            and isinstance(body[0], int)
            and not isinstance(body[0], bool)
            and _is_user_type(body[1])
        ):
            self._strike(conn, "protocol_error", "malformed request frame")
            return
        request_id, msg_type, request_body = body
        if conn.inflight >= self.config.max_inflight_requests:
            self._counters["requests_busy"] += 1
            self._send_frame(
                conn.peer_name, self._error_response(request_id, "busy: too many requests in flight")
            )
            return
        conn.inflight += 1
        self._spawn(self._serve_request(conn, request_id, msg_type, request_body))

    async def _serve_request(self, conn: _Connection, request_id: int, msg_type: str, body: Any) -> None:
        try:
            frame = await self._answer(conn.peer_name, request_id, msg_type, body)
        finally:
            conn.inflight -= 1
        self._counters["requests_served"] += 1
        self._send_frame(conn.peer_name, frame)

    async def _answer(self, peer_name: str, request_id: int, msg_type: str, body: Any) -> bytes:
        """The response frame to one request: the handler's result, or an error message for the peer."""
        peer = self._peers.get(peer_name)
        if peer is not None:
            await peer.up.wait()  # on_peer_up comes first
        if self._on_request is None:
            return self._error_response(request_id, "this node serves no requests")
        try:
            result = await self._on_request(peer_name, msg_type, body)
        except ChainshareError as exc:
            return self._error_response(request_id, exc.message)
        except Exception:  # the application's bug: the peer learns only that it failed
            self._counters["handler_errors"] += 1
            log.exception(
                "p2p: request handler failed", extra={"fields": {"peer": peer_name, "msg_type": msg_type}}
            )
            return self._error_response(request_id, "internal error")
        try:
            return encode_frame(
                MSG_RESPONSE, [request_id, True, result], max_frame_size=self.config.max_frame_size
            )
        except (FrameError, TypeError, ValueError) as exc:
            log_event(
                log,
                logging.WARNING,
                "p2p response cannot be sent",
                node=self.name,
                peer=peer_name,
                msg_type=msg_type,
                detail=str(exc),
            )
            return self._error_response(request_id, f"the response cannot be sent: {exc}")

    @staticmethod
    def _error_response(request_id: int, error: str) -> bytes:
        return encode_frame(MSG_RESPONSE, [request_id, False, error[:MAX_ERROR_LENGTH]])

    def _on_response_frame(self, conn: _Connection, body: Any) -> None:
        if not (
            isinstance(body, list)
            and len(body) == 3
            and isinstance(body[0], int)
            and not isinstance(body[0], bool)
            and isinstance(body[1], bool)
            and (body[1] or isinstance(body[2], str))
        ):
            self._strike(conn, "protocol_error", "malformed response frame")
            return
        request_id, ok, answer = body
        future = self._pending.pop((conn.peer_name, request_id), None)
        if future is None or future.done():
            self._counters["responses_unmatched"] += 1  # late (timed out) or unknown: ignored
            return
        if ok:
            future.set_result(answer)
        else:
            self._counters["requests_failed"] += 1
            future.set_exception(
                RequestFailed(f"peer {conn.peer_name!r} answered an error: {answer[:MAX_ERROR_LENGTH]}")
            )

    async def _write_loop(self, conn: _Connection) -> None:
        writer = conn.writer
        try:
            while not conn.closed:
                if not conn.queue:
                    if conn.stopping:
                        if conn.close_after_flush:
                            self._close(conn, conn.reason or "shutdown", graceful=True)
                        return
                    conn.wakeup.clear()
                    try:
                        async with asyncio.timeout(self.config.ping_interval):
                            await conn.wakeup.wait()
                    except TimeoutError:
                        conn.queue.append(self._ping_frame)
                        conn.queued_bytes += len(self._ping_frame)
                    continue
                # Frames queued together leave in one write: one TLS record run and one send()
                # instead of one per frame (a busy validator queues tx batches, votes and
                # announcements between two turns of this loop).
                batch = 0
                frames: list[bytes] = []
                while conn.queue and batch < _WRITE_BATCH_BYTES:
                    frame = conn.queue.popleft()
                    conn.queued_bytes -= len(frame)
                    frames.append(frame)
                    batch += len(frame)
                writer.write(frames[0] if len(frames) == 1 else b"".join(frames))
                self._counters["frames_out"] += len(frames)
                self._counters["writes_out"] += 1
                self._counters["bytes_out"] += batch
                async with asyncio.timeout(self.config.write_timeout):
                    await writer.drain()
        except TimeoutError:
            self._close(conn, "write_timeout", f"the peer did not read for {self.config.write_timeout} s")
        except (ssl.SSLError, ConnectionError, OSError) as exc:
            self._close(conn, "io_error", describe_tls_error(exc))

    def _send_frame(self, peer_name: str, frame: bytes) -> bool:
        peer = self._peers.get(peer_name)
        conn = peer.active if peer is not None else None
        if conn is None or conn.stopping or conn.closed:
            self._counters["send_dropped"] += 1
            return False
        return self._enqueue(conn, frame)

    def _send_to_all(self, frame: bytes, exclude: Iterable[str]) -> int:
        skip = {exclude} if isinstance(exclude, str) else set(exclude)
        return sum(self._send_frame(name, frame) for name in list(self._peers) if name not in skip)

    def _enqueue(self, conn: _Connection, frame: bytes) -> bool:
        config = self.config
        size = len(frame)
        if len(conn.queue) >= config.send_queue_frames or conn.queued_bytes + size > config.send_queue_bytes:
            if config.send_overflow == "close":
                self._close(
                    conn,
                    "send_overflow",
                    f"send queue full ({len(conn.queue)} frames, {conn.queued_bytes} bytes): the peer is too slow",
                )
                self._counters["send_dropped"] += 1
                return False
            while conn.queue and (
                len(conn.queue) >= config.send_queue_frames
                or conn.queued_bytes + size > config.send_queue_bytes
            ):
                dropped = conn.queue.popleft()
                conn.queued_bytes -= len(dropped)
                self._counters["send_dropped"] += 1
        conn.queue.append(frame)
        conn.queued_bytes += size
        conn.wakeup.set()
        return True

    def _strike(self, conn: _Connection, reason: str, detail: str) -> None:
        conn.strikes += 1
        self._counters["strikes"] += 1
        log_event(
            log,
            logging.WARNING,
            "p2p peer misbehaved",
            node=self.name,
            peer=conn.peer_name,
            reason=reason,
            detail=detail,
            strikes=conn.strikes,
            max_strikes=self.config.max_strikes,
        )
        if conn.strikes >= self.config.max_strikes:
            self._close(conn, reason, f"{detail} (strike {conn.strikes} of {self.config.max_strikes})")

    def _finish(self, conn: _Connection, reason: str, *, close_after_flush: bool) -> None:
        """Stop queuing on ``conn``, send what is queued and a bye; then close (or, for a duplicate,
        keep reading until the peer's bye)."""
        if conn.closed or conn.stopping:
            return
        conn.stopping = True
        conn.close_after_flush = close_after_flush
        conn.reason = reason
        bye = encode_frame(MSG_BYE, [reason])
        conn.queue.append(bye)
        conn.queued_bytes += len(bye)
        conn.wakeup.set()

    def _close(self, conn: _Connection, reason: str, detail: str = "", *, graceful: bool = False) -> None:
        """Close ``conn`` now (idempotent); the first reason given (or set by ``_finish``) is the one counted."""
        if conn.closed:
            return
        conn.closed = True
        conn.reason = final = conn.reason or reason
        self._count_disconnect(final)
        level = logging.INFO if final in _BENIGN_REASONS else logging.WARNING
        log_event(
            log,
            level,
            "p2p disconnected",
            node=self.name,
            peer=conn.peer_name,
            remote=conn.remote,
            reason=final,
            detail=detail or reason,
        )
        for timer in conn.timers:
            timer.cancel()
        conn.timers.clear()
        if conn.writer_task is not None and conn.writer_task is not asyncio.current_task():
            conn.writer_task.cancel()
        transport = conn.writer.transport
        if graceful:
            transport.close()
            conn.timers.append(asyncio.get_running_loop().call_later(_CLOSE_GRACE, transport.abort))
        else:
            transport.abort()

    def _on_connection_ended(self, conn: _Connection) -> None:
        self._conns.discard(conn)
        peer = self._peers.get(conn.peer_name)
        if peer is None or conn not in peer.connections:
            return
        peer.connections.discard(conn)
        if peer.active is conn:
            peer.active = None
            peer.down_reason = conn.reason or "closed"
            for other in list(peer.connections):  # duplicates being retired go with it
                self._close(other, "duplicate", "the connection it duplicated closed")
        if peer.connections:
            return
        del self._peers[peer.name]
        if self._closing:
            peer.down_reason = "shutdown"
        peer.gone.set()
        for (name, _), future in list(self._pending.items()):
            if name == peer.name and not future.done():
                future.set_exception(PeerUnavailable(f"peer {name!r} disconnected before answering"))
        if self._closing:
            while not peer.inbound.empty():  # undelivered messages are dropped at shutdown
                peer.inbound.get_nowait()
        self._spawn(peer.inbound.put(None))
        log_event(log, logging.INFO, "p2p peer down", node=self.name, peer=peer.name, reason=peer.down_reason)

    async def _dispatch(self, peer: _Peer) -> None:
        if peer.previous is not None and not peer.previous.done():
            await asyncio.wait([peer.previous])  # the previous on_peer_down of this peer comes first
        if self._on_peer_up is not None:
            await self._call_handler("on_peer_up", self._on_peer_up, peer.name, peer.subject)
        peer.up.set()
        while (item := await peer.inbound.get()) is not None:
            if self._on_message is not None and not self._closing:
                await self._call_handler("on_message", self._on_message, peer.name, *item)
        if self._on_peer_down is not None:
            await self._call_handler("on_peer_down", self._on_peer_down, peer.name, peer.down_reason)

    async def _call_handler(
        self, what: str, handler: Callable[..., Awaitable[Any]], peer_name: str, *args: Any
    ) -> None:
        try:
            await handler(peer_name, *args)
        except Exception:  # the application's bug: log it, keep the peer and the node running
            self._counters["handler_errors"] += 1
            log.exception(f"p2p: {what} handler failed", extra={"fields": {"peer": peer_name}})

    # ----------------------------------------------------------------------- helpers

    def _refused(self, remote: str, expected: str | None, reason: str, detail: str) -> str:
        """Count and log a connection refused before it carried traffic; ``reason: detail``."""
        self._counters["handshakes_failed"] += 1
        self._count_disconnect(reason)
        # Anyone can open TCP connections: past a few warnings a second, refusals are logged at debug.
        now = time.monotonic()
        if now - self._refusal_window >= 1.0:
            self._refusal_window, self._refusal_logs = now, 0
        self._refusal_logs += 1
        quiet = self._closing or self._refusal_logs > _MAX_REFUSAL_WARNINGS_PER_SECOND
        log_event(
            log,
            logging.DEBUG if quiet else logging.WARNING,
            "p2p connection refused",
            node=self.name,
            remote=remote,
            peer=expected,
            reason=reason,
            detail=detail,
        )
        return f"{reason}: {detail}"

    def _count_disconnect(self, reason: str) -> None:
        self._disconnects[reason] = self._disconnects.get(reason, 0) + 1

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("p2p: task failed", exc_info=task.exception())

    def _check_own_certificate(self, identity: TlsIdentity) -> None:
        try:
            subject = verify_certificate(self._ca_pem, identity.read_cert(), at=self._clock())
        except CryptoError as exc:
            raise ConfigError(
                f"this node's certificate {identity.cert} cannot be used: {exc.message}"
            ) from exc
        if subject.node != self.name:
            raise ConfigError(
                f"this node's certificate {identity.cert} names node {subject.node!r}, "
                f"but the configuration names {self.name!r}"
            )
        try:
            self._is_allowed(subject)
        except PeerRefused as exc:  # every peer would refuse it: say so now instead of failing to connect
            raise ConfigError(
                f"this node's certificate {identity.cert} cannot be used: {exc} (issue a new one: "
                "`chainshare emergency rotate-tls`)"
            ) from exc


def _user_type(msg_type: str) -> str:
    if not _is_user_type(msg_type):
        raise FrameError(
            f"invalid message type {msg_type!r:.80}: use 1..64 printable ASCII characters "
            f"not starting with {CONTROL_PREFIX!r} (reserved)"
        )
    return msg_type


def _is_user_type(msg_type: object) -> bool:
    try:
        check_msg_type(msg_type)
    except FrameError:
        return False
    return isinstance(msg_type, str) and not msg_type.startswith(CONTROL_PREFIX)


def _check_address(address: PeerAddress) -> None:
    try:
        check_name(address.name, "peer node name")
    except InvalidInput as exc:
        raise ConfigError(f"p2p: {exc.message}") from exc
    if not isinstance(address.host, str) or not address.host:
        raise ConfigError(f"p2p: peer {address.name!r} needs a host")
    if not isinstance(address.port, int) or isinstance(address.port, bool) or not 1 <= address.port <= 65535:
        raise ConfigError(f"p2p: peer {address.name!r} port must be in 1..65535, got {address.port!r}")


async def _listen(host: str, port: int) -> socket.socket:
    """A non-blocking listening TCP socket on ``host:port`` (ConfigError if it cannot be bound)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise ConfigError(f"p2p: cannot resolve the listen host {host!r}: {exc}") from exc
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"p2p: cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def _format_address(peername: Any) -> str:
    if isinstance(peername, tuple) and len(peername) >= 2:
        return f"{peername[0]}:{peername[1]}"
    return str(peername)


def _utc_now() -> datetime:
    return datetime.now(UTC)


__all__ = [
    "CONTROL_PREFIX",
    "PROTOCOL_VERSION",
    "DialStatus",
    "MessageHandler",
    "P2PConfig",
    "P2PNode",
    "PeerAddress",
    "PeerDownHandler",
    "PeerInfo",
    "PeerUpHandler",
    "RequestHandler",
    "SendOverflow",
    "compute_backoff",
]
