"""P2P transport over real TLS 1.3 sockets on 127.0.0.1: mutual authentication with certificates from
the consortium CA, hello, dedup, broadcast, gossip, request/response, reconnect, and every way a
peer can be refused or dropped (the node always keeps serving the others)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvloop

from chainshare.crypto.ca import CertSubject, init_ca, issue_agency, issue_node
from chainshare.crypto.hashing import keccak256
from chainshare.errors import ConfigError, NotFound
from chainshare.p2p import (
    P2PConfig,
    P2PNode,
    PeerAddress,
    PeerRefused,
    PeerUnavailable,
    RequestFailed,
    RequestHandler,
    RequestTimeout,
    TlsIdentity,
    build_client_context,
    build_server_context,
    encode_frame,
    read_frame,
)

pytestmark = pytest.mark.integration

T = TypeVar("T")
CHAIN_ID = 4242
GENESIS = keccak256(b"p2p test genesis")
REVOKED_AGENCY = "Revoked Agency"
# Short timeouts keep the suite fast; each test overrides what it exercises.
FAST: dict[str, Any] = {
    "handshake_timeout": 2.0,
    "hello_timeout": 2.0,
    "frame_timeout": 2.0,
    "idle_timeout": 5.0,
    "ping_interval": 1.0,
    "write_timeout": 5.0,
    "connect_timeout": 2.0,
    "backoff_base": 0.05,
    "backoff_cap": 0.4,
    "request_timeout": 2.0,
    "retire_grace": 1.0,
}


# --------------------------------------------------------------------------- fixtures and helpers


@dataclass(frozen=True)
class Pki:
    base: Path

    @property
    def ca_cert(self) -> Path:
        return self.base / "ca" / "ca.crt"

    def identity(self, node: str) -> TlsIdentity:
        return TlsIdentity.from_dirs(self.base / "ca", self.base / node)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    base = tmp_path_factory.mktemp("p2p-pki")
    init_ca(base / "ca", password=None)
    init_ca(base / "foreign-ca", name="another consortium CA", password=None)
    for node, agency in [
        ("node-a", "Agency A"),
        ("node-b", "Agency B"),
        ("node-c", "Agency C"),
        ("node-s", "Agency S"),
        ("node-r", REVOKED_AGENCY),
    ]:
        issue_node(base / "ca", None, agency, node, base / node, key_password=None, kdf_light=True)
    # Valid for one day, ten days ago.
    issue_node(
        base / "ca",
        None,
        "Agency X",
        "node-x",
        base / "node-x",
        key_password=None,
        kdf_light=True,
        not_before=datetime.now(UTC) - timedelta(days=10),
        validity_days=1,
    )
    issue_node(
        base / "foreign-ca", None, "Agency A", "node-f", base / "node-f", key_password=None, kdf_light=True
    )
    issue_agency(base / "ca", None, "Agency Z", base / "agency-z", key_password=None, kdf_light=True)
    return Pki(base)


@pytest.fixture
def p2p_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Capture the transport's log even if the application configured chainshare logs not to propagate."""
    logger = logging.getLogger("chainshare.p2p")
    old_level = logger.level
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)
        logger.setLevel(old_level)


def logged(caplog: pytest.LogCaptureFixture, reason: str) -> list[str]:
    """The details of the log lines with this reason."""
    out = []
    for record in caplog.records:
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields.get("reason") == reason:
            out.append(str(fields.get("detail")))
    return out


def run(
    coro: Coroutine[Any, Any, T], *, loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
) -> T:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(asyncio.wait_for(coro, 30))


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def membership(subject: CertSubject) -> bool:
    """Stands in for the chain's Membership contract: every agency but the revoked one."""
    return subject.agency != REVOKED_AGENCY


@dataclass
class Recorder:
    messages: list[tuple[str, str, Any]] = field(default_factory=list)
    ups: list[str] = field(default_factory=list)
    downs: list[tuple[str, str]] = field(default_factory=list)
    after_message: Callable[[str, str, Any], None] | None = None
    after_up: Callable[[str], None] | None = None

    async def on_message(self, peer: str, msg_type: str, body: Any) -> None:
        self.messages.append((peer, msg_type, body))
        if self.after_message is not None:
            self.after_message(peer, msg_type, body)

    async def on_peer_up(self, peer: str, subject: CertSubject) -> None:
        assert subject.node == peer
        self.ups.append(peer)
        if self.after_up is not None:
            self.after_up(peer)

    async def on_peer_down(self, peer: str, reason: str) -> None:
        self.downs.append((peer, reason))


def make_node(
    pki: Pki,
    name: str,
    *,
    peers: tuple[PeerAddress, ...] = (),
    chain_id: int = CHAIN_ID,
    genesis: bytes = GENESIS,
    is_allowed: Callable[[CertSubject], bool] = membership,
    on_request: RequestHandler | None = None,
    clock: Callable[[], datetime] | None = None,
    port: int = 0,
    **overrides: Any,
) -> tuple[P2PNode, Recorder]:
    recorder = Recorder()
    config = P2PConfig(
        node_name=name,
        chain_id=chain_id,
        genesis_hash=genesis,
        listen_port=port,
        peers=peers,
        **{**FAST, **overrides},
    )
    node = P2PNode(
        config,
        pki.identity(name),
        is_allowed=is_allowed,
        on_message=recorder.on_message,
        on_request=on_request,
        on_peer_up=recorder.on_peer_up,
        on_peer_down=recorder.on_peer_down,
        rng=random.Random(7),
        clock=clock,
    )
    return node, recorder


def address(node: P2PNode) -> PeerAddress:
    return PeerAddress(node.name, "127.0.0.1", node.listen_port)


@contextlib.asynccontextmanager
async def running(*nodes: P2PNode) -> AsyncIterator[None]:
    started: list[P2PNode] = []
    try:
        for node in nodes:
            await node.start()
            started.append(node)
        yield
    finally:
        for node in reversed(started):
            await node.close()


async def open_tls(port: int, context: ssl.SSLContext) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, ssl=context)


async def raw_member(
    pki: Pki, port: int, *, name: str = "node-s", chain_id: int = CHAIN_ID
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A hand-driven peer with a valid member certificate that completes the hello."""
    reader, writer = await open_tls(port, build_client_context(pki.identity(name)))
    await read_frame(reader, idle_timeout=2, frame_timeout=2)  # the node's hello
    writer.write(encode_frame("p2p.hello", [1, chain_id, GENESIS, name]))
    await writer.drain()
    return reader, writer


async def closed_by_peer(reader: asyncio.StreamReader, timeout: float = 5.0) -> bool:
    """True once the other end closes (or resets) the connection; False if it is still open after ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
            return True
    except TimeoutError:
        return False
    except (ConnectionError, ssl.SSLError, OSError):
        return True


def disconnects(node: P2PNode, reason: str) -> int:
    counts = node.get_metrics()["disconnects"]
    assert isinstance(counts, dict)
    return counts.get(reason, 0)


def metric(node: P2PNode, name: str) -> int:
    value = node.get_metrics()[name]
    assert isinstance(value, int)
    return value


async def still_serving(a: P2PNode, ra: Recorder, b: P2PNode, tag: str) -> None:
    """node-b (connected to node-a) still gets a message through, both ways."""
    await wait_until(
        lambda: a.is_connected(b.name) and b.is_connected(a.name), what="the good peer connected"
    )
    assert b.send(a.name, "ping-app", tag)
    await wait_until(lambda: (b.name, "ping-app", tag) in ra.messages, what="the good peer's message")


# --------------------------------------------------------------------------- connecting and messaging


def test_two_nodes_authenticate_and_exchange_messages_both_ways(pki: Pki) -> None:
    async def scenario() -> None:
        a, ra = make_node(pki, "node-a")
        b, rb = make_node(pki, "node-b")
        async with running(a, b):
            b.set_peers([address(a)])
            await wait_until(lambda: a.is_connected("node-b") and b.is_connected("node-a"))
            assert b.send("node-a", "tx", [b"raw tx", 1])
            assert a.send("node-b", "vote", ["v", 2, None, True])
            await wait_until(lambda: bool(ra.messages and rb.messages))
            assert ra.messages == [("node-b", "tx", [b"raw tx", 1])]
            assert rb.messages == [("node-a", "vote", ["v", 2, None, True])]
            [seen_by_a] = a.get_peers()
            assert (seen_by_a.name, seen_by_a.agency, seen_by_a.outbound) == ("node-b", "Agency B", False)
            assert b.get_peers()[0].outbound is True
            assert not a.send("node-c", "tx", b"")  # not connected: not queued
            assert metric(a, "frames_in") >= 1 and metric(a, "bytes_out") > 0
        assert ra.ups == ["node-b"] and rb.ups == ["node-a"]
        assert rb.downs == [("node-a", "shutdown")]  # node-b closed first: it said bye to node-a
        assert ra.downs == [("node-b", "closed_by_peer")]

    run(scenario())


def test_the_transport_also_runs_on_uvloop(pki: Pki) -> None:
    async def scenario() -> None:
        a, ra = make_node(pki, "node-a")
        b, _ = make_node(pki, "node-b")
        async with running(a, b):
            b.set_peers([address(a)])
            await still_serving(a, ra, b, "over uvloop")

    run(scenario(), loop_factory=uvloop.new_event_loop)


@pytest.mark.parametrize("loop_factory", [None, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_frames_queued_together_leave_in_one_write_and_arrive_in_order(
    pki: Pki, loop_factory: Callable[[], asyncio.AbstractEventLoop] | None
) -> None:
    async def scenario() -> None:
        a, ra = make_node(pki, "node-a")
        b, _ = make_node(pki, "node-b")
        async with running(a, b):
            b.set_peers([address(a)])
            await wait_until(lambda: a.is_connected("node-b") and b.is_connected("node-a"))
            frames, writes = metric(b, "frames_out"), metric(b, "writes_out")
            for i in range(20):  # queued in one turn of the loop: the writer sees them together
                assert b.send("node-a", "tx", [i, b"x" * i])
            await wait_until(lambda: len(ra.messages) == 20)
            assert ra.messages == [("node-b", "tx", [i, b"x" * i]) for i in range(20)]
            assert metric(b, "frames_out") - frames == 20
            assert metric(b, "writes_out") - writes == 1

    run(scenario(), loop_factory=loop_factory)


def test_three_nodes_dialing_each_other_keep_one_connection_per_pair_and_broadcast_reaches_all(
    pki: Pki,
) -> None:
    async def scenario() -> None:
        made = [make_node(pki, name) for name in ("node-a", "node-b", "node-c")]
        nodes = [n for n, _ in made]
        async with running(*nodes):
            for node in nodes:  # everyone dials everyone, at the same moment
                node.set_peers([address(o) for o in nodes if o is not node])
            # Every pair dialed both ways; each node retires one duplicate per peer.
            await wait_until(
                lambda: all(
                    disconnects(n, "duplicate") == 2 and metric(n, "connections") == 2 for n in nodes
                ),
                what="duplicates retired",
            )
            for node in nodes:
                # The surviving connection of each pair is the one the smaller name dialed.
                assert [(p.name, p.outbound) for p in node.get_peers()] == [
                    (o.name, node.name < o.name) for o in nodes if o is not node
                ]
                assert node.broadcast("announce", node.name) == 2
            nodes[0].broadcast("only-c", 1, exclude=["node-b"])
            for node, rec in made:
                others = sorted(o.name for o in nodes if o is not node)
                await wait_until(lambda: len([m for m in rec.messages if m[1] == "announce"]) == 2)  # noqa: B023
                assert sorted(m[2] for m in rec.messages if m[1] == "announce") == others
                assert sorted(rec.ups) == others and rec.downs == []  # each peer came up exactly once
            await wait_until(lambda: ("node-a", "only-c", 1) in made[2][1].messages)
            assert not any(m[1] == "only-c" for m in made[1][1].messages)

    run(scenario())


def test_simultaneous_dials_keep_the_connection_of_the_smaller_name_and_lose_no_message(pki: Pki) -> None:
    async def scenario() -> None:
        a, ra = make_node(pki, "node-a")
        b, rb = make_node(pki, "node-b")

        def burst(peer: str) -> None:  # sends at once, while the duplicate connection is being retired
            for i in range(50):
                b.send(peer, "seq", i)

        rb.after_up = burst
        async with running(a, b):
            a.set_peers([address(b)])
            b.set_peers([address(a)])
            await wait_until(
                lambda: disconnects(a, "duplicate") == 1 and disconnects(b, "duplicate") == 1,
                what="the duplicate connection retired on both ends",
            )
            assert a.get_peers()[0].outbound and not b.get_peers()[0].outbound
            await wait_until(lambda: len(ra.messages) == 50, what="every message of the burst")
            assert sorted(m[2] for m in ra.messages) == list(range(50))
            assert ra.ups == ["node-b"] and rb.ups == ["node-a"] and ra.downs == rb.downs == []

    run(scenario())


def test_a_gossiped_item_is_delivered_once_and_forwarded_at_most_once_per_node(pki: Pki) -> None:
    async def scenario() -> None:
        made = [make_node(pki, name) for name in ("node-a", "node-b", "node-c")]
        nodes = [n for n, _ in made]
        forwarded: dict[str, int] = {}
        for node, rec in made:
            # What a node does with a gossiped transaction it accepted: pass it on, except to the sender.
            def relay(peer: str, msg_type: str, body: Any, node: P2PNode = node) -> None:
                forwarded[node.name] = node.gossip(msg_type, body, exclude=[peer])

            rec.after_message = relay
        async with running(*nodes):
            for node in nodes:
                node.set_peers([address(o) for o in nodes if o is not node])
            await wait_until(
                lambda: all(
                    disconnects(n, "duplicate") == 2 and metric(n, "connections") == 2 for n in nodes
                ),
                what="full mesh",
            )
            assert nodes[0].gossip("tx", b"\x02signed tx") == 2
            await wait_until(lambda: sum(metric(n, "gossip_duplicates") for n in nodes) == 2)
            await asyncio.sleep(0.1)
            assert made[0][1].messages == []  # the origin never gets its own item back
            for _, rec in made[1:]:
                assert [(m[1], m[2]) for m in rec.messages] == [("tx", b"\x02signed tx")]
            assert forwarded == {"node-b": 1, "node-c": 1}  # each relays to the one peer that did not send it
            assert [metric(n, "gossip_sent") for n in nodes] == [2, 1, 1]
            assert nodes[0].gossip("tx", b"\x02signed tx") == 0  # already forwarded
            assert nodes[1].gossip("tx", b"\x02signed tx") == 0

    run(scenario())


def test_request_response_with_timeouts_errors_and_concurrency(pki: Pki) -> None:
    async def on_request(peer: str, msg_type: str, body: Any) -> Any:
        if msg_type == "echo":
            return [peer, body]
        if msg_type == "slow":
            await asyncio.sleep(body / 1000)
            return "late"
        if msg_type == "missing":
            raise NotFound(f"no block at height {body}")
        raise RuntimeError("internal detail that must not leak")

    async def scenario() -> None:
        a, _ = make_node(pki, "node-a", on_request=on_request)
        b, _ = make_node(pki, "node-b")
        async with running(a, b):
            b.set_peers([address(a)])
            await wait_until(lambda: b.is_connected("node-a"))
            assert await b.request("node-a", "echo", b"x") == ["node-b", b"x"]
            answers = await asyncio.gather(*(b.request("node-a", "echo", i) for i in range(10)))
            assert answers == [["node-b", i] for i in range(10)]
            with pytest.raises(RequestTimeout, match="did not answer 'slow'"):
                await b.request("node-a", "slow", 400, timeout=0.1)
            with pytest.raises(RequestFailed, match="no block at height 7"):
                await b.request("node-a", "missing", 7)
            with pytest.raises(RequestFailed, match="internal error") as crashed:
                await b.request("node-a", "crash", None)
            assert "must not leak" not in str(crashed.value)
            with pytest.raises(RequestFailed, match="serves no requests"):
                await a.request("node-b", "echo", 1)
            with pytest.raises(PeerUnavailable, match="not connected"):
                await b.request("node-z", "echo", 1)
            await wait_until(lambda: metric(b, "responses_unmatched") == 1, what="the late answer, ignored")
            assert b.is_connected("node-a")  # a late answer is no offence
            # A request in flight when the peer goes away fails at once, not at its timeout.
            pending = asyncio.ensure_future(b.request("node-a", "slow", 10_000, timeout=10.0))
            await asyncio.sleep(0.1)
            started = time.monotonic()
            await a.close()
            with pytest.raises(PeerUnavailable, match="disconnected"):
                await pending
            assert time.monotonic() - started < 5.0

    run(scenario())


def test_reconnects_with_capped_exponential_backoff_after_the_peer_restarts(pki: Pki) -> None:
    async def scenario() -> None:
        a, ra = make_node(pki, "node-a")
        b, _ = make_node(pki, "node-b")
        async with running(a):
            await b.start()
            port = b.listen_port
            a.set_peers([address(b)])
            await wait_until(lambda: a.is_connected("node-b"))
            await b.close()
            await wait_until(lambda: not a.is_connected("node-b"))
            await wait_until(lambda: a.get_dial_status()[0].failures >= 5, timeout=10, what="failed redials")
            status = a.get_dial_status()[0]
            assert not status.connected and status.last_error
            failure_delays = status.recent_delays[1:]  # the first is the pause after a clean disconnect
            # base 0.05, cap 0.4: [0.05,0.1] [0.1,0.2] [0.2,0.4] then within [0.2,0.4]
            assert failure_delays[:3] == tuple(sorted(failure_delays[:3]))
            assert failure_delays[0] >= 0.05 and all(0.2 <= d <= 0.4 for d in failure_delays[2:])
            b2, rb2 = make_node(pki, "node-b", port=port)
            async with running(b2):
                await wait_until(lambda: a.is_connected("node-b"), what="the redial after the restart")
                assert a.send("node-b", "after-restart", 1)
                await wait_until(lambda: rb2.messages == [("node-a", "after-restart", 1)])
                assert a.get_dial_status()[0].failures == 0
        assert ra.ups == ["node-b", "node-b"]
        assert ra.downs[0] == ("node-b", "closed_by_peer")

    run(scenario())


# --------------------------------------------------------------------------- refused at the handshake


def _no_client_cert(pki: Pki) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cafile=pki.ca_cert)
    return ctx


def _tls12_only(pki: Pki) -> ssl.SSLContext:
    ctx = build_client_context(pki.identity("node-s"))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _foreign_ca_cert(pki: Pki) -> ssl.SSLContext:
    # Trusts our CA (so it accepts our node) but presents a certificate another CA issued.
    return build_client_context(
        TlsIdentity(
            ca_cert=pki.ca_cert, cert=pki.base / "node-f" / "node.crt", key=pki.base / "node-f" / "node.key"
        )
    )


def _agency_cert(pki: Pki) -> ssl.SSLContext:
    # A genuine consortium certificate, but an agency's, naming no node.
    return build_client_context(
        TlsIdentity(
            ca_cert=pki.ca_cert,
            cert=pki.base / "agency-z" / "agency.crt",
            key=pki.base / "agency-z" / "agency.key",
        )
    )


@pytest.mark.parametrize(
    ("client", "reason", "detail"),
    [
        ("plain TCP speaking HTTP", "tls_failed", "TLS error"),
        ("plain TCP, silent", "tls_failed", "handshake is taking longer"),
        ("TLS without a client certificate", "tls_failed", "PEER_DID_NOT_RETURN_A_CERTIFICATE"),
        ("TLS 1.2 only", "tls_failed", "PROTOCOL"),
        ("certificate from another CA", "tls_failed", "unable to get local issuer certificate"),
        ("agency certificate instead of a node's", "not_a_node", "names no node"),
    ],
)
def test_clients_without_a_valid_node_certificate_are_refused_at_the_handshake(
    pki: Pki, p2p_log: pytest.LogCaptureFixture, client: str, reason: str, detail: str
) -> None:
    async def attempt(port: int) -> bool:
        try:
            if client.startswith("plain TCP"):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                if "HTTP" in client:
                    writer.write(b"GET / HTTP/1.1\r\nHost: node\r\n\r\n")
            else:
                context = {
                    "TLS without a client certificate": _no_client_cert,
                    "TLS 1.2 only": _tls12_only,
                    "certificate from another CA": _foreign_ca_cert,
                    "agency certificate instead of a node's": _agency_cert,
                }[client](pki)
                reader, writer = await open_tls(port, context)
        except (ssl.SSLError, ConnectionError):
            return True  # refused within the handshake itself
        try:
            return await closed_by_peer(reader)
        finally:
            writer.close()

    async def scenario() -> None:
        a, ra = make_node(pki, "node-a", handshake_timeout=0.5)
        b, _ = make_node(pki, "node-b")
        async with running(a, b):
            b.set_peers([address(a)])
            assert await attempt(a.listen_port)
            await wait_until(lambda: disconnects(a, reason) == 1, what=f"refusal {reason}")
            assert any(detail in d for d in logged(p2p_log, reason)), logged(p2p_log, reason)
            await still_serving(a, ra, b, client)
            assert a.connected_peers() == ["node-b"] and ra.ups == ["node-b"]

    run(scenario())


def test_an_expired_certificate_is_refused_in_both_directions(
    pki: Pki, p2p_log: pytest.LogCaptureFixture
) -> None:
    expired = pki.identity("node-x")  # valid for one day, ten days ago

    async def scenario() -> None:
        server = await asyncio.start_server(
            lambda r, w: None, "127.0.0.1", 0, ssl=build_server_context(expired)
        )
        a, ra = make_node(pki, "node-a")
        try:
            async with running(a):
                reader, writer = await open_tls(a.listen_port, build_client_context(expired))
                assert await closed_by_peer(reader)
                writer.close()
                await wait_until(lambda: disconnects(a, "tls_failed") == 1)
                assert any("certificate has expired" in d for d in logged(p2p_log, "tls_failed"))
                a.set_peers([PeerAddress("node-x", "127.0.0.1", server.sockets[0].getsockname()[1])])
                await wait_until(lambda: a.get_dial_status()[0].failures >= 1)
                assert "certificate has expired" in (a.get_dial_status()[0].last_error or "")
                assert ra.ups == []
        finally:
            server.close()

    run(scenario())
    # A node also refuses to start with an expired certificate of its own.
    with pytest.raises(ConfigError, match="expired"):
        make_node(pki, "node-x")


def test_a_server_with_a_foreign_certificate_is_refused_by_the_dialer(pki: Pki) -> None:
    async def scenario() -> None:
        foreign = TlsIdentity.from_dirs(pki.base / "foreign-ca", pki.base / "node-f")
        server = await asyncio.start_server(
            lambda r, w: None, "127.0.0.1", 0, ssl=build_server_context(foreign)
        )
        port = server.sockets[0].getsockname()[1]
        a, ra = make_node(pki, "node-a")
        try:
            async with running(a):
                a.set_peers([PeerAddress("node-f", "127.0.0.1", port)])
                await wait_until(lambda: a.get_dial_status()[0].failures >= 2)
                # The foreign server sends its own root along: either way, not our CA.
                assert "certificate verification failed" in (a.get_dial_status()[0].last_error or "")
                assert disconnects(a, "tls_failed") >= 2 and ra.ups == []
        finally:
            server.close()

    run(scenario())


def test_a_revoked_agency_is_refused_in_both_directions(pki: Pki, p2p_log: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        a, ra = make_node(pki, "node-a")
        r, rr = make_node(pki, "node-r", is_allowed=lambda s: True)
        b, _ = make_node(pki, "node-b")
        async with running(a, r, b):
            r.set_peers([address(a)])
            a.set_peers([address(r)])
            b.set_peers([address(a)])
            await wait_until(lambda: disconnects(a, "not_allowed") >= 2, what="both directions refused")
            assert any(
                REVOKED_AGENCY in d and "not an allowed member" in d for d in logged(p2p_log, "not_allowed")
            )
            assert "node-r" not in a.connected_peers() and r.connected_peers() == [] and rr.ups == []
            # The refused side learns only that the connection closed during the hello.
            await wait_until(lambda: (r.get_dial_status()[0].last_error or "").startswith("hello_failed"))
            await still_serving(a, ra, b, "revoked")

    run(scenario())


def test_revalidation_drops_a_peer_whose_agency_was_revoked_and_it_cannot_come_back(pki: Pki) -> None:
    revoked: set[str] = set()

    async def scenario() -> None:
        a, ra = make_node(pki, "node-a", is_allowed=lambda s: s.agency not in revoked)
        b, _ = make_node(pki, "node-b")
        async with running(a, b):
            b.set_peers([address(a)])
            await wait_until(lambda: a.is_connected("node-b"))
            assert a.revalidate_peers() == []
            revoked.add("Agency B")
            assert a.revalidate_peers() == ["node-b"]
            await wait_until(lambda: ra.downs == [("node-b", "not_allowed")])
            await wait_until(lambda: disconnects(a, "not_allowed") >= 2, what="the redial refused")
            assert not a.is_connected("node-b")

    run(scenario())


@pytest.mark.parametrize(
    ("chain_id", "genesis", "detail"),
    [
        (CHAIN_ID + 1, GENESIS, "chain id"),
        (CHAIN_ID, keccak256(b"another genesis"), "genesis"),
    ],
)
def test_a_peer_on_another_chain_is_refused_after_the_hello(
    pki: Pki, p2p_log: pytest.LogCaptureFixture, chain_id: int, genesis: bytes, detail: str
) -> None:
    async def scenario() -> None:
        a, ra = make_node(pki, "node-a")
        b, rb = make_node(pki, "node-b", chain_id=chain_id, genesis=genesis)
        async with running(a, b):
            b.set_peers([address(a)])
            await wait_until(
                lambda: disconnects(a, "wrong_chain") >= 1 and disconnects(b, "wrong_chain") >= 1
            )
            assert any(detail in d for d in logged(p2p_log, "wrong_chain"))
            assert ra.ups == rb.ups == []

    run(scenario())


def test_a_dialed_address_answered_by_another_node_is_refused(pki: Pki) -> None:
    async def scenario() -> None:
        a, ra = make_node(pki, "node-a")
        b, _ = make_node(pki, "node-b")
        async with running(a, b):
            a.set_peers([PeerAddress("node-c", "127.0.0.1", b.listen_port)])
            await wait_until(lambda: disconnects(a, "unexpected_peer") >= 1)
            assert ra.ups == []

    run(scenario())


# --------------------------------------------------------------------------- misbehaving peers


def test_an_oversized_frame_disconnects_that_peer_and_the_node_keeps_serving(
    pki: Pki, p2p_log: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        a, ra = make_node(pki, "node-a", max_frame_size=64 * 1024, send_queue_bytes=1024 * 1024)
        b, _ = make_node(pki, "node-b")
        async with running(a, b):
            b.set_peers([address(a)])
            reader, writer = await raw_member(pki, a.listen_port)
            await wait_until(lambda: a.is_connected("node-s"))
            writer.write((64 * 1024 + 1).to_bytes(4, "big") + b"\x00" * 16)
            assert await closed_by_peer(reader)
            assert disconnects(a, "frame_too_large") == 1
            assert any(
                "65537 bytes exceeds the maximum frame size of 65536" in d
                for d in logged(p2p_log, "frame_too_large")
            )
            await still_serving(a, ra, b, "after oversized")
            writer.close()

    run(scenario())


@pytest.mark.parametrize("max_strikes", [1, 3])
def test_garbage_payloads_disconnect_the_peer_after_max_strikes(pki: Pki, max_strikes: int) -> None:
    garbage = [b"\xc1\xc1", b"", b"\x93\x01\x02\x03"]  # a byte msgpack never uses, empty, not [type, body]

    async def scenario() -> None:
        a, ra = make_node(pki, "node-a", max_strikes=max_strikes)
        async with running(a):
            reader, writer = await raw_member(pki, a.listen_port)
            for i in range(max_strikes - 1):
                writer.write(len(garbage[i]).to_bytes(4, "big") + garbage[i])
                writer.write(encode_frame("still-here", i))
                await wait_until(lambda: ("node-s", "still-here", i) in ra.messages)  # noqa: B023
            writer.write(len(garbage[-1]).to_bytes(4, "big") + garbage[-1])
            assert await closed_by_peer(reader)
            assert disconnects(a, "garbage") == 1 and metric(a, "strikes") == max_strikes
            writer.close()

    run(scenario())


def test_a_slowloris_peer_stalling_inside_a_frame_is_dropped_while_others_continue(
    pki: Pki, p2p_log: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        a, ra = make_node(pki, "node-a", frame_timeout=0.5)
        b, _ = make_node(pki, "node-b")
        async with running(a, b):
            b.set_peers([address(a)])
            reader, writer = await raw_member(pki, a.listen_port)
            await wait_until(lambda: a.is_connected("node-s") and a.is_connected("node-b"))
            started = time.monotonic()
            writer.write(b"\x00\x00")  # half a header, then nothing
            sent = 0
            while not disconnects(a, "frame_timeout") and time.monotonic() - started < 5:
                assert b.send("node-a", "during-stall", sent)  # the good peer keeps talking meanwhile
                sent += 1
                await asyncio.sleep(0.05)
            assert sent >= 5
            assert await closed_by_peer(reader)
            assert time.monotonic() - started >= 0.45
            assert disconnects(a, "frame_timeout") == 1
            await wait_until(lambda: len([m for m in ra.messages if m[1] == "during-stall"]) == sent)
            assert a.is_connected("node-b")
            writer.close()

    run(scenario())


def test_a_peer_that_stalls_in_the_hello_is_dropped_after_the_hello_timeout(pki: Pki) -> None:
    async def scenario() -> None:
        a, _ = make_node(pki, "node-a", hello_timeout=0.4)
        async with running(a):
            reader, writer = await open_tls(a.listen_port, build_client_context(pki.identity("node-s")))
            writer.write(b"\x00\x00")
            assert await closed_by_peer(reader)
            assert disconnects(a, "hello_timeout") == 1
            writer.close()

    run(scenario())


def test_a_silent_peer_is_dropped_after_the_idle_timeout_while_pinging_peers_stay(pki: Pki) -> None:
    async def scenario() -> None:
        a, _ = make_node(pki, "node-a", idle_timeout=0.6, ping_interval=0.2)
        b, rb = make_node(pki, "node-b", idle_timeout=0.6, ping_interval=0.2)
        async with running(a, b):
            b.set_peers([address(a)])
            reader, writer = await raw_member(pki, a.listen_port)  # then says nothing at all
            assert await closed_by_peer(reader, timeout=3)
            assert disconnects(a, "idle_timeout") == 1
            await asyncio.sleep(1.0)  # several idle timeouts: pings keep node-b up
            assert a.is_connected("node-b") and rb.downs == []
            writer.close()

    run(scenario())


def test_a_peer_that_does_not_read_overflows_its_bounded_queue_and_is_dropped(pki: Pki) -> None:
    async def scenario() -> None:
        a, _ = make_node(pki, "node-a", max_frame_size=256 * 1024, send_queue_bytes=1024 * 1024)
        async with running(a):
            reader, writer = await raw_member(pki, a.listen_port)  # never reads again
            await wait_until(lambda: a.is_connected("node-s"))
            blob = b"x" * 200_000
            for _ in range(2000):  # up to 400 MB if nothing were bounded
                if not a.send("node-s", "blob", blob):
                    break
                assert a.get_peers()[0].send_queue_bytes <= 1024 * 1024
                await asyncio.sleep(0.001)
            assert disconnects(a, "send_overflow") == 1
            await wait_until(lambda: not a.is_connected("node-s"))
            writer.close()

    run(scenario())


def test_with_drop_oldest_a_slow_peer_loses_old_frames_but_stays_connected(pki: Pki) -> None:
    async def scenario() -> None:
        a, _ = make_node(
            pki,
            "node-a",
            max_frame_size=256 * 1024,
            send_queue_bytes=1024 * 1024,
            send_overflow="drop_oldest",
        )
        async with running(a):
            reader, writer = await raw_member(pki, a.listen_port)
            await wait_until(lambda: a.is_connected("node-s"))
            blob = b"x" * 200_000
            for _ in range(2000):
                if metric(a, "send_dropped"):
                    break
                assert a.send("node-s", "blob", blob)
                assert a.get_peers()[0].send_queue_bytes <= 1024 * 1024
                await asyncio.sleep(0.001)
            assert metric(a, "send_dropped") > 0
            assert a.is_connected("node-s") and disconnects(a, "send_overflow") == 0
            writer.close()

    run(scenario())


def test_application_strikes_disconnect_a_misbehaving_peer(pki: Pki) -> None:
    async def scenario() -> None:
        a, ra = make_node(pki, "node-a", max_strikes=2)
        b, _ = make_node(pki, "node-b")
        async with running(a, b):
            b.set_peers([address(a)])
            await wait_until(lambda: a.is_connected("node-b"))
            a.strike("node-b", "sent a block with a bad QC")
            assert a.is_connected("node-b")
            a.strike("node-b", "sent a block with a bad QC")
            await wait_until(lambda: ("node-b", "misbehaviour") in ra.downs)

    run(scenario())


def test_a_node_whose_own_certificate_is_revoked_refuses_to_start(pki: Pki) -> None:
    """Its peers would refuse it at every handshake: it says so at once instead of failing to connect."""

    def policy(subject: CertSubject) -> bool:
        if subject.node == "node-a":
            raise PeerRefused("revoked_certificate", "certificate revoked at block 9: key stolen")
        return True

    with pytest.raises(ConfigError, match="revoked at block 9: key stolen.*rotate-tls"):
        make_node(pki, "node-a", is_allowed=policy)
    make_node(pki, "node-b", is_allowed=policy)  # another node's certificate is not concerned
