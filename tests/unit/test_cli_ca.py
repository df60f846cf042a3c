"""``chainshare ca ...`` through the real error wrapper: exit codes, messages, outputs without secrets.

The full ``chainshare`` group also registers commands other modules provide, so these tests mount
``ca`` on a local group and run it through ``run_cli``, exactly as ``chainshare.cli.main`` does.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from chainshare.cli import ca as ca_cli
from chainshare.cli.common import EXIT_OK, EXIT_USAGE, run_cli
from chainshare.crypto.keystore import decrypt_account_key

PASSWORD = "cli ca password"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def json(self) -> dict[str, object]:
        value = json.loads(self.out)
        assert isinstance(value, dict)
        return value


Run = Callable[..., Result]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    monkeypatch.delenv("CHAINSHARE_PASSWORD", raising=False)
    root = click.Group("chainshare")
    root.add_command(ca_cli.group)

    def invoke(*args: str) -> Result:
        capsys.readouterr()
        code = run_cli(root, ["ca", *args])
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err
        return Result(code, captured.out, captured.err)

    return invoke


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password.txt"
    path.write_text(PASSWORD + "\n")
    return path


@pytest.fixture
def dev_ca(run: Run, tmp_path: Path) -> Path:
    directory = tmp_path / "dev-ca"
    assert run("init", "--dir", str(directory), "--dev").code == EXIT_OK
    return directory


def test_init_without_any_password_exits_2_and_says_how_to_give_one(run: Run, tmp_path: Path) -> None:
    result = run("init", "--dir", str(tmp_path / "ca"))
    assert result.code == EXIT_USAGE
    assert "error: no password given" in result.err
    assert "--password-file" in result.err and "CHAINSHARE_PASSWORD" in result.err and "--dev" in result.err
    assert not (tmp_path / "ca").exists()


def test_init_with_password_file_writes_encrypted_ca_and_prints_no_secret(
    run: Run, tmp_path: Path, password_file: Path
) -> None:
    result = run("init", "--dir", str(tmp_path / "ca"), "--password-file", str(password_file), "--json")
    assert result.code == EXIT_OK, result.err
    info = result.json()
    assert info["name"] == "chainshare consortium CA"
    assert info["cert"] == str(tmp_path / "ca" / "ca.crt")
    assert len(str(info["fingerprint_sha256"])) == 64
    assert (tmp_path / "ca" / "ca.key").read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert PASSWORD not in result.out + result.err
    assert "PRIVATE KEY" not in result.out


def test_init_reads_password_from_environment(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAINSHARE_PASSWORD", "from the environment")
    result = run("init", "--dir", str(tmp_path / "ca"), "--name", "Test Consortium")
    assert result.code == EXIT_OK, result.err
    assert "created CA 'Test Consortium'" in result.out
    assert (tmp_path / "ca" / "ca.key").read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")


def test_existing_ca_is_refused_with_exit_2(run: Run, dev_ca: Path) -> None:
    before = (dev_ca / "ca.key").read_bytes()
    result = run("init", "--dir", str(dev_ca), "--dev")
    assert result.code == EXIT_USAGE
    assert "already exists" in result.err and "refusing to overwrite" in result.err
    assert (dev_ca / "ca.key").read_bytes() == before


def test_dev_warns_on_stderr_and_writes_unencrypted_key(run: Run, tmp_path: Path) -> None:
    result = run("init", "--dir", str(tmp_path / "ca"), "--dev")
    assert result.code == EXIT_OK
    assert "for development only" in result.err
    assert "development" not in result.out
    assert (tmp_path / "ca" / "ca.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_dev_and_password_file_together_are_a_usage_error(
    run: Run, tmp_path: Path, password_file: Path
) -> None:
    result = run("init", "--dir", str(tmp_path / "ca"), "--dev", "--password-file", str(password_file))
    assert result.code == EXIT_USAGE
    assert "exclude each other" in result.err
    assert not (tmp_path / "ca").exists()


def test_missing_password_file_exits_2(run: Run, tmp_path: Path) -> None:
    result = run("init", "--dir", str(tmp_path / "ca"), "--password-file", str(tmp_path / "nope"))
    assert result.code == EXIT_USAGE
    assert "password file" in result.err and "does not exist" in result.err


def test_issue_agency_prints_identity_without_secrets(run: Run, dev_ca: Path, tmp_path: Path) -> None:
    out = tmp_path / "ministry"
    result = run(
        "issue-agency",
        "Ministry of Data",
        "--ca-dir",
        str(dev_ca),
        "--out",
        str(out),
        "--role",
        "auditor",
        "--dev",
        "--json",
    )
    assert result.code == EXIT_OK, result.err
    identity = result.json()
    assert identity["name"] == "Ministry of Data" and identity["role"] == "auditor"
    assert str(identity["address"]).startswith("0x") and len(str(identity["address"])) == 42
    assert identity["cert"] == str(out / "agency.crt")
    assert "PRIVATE KEY" not in result.out and "crypto" not in result.out
    assert stat.S_IMODE((out / "agency.key").stat().st_mode) == 0o600
    assert json.loads((out / "identity.json").read_text())["address"] == identity["address"]


def test_issue_agency_with_bad_name_exits_2_without_traceback(run: Run, dev_ca: Path, tmp_path: Path) -> None:
    result = run("issue-agency", "../escape", "--ca-dir", str(dev_ca), "--out", str(tmp_path / "x"), "--dev")
    assert result.code == EXIT_USAGE
    assert "error: invalid agency name '../escape'" in result.err
    assert not (tmp_path / "x").exists()


def test_issue_agency_with_wrong_ca_password_exits_2(run: Run, tmp_path: Path, password_file: Path) -> None:
    assert run("init", "--dir", str(tmp_path / "ca"), "--password-file", str(password_file)).code == EXIT_OK
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("not it\n")
    result = run(
        "issue-agency",
        "A",
        "--ca-dir",
        str(tmp_path / "ca"),
        "--out",
        str(tmp_path / "a"),
        "--password-file",
        str(wrong),
    )
    assert result.code == EXIT_USAGE
    assert "wrong password" in result.err


def test_issue_agency_from_missing_ca_exits_2(run: Run, tmp_path: Path) -> None:
    result = run(
        "issue-agency", "A", "--ca-dir", str(tmp_path / "none"), "--out", str(tmp_path / "a"), "--dev"
    )
    assert result.code == EXIT_USAGE
    assert "no consortium CA" in result.err


def test_new_keys_can_have_their_own_password(run: Run, tmp_path: Path, password_file: Path) -> None:
    assert run("init", "--dir", str(tmp_path / "ca"), "--password-file", str(password_file)).code == EXIT_OK
    key_password_file = tmp_path / "agency-password.txt"
    key_password_file.write_text("agency's own\n")
    result = run(
        "issue-agency",
        "A",
        "--ca-dir",
        str(tmp_path / "ca"),
        "--out",
        str(tmp_path / "a"),
        "--password-file",
        str(password_file),
        "--key-password-file",
        str(key_password_file),
        "--json",
    )
    assert result.code == EXIT_OK, result.err
    keystore = json.loads((tmp_path / "a" / "account.json").read_text())
    assert keystore["crypto"]["kdfparams"]["n"] == 2**18  # production work factor without --dev
    decrypt_account_key(keystore, "agency's own")


def test_issue_node_prints_bls_identity(run: Run, dev_ca: Path, tmp_path: Path) -> None:
    out = tmp_path / "node-1"
    result = run(
        "issue-node",
        "node-1",
        "--agency",
        "Ministry of Data",
        "--ca-dir",
        str(dev_ca),
        "--out",
        str(out),
        "--host",
        "10.0.0.5",
        "--host",
        "node1.example",
        "--dev",
        "--json",
    )
    assert result.code == EXIT_OK, result.err
    identity = result.json()
    assert identity["name"] == "node-1" and identity["agency"] == "Ministry of Data"
    assert len(str(identity["bls_public_key"])) == 2 + 96 and len(str(identity["bls_pop"])) == 2 + 192
    assert "PRIVATE KEY" not in result.out and "crypto" not in result.out
    assert sorted(p.name for p in out.iterdir()) == [
        "node-identity.json",
        "node.crt",
        "node.key",
        "validator.json",
    ]


def test_issue_node_with_bad_host_exits_2(run: Run, dev_ca: Path, tmp_path: Path) -> None:
    result = run(
        "issue-node",
        "n",
        "--agency",
        "A",
        "--ca-dir",
        str(dev_ca),
        "--out",
        str(tmp_path / "n"),
        "--host",
        "not a host",
        "--dev",
    )
    assert result.code == EXIT_USAGE
    assert "invalid host 'not a host'" in result.err


def test_issue_node_requires_agency(run: Run, dev_ca: Path, tmp_path: Path) -> None:
    result = run("issue-node", "n", "--ca-dir", str(dev_ca), "--out", str(tmp_path / "n"), "--dev")
    assert result.code == EXIT_USAGE
    assert "--agency" in result.err


def test_verify_accepts_a_certificate_of_this_ca(run: Run, dev_ca: Path, tmp_path: Path) -> None:
    assert (
        run(
            "issue-node",
            "n1",
            "--agency",
            "A",
            "--ca-dir",
            str(dev_ca),
            "--out",
            str(tmp_path / "n1"),
            "--dev",
        ).code
        == EXIT_OK
    )
    result = run("verify", str(tmp_path / "n1" / "node.crt"), "--ca-dir", str(dev_ca), "--json")
    assert result.code == EXIT_OK, result.err
    assert result.json() | {"not_after": None} == {
        "valid": True,
        "cert": str(tmp_path / "n1" / "node.crt"),
        "agency": "A",
        "node": "n1",
        "account": None,
        "not_after": None,
    }


def test_verify_refuses_a_certificate_of_another_ca_with_exit_2(
    run: Run, dev_ca: Path, tmp_path: Path
) -> None:
    assert run("init", "--dir", str(tmp_path / "other"), "--dev").code == EXIT_OK
    assert (
        run(
            "issue-agency", "A", "--ca-dir", str(tmp_path / "other"), "--out", str(tmp_path / "a"), "--dev"
        ).code
        == EXIT_OK
    )
    cert = tmp_path / "a" / "agency.crt"
    result = run("verify", str(cert), "--ca-dir", str(dev_ca), "--json")
    assert result.code == EXIT_USAGE
    assert result.json() == {
        "valid": False,
        "cert": str(cert),
        "reason": "certificate was not issued by this CA (issuer or signature does not match)",
    }
    assert "not issued by this CA" in result.err


def test_verify_of_missing_file_is_a_usage_error(run: Run, dev_ca: Path, tmp_path: Path) -> None:
    result = run("verify", str(tmp_path / "nope.crt"), "--ca-dir", str(dev_ca))
    assert result.code == EXIT_USAGE
    assert "does not exist" in result.err


def test_group_help_lists_every_command() -> None:
    result = CliRunner().invoke(ca_cli.group, ["--help"])
    assert result.exit_code == 0
    for command in ("init", "issue-agency", "issue-node", "verify"):
        assert command in result.output
