"""Unit-test configuration: make the shared helper kit (chainkit.py) importable in any import mode,
and keep hypothesis fast and deterministic enough for a sub-minute suite."""

from __future__ import annotations

import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).resolve().parent))

settings.register_profile(
    "chainshare-unit", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("chainshare-unit")
