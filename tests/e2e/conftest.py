"""Browser tests of the explorer pages: headless Debian chromium driven by playwright-core (``browser.mjs``).

``make test`` installs chromium (apt) and playwright-core (npm, pinned by package-lock.json). Without
them the tests skip, except under CI=true where a missing browser is a failure. Devnets come from
the integration tests' kit (one per module, stopped at the end).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from browserkit import Browser, get_missing_tools  # noqa: E402


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
