"""What the suites that start real node processes share (tests/integration, tests/e2e): the module's
devnet pool (``netkit.DevnetPool``, stopped in teardown), ``xdist_group`` kept on one worker under
pytest 9, and no node outliving the session: stopped at its end, and, when a worker dies before it (SIGKILL,
a CI timeout), by ``CHAINSHARE_EXIT_WITH_PID`` (``chainshare/supervision.py``), which every process this
session starts inherits with its worker's pid.

Parallel runs (``pytest -n 2 --dist loadgroup``): every module that shares a devnet marks itself with
``xdist_group`` so its tests run on one worker; ports come from ``free_port_block`` at start and
directories from ``tmp_path_factory`` (one base per worker), so workers never share either.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "integration"))

from netkit import DevnetPool, kill_all_live  # noqa: E402

from chainshare.supervision import ENV_VAR  # noqa: E402


@pytest.fixture(scope="module")
def devnet_pool(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[DevnetPool]:
    pool = DevnetPool(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))
    try:
        yield pool
    finally:
        pool.close()


def pytest_configure(config: pytest.Config) -> None:
    os.environ[ENV_VAR] = str(os.getpid())  # each xdist worker runs this too, with its own pid


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Make ``--dist loadgroup`` group our tests again under pytest 9.

    pytest-xdist 3.8 marks a group by appending ``@group`` to ``item._nodeid``, but pytest 9 derives
    ``nodeid`` from ``item._id``, so the suffix is lost and the scheduler spreads a group over all
    workers (each then starts its own devnet). Re-apply the suffix the pytest-9 way, on workers
    (where xdist sets ``option.loadgroup``)."""
    if not getattr(config.option, "loadgroup", False):
        return
    try:
        from _pytest.nodeid import NodeId
    except ImportError:  # pytest < 9: xdist's own suffix works
        return
    for item in items:
        if not hasattr(item, "_id"):
            continue
        names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                        for m in item.iter_markers("xdist_group")})
        nodeid = item.nodeid
        if names and nodeid.rfind("@") <= nodeid.rfind("]"):
            item._id = NodeId.parse(f"{nodeid}@{'_'.join(names)}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    kill_all_live()  # belt and braces: no node outlives the session, whatever happened
