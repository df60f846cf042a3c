"""Numbers on the ``chainshare`` command line are ASCII digits: "²" (which str.isdigit() takes and int()
refuses) and other scripts' digits such as "٣" (which int() reads as 3) are usage errors (exit 2) naming
the argument, never a traceback and never a number. Run through ``run_cli``, as ``chainshare.cli.main`` does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from chainshare.cli import cli
from chainshare.cli.common import EXIT_USAGE, run_cli
from chainshare.cli.credit import record_args
from chainshare.credit.credentials import CREDENTIAL_FORMAT
from chainshare.errors import InvalidInput

NOT_ASCII = ["²", "٣"]


@dataclass(frozen=True)
class Result:
    code: int
    err: str


Run = Callable[..., Result]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    def invoke(*args: str) -> Result:
        capsys.readouterr()
        code = run_cli(cli, list(args))
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err
        return Result(code, captured.err)

    return invoke


@pytest.mark.parametrize("digit", NOT_ASCII)
def test_a_dataset_id_of_non_ascii_digits_is_a_usage_error(run: Run, digit: str) -> None:
    result = run("dataset", "show", "1" + digit)
    assert result.code == EXIT_USAGE and f"DATASET_ID must be a positive integer, got '1{digit}'" in result.err


@pytest.mark.parametrize("digit", NOT_ASCII)
def test_joint_dataset_ids_of_non_ascii_digits_are_a_usage_error(run: Run, tmp_path: Path, digit: str) -> None:
    result = run("joint", "query", "--datasets", f"1,{digit}", "--query", str(tmp_path / "q.json"))
    assert result.code == EXIT_USAGE and "--datasets is 2..16 dataset ids" in result.err


@pytest.mark.parametrize("digit", NOT_ASCII)
def test_a_nonce_of_non_ascii_digits_is_a_usage_error(run: Run, tmp_path: Path, digit: str) -> None:
    cred = tmp_path / "cred.json"
    cred.write_text(json.dumps({"format": CREDENTIAL_FORMAT, **dict.fromkeys(
        ("credential", "link_secret", "tails", "rev_reg_id", "cred_def_id", "schema_id", "revocation_index",
         "attributes"), "")}))
    result = run("credit", "credential", "prove", "--cred", str(cred), "--predicate", "score>=700",
                 "--nonce", "123" + digit, "--out", str(tmp_path / "proof.json"))
    assert result.code == EXIT_USAGE and "a nonce is 1..30 decimal digits" in result.err


@pytest.mark.parametrize("threshold", ["٢/٣", "2/²"])
def test_a_genesis_threshold_of_non_ascii_digits_is_a_usage_error(run: Run, tmp_path: Path,
                                                                  threshold: str) -> None:
    result = run("genesis", "create", "--chain-id", "7", "--ca-dir", str(tmp_path), "--agency", str(tmp_path),
                 "--validator", str(tmp_path), "--threshold", threshold, "--out", str(tmp_path / "genesis.json"))
    assert result.code == EXIT_USAGE and f"--threshold must look like 2/3, got {threshold!r}" in result.err


ROW = {"subject": "91350100M000100Y43", "category": "tax", "polarity": "negative", "severity": "3",
       "document_number": "D-1", "authority": "A", "legal_basis": "L", "max_period": "90d",
       "evidence_hash": "0x" + "11" * 32}


@pytest.mark.parametrize(("field", "value", "message"), [
    ("severity", "²", "severity must be 1..5"), ("severity", "٣", "severity must be 1..5"),
    ("decision_date", "²", "decision date '²' must be"), ("effective_from", "١٧٥٠٠٠٠٠٠٠", "effective from"),
])
def test_record_fields_of_non_ascii_digits_are_refused(field: str, value: str, message: str) -> None:
    """The fields of `credit records publish` (its options or a --csv row)."""
    assert record_args(ROW, 1_750_000_000)[3] == 3
    with pytest.raises(InvalidInput, match=message):
        record_args({**ROW, field: value}, 1_750_000_000)


def test_every_chainshare_process_reads_integers_under_the_same_digit_limit() -> None:
    """json.loads in contracts refuses integers over the limit: PYTHONINTMAXSTRDIGITS must not change it."""
    code = ("import sys, json; from chainshare.cli.common import run_cli; from chainshare.cli import cli; "
            "run_cli(cli, ['--help']); print(sys.get_int_max_str_digits())")
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONINTMAXSTRDIGITS": "0"},
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip().splitlines()[-1] == "4300", proc.stderr
