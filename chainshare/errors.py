"""The one error hierarchy of chainshare.

Every error a user can cause is a ``ChainshareError`` subclass that also inherits the matching
built-in (as web3.py does), carries a message that says what was wrong and what to do, and is
mapped to exactly one HTTP status and one JSON-RPC (EIP-1474) code in ``api/errors.py``.
"""

from __future__ import annotations


class ChainshareError(Exception):
    """Base of every chainshare error; ``data`` is extra machine-readable detail (JSON-safe)."""

    http_status = 400
    rpc_code = -32000

    def __init__(self, message: str, data: object | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


class InvalidInput(ChainshareError, ValueError):
    """A request's parameters are malformed."""

    rpc_code = -32602


class DecodeError(InvalidInput):
    """Bytes could not be decoded (RLP, msgpack, hex, ABI)."""


class InvalidTransaction(ChainshareError, ValueError):
    """A transaction was refused at admission; it is never stored."""

    rpc_code = -32003


class UnsupportedTransactionType(InvalidTransaction):
    rpc_code = -32006


class WrongChainId(InvalidTransaction):
    pass


class InvalidSignature(InvalidTransaction):
    pass


class NonceTooLow(InvalidTransaction):
    pass


class NonceTooHigh(InvalidTransaction):
    """The nonce is further ahead of the sender's next executable nonce than the mempool queues."""


class KnownTransaction(InvalidTransaction):
    """The exact raw transaction is already pending or included (a replay)."""


class GasLimitExceeded(InvalidTransaction):
    pass


class TransactionTooLarge(InvalidTransaction):
    pass


class ExecutionFailed(InvalidTransaction):
    """Executing a transaction raised instead of reverting (a bug): proposers leave it out of their blocks and
    drop it from their mempools."""


class UnknownSelector(InvalidTransaction):
    pass


class MempoolFull(ChainshareError, RuntimeError):
    """The pending pool (per sender or in total) is full; retry later."""

    http_status = 429
    rpc_code = -32005


class Unauthorized(ChainshareError, PermissionError):
    """The caller is not allowed to do this (not a member, not the owner, no grant, ...)."""

    http_status = 403
    rpc_code = -32003


class NotFound(ChainshareError, LookupError):
    http_status = 404
    rpc_code = -32001


class MethodNotFound(ChainshareError, LookupError):
    http_status = 404
    rpc_code = -32601


class ExecutionReverted(ChainshareError, RuntimeError):
    """A contract call reverted; ``data`` is the ABI-encoded revert data (hex)."""

    rpc_code = 3


class ConfigError(ChainshareError, ValueError):
    """Configuration, genesis or data directory is invalid or does not match."""


class StorageError(ChainshareError, OSError):
    """The ledger on disk is unreadable or inconsistent."""

    http_status = 500
    rpc_code = -32603


class CryptoError(ChainshareError, ValueError):
    """A key, certificate, signature or keystore is invalid (or the password is wrong)."""


class ConsensusError(ChainshareError, ValueError):
    """A block, vote or certificate does not verify."""


class UnsupportedProtocolVersion(ChainshareError, RuntimeError):
    """The block at ``data["height"]`` runs under protocol version ``data["version"]``, which this
    release does not implement: the node halts before that height; upgrade it and restart."""

    http_status = 503


class LimitExceeded(ChainshareError, RuntimeError):
    """A request went over one of the node's API work budgets (blocks read, logs returned, call gas,
    response bytes, batch length); the message and ``data`` name the limit. Narrow or split it."""

    http_status = 413
    rpc_code = -32005


class RateLimited(LimitExceeded):
    """A client spent its share of the node's API time, or every API worker is busy: retry after
    ``data["retryAfter"]`` seconds."""

    http_status = 429


class NodeBusy(RateLimited):
    """The node already holds more executable transactions than it finalizes in about
    ``[mempool] busy_backlog_ms``: a new one would wait longer than that, so it is refused
    (nothing is kept) instead of queued; retry after ``data["retryAfter"]`` seconds."""
