"""Browser tests of the explorer pages: headless Debian chromium driven by playwright-core (``browser.mjs``).

``make test`` installs chromium (apt) and playwright-core (npm, pinned by package-lock.json). Without
them the tests skip, except under CI=true where a missing browser is a failure. Devnets come from
the integration tests' kit (one per module, stopped at the end).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from netkit import DevnetPool, kill_all_live  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(os.environ.get("E2E_SCREENSHOTS", REPO / "test-results" / "explorer-pages"))
BUNDLE = REPO / "chainshare" / "explorer" / "web" / "static" / "verify.bundle.js"


def get_missing_tools() -> list[str]:
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if shutil.which("node") is None:
        missing.append("node")
    if not (HERE / "node_modules" / "playwright-core").is_dir():
        missing.append("playwright-core (npm ci --prefix tests/e2e)")
    if not BUNDLE.exists():
        missing.append("the verifier bundle (make install)")
    return missing


@pytest.fixture(scope="session")
def browser_tools() -> None:
    missing = get_missing_tools()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail("browser tests need: " + ", ".join(missing))
        pytest.skip("browser tests need: " + ", ".join(missing))


class Browser:
    """One chromium session per call: runs actions, returns their results (asserting none failed)."""

    def __init__(self) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.shots = SHOTS

    def start(self, actions: list[dict[str, Any]], js: bool = True) -> subprocess.Popen[str]:
        plan = json.dumps({"js": js, "actions": actions, "timeout_ms": 90_000})
        return subprocess.Popen(["node", str(HERE / "browser.mjs"), plan], cwd=HERE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env={**os.environ, "CHROMIUM": CHROMIUM})

    @staticmethod
    def finish(proc: subprocess.Popen[str], lines: list[dict[str, Any]] | None = None,
               http_errors: bool = False) -> list[Any]:
        """The actions' results; fails on a failed action or a script error on a page (and on a
        resource answered 4xx/5xx, unless ``http_errors``: pages that are themselves 404/400)."""
        out, err = proc.communicate(timeout=300)
        lines = (lines or []) + [json.loads(x) for x in out.splitlines() if x.startswith("{")]
        end = lines[-1] if lines else {"ok": False, "error": err}
        assert end.get("do") == "end" and end["ok"], f"browser run failed: {end}\nstderr: {err[-2000:]}"
        problems = [p for p in end["problems"] if not (http_errors and "Failed to load resource" in p)]
        assert not problems, f"page errors: {problems}"
        return [x["result"] for x in lines[:-1]]

    def run(self, actions: list[dict[str, Any]], js: bool = True, http_errors: bool = False) -> list[Any]:
        return self.finish(self.start(actions, js), http_errors=http_errors)

    def shot(self, name: str) -> dict[str, Any]:
        return {"do": "screenshot", "path": str(self.shots / f"{name}.png")}


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
