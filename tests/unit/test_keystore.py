"""Keystores (Ethereum V3 for accounts, EIP-2335 for BLS keys), secret files and password input."""

from __future__ import annotations

import copy
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_keyfile.keyfile import decode_keyfile_json

from chainshare.crypto import bls
from chainshare.crypto.keystore import (
    LIGHT_SCRYPT_N,
    STANDARD_SCRYPT_N,
    _build_bls_keystore,
    decrypt_account_key,
    decrypt_bls_key,
    encrypt_account_key,
    encrypt_bls_key,
    normalize_password,
    read_password,
    write_public_file,
    write_secret_file,
)
from chainshare.crypto.secp import address_of_private_key
from chainshare.errors import ConfigError, CryptoError

ACCOUNT_KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
BLS_SECRET = bls.generate_secret_key(b"\x07" * 32)

# The official EIP-2335 scrypt test vector (https://eips.ethereum.org/EIPS/eip-2335#test-cases).
EIP2335_PASSWORD = "𝔱𝔢𝔰𝔱𝔭𝔞𝔰𝔰𝔴𝔬𝔯𝔡🔑"
EIP2335_SECRET = bytes.fromhex("000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f")
EIP2335_SCRYPT_VECTOR: dict[str, Any] = {
    "crypto": {
        "kdf": {
            "function": "scrypt",
            "params": {
                "dklen": 32,
                "n": 262144,
                "p": 1,
                "r": 8,
                "salt": "d4e56740f876aef8c010b86a40d5f56745a118d0906a34e69aec8c0db1cb8fa3",
            },
            "message": "",
        },
        "checksum": {
            "function": "sha256",
            "params": {},
            "message": "d2217fe5f3e9a1e34581ef8a78f7c9928e436d36dacc5e846690a5581e8ea484",
        },
        "cipher": {
            "function": "aes-128-ctr",
            "params": {"iv": "264daa3f303d7259501c93d997d84fe6"},
            "message": "06ae90d55fe0a6e9c5c3bc5b170827b2e5cce3929ed3f116c2811e6366dfe20f",
        },
    },
    "description": "This is a test keystore that uses scrypt to secure the secret.",
    "pubkey": "9612d7a727c9d0a22e185a1c768478dfe919cada9266988cb32359c11f2b7b27f4ae4040902382ae2910c15e2b420d07",
    "path": "m/12381/60/3141592653/589793238",
    "uuid": "1d85ae20-35c5-4611-98e8-aa14a633906f",
    "version": 4,
}


@pytest.fixture(scope="module")
def account_keystore() -> dict[str, Any]:
    return encrypt_account_key(ACCOUNT_KEY, "correct horse", kdf_light=True)


@pytest.fixture(scope="module")
def bls_keystore() -> dict[str, Any]:
    return encrypt_bls_key(BLS_SECRET, "correct horse", kdf_light=True)


# --------------------------------------------------------------------------- V3 account keystores


def test_account_keystore_round_trips(account_keystore: dict[str, Any]) -> None:
    assert decrypt_account_key(account_keystore, "correct horse") == ACCOUNT_KEY


def test_account_keystore_is_standard_v3_scrypt_with_geth_work_factor() -> None:
    keystore = encrypt_account_key(ACCOUNT_KEY, "pw")
    assert keystore["version"] == 3
    assert keystore["address"].lower() == address_of_private_key(ACCOUNT_KEY).hex()
    crypto = keystore["crypto"]
    assert crypto["kdf"] == "scrypt" and crypto["cipher"] == "aes-128-ctr"
    assert crypto["kdfparams"]["n"] == STANDARD_SCRYPT_N


def test_light_kdf_is_only_used_when_asked(account_keystore: dict[str, Any]) -> None:
    assert account_keystore["crypto"]["kdfparams"]["n"] == LIGHT_SCRYPT_N


def test_account_keystore_decrypts_with_eth_account(account_keystore: dict[str, Any]) -> None:
    assert bytes(Account.decrypt(account_keystore, "correct horse")) == ACCOUNT_KEY


def test_keystore_made_by_eth_account_decrypts(tmp_path: Path) -> None:
    keystore = Account.encrypt(ACCOUNT_KEY, "from-eth-account", kdf="scrypt", iterations=LIGHT_SCRYPT_N)
    assert decrypt_account_key(keystore, "from-eth-account") == ACCOUNT_KEY


def test_wrong_password_is_refused_with_clear_error(account_keystore: dict[str, Any]) -> None:
    with pytest.raises(CryptoError, match="wrong password"):
        decrypt_account_key(account_keystore, "wrong horse")


def test_tampered_account_ciphertext_is_refused(account_keystore: dict[str, Any]) -> None:
    tampered = copy.deepcopy(account_keystore)
    ciphertext = tampered["crypto"]["ciphertext"]
    tampered["crypto"]["ciphertext"] = ("0" if ciphertext[0] != "0" else "1") + ciphertext[1:]
    with pytest.raises(CryptoError, match="wrong password or corrupted"):
        decrypt_account_key(tampered, "correct horse")


def test_account_keystore_whose_address_does_not_match_is_refused(account_keystore: dict[str, Any]) -> None:
    tampered = copy.deepcopy(account_keystore)
    tampered["address"] = "00" * 20
    with pytest.raises(CryptoError, match="does not match its 'address'"):
        decrypt_account_key(tampered, "correct horse")


def _set(keystore: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(keystore)
    target = changed
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return changed


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("version",), 4, "not a V3"),
        (("crypto",), _DELETE, "missing 'crypto'"),
        (("crypto", "kdf"), "argon2", "unsupported KDF"),
        (("crypto", "cipher"), "aes-256-gcm", "unsupported cipher"),
        (("crypto", "kdfparams", "n"), 2**30, "exceed the allowed cost"),
        (("crypto", "kdfparams", "n"), 1000, "not a power of two"),
        (("crypto", "kdfparams", "salt"), "zz", "salt must be a hex string"),
        (("crypto", "mac"), _DELETE, "malformed account keystore"),
        (("crypto", "ciphertext"), "not hex", "malformed account keystore"),
    ],
)
def test_malformed_account_keystore_is_refused_with_clear_error(
    account_keystore: dict[str, Any], path: tuple[str, ...], value: Any, message: str
) -> None:
    with pytest.raises(CryptoError, match=message):
        decrypt_account_key(_set(account_keystore, path, value), "correct horse")


@pytest.mark.parametrize("key", [b"\x00" * 32, b"\xff" * 32, b"\x01" * 31])
def test_invalid_account_key_is_not_encrypted(key: bytes) -> None:
    with pytest.raises(CryptoError):
        encrypt_account_key(key, "pw", kdf_light=True)


# --------------------------------------------------------------------------- EIP-2335 BLS keystores


def test_bls_keystore_matches_eip2335_test_vector() -> None:
    assert decrypt_bls_key(EIP2335_SCRYPT_VECTOR, EIP2335_PASSWORD) == EIP2335_SECRET


def test_bls_keystore_encryption_reproduces_eip2335_test_vector() -> None:
    vector = EIP2335_SCRYPT_VECTOR
    made = _build_bls_keystore(
        EIP2335_SECRET,
        EIP2335_PASSWORD,
        salt=bytes.fromhex(vector["crypto"]["kdf"]["params"]["salt"]),
        iv=bytes.fromhex(vector["crypto"]["cipher"]["params"]["iv"]),
        n=vector["crypto"]["kdf"]["params"]["n"],
        description=vector["description"],
        path=vector["path"],
    )
    assert made["crypto"] == vector["crypto"]
    assert made["pubkey"] == vector["pubkey"]
    assert made["version"] == 4


def test_password_is_normalised_as_eip2335_says() -> None:
    # NFKD folds the mathematical letters to ASCII; control codes (C0, DEL, C1) are removed.
    assert normalize_password(EIP2335_PASSWORD) == bytes.fromhex("7465737470617373776f7264f09f9491")
    assert normalize_password("pass\x00\x1f\x7f\x9fword") == b"password"


def test_bls_keystore_round_trips_and_names_its_public_key(bls_keystore: dict[str, Any]) -> None:
    assert decrypt_bls_key(bls_keystore, "correct horse") == BLS_SECRET
    assert bls_keystore["pubkey"] == bls.public_key(BLS_SECRET).hex()
    assert bls_keystore["version"] == 4
    assert bls_keystore["crypto"]["kdf"]["function"] == "scrypt"


def test_bls_keystore_accepts_the_password_with_control_characters_removed(
    bls_keystore: dict[str, Any],
) -> None:
    assert decrypt_bls_key(bls_keystore, "correct\x7f horse\x00") == BLS_SECRET


def test_bls_keystore_is_readable_by_eth_keyfile(bls_keystore: dict[str, Any]) -> None:
    assert decode_keyfile_json(bls_keystore, b"correct horse") == BLS_SECRET


def test_bls_keystore_wrong_password_is_refused_with_clear_error(bls_keystore: dict[str, Any]) -> None:
    with pytest.raises(CryptoError, match="wrong password"):
        decrypt_bls_key(bls_keystore, "wrong horse")


@pytest.mark.parametrize("field", ["checksum", "cipher"])
def test_tampered_bls_keystore_is_refused(bls_keystore: dict[str, Any], field: str) -> None:
    message = bls_keystore["crypto"][field]["message"]
    flipped = ("0" if message[0] != "0" else "1") + message[1:]
    with pytest.raises(CryptoError, match="checksum does not match"):
        decrypt_bls_key(_set(bls_keystore, ("crypto", field, "message"), flipped), "correct horse")


def test_bls_keystore_with_foreign_pubkey_is_refused(bls_keystore: dict[str, Any]) -> None:
    other = bls.public_key(bls.generate_secret_key(b"\x08" * 32)).hex()
    with pytest.raises(CryptoError, match="does not match its 'pubkey'"):
        decrypt_bls_key(_set(bls_keystore, ("pubkey",), other), "correct horse")


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("version",), 3, "not an EIP-2335"),
        (("crypto", "cipher"), _DELETE, "malformed EIP-2335"),
        (("crypto", "kdf", "function"), "argon2", "unsupported KDF"),
        (("crypto", "checksum", "function"), "md5", "unsupported checksum"),
        (("crypto", "cipher", "function"), "aes-256-cbc", "unsupported cipher"),
        (("crypto", "kdf", "params", "n"), 2**24, "exceed the allowed cost"),
        (("crypto", "kdf", "params", "r"), "8", "must be an integer"),
        (("crypto", "cipher", "params", "iv"), "00", "IV must be 16 bytes"),
    ],
)
def test_malformed_bls_keystore_is_refused_with_clear_error(
    bls_keystore: dict[str, Any], path: tuple[str, ...], value: Any, message: str
) -> None:
    with pytest.raises(CryptoError, match=message):
        decrypt_bls_key(_set(bls_keystore, path, value), "correct horse")


def test_keystore_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(CryptoError):
        decrypt_bls_key([], "pw")  # type: ignore[arg-type]
    with pytest.raises(CryptoError):
        decrypt_account_key("{}", "pw")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- files


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secret_files_are_mode_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_secret_file(tmp_path / "key", b"secret")
        write_secret_file(tmp_path / "text", "secret text")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "key") == 0o600
    assert (tmp_path / "key").read_bytes() == b"secret"
    assert (tmp_path / "text").read_text() == "secret text"


def test_rewriting_a_world_readable_file_makes_it_private(tmp_path: Path) -> None:
    target = tmp_path / "key"
    target.write_text("old")
    target.chmod(0o644)
    write_secret_file(target, "new")
    assert target.read_text() == "new"
    assert _mode(target) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key"]  # no temp file left behind


def test_public_files_are_readable_by_others(tmp_path: Path) -> None:
    write_public_file(tmp_path / "ca.crt", "cert")
    assert _mode(tmp_path / "ca.crt") == 0o644


def test_failed_write_leaves_no_temp_file(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        write_secret_file(tmp_path / "missing-dir" / "key", b"x")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- passwords


def test_password_file_gives_its_first_line_without_line_ending(tmp_path: Path) -> None:
    (tmp_path / "pw").write_bytes(b" spaced pass \r\nsecond line\n")
    assert read_password(tmp_path / "pw") == " spaced pass "


def test_password_file_wins_over_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAINSHARE_PASSWORD", "from-env")
    (tmp_path / "pw").write_text("from-file\n")
    assert read_password(tmp_path / "pw") == "from-file"
    assert read_password(None) == "from-env"


def test_missing_password_is_a_clear_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHAINSHARE_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match="--password-file .* CHAINSHARE_PASSWORD"):
        read_password(None)


def test_custom_environment_variable_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_PW", "x")
    assert read_password(None, env_var="MY_PW") == "x"


def test_missing_or_empty_password_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        read_password(tmp_path / "nope")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        read_password(tmp_path / "empty")
