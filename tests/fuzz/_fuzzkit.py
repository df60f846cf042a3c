"""What every harness in tests/fuzz shares: seeding an empty corpus directory, and starting atheris.

A harness is ``fuzz_<target>.py``; it names its ``check(data)`` (raise on a contract violation) and
its seeds (valid inputs the code itself produces), then calls ``run``. libFuzzer's own flags pass
through (``-atheris_runs=N``, ``-max_total_time=S``, a corpus directory, or a crash file to replay).
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for extra in (ROOT, ROOT / "tests" / "unit"):  # chainshare itself, and the unit tests' chainkit
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))


def write_seeds(argv: list[str], seeds: Iterable[bytes]) -> None:
    """Put ``seeds`` into each empty corpus directory named on the command line."""
    dirs = [Path(a) for a in argv[1:] if not a.startswith("-") and Path(a).is_dir()]
    for d in dirs:
        if not any(d.iterdir()):
            for i, seed in enumerate(seeds):
                (d / f"seed-{i:03d}").write_bytes(seed)


def keep_going(check: Callable[[bytes], None]) -> Callable[[bytes], None]:
    """``check`` that reports each distinct failure (exception type and the innermost chainshare line)
    once on stderr, with its input in hex, and goes on: for triage, when one run should list them all."""
    seen: set[tuple[str, str]] = set()

    def checked(data: bytes) -> None:
        try:
            check(data)
        except Exception as exc:
            frames = [f for f in traceback.extract_tb(exc.__traceback__) if "chainshare/" in f.filename]
            where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
            key = (type(exc).__name__, where)
            if key not in seen:
                seen.add(key)
                print(f"FINDING {key[0]} at {where}: {str(exc)[:200]}\n  input: {data.hex()}", file=sys.stderr,
                      flush=True)

    return checked


def run(check: Callable[[bytes], None], seeds: Callable[[], Iterable[bytes]]) -> None:
    """Fuzz ``check`` (``FUZZ_KEEP_GOING=1`` in the environment: see ``keep_going``)."""
    import atheris

    if os.environ.get("FUZZ_KEEP_GOING"):
        check = keep_going(check)
    argv = list(sys.argv)
    write_seeds(argv, list(seeds()))
    if not any(a.startswith("-timeout=") for a in argv):
        argv.append("-timeout=10")  # an input that runs this long is a hang: report it
    if not any(a.startswith("-max_len=") for a in argv):
        argv.append("-max_len=4096")
    if not any(a.startswith("-rss_limit_mb=") for a in argv):
        argv.append("-rss_limit_mb=1536")
    atheris.Setup(argv, check)
    os.environ.setdefault("PYTHONHASHSEED", "0")
    atheris.Fuzz()
