"""The machine description every bench JSON carries (chainshare/benchmachine.py): its speed probe
times real work, so it grows with the work asked of it."""

from __future__ import annotations

import pytest

from chainshare import benchmachine
from chainshare.benchmachine import describe_machine


def test_describe_machine_reports_cpus_load_extra_fields_and_a_probe() -> None:
    out = describe_machine(load_avg_1m_before=0.5)
    assert out["cpus"] >= 1 and out["load_avg_1m"] >= 0 and out["load_avg_1m_before"] == 0.5
    assert set(out["probe"]) == {"python_loop_ms", "sender_recovery_us"}
    assert out["probe"]["python_loop_ms"] > 0 and 1 < out["probe"]["sender_recovery_us"] < 100_000


def test_the_probes_time_the_work_they_name(monkeypatch: pytest.MonkeyPatch) -> None:
    small = benchmachine.time_python_loop_ms()
    monkeypatch.setattr(benchmachine, "_LOOP_ITERATIONS", benchmachine._LOOP_ITERATIONS * 8)
    assert benchmachine.time_python_loop_ms() > 2 * small
