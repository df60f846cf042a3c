"""The node's data-sharing service: both ends of a delivery and of a compute-to-data query, and
the owner's vault uploads.

Owner side. A ``data.fetch`` / ``data.query`` request from a peer is authorised on THIS node's
own finalized chain only: the dataset exists and belongs to this node's agency; the grant exists,
is for that dataset and for the action the request needs, is neither revoked nor expired (the
later of this node's clock and its head block's time) and both agencies are active; the grantee
is the agency of the TLS peer (its consortium certificate); the node certificate in the request is
a valid certificate of the consortium CA naming that same node and agency (the delivery key is
wrapped to it); the request is fresh (issued within ``request_window`` seconds of this node's
clock) and its (grant, nonce) was never seen before (checked and remembered in one step, on disk
with fsync for twice the window, so neither a restart nor a concurrent copy reopens it). Each refusal is logged as one structured line (peer, agency, dataset, grant,
reason; never data) and answered with a precise error (NotFound, Unauthorized, InvalidInput).

A delivery streams the vault's envelope (personal columns pseudonymized under ``read`` with the key
of this (owner, grantee, dataset), derived from this node's own pseudonym secret; raw under
``read_identified``) as ``data.chunk`` messages under credit-based flow control, re-checking the
grant on this node's finalized state before every chunk (a revocation aborts with ``data.error``).
It then records the delivery on chain (``AccessControl.recordDelivery`` of the dataset version's
content hash, the hash and size of the bytes delivered, signed by this node's agency account and
submitted to this node's own mempool), waits until that record is final, and only then sends
``data.end`` with the transaction and the wrapped delivery key: the requester cannot decrypt a
byte that has no on-chain record. A record that cannot be made is logged at error and counted
(``stats["records_failed"]``); the key is then never sent. A query (one at a time per grantee and
dataset) is checked against the grant's rate and the grantee's privacy budget as the chain
records them (``getComputeAllowance``), parsed against the dataset's on-chain schema, run over the
decrypted vault stream with differential-privacy noise (``compute``), and its result returns only
once ``recordComputation`` (query and result hashes, epsilon spent) is final on this node's chain;
a refused query is put on chain too (``recordRefusal``, with its reason) before the error returns.

Requester side. ``fetch`` checks its own chain first (grant for this agency, dataset, action),
asks the owner's node (``resolve_owner_peer``; the node itself when this agency owns the
dataset), writes the ciphertext chunks as they arrive, in a worker thread (memory flat), to a
private spool file; on ``data.end`` it waits for the owner's ``DeliveryRecorded`` to be final on
its own chain and checks that it names this grant, the version, and the hash and size announced;
only then does it unwrap the key and decrypt into the destination, keeping the file only if every
chunk authenticated, the envelope ended properly and the bytes hash to what the record names (for
``read_identified``: the dataset's on-chain content hash; for ``read`` the pseudonymized transform,
which no one without the raw data and the owner's secret can recompute: the record pins it on chain
for auditors). On any failure neither ciphertext nor plaintext is left.

Wiring, where the node builds its P2PNode (``get_sharing_service(node)`` builds the service from
[p2p] and [sharing]; the REST layer gets the same instance)::

    sharing = get_sharing_service(node)
    transport = P2PNode(..., on_message=sharing.route_message(replica.on_message),
                        on_request=sharing.route_request(replica.on_request),
                        on_peer_down=sharing.on_peer_down)
    attach_sharing(node, transport)      # binds the transport, sizes chunks and window to it
    ...
    await sharing.close()                # at shutdown, before the transport closes
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import queue
import secrets
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from chainshare.config import NodeConfig
from chainshare.crypto.ca import verify_certificate
from chainshare.crypto.envelope import CHUNK_SIZE, MIN_CHUNK_SIZE
from chainshare.crypto.hashing import keccak256
from chainshare.crypto.secp import address_of_private_key
from chainshare.errors import (
    ChainshareError,
    ConfigError,
    CryptoError,
    InvalidInput,
    NotFound,
    StorageError,
    Unauthorized,
)
from chainshare.execution.abi import decode_revert_reason
from chainshare.execution.contracts import ACCESS_CONTROL, cedar
from chainshare.execution.contracts.access_control import (
    EPSILON_UNIT,
    REFUSED_BUDGET,
    REFUSED_PERSONAL,
    REFUSED_RATE_LIMIT,
)
from chainshare.execution.contracts.datasets import Dataset, get_version_of_hash
from chainshare.execution.contracts.membership import get_agency_of
from chainshare.execution.runtime import encode_call
from chainshare.ledger.chain import ChainStore
from chainshare.ledger.txs import sign_eip1559
from chainshare.logs import log_event
from chainshare.p2p.errors import P2PError, RequestFailed
from chainshare.sharing import protocol as wire
from chainshare.sharing.compute import (
    ComputeAllowance,
    QueryRateLimited,
    QueryRefused,
    QueryResult,
    compute_query_hash,
    compute_result_hash,
    decide_query_admission,
    parse_query,
    run_query_on_stream,
)
from chainshare.sharing.pseudonym import derive_pseudonym_key
from chainshare.sharing.records import (
    ACCESS_CONTRACT,
    COMPUTE_ACTIONS,
    READ_ACTIONS,
    GrantRecord,
    call_view,
    compute_chain_time,
    decode_event,
    get_grant_invalid_reason,
    is_grant_valid_on_chain,
    read_dataset,
    read_grant,
    select_grant,
)
from chainshare.sharing.replay import ReplayStore
from chainshare.sharing.schema import (
    Schema,
    canonical_json,
    check_format,
    infer_schema,
    iter_records,
    validate_schema,
    with_min_group,
)
from chainshare.sharing.vault import (
    Vault,
    VaultEntry,
    compute_delivery_context,
    load_or_create_pseudonym_secret,
    receive_delivery,
)

log = logging.getLogger("chainshare.sharing")

LOCAL_PEER = ""  # the node itself: its agency asks for its own dataset, no network involved
DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024**3
_FRAME_OVERHEAD = 1024  # msgpack framing of a data.chunk around its bytes, with margin
_SAMPLE_BYTES = 4 * 1024 * 1024
_REPLAY_FILE = "replay-nonces"
_SIGNED_REPLAY_FILE = "replay-signed"
_ABORT = object()


class SharingUnavailable(ChainshareError, RuntimeError):
    """This node cannot serve the request: its data plane is not configured or not connected."""

    http_status = 503
    rpc_code = -32000


class PayloadTooLarge(InvalidInput):
    http_status = 413


class DeliveryFailed(ChainshareError, RuntimeError):
    """A delivery was aborted or did not verify, or the owner's node failed in a way it did not name;
    nothing of it was kept. The owner's node (or the way to it) failed, not the request: 502."""

    http_status = 502


class RecordFailed(DeliveryFailed):
    """The owner could not put a delivery's record on chain, so it withheld the delivery key."""


class _RemoteRefusal(ChainshareError):
    """A refusal on its way to a peer: the message carries the error's kind, ``[Kind] message``."""


# A refusal crosses the network as text; its kind travels in front so the requester raises the
# same class (and its API the same HTTP status) as the owner did.
_KINDS: tuple[tuple[str, type[ChainshareError]], ...] = (
    ("QueryRateLimited", QueryRateLimited),
    ("QueryRefused", QueryRefused), ("Unauthorized", Unauthorized), ("NotFound", NotFound),
    ("Unavailable", SharingUnavailable), ("InvalidInput", InvalidInput),
)


def get_error_kind(exc: ChainshareError) -> str:
    """The kind a refusal names on the wire (``[Kind] message``), so the asker re-raises the same class."""
    return next((kind for kind, cls in _KINDS if isinstance(exc, cls)), "Error")


def _remote_error(peer: str, text: str) -> ChainshareError:
    """The owner's refusal ``[Kind] message`` as the matching error class."""
    for kind, cls in _KINDS:
        prefix = f"[{kind}] "
        if text.startswith(prefix):
            return cls(f"the owner node {peer!r} refused: {text[len(prefix):]}")
    return DeliveryFailed(f"the owner node {peer!r} failed: {text}")


# --------------------------------------------------------------------------- what the service needs


class PeerLike(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def agency(self) -> str: ...


class Transport(Protocol):
    """The subset of ``chainshare.p2p.P2PNode`` the service uses."""

    def send(self, peer_name: str, msg_type: str, body: Any) -> bool: ...

    async def request(self, peer_name: str, msg_type: str, body: Any, *, timeout: float | None = None) -> Any: ...

    def get_peers(self) -> Any: ...  # a list of PeerLike (PeerInfo)


class MempoolLike(Protocol):
    def get_pending_nonce(self, state: Any, sender: bytes) -> int: ...


class NodeLike(Protocol):
    @property
    def chain_id(self) -> int: ...

    @property
    def chain(self) -> ChainStore: ...

    @property
    def mempool(self) -> MempoolLike: ...

    def call(self, sender: bytes, to: bytes, data: bytes, gas: int | None = None) -> tuple[bool, bytes, int]: ...

    def submit_raw_transaction(self, raw: bytes) -> bytes: ...


class ConfiguredNode(NodeLike, Protocol):
    @property
    def cfg(self) -> NodeConfig: ...


@dataclass(frozen=True)
class SharingLimits:
    """Bulk data shares the connection (one FIFO send queue) with consensus traffic: at most
    ``window * chunk_size * max_transfers_per_peer`` bytes of deliveries wait ahead of a vote, and
    that must stay well below the transport's ``send_queue_bytes`` (an overflow closes the
    connection); ``attach_sharing`` shrinks the window to half of it if needed."""

    window: int = 4  # chunks in flight per delivery (each up to chunk_size)
    chunk_size: int = CHUNK_SIZE
    max_frame_size: int = 4 * 1024 * 1024
    max_transfers_per_peer: int = 2
    max_transfers: int = 16
    request_window: float = 300.0  # seconds a request's issue time may differ from this node's clock
    idle_timeout: float = 60.0  # a delivery with no progress for this long is aborted
    request_timeout: float = 30.0  # the owner's answer to data.fetch (checks only)
    query_timeout: float = 300.0  # the owner's answer to data.query (runs the query)
    height_wait: float = 10.0  # how long an owner waits for its chain to reach the requester's height
    record_wait: float = 60.0  # how long a requester waits for the owner's delivery record to be final
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES

    def effective_chunk_size(self) -> int:
        return max(MIN_CHUNK_SIZE, min(self.chunk_size, self.max_frame_size - _FRAME_OVERHEAD - 16))


@dataclass(frozen=True)
class FetchResult:
    dataset_id: int
    grant_id: int
    action: str
    path: Path
    size: int
    content_hash: bytes  # the on-chain version delivered
    delivered_hash: bytes  # Keccak-256 of the bytes written to ``path``
    record_tx: bytes | None
    record_error: str | None
    fmt: str
    recorded_height: int | None = None  # the block whose DeliveryRecorded matched the bytes received

    def to_json(self) -> dict[str, Any]:
        return {"dataset_id": self.dataset_id, "grant_id": self.grant_id, "action": self.action,
                "path": str(self.path), "bytes": self.size, "format": self.fmt,
                "content_hash": "0x" + self.content_hash.hex(), "delivered_hash": "0x" + self.delivered_hash.hex(),
                "record_tx": "0x" + self.record_tx.hex() if self.record_tx else None,
                "record_error": self.record_error, "recorded_height": self.recorded_height}


@dataclass(frozen=True)
class QueryOutcome:
    dataset_id: int
    grant_id: int
    result: dict[str, Any]
    query_hash: bytes
    result_hash: bytes
    record_tx: bytes | None
    record_error: str | None

    def to_json(self) -> dict[str, Any]:
        return {"dataset_id": self.dataset_id, "grant_id": self.grant_id, **self.result,
                "query_hash": "0x" + self.query_hash.hex(), "result_hash": "0x" + self.result_hash.hex(),
                "record_tx": "0x" + self.record_tx.hex() if self.record_tx else None,
                "record_error": self.record_error}


@dataclass(frozen=True)
class UploadResult:
    content_hash: bytes
    size: int
    fmt: str
    schema: Schema
    schema_source: str  # "given" or "inferred"
    created: bool  # False: the vault already held these bytes

    def to_json(self) -> dict[str, Any]:
        return {"content_hash": "0x" + self.content_hash.hex(), "size": self.size, "format": self.fmt,
                "schema": self.schema.to_json(), "schema_source": self.schema_source, "created": self.created}


# --------------------------------------------------------------------------- replay protection


class ReplayGuard:
    """Node-to-node requests: refuses a request issued outside ``window`` seconds of this node's
    clock, and a (grant, nonce) accepted before; accepted ones are kept on disk (``path``) for
    twice the window, so a restart does not reopen it."""

    def __init__(self, window: float, path: Path | None) -> None:
        self.window = window
        self._store = ReplayStore(path, 2 * window)

    @staticmethod
    def _key(grant_id: int, nonce: bytes) -> bytes:
        return grant_id.to_bytes(8, "big") + nonce

    def _check_time(self, issued_at: int, now: float) -> None:
        if abs(issued_at - now) > self.window:
            raise InvalidInput(
                f"request issued at {_iso(issued_at)} is outside this node's window of {int(self.window)} s "
                f"around its clock ({_iso(int(now))}): check the clocks and send a fresh request"
            )

    @staticmethod
    def _replayed(grant_id: int, nonce: bytes) -> Unauthorized:
        return Unauthorized(f"replayed request: nonce 0x{nonce.hex()[:16]}... was already used with grant "
                            f"{grant_id}; every request needs a fresh nonce")

    def check(self, grant_id: int, nonce: bytes, issued_at: int, now: float) -> None:
        """Refuse a stale or already accepted request (without accepting it)."""
        self._check_time(issued_at, now)
        if self._key(grant_id, nonce) in self._store:
            raise self._replayed(grant_id, nonce)

    def claim(self, grant_id: int, nonce: bytes, issued_at: int, now: float) -> None:
        """Refuse a stale or already accepted request, else accept it, durably, in the same step."""
        self._check_time(issued_at, now)
        if not self._store.claim(self._key(grant_id, nonce), now):
            raise self._replayed(grant_id, nonce)


# --------------------------------------------------------------------------- transfers


@dataclass
class _Outgoing:
    """A delivery this node (the owner) streams to a peer."""

    transfer_id: bytes
    peer: str
    agency: str
    dataset: Dataset
    grant: GrantRecord
    entry: VaultEntry
    cert_pem: bytes
    window: int
    acked: int = -1
    cancelled: str | None = None
    progress: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class _Incoming:
    """A delivery this node (the requester) receives: chunks go to a worker thread that writes the
    ciphertext to a private spool file (at most ``window`` wait in memory); it is decrypted only
    after the owner's record is final (``SharingService.fetch``)."""

    def __init__(self, service: SharingService, transfer_id: bytes, peer: str, dataset: Dataset,
                 grant: GrantRecord, dst: Path, window: int) -> None:
        self.service = service
        self.transfer_id = transfer_id
        self.peer = peer
        self.dataset = dataset
        self.grant = grant
        self.dst = dst
        self.window = window
        self.loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.chunks: queue.Queue[Any] = queue.Queue()
        self.queued = 0
        self.next_seq = 0
        self.begin: wire.Begin | None = None
        self.end: wire.End | None = None
        self.received: int | None = None  # ciphertext bytes spooled
        self.receiver: asyncio.Future[int] | None = None
        self.sealed: Path | None = None  # the spooled ciphertext (useless without the key in data.end)
        self.last_activity = time.monotonic()
        self.failed = False

    def pieces(self) -> Iterator[bytes]:
        """The envelope blocks, in the worker thread; acknowledges each as it is taken in."""
        seq = 0
        while True:
            item = self.chunks.get()
            if item is None:
                return
            if item is _ABORT:
                raise DeliveryFailed("delivery aborted")
            self.loop.call_soon_threadsafe(self._taken, seq)
            seq += 1
            yield item

    def _taken(self, seq: int) -> None:
        self.queued -= 1
        if not self.failed:
            self.service._post(self.peer, wire.MSG_ACK, wire.Ack(self.transfer_id, seq).to_wire())


class SharingService:
    """One node's data plane (see the module docstring). All methods run on the node's event loop."""

    def __init__(
        self,
        node: NodeLike,
        transport: Transport | None,
        vault: Vault | None,
        pseudonym_secret: bytes | None,
        account_key: bytes | None,
        node_key_pem: bytes,
        *,
        node_cert_pem: bytes,
        ca_cert_pem: bytes,
        node_key_password: str | None = None,
        spool_dir: Path,
        resolve_owner_peer: Callable[[str], str] | None = None,
        limits: SharingLimits | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.node = node
        self.transport = transport
        self.vault = vault
        # The owner-only secret every pseudonym key of this node's 'read' deliveries derives from
        # (never sent anywhere; see chainshare.sharing.pseudonym).
        self._pseudonym_secret = pseudonym_secret
        self.limits = limits or SharingLimits()
        self._account_key = account_key
        self.account = address_of_private_key(account_key) if account_key is not None else None
        self._node_key_pem = node_key_pem
        self._node_key_password = node_key_password
        self.node_cert_pem = node_cert_pem
        self._ca_cert_pem = ca_cert_pem
        self._clock = clock
        try:
            subject = verify_certificate(ca_cert_pem, node_cert_pem, at=datetime.now(UTC))
        except (CryptoError, InvalidInput) as exc:
            raise ConfigError(f"this node's certificate cannot serve the data plane: {exc.message}") from exc
        if subject.node is None:
            raise ConfigError("the data plane needs a node certificate (from `chainshare ca issue-node`)")
        self.agency = subject.agency
        self.node_name = subject.node
        self.spool_dir = Path(spool_dir)
        self.spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.spool_dir.chmod(0o700)
        for stale in (*self.spool_dir.glob("dataset-*.delivery"), *self.spool_dir.glob(".*.sealed"),
                      *self.spool_dir.glob(".*.partial"), *self.spool_dir.glob(".*.sample")):
            stale.unlink(missing_ok=True)  # left by a crash: plaintext never outlives a restart
        self.resolve_owner_peer: Callable[[str], str] = resolve_owner_peer or self._connected_peer_of
        self._replay = ReplayGuard(self.limits.request_window, self.spool_dir / _REPLAY_FILE)
        self._signed_requests = ReplayStore(self.spool_dir / _SIGNED_REPLAY_FILE, 2 * self.limits.request_window)
        self._outgoing: dict[bytes, _Outgoing] = {}
        self._incoming: dict[bytes, _Incoming] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="sharing")
        self._upload_lock: asyncio.Lock | None = None
        self._query_locks: dict[tuple[int, str], asyncio.Lock] = {}
        self.stats: dict[str, int] = dict.fromkeys(
            ("deliveries_served", "bytes_served", "queries_served", "refusals", "deliveries_received",
             "bytes_received", "deliveries_failed", "deliveries_revoked", "records_failed", "records_unmatched"),
            0)

    # ----------------------------------------------------------------------- wiring

    def bind_transport(self, transport: Transport | None) -> None:
        """Use ``transport`` (the node's P2PNode) from now on."""
        self.transport = transport

    def route_message(self, fallback: Callable[[str, str, Any], Awaitable[None]]
                      ) -> Callable[[str, str, Any], Awaitable[None]]:
        """An ``on_message`` for the P2PNode: ``data.*`` messages here, everything else to ``fallback``."""

        async def on_message(peer: str, msg_type: str, body: Any) -> None:
            if msg_type.startswith(wire.MSG_PREFIX):
                await self.handle_message(peer, msg_type, body)
            else:
                await fallback(peer, msg_type, body)

        return on_message

    def route_request(self, fallback: Callable[[str, str, Any], Awaitable[Any]]
                      ) -> Callable[[str, str, Any], Awaitable[Any]]:
        """An ``on_request`` for the P2PNode: ``data.*`` requests here, everything else to ``fallback``."""

        async def on_request(peer: str, msg_type: str, body: Any) -> Any:
            if msg_type.startswith(wire.MSG_PREFIX):
                return await self.handle_request(peer, msg_type, body)
            return await fallback(peer, msg_type, body)

        return on_request

    async def close(self) -> None:
        """Abort every transfer and stop the worker threads."""
        for inc in list(self._incoming.values()):
            self._fail_incoming(inc, SharingUnavailable("this node is shutting down: retry once it is back"),
                                notify=True)
        for out in list(self._outgoing.values()):
            out.cancelled = "the owner node is shutting down"
            out.progress.set()
        tasks = [t for t in self._tasks if not t.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def on_peer_down(self, peer: str, reason: str) -> None:
        """Abort the transfers with a peer that disconnected (they cannot resume)."""
        for inc in [i for i in self._incoming.values() if i.peer == peer]:
            self._fail_incoming(inc, DeliveryFailed(f"the owner node {peer!r} disconnected ({reason})"), notify=False)
        for out in [o for o in self._outgoing.values() if o.peer == peer]:
            out.cancelled = f"the requester disconnected ({reason})"
            out.progress.set()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _post(self, peer: str, msg_type: str, body: Any) -> bool:
        """Queue one message for ``peer`` (for the node itself: handled as a new task, in order)."""
        if peer == LOCAL_PEER:
            self._spawn(self.handle_message(LOCAL_PEER, msg_type, body))
            return True
        if self.transport is None:
            return False
        return bool(self.transport.send(peer, msg_type, body))

    async def request_peer(self, peer: str, msg_type: str, body: Any, timeout: float) -> Any:
        """``peer``'s answer to a request over the P2P session (this node itself for ``LOCAL_PEER``);
        its refusal re-raised as the matching error."""
        if peer == LOCAL_PEER:
            return await self.handle_request(LOCAL_PEER, msg_type, body)
        if self.transport is None:
            raise SharingUnavailable("this node has no P2P transport: it can reach only its own agency's datasets")
        try:
            return await self.transport.request(peer, msg_type, body, timeout=timeout)
        except RequestFailed as exc:
            raise _remote_error(peer, exc.message.split("answered an error: ", 1)[-1]) from None
        except P2PError as exc:
            raise SharingUnavailable(f"cannot reach the owner node {peer!r}: {exc.message}") from None

    def get_peer_agency(self, peer: str) -> str:
        """The agency certified for ``peer``'s authenticated session (this node's for ``LOCAL_PEER``)."""
        if peer == LOCAL_PEER:
            return self.agency
        if self.transport is not None:
            for info in self.transport.get_peers():
                if info.name == peer:
                    return str(info.agency)
        raise Unauthorized(f"peer {peer!r} is not connected over an authenticated session")

    def _connected_peer_of(self, agency: str) -> str:
        """The default owner-peer resolver: a connected node certified for ``agency``."""
        if self.transport is None:
            raise SharingUnavailable("this node has no P2P transport: it can reach only its own agency's datasets")
        names = sorted(info.name for info in self.transport.get_peers() if info.agency == agency)
        if not names:
            raise SharingUnavailable(f"no node of agency {agency!r} is connected to this node; retry later")
        return str(names[0])

    # ----------------------------------------------------------------------- dispatch (from the node)

    async def handle_request(self, peer: str, msg_type: str, body: Any) -> Any:
        """Answer a ``data.*`` request from ``peer``; a refusal raises a ChainshareError whose message
        starts with its kind (``[NotFound] ...``) for the peer."""
        try:
            if msg_type == wire.MSG_FETCH:
                return await self._serve_fetch(peer, body)
            if msg_type == wire.MSG_QUERY:
                return await self._serve_query(peer, body)
            raise InvalidInput(f"unknown data-plane request {msg_type[:64]!r}")
        except ChainshareError as exc:
            if peer == LOCAL_PEER:
                raise
            raise _RemoteRefusal(f"[{get_error_kind(exc)}] {exc.message}") from None

    async def handle_message(self, peer: str, msg_type: str, body: Any) -> None:
        """Take a ``data.*`` message from ``peer``; never blocks on I/O (safe for the P2P dispatcher)."""
        try:
            transfer_id = wire.parse_transfer_id(body)
        except InvalidInput as exc:
            log_event(log, logging.WARNING, "data-plane message dropped", peer=peer, msg_type=msg_type,
                      reason="malformed", detail=exc.message)
            return
        if msg_type in (wire.MSG_ACK, wire.MSG_CANCEL):
            self._on_owner_message(peer, msg_type, transfer_id, body)
        elif msg_type in (wire.MSG_BEGIN, wire.MSG_CHUNK, wire.MSG_END, wire.MSG_ERROR):
            self._on_requester_message(peer, msg_type, transfer_id, body)
        else:
            log_event(log, logging.WARNING, "data-plane message dropped", peer=peer, msg_type=msg_type[:64],
                      reason="unknown_type")

    # ----------------------------------------------------------------------- owner: checks

    def _refused(self, peer: str, agency: str | None, what: str, exc: ChainshareError, **fields: Any) -> None:
        self.stats["refusals"] += 1
        log_event(log, logging.WARNING, "data-plane request refused", peer=peer or self.node_name, agency=agency,
                  request=what, error=type(exc).__name__, reason=exc.message, **fields)

    def _now(self) -> int:
        return compute_chain_time(self.node, self._clock())

    async def _wait_for_height(self, height: int) -> None:
        deadline = time.monotonic() + self.limits.height_wait
        while self.node.chain.head_height < height:
            if time.monotonic() >= deadline:
                raise NotFound(f"this node's chain is at height {self.node.chain.head_height}, below height "
                               f"{height} where the requester saw the grant finalized; retry shortly")
            await asyncio.sleep(0.05)

    def _authorize(self, peer: str, agency: str, dataset_id: int, grant_id: int,
                   actions: tuple[str, ...]) -> tuple[Dataset, GrantRecord]:
        dataset = read_dataset(self.node, dataset_id)
        if dataset.owner != self.agency:
            raise NotFound(f"dataset {dataset_id} belongs to agency {dataset.owner!r}; this node serves the "
                           f"datasets of agency {self.agency!r}")
        grant = read_grant(self.node, grant_id)
        if grant.dataset_id != dataset_id:
            raise Unauthorized(f"grant {grant_id} is for dataset {grant.dataset_id}, not dataset {dataset_id}")
        if grant.grantee != agency:
            who = "this node" if peer == LOCAL_PEER else f"the requesting node {peer!r}"
            raise Unauthorized(f"grant {grant_id} was issued to agency {grant.grantee!r}, but {who} is certified "
                               f"for agency {agency!r}")
        if grant.action not in actions:
            raise Unauthorized(f"grant {grant_id} is for {grant.action!r}; this request needs "
                               f"{' or '.join(repr(a) for a in actions)}")
        reason = get_grant_invalid_reason(self.node, grant, self._now())
        if reason is not None:
            raise Unauthorized(reason)
        if not is_grant_valid_on_chain(self.node, grant):
            raise Unauthorized(f"grant {grant_id} is not valid on this node's chain (AccessControl.isGrantValid)")
        return dataset, grant

    def _check_certificate(self, peer: str, agency: str, cert_pem: bytes) -> None:
        try:
            subject = verify_certificate(self._ca_cert_pem, cert_pem, at=datetime.now(UTC))
        except (CryptoError, InvalidInput) as exc:
            raise Unauthorized(f"the node certificate in the request is refused: {exc.message}") from None
        node = self.node_name if peer == LOCAL_PEER else peer
        if subject.node != node or subject.agency != agency:
            raise Unauthorized(f"the node certificate in the request names node {subject.node!r} of agency "
                               f"{subject.agency!r}, but the request came over the authenticated session of node "
                               f"{node!r} of agency {agency!r}")
        get_cert = getattr(self.transport, "get_peer_certificate", None)
        if peer != LOCAL_PEER and callable(get_cert):
            presented = get_cert(peer)
            if presented is not None and _cert_der(presented) != _cert_der(cert_pem):
                raise Unauthorized("the node certificate in the request is not the one the peer presented in TLS")

    def find_vault_entry(self, dataset: Dataset) -> VaultEntry:
        """The vault entry of ``dataset``'s registered version (by its content hash)."""
        if self.vault is None:
            raise SharingUnavailable("this node has no vault ([sharing] vault_dir): it holds no datasets")
        try:
            return self.vault.find(dataset.content_hash)
        except NotFound:
            raise NotFound(f"this node's vault does not hold dataset {dataset.id} version {dataset.version} "
                           f"(content hash 0x{dataset.content_hash.hex()})") from None

    def _check_can_record(self, data: bytes) -> None:
        if self.account is None:
            raise SharingUnavailable("this node has no agency account ([sharing] account_keystore), so it "
                                     "cannot record deliveries on chain and serves none")
        ok, out, _ = self.node.call(self.account, ACCESS_CONTROL, data)
        if not ok:
            raise SharingUnavailable(f"this node cannot record the use on chain: {decode_revert_reason(out)}")

    def _capacity(self, peer: str) -> None:
        if len(self._outgoing) >= self.limits.max_transfers:
            raise SharingUnavailable(f"busy: {len(self._outgoing)} deliveries in progress; retry later")
        if sum(1 for o in self._outgoing.values() if o.peer == peer) >= self.limits.max_transfers_per_peer:
            raise SharingUnavailable("busy: too many deliveries to this node in progress; retry later")

    def _submit_record(self, data: bytes) -> tuple[bytes | None, str | None]:
        """Sign and submit a record transaction with this node's agency account (to its own mempool)."""
        return self.submit_call(ACCESS_CONTROL, data)

    def submit_call(self, to: bytes, data: bytes, *, min_gas: int = 0) -> tuple[bytes | None, str | None]:
        """Sign a call with this node's agency account and submit it to this node's mempool, after a
        dry run: (tx hash, None), or (None, why it was not submitted). ``min_gas``: for a call that
        may do more work on chain than in the dry run (e.g. the last of several confirmations)."""
        if self.account is None or self._account_key is None:
            return None, "this node has no agency account ([sharing] account_keystore)"
        try:
            ok, out, used = self.node.call(self.account, to, data)
            if not ok:
                return None, f"recording reverted: {decode_revert_reason(out)}"
            state = self.node.chain.state
            nonce = self.node.mempool.get_pending_nonce(state, self.account)
            raw = sign_eip1559(self._account_key, chain_id=self.node.chain_id, nonce=nonce, to=to,
                               data=data, gas=max(min_gas, used + used // 4 + 10_000))
            return self.node.submit_raw_transaction(raw), None
        except ChainshareError as exc:
            log_event(log, logging.ERROR, "data-plane use not recorded", reason=exc.message)
            return None, exc.message

    # ----------------------------------------------------------------------- owner: fetch

    async def _admit(self, peer: str, agency: str, req: wire.FetchRequest | wire.QueryRequest,
                     actions: tuple[str, ...]) -> tuple[Dataset, GrantRecord, float]:
        """The checks a fetch and a query share: the request is fresh and its (grant, nonce) never
        seen, this node's chain has reached the height the requester saw the grant at, and the grant
        is valid for the peer's agency and one of ``actions``. Returns (dataset, grant, now). The
        nonce is spent here, atomically, whatever happens next."""
        now = self._clock()
        # Checked and remembered in one step, before any await: a refused request spends its nonce too.
        self._replay.claim(req.grant_id, req.nonce, req.issued_at, now)
        await self._wait_for_height(req.min_height)
        dataset, grant = self._authorize(peer, agency, req.dataset_id, req.grant_id, actions)
        return dataset, grant, now

    async def _serve_fetch(self, peer: str, body: Any) -> Any:
        agency: str | None = None
        fields: dict[str, Any] = {}
        try:
            req = wire.FetchRequest.from_wire(body)
            fields = {"dataset": req.dataset_id, "grant": req.grant_id}
            agency = self.get_peer_agency(peer)
            dataset, grant, _now = await self._admit(peer, agency, req, READ_ACTIONS)
            self._check_certificate(peer, agency, req.node_cert_pem)
            entry = self.find_vault_entry(dataset)
            if grant.action == cedar.ACTION_READ and self._pseudonym_secret is None:
                raise SharingUnavailable("this node has no pseudonym secret (it lives in the vault, [sharing] "
                                         "vault_dir): it cannot serve 'read' deliveries")
            self._check_can_record(encode_call(ACCESS_CONTRACT, "recordDelivery", grant.id, entry.content_hash,
                                               entry.content_hash, 0))
            self._capacity(peer)
            if req.transfer_id in self._outgoing:
                raise InvalidInput("transfer id already in use; send a fresh one")
        except ChainshareError as exc:
            self._refused(peer, agency, wire.MSG_FETCH, exc, **fields)
            raise
        out = _Outgoing(req.transfer_id, peer, agency, dataset, grant, entry, req.node_cert_pem,
                        min(req.window, self.limits.window))
        self._outgoing[req.transfer_id] = out
        out.task = self._spawn(self._stream_delivery(out))
        log_event(log, logging.INFO, "delivery accepted", peer=peer or self.node_name, agency=agency,
                  dataset=dataset.id, grant=grant.id, action=grant.action)
        return wire.FetchAccepted(req.transfer_id, out.window).to_wire()

    async def _stream_delivery(self, out: _Outgoing) -> None:
        """Stream the envelope, record the delivery, and only once that record is final send the
        wrapped key (``data.end``): no byte is readable by the requester without its on-chain record.
        The grant is re-checked on this node's finalized state before every chunk."""
        vault = self.vault
        assert vault is not None
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        tid = out.transfer_id
        schema = validate_schema(json.loads(out.dataset.schema_json))
        context = compute_delivery_context(out.grant.id, out.entry.content_hash, out.grant.action)
        pseudonym_key = None
        if out.grant.action == cedar.ACTION_READ:
            assert self._pseudonym_secret is not None
            pseudonym_key = derive_pseudonym_key(self._pseudonym_secret, self.agency, out.grant.grantee,
                                                 out.dataset.id)
        delivery = None
        pending: asyncio.Future[bytes | None] | None = None
        try:
            delivery = await loop.run_in_executor(
                self._executor,
                lambda: vault.export_for(out.entry, schema, out.grant.action, out.cert_pem, context,
                                         pseudonym_key=pseudonym_key,
                                         chunk_size=self.limits.effective_chunk_size()))
            begin = wire.Begin(tid, out.grant.action, out.entry.content_hash, out.entry.fmt)
            if not self._post(out.peer, wire.MSG_BEGIN, begin.to_wire()):
                raise DeliveryFailed("the requester is no longer connected")
            blocks = iter(delivery)
            seq = 0
            while True:
                pending = loop.run_in_executor(self._executor, next, blocks, None)
                block = await asyncio.shield(pending)
                pending = None
                if block is None:
                    break
                await self._wait_for_credit(out, seq)
                self._recheck_grant(out)
                if not self._post(out.peer, wire.MSG_CHUNK, wire.Chunk(tid, seq, block).to_wire()):
                    raise DeliveryFailed("the requester is no longer connected (or too slow)")
                seq += 1
            self._recheck_grant(out)
            record_tx = await self._record_delivery(out, delivery.content_hash, delivery.plaintext_size)
            if out.cancelled is not None:
                raise _Cancelled(out.cancelled)
            end = wire.End(tid, seq, delivery.plaintext_size, delivery.content_hash, record_tx, delivery.wrapped_key)
            self._post(out.peer, wire.MSG_END, end.to_wire())
            self.stats["deliveries_served"] += 1
            self.stats["bytes_served"] += delivery.plaintext_size
            log_event(log, logging.INFO, "delivery sent", peer=out.peer or self.node_name, agency=out.agency,
                      dataset=out.dataset.id, grant=out.grant.id, action=out.grant.action,
                      bytes=delivery.plaintext_size, chunks=seq, seconds=round(time.monotonic() - started, 3),
                      record_tx="0x" + record_tx.hex())
        except _Cancelled as exc:
            log_event(log, logging.WARNING, "delivery cancelled", peer=out.peer or self.node_name,
                      agency=out.agency, dataset=out.dataset.id, grant=out.grant.id, reason=str(exc))
        except ChainshareError as exc:
            if isinstance(exc, Unauthorized):
                self.stats["deliveries_revoked"] += 1
            log_event(log, logging.WARNING, "delivery aborted", peer=out.peer or self.node_name, agency=out.agency,
                      dataset=out.dataset.id, grant=out.grant.id, error=type(exc).__name__, reason=exc.message)
            self._post(out.peer, wire.MSG_ERROR, wire.Abort(tid, f"the owner aborted the delivery: {exc.message}")
                       .to_wire())
        except Exception:
            log.exception("delivery failed", extra={"fields": {"dataset": out.dataset.id, "grant": out.grant.id}})
            self._post(out.peer, wire.MSG_ERROR, wire.Abort(tid, "the owner aborted the delivery: internal error")
                       .to_wire())
        finally:
            if pending is not None:
                with contextlib.suppress(BaseException):
                    await pending  # never close the stream while a worker thread is inside it
            if delivery is not None:
                delivery.close()
            self._outgoing.pop(tid, None)

    def _recheck_grant(self, out: _Outgoing) -> None:
        """The grant of a running delivery is still valid on this node's finalized state (Unauthorized
        once it is revoked or expired, or an agency is suspended)."""
        self._authorize(out.peer, out.agency, out.dataset.id, out.grant.id, READ_ACTIONS)

    async def _record_delivery(self, out: _Outgoing, delivered_hash: bytes, size: int) -> bytes:
        """Submit ``recordDelivery`` and wait until it is final on this node's chain with the matching
        ``DeliveryRecorded``; its transaction hash. A record that cannot be made is a security event:
        logged at error, counted (``records_failed``), and the delivery ends without its key."""
        call = encode_call(ACCESS_CONTRACT, "recordDelivery", out.grant.id, out.entry.content_hash, delivered_hash,
                           size)
        record_tx, error = self._submit_record(call)
        try:
            if record_tx is None:
                raise RecordFailed(f"the delivery could not be recorded on chain: {error}")
            deadline = time.monotonic() + self.limits.record_wait
            while (loc := self.node.chain.get_tx_location(record_tx)) is None:
                if out.cancelled is not None:
                    raise _Cancelled(out.cancelled)
                if time.monotonic() > deadline:
                    raise RecordFailed(f"the delivery record 0x{record_tx.hex()} was not final within "
                                       f"{self.limits.record_wait:.0f} s")
                await asyncio.sleep(0.05)
            receipt = self.node.chain.get_receipts(loc.height)[loc.index]
            if receipt.status != 1:
                raise RecordFailed(f"the delivery record 0x{record_tx.hex()} reverted: "
                                   f"{decode_revert_reason(receipt.output)}")
        except RecordFailed as exc:
            self.stats["records_failed"] += 1
            log_event(log, logging.ERROR, "delivery not recorded: key withheld", peer=out.peer or self.node_name,
                      agency=out.agency, dataset=out.dataset.id, grant=out.grant.id, bytes=size,
                      delivered_hash="0x" + delivered_hash.hex(), reason=exc.message)
            raise
        return record_tx

    async def _wait_for_credit(self, out: _Outgoing, seq: int) -> None:
        while True:
            if out.cancelled is not None:
                raise _Cancelled(out.cancelled)
            if seq <= out.acked + out.window:
                return
            out.progress.clear()
            try:
                async with asyncio.timeout(self.limits.idle_timeout):
                    await out.progress.wait()
            except TimeoutError:
                raise _Cancelled(f"the requester acknowledged nothing for {self.limits.idle_timeout:.0f} s") from None

    def _on_owner_message(self, peer: str, msg_type: str, transfer_id: bytes, body: Any) -> None:
        out = self._outgoing.get(transfer_id)
        if out is None or out.peer != peer:
            return  # late (after the end) or not this peer's transfer: nothing to do
        try:
            if msg_type == wire.MSG_ACK:
                ack = wire.Ack.from_wire(body)
                out.acked = max(out.acked, ack.seq)
            else:
                out.cancelled = f"the requester cancelled: {wire.Abort.from_wire(body).message}"
        except InvalidInput as exc:
            out.cancelled = f"malformed {msg_type} from the requester: {exc.message}"
        out.progress.set()

    # ----------------------------------------------------------------------- owner: query

    async def _serve_query(self, peer: str, body: Any) -> Any:
        agency: str | None = None
        fields: dict[str, Any] = {}
        try:
            req = wire.QueryRequest.from_wire(body)
            fields = {"dataset": req.dataset_id, "grant": req.grant_id}
            agency = self.get_peer_agency(peer)
            dataset, grant, _ = await self._admit(peer, agency, req, COMPUTE_ACTIONS)
            schema = validate_schema(json.loads(dataset.schema_json))
            entry = self.find_vault_entry(dataset)
            if self.account is None:
                raise SharingUnavailable("this node has no agency account ([sharing] account_keystore), so it "
                                         "cannot record computations on chain and answers no query")
            # One query at a time per grantee and dataset: each waits for the previous one's record,
            # so the budget read from the chain is never stale.
            lock = self._query_locks.setdefault((dataset.id, grant.grantee), asyncio.Lock())
            async with lock:
                query_hash, result, record_tx = await self._run_private_query(grant, schema, entry, req.query_json)
        except ChainshareError as exc:
            self._refused(peer, agency, wire.MSG_QUERY, exc, **fields)
            raise
        self.stats["queries_served"] += 1
        log_event(log, logging.INFO, "query answered", peer=peer or self.node_name, agency=agency,
                  dataset=dataset.id, grant=grant.id, groups=len(result.groups),
                  epsilon=result.epsilon_micro / EPSILON_UNIT, query_hash="0x" + query_hash.hex(),
                  record_tx="0x" + record_tx.hex())
        return wire.QueryAnswer(query_hash, compute_result_hash(result), result.to_canonical_json(), record_tx,
                                None).to_wire()

    async def _run_private_query(self, grant: GrantRecord, schema: Schema, entry: VaultEntry,
                                 query_json: bytes) -> tuple[bytes, QueryResult, bytes]:
        """Decide, run and record one query: (query hash, result, record tx). The result leaves only
        once its ComputationRecorded (which charged its epsilon) is final on this node's chain; a
        refusal is recorded as ComputationRefused, then raised."""
        allowance = self._read_allowance(grant)
        refusal = decide_query_admission(grant.id, allowance, 0)  # the rate, before any work
        if refusal is not None:
            await self._record_refusal(grant, keccak256(query_json), refusal)
        try:
            query = parse_query(query_json, schema)
        except Unauthorized as exc:  # a personal column: an attempt at personal data, on the record
            await self._record_refusal(grant, keccak256(query_json),
                                       QueryRefused(exc.message, reason=REFUSED_PERSONAL))
        query_hash = compute_query_hash(query)
        refusal = decide_query_admission(grant.id, allowance, query.epsilon_micro)
        if refusal is not None:
            await self._record_refusal(grant, query_hash, refusal)
        vault = self.vault
        assert vault is not None

        def run() -> QueryResult:
            with vault.open_plaintext(entry) as src:
                return run_query_on_stream(query, src, entry.fmt, schema)

        try:
            result = await asyncio.get_running_loop().run_in_executor(self._executor, run)
        except QueryRefused as exc:  # decided on noisy counts: charged like an answer
            await self._record_refusal(grant, query_hash, exc)
        record_tx, error = self._submit_record(encode_call(
            ACCESS_CONTRACT, "recordComputation", grant.id, query_hash, compute_result_hash(result),
            query.epsilon_micro))
        if record_tx is None:
            raise SharingUnavailable(f"this node could not record the computation on chain ({error}); the result "
                                     "was withheld")
        await self._wait_recorded(record_tx, "the computation")
        return query_hash, result, record_tx

    def _read_allowance(self, grant: GrantRecord) -> ComputeAllowance:
        return ComputeAllowance(*(int(v) for v in call_view(self.node, ACCESS_CONTRACT, "getComputeAllowance",
                                                              grant.id)))

    async def _record_refusal(self, grant: GrantRecord, query_hash: bytes, refusal: QueryRefused) -> NoReturn:
        """Put ``refusal`` on chain (ComputationRefused; one rate-limit refusal per grant and hour, as
        the contract allows), then raise it, naming the record."""
        data = encode_call(ACCESS_CONTRACT, "recordRefusal", grant.id, query_hash, refusal.reason,
                           refusal.epsilon_micro)
        record_tx, error = None, None
        if refusal.reason != REFUSED_RATE_LIMIT or self.node.call(self.account or bytes(20), ACCESS_CONTROL, data)[0]:
            record_tx, error = self._submit_record(data)
        suffix = ""
        if record_tx is not None:
            with contextlib.suppress(ChainshareError):
                await self._wait_recorded(record_tx, "the refusal")
            suffix = f" (refusal recorded on chain in transaction 0x{record_tx.hex()})"
        elif error is not None:
            log_event(log, logging.ERROR, "query refusal not recorded", grant=grant.id, reason=refusal.reason,
                      error=error)
        raise type(refusal)(refusal.message + suffix, reason=refusal.reason, epsilon_micro=refusal.epsilon_micro)

    async def _wait_recorded(self, tx_hash: bytes, what: str) -> None:
        """Return once ``tx_hash`` is final on this node's chain and succeeded (SharingUnavailable
        if it is not final within ``record_wait``, QueryRefused if it reverted)."""
        deadline = time.monotonic() + self.limits.record_wait
        while (loc := self.node.chain.get_tx_location(tx_hash)) is None:
            if time.monotonic() > deadline:
                raise SharingUnavailable(f"the record of {what} (0x{tx_hash.hex()}) was not final within "
                                         f"{self.limits.record_wait:.0f} s; the result was withheld, retry later")
            await asyncio.sleep(0.05)
        if self.node.chain.get_receipts(loc.height)[loc.index].status != 1:
            raise QueryRefused(f"the chain refused the record of {what} (0x{tx_hash.hex()} reverted: the grant "
                               "was revoked or expired, or its rate or the budget was reached meanwhile); the result "
                               "was withheld", reason=REFUSED_BUDGET)

    # ----------------------------------------------------------------------- requester

    def _own_grant(self, dataset_id: int, grant_id: int | None, actions: tuple[str, ...]) -> tuple[Dataset,
                                                                                                   GrantRecord]:
        dataset = read_dataset(self.node, dataset_id)
        now = self._now()
        if grant_id is None:
            return dataset, select_grant(self.node, dataset_id, self.agency, actions, now)
        grant = read_grant(self.node, grant_id)
        if grant.dataset_id != dataset_id:
            raise InvalidInput(f"grant {grant_id} is for dataset {grant.dataset_id}, not dataset {dataset_id}")
        if grant.grantee != self.agency:
            raise Unauthorized(f"grant {grant_id} was issued to agency {grant.grantee!r}, not to this node's agency "
                               f"{self.agency!r}")
        if grant.action not in actions:
            raise InvalidInput(f"grant {grant_id} is for {grant.action!r}; this needs "
                               f"{' or '.join(repr(a) for a in actions)}")
        reason = get_grant_invalid_reason(self.node, grant, now)
        if reason is not None:
            raise Unauthorized(reason)
        return dataset, grant

    def _owner_peer(self, dataset: Dataset) -> str:
        return LOCAL_PEER if dataset.owner == self.agency else self.resolve_owner_peer(dataset.owner)

    async def fetch(self, dataset_id: int, dst: Path | str | None = None, *, grant_id: int | None = None) -> FetchResult:
        """Fetch the dataset under a read grant of this node's agency (``grant_id``, or the newest
        valid one) from its owner's node into ``dst`` (default: a new file in the spool directory).
        Raises, and leaves nothing at ``dst``, unless the delivery verified completely."""
        dataset, grant = self._own_grant(dataset_id, grant_id, READ_ACTIONS)
        peer = self._owner_peer(dataset)
        if dst is None:
            final = self.spool_dir / f"dataset-{dataset_id}-{secrets.token_hex(8)}.delivery"
        else:
            final = Path(dst)
            if final.is_dir():
                raise InvalidInput(f"{final} is a directory: give a file path to write the dataset to")
        transfer_id = secrets.token_bytes(wire.TRANSFER_ID_LEN)
        inc = _Incoming(self, transfer_id, peer, dataset, grant, final, self.limits.window)
        self._incoming[transfer_id] = inc
        req = wire.FetchRequest(dataset.id, grant.id, secrets.token_bytes(24), int(self._clock()),
                                self.node.chain.head_height, transfer_id, self.node_cert_pem, inc.window)
        try:
            accepted = wire.FetchAccepted.from_wire(
                await self.request_peer(peer, wire.MSG_FETCH, req.to_wire(), self.limits.request_timeout))
            inc.window = accepted.window
            inc.last_activity = time.monotonic()
            while True:
                idle = time.monotonic() - inc.last_activity
                # The owner sends nothing while its record becomes final: allow for that wait too.
                remaining = self.limits.idle_timeout + self.limits.record_wait - idle
                if remaining <= 0:
                    self._fail_incoming(inc, DeliveryFailed(
                        f"the owner node sent nothing for {self.limits.idle_timeout + self.limits.record_wait:.0f} s"),
                        notify=True)
                try:
                    await asyncio.wait_for(asyncio.shield(inc.done), timeout=max(remaining, 0.01))
                except TimeoutError:
                    continue
                break
            return await self._open_delivery(inc)
        except BaseException as exc:
            if not inc.done.done():
                self._fail_incoming(inc, exc if isinstance(exc, ChainshareError) else DeliveryFailed(str(exc)),
                                    notify=True)
            if inc.receiver is not None:
                with contextlib.suppress(BaseException):
                    await inc.receiver
            raise
        finally:
            self._incoming.pop(transfer_id, None)
            self._discard_sealed(inc)

    async def _open_delivery(self, inc: _Incoming) -> FetchResult:
        """The spooled ciphertext, once the owner's record of it is final on this node's chain,
        decrypted into the destination (nothing left there unless every chunk authenticated and the
        bytes hash to what the record names)."""
        assert inc.begin is not None and inc.end is not None and inc.sealed is not None
        begin, end, sealed = inc.begin, inc.end, inc.sealed
        if inc.grant.action == cedar.ACTION_READ_IDENTIFIED and end.delivered_hash != begin.content_hash:
            raise DeliveryFailed("a read_identified delivery must be the dataset version itself, but the owner "
                                 "announced another hash; discarded")
        result = FetchResult(inc.dataset.id, inc.grant.id, inc.grant.action, inc.dst, end.plaintext_size,
                             begin.content_hash, end.delivered_hash, end.record_tx, None, begin.fmt)
        result = await self._confirm_record(result)
        context = compute_delivery_context(inc.grant.id, begin.content_hash, inc.grant.action)

        def decrypt() -> tuple[int, bytes]:
            with sealed.open("rb") as src:
                return receive_delivery(iter(lambda: src.read(1 << 20), b""), end.wrapped_key, self._node_key_pem,
                                        context, inc.dst, password=self._node_key_password,
                                        expected_hash=end.delivered_hash)

        try:
            size, _digest = await asyncio.get_running_loop().run_in_executor(self._executor, decrypt)
        except CryptoError as exc:
            self.stats["deliveries_failed"] += 1
            log_event(log, logging.WARNING, "delivery refused by the requester", peer=inc.peer or self.node_name,
                      dataset=inc.dataset.id, grant=inc.grant.id, error="CryptoError", reason=exc.message)
            raise DeliveryFailed(f"the delivery did not verify and was discarded: {exc.message}") from None
        except OSError as exc:
            raise StorageError(f"cannot write the delivery to {inc.dst}: {exc.strerror}") from None
        if size != end.plaintext_size:  # the hash matched, so this cannot happen unless the owner lied
            inc.dst.unlink(missing_ok=True)
            raise DeliveryFailed(f"the delivery holds {size} bytes, the owner announced {end.plaintext_size}; "
                                 "discarded")
        self.stats["deliveries_received"] += 1
        self.stats["bytes_received"] += size
        log_event(log, logging.INFO, "delivery received", peer=inc.peer or self.node_name, dataset=inc.dataset.id,
                  grant=inc.grant.id, action=inc.grant.action, bytes=size, record_tx="0x" + end.record_tx.hex(),
                  recorded_height=result.recorded_height)
        return result

    async def _confirm_record(self, result: FetchResult) -> FetchResult:
        """Wait until the owner's record of ``result`` is final on this node's chain and check that
        it names this grant, the version and the hash and size of the bytes announced; otherwise
        raise DeliveryFailed (logged at error, counted: the owner released a key without a record)."""
        try:
            if result.record_tx is None:
                raise DeliveryFailed("the owner recorded no delivery on chain: the bytes cannot be checked "
                                     "against the chain")
            deadline = time.monotonic() + self.limits.record_wait
            while (loc := self.node.chain.get_tx_location(result.record_tx)) is None:
                if time.monotonic() > deadline:
                    raise DeliveryFailed(f"the owner's delivery record 0x{result.record_tx.hex()} was not final "
                                         f"within {self.limits.record_wait:.0f} s")
                await asyncio.sleep(0.05)
            receipt = self.node.chain.get_receipts(loc.height)[loc.index]
            recorded = [args for lg in receipt.logs if (ev := decode_event(lg)) and ev[1] == "DeliveryRecorded"
                        for args in (ev[2],)]
            expected = {"grantId": result.grant_id, "datasetId": result.dataset_id,
                        "contentHash": result.content_hash, "deliveredHash": result.delivered_hash,
                        "bytesDelivered": result.size}
            if receipt.status != 1 or len(recorded) != 1 or any(recorded[0].get(k) != v for k, v in expected.items()):
                raise DeliveryFailed(f"the owner's delivery record 0x{result.record_tx.hex()} does not match the "
                                     f"bytes received (record: {recorded or 'none, status ' + str(receipt.status)})")
        except DeliveryFailed as exc:
            self.stats["records_unmatched"] += 1
            log_event(log, logging.ERROR, "delivery refused by the requester: no matching record",
                      dataset=result.dataset_id, grant=result.grant_id, error="DeliveryFailed", reason=exc.message)
            raise DeliveryFailed(f"{exc.message}; the delivery was discarded") from None
        return replace(result, recorded_height=loc.height)

    def _on_requester_message(self, peer: str, msg_type: str, transfer_id: bytes, body: Any) -> None:
        inc = self._incoming.get(transfer_id)
        if inc is None or inc.failed:
            return
        if inc.peer != peer:
            log_event(log, logging.WARNING, "data-plane message dropped", peer=peer, msg_type=msg_type,
                      reason="wrong_peer", detail="a message for a transfer with another node")
            return
        inc.last_activity = time.monotonic()
        try:
            if msg_type == wire.MSG_BEGIN:
                self._on_begin(inc, wire.Begin.from_wire(body))
            elif msg_type == wire.MSG_CHUNK:
                self._on_chunk(inc, wire.Chunk.from_wire(body))
            elif msg_type == wire.MSG_END:
                self._on_end(inc, wire.End.from_wire(body))
            else:
                abort = wire.Abort.from_wire(body)
                self._fail_incoming(inc, DeliveryFailed(abort.message), notify=False)
        except ChainshareError as exc:
            self._fail_incoming(inc, exc, notify=True)

    def _on_begin(self, inc: _Incoming, begin: wire.Begin) -> None:
        if inc.begin is not None:
            raise DeliveryFailed("the owner started the delivery twice")
        if begin.action != inc.grant.action:
            raise DeliveryFailed(f"the owner delivers under {begin.action!r}, but grant {inc.grant.id} is for "
                                 f"{inc.grant.action!r}")
        if get_version_of_hash(self.node.chain.state, inc.dataset.id, begin.content_hash) is None:
            raise DeliveryFailed(f"the owner delivers content hash 0x{begin.content_hash.hex()}, which is no "
                                 f"version of dataset {inc.dataset.id} on this node's chain")
        inc.begin = wire.Begin(begin.transfer_id, begin.action, begin.content_hash, check_format(begin.fmt))
        sealed = inc.sealed = self.spool_dir / f".{inc.transfer_id.hex()}.sealed"
        inc.receiver = inc.loop.run_in_executor(self._executor, _spool_ciphertext, inc.pieces(), sealed)
        inc.receiver.add_done_callback(lambda fut: self._on_received(inc, fut))

    def _on_chunk(self, inc: _Incoming, chunk: wire.Chunk) -> None:
        if inc.begin is None or inc.end is not None:
            raise DeliveryFailed("the owner sent a chunk outside the delivery")
        if chunk.seq != inc.next_seq:
            raise DeliveryFailed(f"the owner sent chunk {chunk.seq} where chunk {inc.next_seq} was due")
        if inc.queued >= inc.window:
            raise DeliveryFailed(f"the owner sent more than {inc.window} unacknowledged chunks")
        inc.next_seq += 1
        inc.queued += 1
        inc.chunks.put(chunk.data)

    def _on_end(self, inc: _Incoming, end: wire.End) -> None:
        if inc.begin is None or inc.end is not None:
            raise DeliveryFailed("the owner ended a delivery it had not started")
        if end.chunks != inc.next_seq:
            raise DeliveryFailed(f"the owner announced {end.chunks} chunks but sent {inc.next_seq}")
        inc.end = end
        inc.chunks.put(None)
        if inc.received is not None:
            self._finish_incoming(inc)

    def _on_received(self, inc: _Incoming, fut: asyncio.Future[int]) -> None:
        if inc.failed:
            self._discard_sealed(inc)
            return
        if fut.cancelled():
            self._fail_incoming(inc, DeliveryFailed("the delivery was cancelled"), notify=True)
            return
        exc = fut.exception()
        if exc is not None:
            error = exc if isinstance(exc, ChainshareError) else DeliveryFailed(f"delivery failed: {exc!r}")
            self._fail_incoming(inc, error, notify=True)
            return
        inc.received = fut.result()
        if inc.end is not None:
            self._finish_incoming(inc)

    def _finish_incoming(self, inc: _Incoming) -> None:
        """Every chunk is spooled and the owner's data.end is in: ``fetch`` opens the delivery."""
        if not inc.done.done():
            inc.done.set_result(None)

    def _fail_incoming(self, inc: _Incoming, exc: BaseException, *, notify: bool) -> None:
        if inc.failed:
            return
        inc.failed = True
        inc.chunks.put(_ABORT)
        self.stats["deliveries_failed"] += 1
        message = exc.message if isinstance(exc, ChainshareError) else str(exc)
        log_event(log, logging.WARNING, "delivery refused by the requester", peer=inc.peer or self.node_name,
                  dataset=inc.dataset.id, grant=inc.grant.id, error=type(exc).__name__, reason=message)
        if notify:
            self._post(inc.peer, wire.MSG_CANCEL, wire.Abort(inc.transfer_id, message).to_wire())
        if inc.receiver is None or inc.receiver.done():
            self._discard_sealed(inc)
        if not inc.done.done():
            inc.done.set_exception(exc)
            inc.done.exception()  # retrieved here so that an abandoned transfer logs no warning

    @staticmethod
    def _discard_sealed(inc: _Incoming) -> None:
        if inc.sealed is not None and (inc.receiver is None or inc.receiver.done()):
            inc.sealed.unlink(missing_ok=True)

    async def query(self, dataset_id: int, query: Any, *, grant_id: int | None = None) -> QueryOutcome:
        """Run an aggregate query (JSON object or text) on the owner's node under a compute grant of
        this node's agency; only the result comes back."""
        dataset, grant = self._own_grant(dataset_id, grant_id, COMPUTE_ACTIONS)
        schema = validate_schema(json.loads(dataset.schema_json))
        parsed = parse_query(query, schema)  # refuse locally what the owner would refuse
        peer = self._owner_peer(dataset)
        req = wire.QueryRequest(dataset.id, grant.id, secrets.token_bytes(24), int(self._clock()),
                                self.node.chain.head_height, canonical_json(parsed.to_json()))
        answer = wire.QueryAnswer.from_wire(
            await self.request_peer(peer, wire.MSG_QUERY, req.to_wire(), self.limits.query_timeout))
        if answer.query_hash != compute_query_hash(parsed):
            raise DeliveryFailed("the owner answered another query (query hash mismatch)")
        if keccak256(answer.result_json) != answer.result_hash:
            raise DeliveryFailed("the query result does not match its hash")
        try:
            result = json.loads(answer.result_json)
        except ValueError:
            raise DeliveryFailed("the owner's query result is not JSON") from None
        if not isinstance(result, dict) or set(result) != {"columns", "groups", "epsilon", "privacy"}:
            raise DeliveryFailed("the owner's query result is not an aggregate result")
        return QueryOutcome(dataset.id, grant.id, result, answer.query_hash, answer.result_hash, answer.record_tx,
                            answer.record_error)

    # ----------------------------------------------------------------------- vault uploads (owner, REST)

    def authorize_agency_signer(self, message: str, signature: bytes) -> bytes:
        """The address that signed ``message``, if it is an account of this node's agency (Unauthorized
        otherwise)."""
        address = wire.recover_personal_signer(message, signature)
        agency = get_agency_of(self.node.chain.state, address)
        if agency != self.agency:
            who = f"agency {agency!r}" if agency else "no member agency"
            raise Unauthorized(f"the request is signed by 0x{address.hex()}, an account of {who}; this node acts "
                               f"only for agency {self.agency!r} (a signature over another node, chain, time or "
                               "nonce than the request's recovers another address)")
        return address

    def admit_signed_request(self, message: str, signature: bytes, timestamp: int) -> bytes:
        """The signer of an agency's signed REST request (``protocol.compute_*_message``, which names
        this node, the chain, the time and a nonce): an account of this node's agency, within
        ``request_window`` seconds of this node's clock, and never accepted before (checked and
        remembered on disk in one step, so neither a restart nor a concurrent copy replays it)."""
        now = self._clock()
        if abs(now - timestamp) > self.limits.request_window:
            raise Unauthorized(f"the signed request's time {timestamp} is more than {int(self.limits.request_window)} s "
                               f"away from this node's clock ({int(now)}): sign a fresh request (check the clocks)")
        address = self.authorize_agency_signer(message, signature)
        if not self._signed_requests.claim(keccak256(message.encode("utf-8")), now):
            raise Unauthorized("this signed request was already served: sign a new one (fresh nonce)")
        return address

    async def receive_upload(self, body: AsyncIterator[bytes], *, fmt: str, declared_hash: bytes,
                             schema: Schema | None, min_group: int | None) -> UploadResult:
        """Stream an upload into the vault (memory flat), check it hashes to ``declared_hash`` (what
        the agency signed), and check the rows against ``schema`` (or infer one from the first rows,
        with no column personal). A failed upload leaves no new vault entry."""
        if self.vault is None:
            raise SharingUnavailable("this node has no vault ([sharing] vault_dir): it cannot hold datasets")
        fmt = check_format(fmt)
        if self._upload_lock is None:
            self._upload_lock = asyncio.Lock()
        async with self._upload_lock:
            return await self._receive_upload(self.vault, body, fmt, declared_hash, schema, min_group)

    async def _receive_upload(self, vault: Vault, body: AsyncIterator[bytes], fmt: str, declared_hash: bytes,
                              schema: Schema | None, min_group: int | None) -> UploadResult:
        loop = asyncio.get_running_loop()
        before = {e.dataset_key_id for e in await loop.run_in_executor(self._executor, vault.entries)}
        pipe = _Pipe(loop)
        reader = _SamplingReader(pipe, _SAMPLE_BYTES)
        stored = loop.run_in_executor(self._executor, vault.put_stream, io.BufferedReader(reader, 1 << 20), fmt)
        stored.add_done_callback(lambda _f: pipe.close())
        total = 0
        try:
            async for block in body:
                total += len(block)
                if total > self.limits.max_upload_bytes:
                    raise PayloadTooLarge(f"upload exceeds this node's limit of {self.limits.max_upload_bytes} bytes")
                if block and not await pipe.put(block):
                    break
            await pipe.put(None)
            entry = await stored
        except BaseException:
            await pipe.put(_ABORT)
            with contextlib.suppress(BaseException):
                created = await stored
                if created.dataset_key_id not in before:
                    vault.remove(created)
            raise
        created_now = entry.dataset_key_id not in before
        try:
            if entry.content_hash != declared_hash:
                raise InvalidInput(f"the uploaded bytes hash to 0x{entry.content_hash.hex()}, but the signed "
                                   f"{wire.CONTENT_HASH_HEADER} is 0x{declared_hash.hex()}")
            source = "given"
            if schema is None:
                source = "inferred"
                schema = await loop.run_in_executor(self._executor, self._infer, reader.sample(), fmt,
                                                    min_group, total)
            elif min_group is not None:
                schema = with_min_group(schema, min_group)
            checked = schema
            await loop.run_in_executor(self._executor, self._check_rows, vault, entry, checked, source)
        except BaseException:
            if created_now:
                vault.remove(entry)
            raise
        return UploadResult(entry.content_hash, entry.size, fmt, checked, source, created_now)

    def _infer(self, sample: bytes, fmt: str, min_group: int | None, total: int) -> Schema:
        if len(sample) < total:
            cut = sample.rfind(b"\n")
            sample = sample[: cut + 1] if cut >= 0 else b""
        fd, name = _private_temp(self.spool_dir, ".sample")
        try:
            with open(fd, "wb") as file:
                file.write(sample)
            kwargs = {"min_group": min_group} if min_group is not None else {}
            try:
                return infer_schema(name, fmt, **kwargs)
            except InvalidInput as exc:
                raise InvalidInput(f"cannot infer a schema from the first rows: {exc.message}; "
                                   "give the schema (--schema)") from None
        finally:
            Path(name).unlink(missing_ok=True)

    @staticmethod
    def _check_rows(vault: Vault, entry: VaultEntry, schema: Schema, source: str) -> None:
        try:
            with vault.open_plaintext(entry) as src:
                for _row in iter_records(src, entry.fmt, schema, schema.names):
                    pass
        except InvalidInput as exc:
            hint = "; give a schema (--schema) that fits every row" if source == "inferred" else ""
            raise InvalidInput(f"the dataset does not fit its {source} schema: {exc.message}{hint}") from None


class _Cancelled(Exception):
    pass


class _Pipe:
    """Blocks from the event loop to a reader thread, at most ``depth`` waiting."""

    def __init__(self, loop: asyncio.AbstractEventLoop, depth: int = 8) -> None:
        self._loop = loop
        self._queue: queue.Queue[Any] = queue.Queue()
        self._slots = asyncio.Semaphore(depth)
        self.closed = False

    async def put(self, item: Any) -> bool:
        """Hand ``item`` (bytes, None = end, _ABORT) over; False once the reader has stopped."""
        if self.closed:
            return False
        await self._slots.acquire()
        if self.closed:
            return False
        self._queue.put(item)
        return True

    def get(self) -> Any:
        item = self._queue.get()
        self._loop.call_soon_threadsafe(self._slots.release)
        return item

    def close(self) -> None:
        self.closed = True
        for _ in range(64):
            self._slots.release()


class _SamplingReader(io.RawIOBase):
    """The upload as a raw binary stream (for the vault thread), keeping its first bytes as a sample."""

    def __init__(self, pipe: _Pipe, sample_limit: int) -> None:
        super().__init__()
        self._pipe = pipe
        self._current = memoryview(b"")
        self._sample = bytearray()
        self._limit = sample_limit
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._current:
            if self._eof:
                return 0
            item = self._pipe.get()
            if item is None:
                self._eof = True
                return 0
            if item is _ABORT:
                raise DeliveryFailed("upload aborted")
            if len(self._sample) < self._limit:
                self._sample += item[: self._limit - len(self._sample)]
            self._current = memoryview(item)
        size = min(len(buffer), len(self._current))
        buffer[:size] = self._current[:size]
        self._current = self._current[size:]
        return size

    def sample(self) -> bytes:
        return bytes(self._sample)


def _spool_ciphertext(pieces: Iterator[bytes], path: Path) -> int:
    """Write a delivery's envelope bytes to ``path`` (0600, new); the byte count. The file is
    removed if the stream fails."""
    total = 0
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise StorageError(f"cannot spool the delivery to {path}: {exc.strerror}") from exc
    try:
        with open(fd, "wb") as file:
            for piece in pieces:
                file.write(piece)
                total += len(piece)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return total


def _private_temp(directory: Path, suffix: str) -> tuple[int, str]:
    name = str(directory / f".{secrets.token_hex(8)}{suffix}")
    return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), name


def _cert_der(cert: bytes) -> bytes:
    try:
        if cert.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(cert).public_bytes(serialization.Encoding.DER)
        return x509.load_der_x509_certificate(cert).public_bytes(serialization.Encoding.DER)
    except ValueError:
        raise Unauthorized("the node certificate in the request is not a certificate") from None


def _iso(seconds: int) -> str:
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return str(seconds)


# --------------------------------------------------------------------------- wiring into a node


_SERVICES: weakref.WeakKeyDictionary[Any, SharingService] = weakref.WeakKeyDictionary()


def build_sharing_service(node: ConfiguredNode, transport: Transport | None = None, *,
                          key_password: str | None = None) -> SharingService:
    """A SharingService from the node's configuration: [p2p] ca_cert, node_cert, node_key (the node's
    TLS identity, whose key also unseals the vault, its pseudonym secret, and unwraps deliveries) and
    [sharing] vault_dir, account_keystore. Passwords: ``key_password``, else none in dev_mode, else
    [validator] password_file / $CHAINSHARE_PASSWORD."""
    from chainshare.crypto.keystore import decrypt_account_key, read_password

    cfg = node.cfg
    missing = [k for k in ("ca_cert", "node_cert", "node_key") if not getattr(cfg.p2p, k)]
    if missing:
        raise SharingUnavailable(f"this node's data plane is not configured: set [p2p] {', '.join(missing)} "
                                 "(the node's consortium TLS identity)")

    def read(value: str, what: str) -> bytes:
        path = cfg.path(value)
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the {what} {path}: {exc.strerror}") from exc

    password: str | None
    if key_password is not None:
        password = key_password
    elif cfg.node.dev_mode:
        password = None
    else:
        password = read_password(cfg.path(cfg.validator.password_file) if cfg.validator.password_file else None)
    node_key = read(cfg.p2p.node_key, "node key")
    vault = None
    pseudonym_secret = None
    spool = cfg.path(cfg.node.data_dir.rstrip("/") + "-sharing")
    if cfg.sharing.vault_dir:
        vault_dir = cfg.path(cfg.sharing.vault_dir)
        vault = Vault.open(vault_dir, node_key, password=password)
        pseudonym_secret = load_or_create_pseudonym_secret(vault_dir, node_key, password=password)
        spool = vault_dir / "incoming"
    account_key = None
    if cfg.sharing.account_keystore:
        text = read(cfg.sharing.account_keystore, "account keystore")  # its own ConfigError, not "not JSON"
        try:
            keystore = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"[sharing] account_keystore is not JSON: {exc}") from exc
        account_key = decrypt_account_key(keystore, password or "")
    limits = SharingLimits(max_frame_size=cfg.p2p.max_frame_bytes)
    return SharingService(node, transport, vault, pseudonym_secret, account_key, node_key,
                          node_cert_pem=read(cfg.p2p.node_cert, "node certificate"),
                          ca_cert_pem=read(cfg.p2p.ca_cert, "consortium CA certificate"),
                          node_key_password=password, spool_dir=spool, limits=limits)


def get_sharing_service(node: ConfiguredNode, *, create: bool = True) -> SharingService:
    """The node's one SharingService (built from its configuration on first use if ``create``)."""
    service = _SERVICES.get(node)
    if service is None:
        if not create:
            raise SharingUnavailable("this node's data plane is not attached")
        service = build_sharing_service(node)
        _SERVICES[node] = service
    return service


def attach_sharing(node: ConfiguredNode, transport: Transport | None, *,
                   resolve_owner_peer: Callable[[str], str] | None = None,
                   key_password: str | None = None) -> SharingService:
    """Give the node its data plane over ``transport`` (its P2PNode) and return the service; the node
    then forwards ``data.*`` messages to ``handle_message``, ``data.*`` requests to
    ``handle_request`` and peer-down events to ``on_peer_down``."""
    service = _SERVICES.get(node)
    if service is None:
        service = build_sharing_service(node, transport, key_password=key_password)
        _SERVICES[node] = service
    service.bind_transport(transport)
    if transport is not None:
        config = getattr(transport, "config", None)
        frame = getattr(config, "max_frame_size", None)
        if isinstance(frame, int):
            service.limits = replace(service.limits, max_frame_size=frame)
        queue_bytes = getattr(config, "send_queue_bytes", None)
        if isinstance(queue_bytes, int):
            limits = service.limits
            per_chunk = limits.effective_chunk_size() + _FRAME_OVERHEAD
            fits = queue_bytes // 2 // (per_chunk * limits.max_transfers_per_peer)
            service.limits = replace(limits, window=max(1, min(limits.window, fits)))
    if resolve_owner_peer is not None:
        service.resolve_owner_peer = resolve_owner_peer
    return service


def register_sharing_service(node: object, service: SharingService) -> None:
    """Make ``service`` the one ``get_sharing_service(node)`` returns (tests, custom wiring)."""
    _SERVICES[node] = service


__all__ = [
    "LOCAL_PEER", "DeliveryFailed", "FetchResult", "PayloadTooLarge", "QueryOutcome", "ReplayGuard",
    "SharingLimits", "SharingService", "SharingUnavailable", "UploadResult", "attach_sharing",
    "build_sharing_service", "get_sharing_service", "register_sharing_service",
]
