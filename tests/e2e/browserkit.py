"""Drive headless Debian chromium from the tests: ``browser.mjs`` (playwright-core) runs a list of actions."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
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

    @staticmethod
    def read_until_mark(proc: subprocess.Popen[str]) -> list[dict[str, Any]]:
        """The results of a started run up to its ``mark`` action (the test acts, then ``finish``es)."""
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(json.loads(line))
            if seen[-1]["do"] in ("mark", "end"):
                break
        assert seen[-1]["do"] == "mark", seen
        return seen

    def run(self, actions: list[dict[str, Any]], js: bool = True, http_errors: bool = False) -> list[Any]:
        return self.finish(self.start(actions, js), http_errors=http_errors)

    def shot(self, name: str) -> dict[str, Any]:
        return {"do": "screenshot", "path": str(self.shots / f"{name}.png")}
