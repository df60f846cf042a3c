"""Protocol versions (forks): the execution rules of each version, selected by block height.

As in ethereum/execution-specs, each version lives in its own package (``forks/v<N>/``) and names only
what differs from the version before it; ``FORKS`` maps a version to its runtime factory. Governance
schedules ``upgrade(version, activationHeight)`` on chain (``contracts/governance.py``); the version of
a block is read from the state after its parent, so an old block always re-executes under the rules of
its height, whatever this release's newest version is.

Which versions this release *runs* is gated here, at one place: ``SUPPORTED_VERSIONS`` (every version
it implements), narrowed for tests only by the environment variable ``CHAINSHARE_SUPPORTED_VERSIONS``
(e.g. ``"1"``: a node of the previous release beside upgraded ones). A block whose version is not
supported raises ``UnsupportedProtocolVersion``: the node halts before that height.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from chainshare.errors import ConfigError, UnsupportedProtocolVersion
from chainshare.execution.contracts.governance import get_upgrade_schedule, select_protocol_version
from chainshare.execution.forks import v1, v2, v3, v4
from chainshare.execution.runtime import Runtime

FORKS: Mapping[int, Callable[[], Runtime]] = {v1.VERSION: v1.build_runtime, v2.VERSION: v2.build_runtime,
                                              v3.VERSION: v3.build_runtime, v4.VERSION: v4.build_runtime}
SUPPORTED_VERSIONS: frozenset[int] = frozenset(FORKS)
SUPPORTED_VERSIONS_ENV = "CHAINSHARE_SUPPORTED_VERSIONS"  # test-only: run as an older release would


@dataclass(frozen=True)
class UpgradeRequired:
    """The node cannot execute block ``height``: it needs protocol ``version`` (it supports ``supported``)."""

    version: int
    height: int
    supported: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"status": "upgrade_required", "version": self.version, "activation_height": self.height,
                "supported_versions": list(self.supported)}


def parse_supported_versions(value: str | None) -> frozenset[int]:
    """The versions named by ``value`` ("1,2"; None or empty: all of ``SUPPORTED_VERSIONS``); only
    versions this release implements, and version 1 (genesis rules) must be among them."""
    if not value or not value.strip():
        return SUPPORTED_VERSIONS
    try:
        versions = frozenset(int(v) for v in value.split(",") if v.strip())
    except ValueError as exc:
        raise ConfigError(f"{SUPPORTED_VERSIONS_ENV} must be a comma-separated list of versions, "
                          f"got {value!r}") from exc
    unknown = versions - SUPPORTED_VERSIONS
    if unknown or v1.VERSION not in versions:
        raise ConfigError(f"{SUPPORTED_VERSIONS_ENV}={value!r}: this release implements versions "
                          f"{','.join(map(str, sorted(SUPPORTED_VERSIONS)))} and version 1 must be supported")
    return versions


def get_supported_versions() -> frozenset[int]:
    """The versions this node runs: ``SUPPORTED_VERSIONS``, unless narrowed by the test-only variable."""
    return parse_supported_versions(os.environ.get(SUPPORTED_VERSIONS_ENV))


def get_version_at(state: Any, height: int) -> int:
    """The protocol version of block ``height``, read from the state after block ``height - 1``
    (or any later state: activations are at least one block ahead and never rewritten once active)."""
    return select_protocol_version(get_upgrade_schedule(state), height).version


def get_upgrade_required(state: Any, height: int,
                         supported: frozenset[int] | None = None) -> UpgradeRequired | None:
    """None if this node can execute block ``height`` over ``state``, else what it needs."""
    version = get_version_at(state, height)
    allowed = get_supported_versions() if supported is None else supported
    if version in allowed:
        return None
    return UpgradeRequired(version, height, tuple(sorted(allowed)))


@functools.cache
def _build(version: int) -> Runtime:
    return FORKS[version]()


def get_runtime_for(version: int, supported: frozenset[int] | None = None) -> Runtime:
    """The runtime of protocol ``version`` (one instance per version); raises
    UnsupportedProtocolVersion if this node does not run it."""
    allowed = get_supported_versions() if supported is None else supported
    if version not in allowed:
        raise UnsupportedProtocolVersion(
            f"protocol version {version} is not supported by this release (it runs "
            f"{','.join(map(str, sorted(allowed)))}): upgrade the node", {"version": version})
    return _build(version)


def get_runtime_at(state: Any, height: int, supported: frozenset[int] | None = None) -> Runtime:
    """The runtime that executes block ``height`` over ``state`` (the state after its parent)."""
    version = get_version_at(state, height)
    try:
        return get_runtime_for(version, supported)
    except UnsupportedProtocolVersion as exc:
        raise UnsupportedProtocolVersion(f"block {height} runs under protocol version {version}, which this "
                                         f"release does not support: upgrade the node",
                                         {"version": version, "height": height}) from exc
