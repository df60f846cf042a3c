"""``chainshare credit govern install-rule`` checks a scoring rule locally, under the same rule the chain's
CreditRegistry applies (protocol v4's JSON nesting cap included), so a rule the chain would refuse is a usage
error (exit 2) naming the chain's own reason, before any transaction. Run through ``run_cli``, as
``chainshare.cli.main`` does, against a node URL nothing listens on: a command that got as far as sending
would fail on its missing keystore instead."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chainshare.cli import cli
from chainshare.cli.common import EXIT_USAGE, run_cli
from chainshare.execution.contracts.credit_registry import canonicalize_scoring_rule
from chainshare.execution.forks.v4 import CreditRegistryV4

NOWHERE = ["--node", "http://127.0.0.1:9", "--keystore", "absent.json"]  # the actor is resolved after the check


def _rule_with_points(points: str) -> str:
    return ('{"name": "deep", "base": 0, "min": -10, "max": 10, "weights": {"tax": {"1": ' + points + "}}}")


@pytest.mark.parametrize("depth", [33, 200, 5000])
def test_a_scoring_rule_nested_deeper_than_the_cap_is_refused_with_the_chains_reason(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, depth: int) -> None:
    rule = tmp_path / "rule.json"
    rule.write_text(_rule_with_points("[" * (depth - 3) + "]" * (depth - 3)))
    with pytest.raises(ValueError) as chain:  # what CreditRegistry.installScoringRule reverts with under v4
        canonicalize_scoring_rule(rule.read_text(), CreditRegistryV4.JSON_DEPTH_CAP)
    code = run_cli(cli, ["credit", "govern", "install-rule", str(rule), *NOWHERE])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and "Traceback" not in err
    assert f"{rule}: {chain.value}" in err
    assert "scoring rule nests arrays and objects deeper than 32 levels" in err


def test_a_valid_scoring_rule_passes_the_check_and_only_then_needs_the_node(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rule = tmp_path / "rule.json"
    rule.write_text(json.dumps({"name": "ok", "base": 0, "min": -10, "max": 10, "weights": {"tax": {"1": -3}}}))
    code = run_cli(cli, ["credit", "govern", "install-rule", str(rule), *NOWHERE])
    err = capsys.readouterr().err
    assert (code, err.strip()) == (EXIT_USAGE, "error: keystore absent.json does not exist")  # past the check
