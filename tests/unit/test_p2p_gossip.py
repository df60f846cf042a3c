"""P2P gossip bookkeeping, back-off schedule and configuration checks (pure, no sockets)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chainshare import codec
from chainshare.crypto.hashing import keccak256
from chainshare.errors import ConfigError
from chainshare.p2p import GossipFilter, P2PConfig, PeerAddress, compute_backoff, compute_gossip_id

GENESIS = b"\x01" * 32


def test_gossip_id_is_the_keccak_of_the_canonical_payload() -> None:
    assert compute_gossip_id("tx", b"raw") == keccak256(codec.encode(["tx", b"raw"]))
    assert compute_gossip_id("tx", b"raw") != compute_gossip_id("block", b"raw")


def test_an_item_is_delivered_once_and_forwarded_once() -> None:
    seen = GossipFilter(8)
    item = compute_gossip_id("tx", 1)
    assert seen.mark_received(item) is True
    assert seen.mark_received(item) is False
    assert not seen.is_forwarded(item)
    seen.mark_forwarded(item)
    assert seen.is_forwarded(item)
    assert seen.mark_received(item) is False


def test_an_item_this_node_sent_is_not_delivered_back_to_it() -> None:
    seen = GossipFilter(8)
    item = compute_gossip_id("tx", 2)
    seen.mark_forwarded(item)
    assert seen.mark_received(item) is False


def test_the_filter_forgets_the_least_recently_used_id_first() -> None:
    seen = GossipFilter(3)
    a, b, c, d = (bytes([i]) * 32 for i in range(4))
    for item in (a, b, c):
        seen.mark_received(item)
    seen.mark_received(a)  # a is now the most recently used
    seen.mark_received(d)
    assert len(seen) == 3
    assert b not in seen
    assert a in seen and c in seen and d in seen


def test_the_filter_never_grows_beyond_its_capacity() -> None:
    seen = GossipFilter(100)
    for i in range(1000):
        seen.mark_forwarded(i.to_bytes(32, "big"))
    assert len(seen) == 100


@given(st.integers(0, 200), st.integers(0, 2**32))
def test_backoff_lies_between_half_and_all_of_the_capped_exponential(failures: int, seed: int) -> None:
    delay = compute_backoff(failures, base=0.5, cap=30.0, rng=random.Random(seed))
    ceiling = min(30.0, 0.5 * 2**failures)
    assert ceiling / 2 <= delay <= ceiling


@given(st.integers(0, 2**32))
def test_backoff_never_decreases_until_it_reaches_the_cap(seed: int) -> None:
    rng = random.Random(seed)
    # 0.1 * 2**n stays under the cap of 5.0 up to n = 5; beyond, every delay lies in [2.5, 5.0].
    delays = [compute_backoff(n, base=0.1, cap=5.0, rng=rng) for n in range(12)]
    assert delays[:6] == sorted(delays[:6])
    assert all(2.5 <= d <= 5.0 for d in delays[6:])


def test_backoff_jitter_comes_from_the_injected_random_source() -> None:
    first = [compute_backoff(3, base=1.0, cap=60.0, rng=random.Random(7)) for _ in range(2)]
    assert first[0] == first[1]
    assert len({compute_backoff(3, base=1.0, cap=60.0, rng=random.Random(s)) for s in range(20)}) > 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"node_name": "bad/name"}, "invalid node name"),
        ({"chain_id": -1}, "chain id"),
        ({"genesis_hash": b"short"}, "genesis hash"),
        ({"listen_port": 70000}, "listen port"),
        ({"max_frame_size": 10}, "max_frame_size"),
        ({"max_frame_size": 2**30}, "max_frame_size"),
        ({"send_queue_bytes": 1024}, "send_queue_bytes"),
        ({"frame_timeout": 0}, "frame_timeout"),
        ({"ping_interval": 60.0, "idle_timeout": 30.0}, "ping_interval"),
        ({"backoff_base": 2.0, "backoff_cap": 1.0}, "backoff_cap"),
        ({"max_strikes": 0}, "max_strikes"),
        ({"send_overflow": "block"}, "send_overflow"),
        ({"peers": (PeerAddress("node-b", "127.0.0.1", 0),)}, "port"),
        ({"peers": (PeerAddress("", "127.0.0.1", 1),)}, "peer node name"),
    ],
)
def test_invalid_configuration_is_refused_with_a_clear_message(
    overrides: dict[str, Any], message: str
) -> None:
    settings: dict[str, Any] = {"node_name": "node-a", "chain_id": 1, "genesis_hash": GENESIS, **overrides}
    with pytest.raises(ConfigError, match=message):
        P2PConfig(**settings)
