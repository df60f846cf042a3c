"""CreditRegistry events as typed values, and where they come from (a ``CreditSource``).

An event's position is (block height, log index in the block): chain order, and the cursor a watcher
resumes from. Two sources give the same events: ``ChainSource`` over a node's ChainStore (the node's REST
API, or a stopped node's data directory) and ``RpcSource`` over any node's JSON-RPC ``eth_getLogs``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from chainshare.decimal_text import parse_ascii_decimals
from chainshare.errors import InvalidInput
from chainshare.execution import abi
from chainshare.execution.contracts.addresses import CREDIT_REGISTRY
from chainshare.execution.contracts.credit_registry import CreditRegistry
from chainshare.ledger.chain import ChainStore
from chainshare.ledger.types import Block, Log

REGISTRY = CreditRegistry()
EVENTS_BY_TOPIC = {spec.topic: spec for spec in REGISTRY.EVENTS}
RECORD_EVENTS = frozenset(s.name for s in REGISTRY.EVENTS if s.params and s.params[0].name == "id")
RULE_TOPIC = REGISTRY.E_RULE.topic


@dataclass(frozen=True)
class CreditEvent:
    height: int
    log_index: int  # in the block
    tx_index: int
    tx_hash: bytes
    timestamp_ms: int  # of the block
    name: str
    args: dict[str, Any]

    @property
    def position(self) -> tuple[int, int]:
        return self.height, self.log_index

    @property
    def cursor(self) -> str:
        return format_cursor(self.position)

    def to_json(self) -> dict[str, Any]:
        return {"event": self.name, "block": self.height, "log_index": self.log_index, "tx_index": self.tx_index,
                "transaction": "0x" + self.tx_hash.hex(), "timestamp": self.timestamp_ms // 1000,
                "cursor": self.cursor, "args": abi.to_jsonable(self.args)}




def format_cursor(position: tuple[int, int]) -> str:
    return f"{position[0]}-{position[1]}"


def parse_cursor(cursor: str) -> tuple[int, int]:
    """A watch/history cursor ``BLOCK-LOG`` (as printed with each event)."""
    numbers = parse_ascii_decimals(cursor.split("-"), max_digits=19)
    if numbers is None or len(numbers) != 2:
        raise InvalidInput(f"cursor {cursor[:40]!r} must look like BLOCK-LOG (as printed with each event)")
    return numbers[0], numbers[1]


def decode_credit_log(lg: Log) -> tuple[str, dict[str, Any]] | None:
    """(event name, args) of a CreditRegistry log, or None for any other log."""
    if lg.address != CREDIT_REGISTRY or not lg.topics:
        return None
    spec = EVENTS_BY_TOPIC.get(lg.topics[0])
    args = spec.decode(lg) if spec is not None else None
    return (spec.name, args) if spec is not None and args is not None else None


class CreditSource(Protocol):
    """Finalized CreditRegistry events and block times of one chain."""

    def head_height(self) -> int: ...

    def block_timestamp_ms(self, height: int) -> int: ...

    def iter_events(self, topics: list[bytes | None], from_height: int, to_height: int) -> Iterator[CreditEvent]:
        """Events in [from, to] whose topics match (None = any), in chain order."""
        ...


class ChainSource:
    """Events read from a ChainStore through its log indexes (a running node, or a stopped node's data)."""

    def __init__(self, chain: ChainStore) -> None:
        self.chain = chain

    def head_height(self) -> int:
        return self.chain.head_height

    def block_timestamp_ms(self, height: int) -> int:
        return self.chain.get_block(height).header.timestamp_ms

    def iter_events(self, topics: list[bytes | None], from_height: int, to_height: int) -> Iterator[CreditEvent]:
        from chainshare.crypto.hashing import keccak256

        to_height = min(to_height, self.chain.head_height)
        key = next((t for t in topics if t is not None), None)
        heights = (self.chain.iter_log_heights(key, from_height, to_height, by_topic=True) if key is not None
                   else self.chain.iter_log_heights(CREDIT_REGISTRY, from_height, to_height, by_topic=False))
        for height in heights:
            block: Block | None = None  # decoded only for a height that holds a match
            for tx_index, log_index, lg in self.chain.iter_matching_logs(height, CREDIT_REGISTRY, topics):
                if (decoded := decode_credit_log(lg)) is not None:
                    block = block or self.chain.get_block(height)
                    yield CreditEvent(height, log_index, tx_index, keccak256(block.transactions[tx_index]),
                                      block.header.timestamp_ms, decoded[0], decoded[1])


class RpcSource:
    """Events read over a node's JSON-RPC (``eth_getLogs`` in block windows)."""

    WINDOW = 5_000

    def __init__(self, client: Any) -> None:
        self.client = client
        self._times: dict[int, int] = {}

    def head_height(self) -> int:
        return int(self.client.rpc("eth_blockNumber"), 16)

    def block_timestamp_ms(self, height: int) -> int:
        if height not in self._times:
            if len(self._times) >= 10_000:  # a long watch must not grow without bound
                self._times.clear()
            block = self.client.rpc("eth_getBlockByNumber", hex(height), False)
            if block is None:
                raise InvalidInput(f"the node has no block {height}")
            self._times[height] = int(block["timestampMs"], 16)  # chainshare's exact block time
        return self._times[height]

    def iter_events(self, topics: list[bytes | None], from_height: int, to_height: int) -> Iterator[CreditEvent]:
        lo = from_height
        while lo <= to_height:
            hi = min(to_height, lo + self.WINDOW - 1)
            logs = self.client.rpc("eth_getLogs", {
                "fromBlock": hex(lo), "toBlock": hex(hi), "address": "0x" + CREDIT_REGISTRY.hex(),
                "topics": [None if t is None else "0x" + t.hex() for t in topics]})
            for entry in logs:
                lg = Log(bytes.fromhex(entry["address"][2:]), tuple(bytes.fromhex(t[2:]) for t in entry["topics"]),
                         bytes.fromhex(entry["data"][2:]))
                decoded = decode_credit_log(lg)
                if decoded is None:
                    continue
                height = int(entry["blockNumber"], 16)
                yield CreditEvent(height, int(entry["logIndex"], 16), int(entry["transactionIndex"], 16),
                                  bytes.fromhex(entry["transactionHash"][2:]), self.block_timestamp_ms(height),
                                  decoded[0], decoded[1])
            lo = hi + 1
