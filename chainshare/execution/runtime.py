"""The execution runtime: system contracts at fixed addresses, called with standard ABI data.

``apply_transaction`` is the state transition of one transaction: it bumps the sender's nonce,
meters gas, dispatches on (address, 4-byte selector), and either keeps the call's writes and
events or reverts them all (status 0, ``Error(string)`` data). There is no native currency; gas
only meters work and bounds blocks. Everything here is deterministic: no clock, no randomness,
no I/O beyond the state view.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from chainshare.crypto.hashing import keccak256
from chainshare.errors import ChainshareError, InvalidTransaction, StorageError, UnknownSelector
from chainshare.execution import abi
from chainshare.ledger.state import StateView
from chainshare.ledger.txs import Transaction
from chainshare.ledger.types import STATUS_FAILURE, STATUS_SUCCESS, Log, Receipt

# Gas schedule (Ethereum's numbers where an analogue exists, so wallets estimate sensibly).
G_TRANSACTION = 21_000
G_TXDATA_ZERO = 4
G_TXDATA_NONZERO = 16
G_SLOAD = 2_100
G_SSTORE_SET = 20_000
G_SSTORE_RESET = 5_000
G_LOG = 375
G_LOG_TOPIC = 375
G_LOG_DATA_BYTE = 8
G_CALL = 2_600
G_WORD = 3  # per 32 bytes of stored value beyond the first word
G_BLS_VERIFY = 50_000  # one BLS signature or proof-of-possession check (two pairings, ~2 ms)

NONCE_PREFIX = b"n"
CONTRACT_PREFIX = b"c"


log = logging.getLogger("chainshare.execution")


class Revert(Exception):
    """Raised by a contract to revert the call with a reason (``Error(string)``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class OutOfGas(Exception):
    pass


# What a contract may raise on arguments it did not expect (an id beyond 64 bits, a value of the wrong
# shape, ...): the same code on the same state and call data raises it on every node, so the call can end
# in a revert. Anything else (a ledger read that failed, memory, the interpreter's stack) is a failure of
# this node that another node need not share: it stops the block rather than split consensus.
_DETERMINISTIC_FAILURES = (ArithmeticError, LookupError, TypeError, ValueError, AttributeError, ChainshareError,
                           abi.EncodingError)


@dataclass(frozen=True)
class GasSchedule:
    """The gas prices and metering rules a protocol version may change (execution/forks/); the rest are
    constants above."""

    sstore_word: int = G_WORD  # per 32 bytes of a stored value beyond the first word
    # v1-v3: a sub-call's gas counts only if it returns, so work in a sub-call that reverts was free (fixed in v4)
    charge_failed_calls: bool = False
    max_call_depth: int | None = None  # v4: how deep contract calls may nest (None: unbounded, v1-v3)


@dataclass(frozen=True)
class BlockEnv:
    chain_id: int
    height: int
    timestamp_ms: int
    proposer: bytes
    gas_limit: int


_TopicEncoder = Callable[[Any], bytes]
_DataEncoder = Callable[[Sequence[Any]], bytes]


@dataclass(frozen=True)
class EventSpec:
    name: str
    params: tuple[abi.Param, ...]
    topic: bytes

    def to_abi(self) -> dict[str, Any]:
        return {"type": "event", "name": self.name, "anonymous": False,
                "inputs": [{"name": p.name, "type": p.type, "indexed": p.indexed} for p in self.params]}

    @functools.cached_property
    def _log_encoders(self) -> tuple[tuple[_TopicEncoder | None, ...], _DataEncoder | None]:
        """Per parameter its topic encoder (None for a data parameter), and the encoder of the data."""
        plain = [p.type for p in self.params if not p.indexed]
        return (tuple(_topic_encoder(p.type) if p.indexed else None for p in self.params),
                abi.compile_encoder(plain) if plain else None)

    def encode_log(self, values: Sequence[Any]) -> tuple[tuple[bytes, ...], bytes]:
        """The topics (this event's topic first) and the ABI data of a log of this event with
        ``values`` (in parameter order); ValueError if there are not as many values as parameters."""
        topic_encoders, data_encoder = self._log_encoders
        topics = [self.topic]
        data_values = []
        for encode, v in zip(topic_encoders, values, strict=True):
            if encode is None:
                data_values.append(v)
            else:
                topics.append(encode(v))
        return tuple(topics), data_encoder(data_values) if data_encoder is not None else b""

    def decode(self, lg: Log) -> dict[str, Any] | None:
        """The args of ``lg`` (topics and data) as this event, in parameter order; None if its topics do not
        fit (another event, or as many indexed values as this one has not)."""
        indexed = [p for p in self.params if p.indexed]
        plain = [p for p in self.params if not p.indexed]
        if not lg.topics or lg.topics[0] != self.topic or len(lg.topics) != 1 + len(indexed):
            return None
        args: dict[str, Any] = {}
        for param, topic in zip(indexed, lg.topics[1:], strict=True):
            args[param.name] = abi.decode_values([param.type], topic)[0]
        for param, value in zip(plain, abi.decode_values([p.type for p in plain], lg.data), strict=True):
            args[param.name] = value
        return {p.name: args[p.name] for p in self.params}


@dataclass(frozen=True)
class MethodSpec:
    name: str
    params: tuple[abi.Param, ...]
    returns: tuple[abi.Param, ...]
    view: bool
    selector: bytes
    fn_name: str

    def to_abi(self) -> dict[str, Any]:
        return {"type": "function", "name": self.name,
                "inputs": [{"name": p.name, "type": p.type} for p in self.params],
                "outputs": [{"name": p.name, "type": p.type} for p in self.returns],
                "stateMutability": "view" if self.view else "nonpayable"}


def method(signature: str, returns: str = "", view: bool = False) -> Callable[[Any], Any]:
    """Declare a contract method by its Solidity signature (with parameter names)."""
    name, params = abi.parse_signature(signature)
    spec = MethodSpec(name, params, abi.parse_params(returns), view, abi.compute_selector(name, params), "")

    def wrap(fn: Any) -> Any:
        fn.__method_spec__ = MethodSpec(spec.name, spec.params, spec.returns, spec.view, spec.selector, fn.__name__)
        return fn

    return wrap


def event(signature: str) -> EventSpec:
    """Declare an event by signature, e.g. ``"Anchored(bytes32 indexed digest, address indexed by)"``."""
    name, params = abi.parse_signature(signature)
    return EventSpec(name, params, keccak256(abi.canonical_signature(name, params).encode()))


@dataclass(frozen=True)
class MethodHandler:
    """A contract method ready to call: its spec, the bound method, its argument decoder and its
    result encoder (``abi.compile_decoder``/``compile_encoder``), derived once per contract instead
    of at every call."""

    spec: MethodSpec
    fn: Callable[..., Any]
    decode_args: Callable[[bytes], tuple[Any, ...]]
    encode_result: Callable[[Sequence[Any]], bytes]


class SystemContract:
    """Base of native contracts; subclasses set NAME, ADDRESS, EVENTS and decorate methods."""

    NAME: str = ""
    ADDRESS: bytes = b""
    EVENTS: tuple[EventSpec, ...] = ()

    def __init__(self) -> None:
        self.methods: dict[bytes, MethodSpec] = {}
        for attr in dir(type(self)):
            spec = getattr(getattr(type(self), attr), "__method_spec__", None)
            if spec is not None:
                self.methods[spec.selector] = spec
        self.handlers = {
            selector: MethodHandler(spec, getattr(self, spec.fn_name),
                                    abi.compile_decoder([p.type for p in spec.params]),
                                    abi.compile_encoder([p.type for p in spec.returns]))
            for selector, spec in self.methods.items()
        }
        self.events = {e.name: e for e in self.EVENTS}

    def to_abi(self) -> list[dict[str, Any]]:
        items = [m.to_abi() for m in sorted(self.methods.values(), key=lambda m: m.name)]
        return items + [e.to_abi() for e in self.EVENTS]


def get_method(contract: SystemContract, name: str) -> MethodSpec:
    """``contract``'s method called ``name``; KeyError if it has none."""
    for spec in contract.methods.values():
        if spec.name == name:
            return spec
    raise KeyError(f"{contract.NAME} has no method {name}")


def encode_call(contract: SystemContract, name: str, *args: Any) -> bytes:
    """ABI call data for ``contract.name(*args)``."""
    spec = get_method(contract, name)
    return spec.selector + abi.encode_values([p.type for p in spec.params], list(args))


def decode_return(contract: SystemContract, name: str, output: bytes) -> tuple[Any, ...]:
    """The values ``contract.name`` returned, from its ABI-encoded ``output``."""
    spec = get_method(contract, name)
    return abi.decode_values([p.type for p in spec.returns], output)


@dataclass
class CallContext:
    """What a contract method sees: caller, block, metered storage, events, nested calls."""

    runtime: Runtime
    state: StateView
    env: BlockEnv
    sender: bytes
    origin: bytes
    address: bytes
    gas_left: int
    static: bool
    logs: list[Log] = field(default_factory=list)
    depth: int = 0  # how many calls deep this one is (the transaction's own call: 0)

    def charge(self, gas: int) -> None:
        self.gas_left -= gas
        if self.gas_left < 0:
            raise OutOfGas()

    def sload(self, key: bytes) -> bytes | None:
        self.charge(G_SLOAD)
        return self.state.get(CONTRACT_PREFIX + self.address + key)

    def sstore(self, key: bytes, value: bytes | None) -> None:
        if self.static:
            raise Revert("state change in a read-only call")
        full = CONTRACT_PREFIX + self.address + key
        existed = self.state.get(full) is not None
        cost = G_SSTORE_RESET if existed or value is None else G_SSTORE_SET
        if value:
            cost += self.runtime.gas.sstore_word * ((len(value) - 1) // 32)
        self.charge(cost)
        self.state.set(full, value)

    def emit(self, spec: EventSpec, *values: Any) -> None:
        if self.static:
            return
        topics, data = spec.encode_log(values)
        self.charge(G_LOG + G_LOG_TOPIC * len(topics) + G_LOG_DATA_BYTE * len(data))
        self.logs.append(Log(self.address, topics, data))

    def call(self, target: bytes, data: bytes) -> bytes:
        """Call another system contract as this contract; a revert there reverts here. The gas the call used is
        charged here however it ends (from protocol version 4; before, only when it returned)."""
        self.charge(G_CALL)
        limit = self.runtime.gas.max_call_depth
        if limit is not None and self.depth >= limit:
            # Each nested call takes Python stack frames: unbounded (v1-v3), a Governance batch calling
            # Governance.executeBatch again and again could reach the recursion limit on a node that executes
            # deeper in its own stack than the proposer did, and the two would disagree on the block.
            raise Revert(f"calls nest deeper than {limit}")
        sub = CallContext(self.runtime, self.state, self.env, self.address, self.origin, target,
                          self.gas_left, self.static, depth=self.depth + 1)
        if not self.runtime.gas.charge_failed_calls:
            out = self.runtime.dispatch(sub, data)
            self.gas_left = sub.gas_left
        else:
            try:
                out = self.runtime.dispatch(sub, data)
            finally:
                self.gas_left = sub.gas_left  # below zero after OutOfGas, which goes on up
        self.logs.extend(sub.logs)
        return out


def _encode_hashed_topic(value: Any) -> bytes:
    return keccak256(value.encode() if isinstance(value, str) else value)


def _topic_encoder(typ: str) -> Callable[[Any], bytes]:
    """How an indexed value of ``typ`` becomes a topic: the keccak of a string or bytes value, else
    its ABI encoding (static types take encode_values' fast path)."""
    if typ in ("string", "bytes"):
        return _encode_hashed_topic
    return abi.compile_value_encoder(typ)


def compute_intrinsic_gas(data: bytes) -> int:
    zeros = data.count(0)
    return G_TRANSACTION + G_TXDATA_ZERO * zeros + G_TXDATA_NONZERO * (len(data) - zeros)


def get_nonce(state: Any, address: bytes) -> int:
    raw = state.get(NONCE_PREFIX + address)
    return int.from_bytes(raw, "big") if raw else 0


def set_nonce(state: StateView, address: bytes, nonce: int) -> None:
    state.set(NONCE_PREFIX + address, nonce.to_bytes(8, "big"))


class Runtime:
    """Holds the system contracts by address and runs calls against a state view, with the gas
    prices of one protocol version (``execution/forks/`` builds one per version)."""

    def __init__(self, contracts: list[SystemContract], gas: GasSchedule | None = None,
                 version: int = 1) -> None:
        self.version = version
        self.gas = gas or GasSchedule()
        self.contracts = {c.ADDRESS: c for c in contracts}
        self.by_name = {c.NAME: c for c in contracts}

    def check_call(self, to: bytes | None, data: bytes) -> MethodSpec:
        """Static admission check of a call: known contract, known selector, decodable args."""
        if to is None:
            raise InvalidTransaction("contract creation is not supported: only system contracts run here")
        contract = self.contracts.get(to)
        if contract is None:
            raise InvalidTransaction(f"0x{to.hex()} is not a system contract")
        handler = contract.handlers.get(data[:4])
        if handler is None:
            raise UnknownSelector(f"{contract.NAME} has no method with selector 0x{data[:4].hex()}")
        handler.decode_args(data[4:])
        return handler.spec

    def dispatch(self, ctx: CallContext, data: bytes) -> bytes:
        contract = self.contracts.get(ctx.address)
        if contract is None:
            raise Revert(f"0x{ctx.address.hex()} is not a system contract")
        handler = contract.handlers.get(data[:4])
        if handler is None:
            raise Revert(f"{contract.NAME}: unknown selector 0x{data[:4].hex()}")
        spec = handler.spec
        try:
            args = handler.decode_args(data[4:])
        except ValueError as exc:
            raise Revert(f"{contract.NAME}.{spec.name}: bad arguments") from exc
        try:
            result = handler.fn(ctx, *args)
            if not spec.returns:
                return b""
            return handler.encode_result(result if isinstance(result, tuple) else (result,))
        except StorageError:
            raise
        except _DETERMINISTIC_FAILURES as exc:
            # The reason is in the receipt, which every node must compute alike now and when it re-executes
            # history under a later release: so it names neither the exception's text (object addresses)
            # nor its type (a library or Python upgrade may rename or re-route it). The log has the type.
            log.debug("contract call failed", extra={"fields": {"call": f"{contract.NAME}.{spec.name}",
                                                                "error": type(exc).__name__}})
            raise Revert(f"{contract.NAME}.{spec.name}: the call failed; check its arguments") from exc

    def apply_transaction(self, state: StateView, tx: Transaction, env: BlockEnv, cumulative_gas: int) -> Receipt:
        """Run ``tx`` (already verified: member sender, next nonce) and return its receipt."""
        set_nonce(state, tx.sender, tx.nonce + 1)
        intrinsic = compute_intrinsic_gas(tx.data)
        snap = state.snapshot()
        ctx = CallContext(self, state, env, tx.sender, tx.sender, tx.to or b"", tx.gas_limit - intrinsic, False)
        try:
            if ctx.gas_left < 0:
                raise OutOfGas()
            output = self.dispatch(ctx, tx.data)
            status, logs, gas_used = STATUS_SUCCESS, tuple(ctx.logs), tx.gas_limit - ctx.gas_left
        except Revert as exc:
            state.revert(snap)
            status, logs, output = STATUS_FAILURE, (), abi.encode_revert_reason(exc.message)
            gas_used = tx.gas_limit - max(ctx.gas_left, 0)
        except OutOfGas:
            state.revert(snap)
            status, logs, output, gas_used = STATUS_FAILURE, (), abi.encode_revert_reason("out of gas"), tx.gas_limit
        state.commit_journal()
        return Receipt(status, cumulative_gas + gas_used, gas_used, logs, output)

    def call(self, state: StateView, sender: bytes, to: bytes, data: bytes, env: BlockEnv,
             gas: int) -> tuple[bool, bytes, int]:
        """Run a call without a transaction (eth_call/eth_estimateGas); writes stay in ``state``,
        which the caller throws away.

        Returns (success, output or revert data, gas used including intrinsic gas).
        """
        intrinsic = compute_intrinsic_gas(data)
        ctx = CallContext(self, state, env, sender, sender, to, gas - intrinsic, False)
        try:
            if ctx.gas_left < 0:
                raise OutOfGas()
            out = self.dispatch(ctx, data)
            return True, out, gas - ctx.gas_left
        except Revert as exc:
            return False, abi.encode_revert_reason(exc.message), gas - max(ctx.gas_left, 0)
        except OutOfGas:
            return False, abi.encode_revert_reason("out of gas"), gas
