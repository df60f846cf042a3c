"""Ledger types: Header, Block, QuorumCertificate, Receipt, Log.

Every type has a canonical encoding (``to_list`` / ``from_list`` via ``codec``). The block hash is
keccak-256 of the encoded header; the header commits to transactions, receipts, state, logs bloom,
the validator set, and the quorum certificate the block carries (``justify_hash``), so a block and
the certificates that finalize it form one hash-linked, verifiable record. ``FORMAT_VERSION`` names
this layout; a data directory written with a newer one is refused.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from chainshare import codec
from chainshare.crypto.hashing import ZERO_HASH, keccak256
from chainshare.errors import DecodeError

FORMAT_VERSION = 3  # 2: consensus signatures carry the validator-set epoch; 3: stored blocks/receipts may be zlib
OLDEST_READABLE_FORMAT = 2  # a format-2 data directory is read as it is and marked 3 when opened
BLOOM_BYTES = 256
EMPTY_BLOOM = b"\x00" * BLOOM_BYTES


def decode_bytes(v: Any, n: int | None, what: str) -> bytes:
    if not isinstance(v, bytes) or (n is not None and len(v) != n):
        raise DecodeError(f"{what} must be {n if n is not None else 'some'} bytes")
    return v


def decode_uint(v: Any, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise DecodeError(f"{what} must be a non-negative integer")
    return v


def decode_fields(v: Any, n: int, what: str) -> list[Any]:
    if not isinstance(v, list) or len(v) != n:
        raise DecodeError(f"{what} must be an array of {n} fields")
    return v


@dataclass(frozen=True)
class Header:
    parent_hash: bytes
    height: int
    round: int
    timestamp_ms: int
    proposer: bytes  # 20-byte validator address
    tx_root: bytes
    receipts_root: bytes
    state_root: bytes
    logs_bloom: bytes
    validator_set_hash: bytes
    gas_limit: int
    gas_used: int
    justify_hash: bytes  # compute_justify_hash(QC carried, TC carried): ZERO_HASH if none

    def to_list(self) -> list[Any]:
        return [
            self.parent_hash, self.height, self.round, self.timestamp_ms, self.proposer,
            self.tx_root, self.receipts_root, self.state_root, self.logs_bloom,
            self.validator_set_hash, self.gas_limit, self.gas_used, self.justify_hash,
        ]

    @classmethod
    def from_list(cls, v: Any) -> Header:
        f = decode_fields(v, 13, "header")
        return cls(
            decode_bytes(f[0], 32, "parent_hash"), decode_uint(f[1], "height"), decode_uint(f[2], "round"),
            decode_uint(f[3], "timestamp"), decode_bytes(f[4], 20, "proposer"), decode_bytes(f[5], 32, "tx_root"),
            decode_bytes(f[6], 32, "receipts_root"), decode_bytes(f[7], 32, "state_root"),
            decode_bytes(f[8], BLOOM_BYTES, "logs_bloom"), decode_bytes(f[9], 32, "validator_set_hash"),
            decode_uint(f[10], "gas_limit"), decode_uint(f[11], "gas_used"), decode_bytes(f[12], 32, "justify_hash"),
        )

    def encode(self) -> bytes:
        return codec.encode_trusted(self.to_list())

    @property
    def hash(self) -> bytes:
        return compute_header_hash(self)


def compute_header_hash(header: Header) -> bytes:
    """The block hash: keccak-256 of the canonical header encoding."""
    return keccak256(header.encode())


@dataclass(frozen=True)
class QuorumCertificate:
    """2f+1 BLS votes on (block_hash, height, round), aggregated: a signer bitmap + one signature."""

    block_hash: bytes
    height: int
    round: int
    signers: bytes  # bitmap over the validator set of ``height``, bit i = validators[i]
    signature: bytes  # 96-byte aggregate BLS signature

    def to_list(self) -> list[Any]:
        return [self.block_hash, self.height, self.round, self.signers, self.signature]

    @classmethod
    def from_list(cls, v: Any) -> QuorumCertificate:
        f = decode_fields(v, 5, "quorum certificate")
        return cls(
            decode_bytes(f[0], 32, "qc.block_hash"), decode_uint(f[1], "qc.height"), decode_uint(f[2], "qc.round"),
            decode_bytes(f[3], None, "qc.signers"), decode_bytes(f[4], 96, "qc.signature"),
        )

    def encode(self) -> bytes:
        return codec.encode_trusted(self.to_list())

    @property
    def hash(self) -> bytes:
        return keccak256(self.encode())

    def signer_indices(self) -> list[int]:
        return [i for i in range(len(self.signers) * 8) if self.signers[i // 8] >> (i % 8) & 1]


def compute_justify_hash(justify: QuorumCertificate | None, timeout_cert: bytes | None) -> bytes:
    """What a header's ``justify_hash`` commits to: the QC the block carries and, when it entered
    its view by timeout, the encoded TC too (so neither can be swapped without changing the hash).
    ZERO_HASH for neither; the QC's own hash when there is no TC."""
    if timeout_cert is None:
        return justify.hash if justify is not None else ZERO_HASH
    return keccak256(b"\x03" + (justify.hash if justify is not None else ZERO_HASH) + keccak256(timeout_cert))


def make_bitmap(indices: list[int], size: int) -> bytes:
    bits = bytearray((size + 7) // 8)
    for i in indices:
        bits[i // 8] |= 1 << (i % 8)
    return bytes(bits)


@dataclass(frozen=True)
class Block:
    """A header, its raw transactions, the QC it carries (for its parent), an optional encoded
    timeout certificate, and the proposer's BLS signature over the block hash."""

    header: Header
    transactions: tuple[bytes, ...]
    justify: QuorumCertificate | None
    timeout_cert: bytes | None = None
    signature: bytes = b""
    hash: bytes = field(default=b"", compare=False)

    def __post_init__(self) -> None:
        if not self.hash:
            object.__setattr__(self, "hash", compute_header_hash(self.header))

    def to_list(self) -> list[Any]:
        return [
            self.header.to_list(), list(self.transactions),
            self.justify.to_list() if self.justify else None, self.timeout_cert, self.signature,
        ]

    @classmethod
    def from_list(cls, v: Any) -> Block:
        f = decode_fields(v, 5, "block")
        if not isinstance(f[1], list):
            raise DecodeError("block transactions must be an array")
        txs = tuple(decode_bytes(t, None, "transaction") for t in f[1])
        justify = QuorumCertificate.from_list(f[2]) if f[2] is not None else None
        tc = decode_bytes(f[3], None, "timeout_cert") if f[3] is not None else None
        return cls(Header.from_list(f[0]), txs, justify, tc, decode_bytes(f[4], None, "signature"))

    def encode(self) -> bytes:
        return codec.encode_trusted(self.to_list())

    @classmethod
    def decode(cls, data: bytes) -> Block:
        return cls.from_list(codec.decode(data))

    @classmethod
    def decode_stored(cls, data: bytes) -> Block:
        """A block this node stored itself (``codec.decode_stored``); fields are checked as in ``decode``."""
        return cls.from_list(codec.decode_stored(data))

    @staticmethod
    def read_stored_height(data: bytes) -> int:
        """The height of a block this node stored (``encode``), read from its header alone: the transactions
        are not decoded. DecodeError if the bytes do not start with a header."""
        return Header.from_list(codec.decode_stored_first(data)).height

    @property
    def height(self) -> int:
        return self.header.height


@dataclass(frozen=True)
class Log:
    address: bytes
    topics: tuple[bytes, ...]
    data: bytes

    def to_list(self) -> list[Any]:
        return [self.address, list(self.topics), self.data]

    @classmethod
    def from_list(cls, v: Any) -> Log:
        f = decode_fields(v, 3, "log")
        if not isinstance(f[1], list) or len(f[1]) > 4:
            raise DecodeError("log topics must be an array of at most 4")
        return cls(
            decode_bytes(f[0], 20, "log.address"),
            tuple(decode_bytes(t, 32, "log.topic") for t in f[1]),
            decode_bytes(f[2], None, "log.data"),
        )


STATUS_SUCCESS = 1
STATUS_FAILURE = 0


@dataclass(frozen=True)
class Receipt:
    """The outcome of one transaction; ``output`` holds return data, or revert data on failure."""

    status: int
    cumulative_gas_used: int
    gas_used: int
    logs: tuple[Log, ...]
    output: bytes = b""

    def to_list(self) -> list[Any]:
        return [self.status, self.cumulative_gas_used, self.gas_used,
                [lg.to_list() for lg in self.logs], self.output]

    @classmethod
    def from_list(cls, v: Any) -> Receipt:
        f = decode_fields(v, 5, "receipt")
        if not isinstance(f[3], list):
            raise DecodeError("receipt logs must be an array")
        return cls(decode_uint(f[0], "status"), decode_uint(f[1], "cumulative_gas_used"), decode_uint(f[2], "gas_used"),
                   tuple(Log.from_list(x) for x in f[3]), decode_bytes(f[4], None, "output"))

    def encode(self) -> bytes:
        """The receipt's canonical encoding, computed once: the receipts root hashes it and the stored
        receipts list is made of it (a receipt never changes). Kept in the instance's ``__dict__`` (set with
        ``object.__setattr__``, as ``Block`` sets its hash), not with ``functools.cached_property``, whose
        lock cost more than the encoding saved (profiling, one node under load: 3% of the time the node
        held the GIL)."""
        encoded: bytes | None = self.__dict__.get("_encoded")
        if encoded is None:
            encoded = codec.encode_trusted(self.to_list())
            object.__setattr__(self, "_encoded", encoded)
        return encoded


@functools.lru_cache(maxsize=4096)
def _bloom_bits(item: bytes) -> int:
    """The three bits ``item`` sets in a logs bloom. Cached: contract addresses and account topics recur in
    nearly every receipt, and a receipt's bloom is computed again whenever a client reads it (profiling, one
    node under load: blooms were ~4% of its CPU, two thirds of it keccak of items seen before). 4,096 items
    (~1 MB): the recurring ones stay, the one-off topics (anchored digests) pass through."""
    h = keccak256(item)
    return (1 << ((h[0] << 8 | h[1]) & 2047)) | (1 << ((h[2] << 8 | h[3]) & 2047)) | (1 << ((h[4] << 8 | h[5]) & 2047))


def compute_logs_bloom(logs: Any) -> bytes:
    """Ethereum's 2048-bit bloom over every log's address and topics."""
    bloom = 0
    for lg in logs:
        bloom |= _bloom_bits(lg.address)
        for topic in lg.topics:
            bloom |= _bloom_bits(topic)
    return bloom.to_bytes(BLOOM_BYTES, "big")


def bloom_contains(bloom: bytes, item: bytes) -> bool:
    bits = _bloom_bits(item)
    return int.from_bytes(bloom, "big") & bits == bits


GENESIS_PARENT = ZERO_HASH
