"""Integration fixtures: real one-node devnets (``chainshare node run`` processes on 127.0.0.1 with
LevelDB in pytest tmp dirs), started once per module and always stopped in teardown (the pool, the
xdist grouping and the session cleanup are in tests/conftest.py, shared with tests/e2e). Every test
also stands alone: without grouping each worker would start its own copy of a module's devnet.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from netkit import Devnet, DevnetPool  # noqa: E402


@pytest.fixture(scope="module")
def devnet(devnet_pool: DevnetPool) -> Devnet:
    """A running one-node devnet shared by the tests of a module (stopped after the module)."""
    return devnet_pool.launch()
