"""The data plane's wire protocol between nodes, and the signatures that authorise an agency's
requests to its own node.

Node to node (over the mutually authenticated TLS 1.3 transport, ``chainshare.p2p``; every body is
a canonical-msgpack array, validated field by field by ``from_wire``)::

    requester                                   owner
    data.fetch  (request) ───────────────────►  re-checks the grant on its own finalized chain
                ◄─────────────────── response   FetchAccepted [transfer id, window]
                ◄───────────────────────────── data.begin  [transfer id, action, version hash, format]
                ◄───────────────────────────── data.chunk  [transfer id, seq, bytes] (seq 0 = envelope header;
                                                            the grant is re-checked before each chunk)
    data.ack    ─────────────────────────────►  [transfer id, seq]: at most ``window`` chunks unacknowledged
                                                records the delivery on chain and waits until it is final
                ◄───────────────────────────── data.end    [transfer id, chunks, bytes, delivered hash,
                                                            record tx hash, wrapped key]
                ◄───────────────────────────── data.error  [transfer id, message]  (owner aborts)
    data.cancel ─────────────────────────────►  [transfer id, reason]              (requester aborts)

    data.query  (request) ───────────────────►  runs the aggregate query under the min-group rule
                ◄─────────────────── response   QueryAnswer [query hash, result hash, result JSON,
                                                             record tx hash | None, record error | None]

A delivery is the vault's streaming envelope (``Vault.export_for``), one envelope block per
``data.chunk``; its key is wrapped to the requester node's certified P-256 key under a context
binding grant, dataset version and action (``vault.compute_delivery_context``). The wrapped key
travels only in ``data.end``, which the owner sends once its ``recordDelivery`` (grant, version,
hash and size of the bytes sent) is final on its chain: until then the requester holds ciphertext
it cannot decrypt, so no byte becomes readable without a matching on-chain record, and a grant
revoked mid-stream (the owner re-checks it on its finalized state before every chunk) ends the
delivery with ``data.error`` and no key. A frame is at most
a few MiB, so a dataset of any size flows as a sequence of chunks with credit-based flow control
(``data.ack``): memory stays flat at both ends and bulk data never queues more than ``window``
chunks ahead of consensus traffic on the same connection.

A fetch or query request names dataset, grant, a fresh random nonce and its issue time (the
owner refuses a nonce it has seen and a request outside its clock window), and the height at
which the requester saw the grant finalized (the owner waits briefly for its own chain to get
there). Who asks is the TLS peer: its certificate's agency must be the grantee.

Agency to its own node (REST, see ``chainshare.api.sharing``): EIP-191 ``personal_sign``
signatures by an account of the node's agency over the messages built below, in the headers
``X-Chainshare-Signature`` (65 bytes r || s || v, hex), ``X-Chainshare-Timestamp`` (unix seconds)
and ``X-Chainshare-Nonce`` (16..64 random bytes, hex). Every message names its audience (the node's
name and the chain id), its time and its nonce: the node serves a signed request once, ever (its
replay record is on disk), and only within its time window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chainshare.crypto.hashing import keccak256
from chainshare.crypto.secp import recover_address, sign_hash
from chainshare.decimal_text import parse_ascii_decimal
from chainshare.errors import CryptoError, InvalidInput, Unauthorized

PROTOCOL_VERSION = 2  # 2: the wrapped key moved from data.begin to data.end (after the record)
MSG_PREFIX = "data."
MSG_FETCH = "data.fetch"
MSG_QUERY = "data.query"
MSG_BEGIN = "data.begin"
MSG_CHUNK = "data.chunk"
MSG_ACK = "data.ack"
MSG_END = "data.end"
MSG_ERROR = "data.error"
MSG_CANCEL = "data.cancel"
REQUEST_TYPES = (MSG_FETCH, MSG_QUERY)
MESSAGE_TYPES = (MSG_BEGIN, MSG_CHUNK, MSG_ACK, MSG_END, MSG_ERROR, MSG_CANCEL)

TRANSFER_ID_LEN = 16
MIN_NONCE_LEN = 16
MAX_NONCE_LEN = 64
MAX_CERT_BYTES = 8192
MAX_WRAPPED_KEY_BYTES = 256
MAX_WINDOW = 64
MAX_MESSAGE_LEN = 512
MAX_QUERY_BYTES = 16 * 1024
MAX_RESULT_BYTES = 3 * 1024 * 1024
MAX_CHUNK_BYTES = 16 * 1024 * 1024 + 64
MAX_ID = 2**64 - 1

SIGNATURE_HEADER = "X-Chainshare-Signature"
TIMESTAMP_HEADER = "X-Chainshare-Timestamp"
NONCE_HEADER = "X-Chainshare-Nonce"
CONTENT_HASH_HEADER = "X-Chainshare-Content-Hash"
SCHEMA_HEADER = "X-Chainshare-Schema"


# --------------------------------------------------------------------------- field checks


def _list(body: Any, size: int, what: str) -> list[Any]:
    if not isinstance(body, (list, tuple)) or len(body) != size:
        raise InvalidInput(f"malformed {what}: expected an array of {size} fields")
    return list(body)


def _uint(value: Any, what: str, maximum: int = MAX_ID, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise InvalidInput(f"{what} must be an integer in {minimum}..{maximum}")
    return value


def _bytes(value: Any, what: str, minimum: int, maximum: int) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or not minimum <= len(value) <= maximum:
        if minimum == maximum:
            raise InvalidInput(f"{what} must be {minimum} bytes")
        raise InvalidInput(f"{what} must be {minimum}..{maximum} bytes")
    return bytes(value)


def _text(value: Any, what: str, maximum: int = MAX_MESSAGE_LEN) -> str:
    if not isinstance(value, str) or len(value) > maximum:
        raise InvalidInput(f"{what} must be a string of at most {maximum} characters")
    return value


def _optional_hash(value: Any, what: str) -> bytes | None:
    return None if value is None else _bytes(value, what, 32, 32)


def _optional_text(value: Any, what: str) -> str | None:
    return None if value is None else _text(value, what)


def _version(value: Any) -> None:
    if value != PROTOCOL_VERSION:
        raise InvalidInput(
            f"unsupported data-plane protocol version {value!r}: this node speaks version {PROTOCOL_VERSION}"
        )


def parse_transfer_id(body: Any) -> bytes:
    """The transfer id every streaming message starts with (InvalidInput if absent)."""
    if not isinstance(body, (list, tuple)) or not body:
        raise InvalidInput("malformed data-plane message: expected an array starting with the transfer id")
    return _bytes(body[0], "transfer id", TRANSFER_ID_LEN, TRANSFER_ID_LEN)


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class FetchRequest:
    dataset_id: int
    grant_id: int
    nonce: bytes
    issued_at: int  # unix seconds, the requester's clock
    min_height: int  # the requester saw the grant finalized at this height
    transfer_id: bytes
    node_cert_pem: bytes  # the requesting node's certificate: the delivery key is wrapped to it
    window: int  # chunks the requester accepts unacknowledged

    def to_wire(self) -> list[Any]:
        return [PROTOCOL_VERSION, self.dataset_id, self.grant_id, self.nonce, self.issued_at, self.min_height,
                self.transfer_id, self.node_cert_pem, self.window]

    @classmethod
    def from_wire(cls, body: Any) -> FetchRequest:
        v = _list(body, 9, "fetch request")
        _version(v[0])
        return cls(
            dataset_id=_uint(v[1], "dataset id", minimum=1),
            grant_id=_uint(v[2], "grant id", minimum=1),
            nonce=_bytes(v[3], "nonce", MIN_NONCE_LEN, MAX_NONCE_LEN),
            issued_at=_uint(v[4], "issued_at"),
            min_height=_uint(v[5], "min_height"),
            transfer_id=_bytes(v[6], "transfer id", TRANSFER_ID_LEN, TRANSFER_ID_LEN),
            node_cert_pem=_bytes(v[7], "node certificate", 1, MAX_CERT_BYTES),
            window=_uint(v[8], "window", MAX_WINDOW, 1),
        )


@dataclass(frozen=True)
class FetchAccepted:
    transfer_id: bytes
    window: int

    def to_wire(self) -> list[Any]:
        return [self.transfer_id, self.window]

    @classmethod
    def from_wire(cls, body: Any) -> FetchAccepted:
        v = _list(body, 2, "fetch response")
        return cls(_bytes(v[0], "transfer id", TRANSFER_ID_LEN, TRANSFER_ID_LEN),
                   _uint(v[1], "window", MAX_WINDOW, 1))


@dataclass(frozen=True)
class QueryRequest:
    dataset_id: int
    grant_id: int
    nonce: bytes
    issued_at: int
    min_height: int
    query_json: bytes  # the aggregate query as JSON text (floats cannot travel in canonical msgpack)

    def to_wire(self) -> list[Any]:
        return [PROTOCOL_VERSION, self.dataset_id, self.grant_id, self.nonce, self.issued_at, self.min_height,
                self.query_json]

    @classmethod
    def from_wire(cls, body: Any) -> QueryRequest:
        v = _list(body, 7, "query request")
        _version(v[0])
        return cls(
            dataset_id=_uint(v[1], "dataset id", minimum=1),
            grant_id=_uint(v[2], "grant id", minimum=1),
            nonce=_bytes(v[3], "nonce", MIN_NONCE_LEN, MAX_NONCE_LEN),
            issued_at=_uint(v[4], "issued_at"),
            min_height=_uint(v[5], "min_height"),
            query_json=_bytes(v[6], "query", 1, MAX_QUERY_BYTES),
        )


@dataclass(frozen=True)
class QueryAnswer:
    query_hash: bytes
    result_hash: bytes
    result_json: bytes  # canonical JSON of the aggregate result
    record_tx: bytes | None  # the owner's recordComputation transaction
    record_error: str | None

    def to_wire(self) -> list[Any]:
        return [self.query_hash, self.result_hash, self.result_json, self.record_tx, self.record_error]

    @classmethod
    def from_wire(cls, body: Any) -> QueryAnswer:
        v = _list(body, 5, "query answer")
        return cls(_bytes(v[0], "query hash", 32, 32), _bytes(v[1], "result hash", 32, 32),
                   _bytes(v[2], "result", 1, MAX_RESULT_BYTES), _optional_hash(v[3], "record tx"),
                   _optional_text(v[4], "record error"))


# --------------------------------------------------------------------------- streaming messages


@dataclass(frozen=True)
class Begin:
    transfer_id: bytes
    action: str
    content_hash: bytes  # the dataset version delivered (its on-chain content hash)
    fmt: str

    def to_wire(self) -> list[Any]:
        return [self.transfer_id, self.action, self.content_hash, self.fmt]

    @classmethod
    def from_wire(cls, body: Any) -> Begin:
        v = _list(body, 4, MSG_BEGIN)
        return cls(_bytes(v[0], "transfer id", TRANSFER_ID_LEN, TRANSFER_ID_LEN), _text(v[1], "action", 32),
                   _bytes(v[2], "content hash", 32, 32), _text(v[3], "format", 16))


@dataclass(frozen=True)
class Chunk:
    transfer_id: bytes
    seq: int
    data: bytes

    def to_wire(self) -> list[Any]:
        return [self.transfer_id, self.seq, self.data]

    @classmethod
    def from_wire(cls, body: Any) -> Chunk:
        v = _list(body, 3, MSG_CHUNK)
        return cls(_bytes(v[0], "transfer id", TRANSFER_ID_LEN, TRANSFER_ID_LEN), _uint(v[1], "chunk seq"),
                   _bytes(v[2], "chunk", 1, MAX_CHUNK_BYTES))


@dataclass(frozen=True)
class Ack:
    transfer_id: bytes
    seq: int  # every chunk up to and including this one was taken in

    def to_wire(self) -> list[Any]:
        return [self.transfer_id, self.seq]

    @classmethod
    def from_wire(cls, body: Any) -> Ack:
        v = _list(body, 2, MSG_ACK)
        return cls(_bytes(v[0], "transfer id", TRANSFER_ID_LEN, TRANSFER_ID_LEN), _uint(v[1], "ack seq"))


@dataclass(frozen=True)
class End:
    """Sent only once the delivery's record is final on the owner's chain; carries the key."""

    transfer_id: bytes
    chunks: int
    plaintext_size: int
    delivered_hash: bytes
    record_tx: bytes  # the owner's recordDelivery transaction (final)
    wrapped_key: bytes  # the delivery key, wrapped to the requester node's certified key

    def to_wire(self) -> list[Any]:
        return [self.transfer_id, self.chunks, self.plaintext_size, self.delivered_hash, self.record_tx,
                self.wrapped_key]

    @classmethod
    def from_wire(cls, body: Any) -> End:
        v = _list(body, 6, MSG_END)
        return cls(_bytes(v[0], "transfer id", TRANSFER_ID_LEN, TRANSFER_ID_LEN), _uint(v[1], "chunk count"),
                   _uint(v[2], "delivered size"), _bytes(v[3], "delivered hash", 32, 32),
                   _bytes(v[4], "record tx", 32, 32), _bytes(v[5], "wrapped key", 1, MAX_WRAPPED_KEY_BYTES))


@dataclass(frozen=True)
class Abort:
    """``data.error`` (owner to requester) and ``data.cancel`` (requester to owner)."""

    transfer_id: bytes
    message: str

    def to_wire(self) -> list[Any]:
        return [self.transfer_id, self.message[:MAX_MESSAGE_LEN]]

    @classmethod
    def from_wire(cls, body: Any) -> Abort:
        v = _list(body, 2, "abort message")
        return cls(_bytes(v[0], "transfer id", TRANSFER_ID_LEN, TRANSFER_ID_LEN), _text(v[1], "message"))


# --------------------------------------------------------------------------- agency signatures (EIP-191)


def hash_personal_message(message: str) -> bytes:
    """The EIP-191 (version 0x45, ``personal_sign``) hash of ``message``, as wallets compute it."""
    data = message.encode("utf-8")
    return keccak256(b"\x19Ethereum Signed Message:\n" + str(len(data)).encode() + data)


def sign_personal_message(private_key: bytes, message: str) -> bytes:
    """A 65-byte ``personal_sign`` signature r || s || v (v = 27 or 28), as eth_account makes it."""
    y_parity, r, s = sign_hash(private_key, hash_personal_message(message))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([27 + y_parity])


def recover_personal_signer(message: str, signature: bytes) -> bytes:
    """The address that signed ``message`` with ``personal_sign``; Unauthorized if the signature is
    malformed (v may be 27/28 or 0/1; high-s signatures are refused)."""
    if not isinstance(signature, (bytes, bytearray)) or len(signature) != 65:
        raise Unauthorized("a request signature is 65 bytes (r || s || v) of hex")
    v = signature[64]
    y_parity = v - 27 if v >= 27 else v
    try:
        return recover_address(hash_personal_message(message), y_parity, int.from_bytes(signature[:32], "big"),
                               int.from_bytes(signature[32:64], "big"))
    except CryptoError as exc:
        raise Unauthorized(f"the request signature is invalid: {exc.message}") from None


def parse_signature_header(value: str | None) -> bytes:
    if not value:
        raise Unauthorized(f"sign the request: header {SIGNATURE_HEADER} (EIP-191 signature by an account "
                           "of this node's agency) is missing")
    try:
        return bytes.fromhex(value.removeprefix("0x"))
    except ValueError:
        raise Unauthorized(f"header {SIGNATURE_HEADER} is not hex") from None


def parse_timestamp_header(value: str | None) -> int:
    """The request time of header ``X-Chainshare-Timestamp``: unix seconds, 1..12 ASCII digits."""
    seconds = None if value is None else parse_ascii_decimal(value, max_digits=12)
    if seconds is None:
        raise Unauthorized(f"header {TIMESTAMP_HEADER} (unix seconds, signed with the request) is missing or "
                           "malformed")
    return seconds


def parse_nonce_header(value: str | None) -> bytes:
    """The request nonce of header ``X-Chainshare-Nonce``: 16..64 random bytes as hex."""
    if not value:
        raise Unauthorized(f"header {NONCE_HEADER} (16..64 random bytes as hex, signed with the request) is missing")
    try:
        nonce = bytes.fromhex(value.removeprefix("0x"))
    except ValueError:
        raise Unauthorized(f"header {NONCE_HEADER} is not hex") from None
    if not MIN_NONCE_LEN <= len(nonce) <= MAX_NONCE_LEN:
        raise Unauthorized(f"header {NONCE_HEADER} must be {MIN_NONCE_LEN}..{MAX_NONCE_LEN} random bytes as hex")
    return nonce


def _signed(kind: str, node: str, chain_id: int, fields: list[tuple[str, str]], timestamp: int, nonce: bytes) -> str:
    lines = [f"chainshare {kind}", f"node: {node}", f"chain: {chain_id}", *(f"{k}: {v}" for k, v in fields),
             f"time: {timestamp}", f"nonce: 0x{nonce.hex()}"]
    return "\n".join(lines)


def compute_upload_message(content_hash: bytes, node: str, chain_id: int, timestamp: int, nonce: bytes) -> str:
    """What an agency signs to upload a dataset (by its content hash) into the vault of its node
    ``node`` of chain ``chain_id`` (the audience: no other node or chain accepts it)."""
    return _signed("vault upload", node, chain_id, [("content", f"0x{content_hash.hex()}")], timestamp, nonce)


def compute_fetch_message(dataset_id: int, grant_id: int | None, node: str, chain_id: int, timestamp: int,
                          nonce: bytes) -> str:
    """What an agency signs to have its node ``node`` fetch a dataset under a grant (``auto``: the
    node picks the agency's newest valid read grant)."""
    grant = "auto" if grant_id is None else str(grant_id)
    return _signed("dataset fetch", node, chain_id, [("dataset", str(dataset_id)), ("grant", grant)], timestamp,
                   nonce)


def compute_query_message(dataset_id: int, grant_id: int | None, query_digest: bytes, node: str, chain_id: int,
                          timestamp: int, nonce: bytes) -> str:
    """What an agency signs to have its node run a query (``query_digest``: ``compute_query_digest``)."""
    grant = "auto" if grant_id is None else str(grant_id)
    return _signed("dataset query", node, chain_id, [("dataset", str(dataset_id)), ("grant", grant),
                                                     ("query", f"0x{query_digest.hex()}")], timestamp, nonce)


def compute_query_digest(query_json_text: bytes) -> bytes:
    """Keccak-256 of a query's canonical JSON text (``schema.canonical_json`` of the query object)."""
    return keccak256(query_json_text)
