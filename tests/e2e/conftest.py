"""Browser tests of the explorer pages: headless Debian chromium driven by playwright-core (``browser.mjs``).

``make test`` installs chromium (apt) and playwright-core (npm, pinned by package-lock.json). Without
them the tests skip, except under CI=true where a missing browser is a failure. Devnets come from
the integration tests' kit (one per module, stopped at the end).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from browserkit import Browser, get_missing_tools  # noqa: E402
from netkit import DevnetPool, kill_all_live  # noqa: E402


@pytest.fixture(scope="session")
def browser_tools() -> None:
    missing = get_missing_tools()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail("browser tests need: " + ", ".join(missing))
        pytest.skip("browser tests need: " + ", ".join(missing))


@pytest.fixture(scope="session")
def browser(browser_tools: None) -> Browser:
    return Browser()


@pytest.fixture(scope="module")
def devnet_pool(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[DevnetPool]:
    pool = DevnetPool(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))
    try:
        yield pool
    finally:
        pool.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep an ``xdist_group`` on one worker under pytest 9 (as tests/integration/conftest.py does)."""
    if not getattr(config.option, "loadgroup", False):
        return
    try:
        from _pytest.nodeid import NodeId
    except ImportError:
        return
    for item in items:
        if HERE not in item.path.resolve().parents or not hasattr(item, "_id"):
            continue
        names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                        for m in item.iter_markers("xdist_group")})
        nodeid = item.nodeid
        if names and nodeid.rfind("@") <= nodeid.rfind("]"):
            item._id = NodeId.parse(f"{nodeid}@{'_'.join(names)}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    kill_all_live()
