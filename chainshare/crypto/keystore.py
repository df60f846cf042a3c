"""Password-protected key files: Ethereum V3 keystores (accounts), EIP-2335 keystores (BLS
validator keys), atomic 0600 secret files, and password input for the CLI.

Passwords and secrets are never logged and never appear in an error message.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import tempfile
import unicodedata
import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from chainshare.crypto import bls
from chainshare.crypto.secp import SECP256K1_N, address_of_private_key
from chainshare.errors import ConfigError, CryptoError

PASSWORD_ENV_VAR = "CHAINSHARE_PASSWORD"

# scrypt work factors. The standard value is what geth and EIP-2335 use; the light one makes a
# keystore crackable in seconds and exists only so that tests and throwaway devnets are fast.
STANDARD_SCRYPT_N = 2**18
LIGHT_SCRYPT_N = 2**12
SCRYPT_R = 8
SCRYPT_P = 1
DKLEN = 32

# A keystore comes from outside; bound its KDF cost so a hostile file cannot exhaust memory/CPU.
MAX_SCRYPT_MEMORY = 1024 * 1024 * 1024  # 128 * r * n bytes, 1 GiB
MAX_SCRYPT_P = 16
MAX_PBKDF2_ITERATIONS = 10_000_000

SECRET_FILE_MODE = 0o600
PUBLIC_FILE_MODE = 0o644

# EIP-2335 password normalisation removes C0, DEL and C1 control codes.
_CONTROL_CODES = frozenset([*range(0x00, 0x20), *range(0x7F, 0xA0)])


# --------------------------------------------------------------------------- V3 (accounts)


def encrypt_account_key(private_key: bytes, password: str, *, kdf_light: bool = False) -> dict[str, Any]:
    """Encrypt a secp256k1 account key as a standard Ethereum V3 keystore (scrypt, aes-128-ctr),
    readable by geth, eth_account and every wallet that imports keystores."""
    _check_account_key(private_key)
    work_factor = LIGHT_SCRYPT_N if kdf_light else STANDARD_SCRYPT_N
    try:
        from eth_keyfile.keyfile import create_keyfile_json  # imports py_ecc's pairing tables: ~0.4 s

        keystore = create_keyfile_json(
            private_key, password.encode("utf-8"), version=3, kdf="scrypt", iterations=work_factor
        )
    except Exception as exc:  # eth_keyfile raises several unrelated types
        raise CryptoError(f"could not encrypt the account key: {type(exc).__name__}") from exc
    return dict(keystore)


def decrypt_account_key(keystore: dict[str, Any], password: str) -> bytes:
    """Return the 32-byte account key of a V3 keystore; a wrong password, a tampered file or a
    malformed one raises CryptoError (and never returns a wrong key)."""
    if not isinstance(keystore, dict):
        raise CryptoError("account keystore must be a JSON object")
    lowered = {str(k).lower(): v for k, v in keystore.items()}
    if lowered.get("version") != 3:
        raise CryptoError(f"not a V3 account keystore (version {lowered.get('version')!r}); expected 3")
    crypto = lowered.get("crypto")
    if not isinstance(crypto, dict):
        raise CryptoError("malformed account keystore: missing 'crypto' section")
    crypto = {str(k).lower(): v for k, v in crypto.items()}
    kdf = crypto.get("kdf")
    params = crypto.get("kdfparams")
    if not isinstance(params, dict):
        raise CryptoError("malformed account keystore: missing 'kdfparams'")
    if kdf == "scrypt":
        _check_scrypt_params(params)
    elif kdf == "pbkdf2":
        _check_pbkdf2_params(params)
    else:
        raise CryptoError(f"account keystore uses unsupported KDF {kdf!r}; expected scrypt or pbkdf2")
    if crypto.get("cipher") != "aes-128-ctr":
        raise CryptoError(f"account keystore uses unsupported cipher {crypto.get('cipher')!r}")
    try:
        from eth_keyfile.keyfile import decode_keyfile_json  # imports py_ecc's pairing tables: ~0.4 s

        private_key = bytes(decode_keyfile_json(keystore, password.encode("utf-8")))
    except ValueError as exc:
        if "MAC mismatch" in str(exc):
            raise CryptoError(
                "account keystore MAC does not match: wrong password or corrupted keystore"
            ) from exc
        raise CryptoError(f"malformed account keystore: {exc}") from exc
    except Exception as exc:  # KeyError, TypeError, ... from a malformed file
        raise CryptoError(f"malformed account keystore: {type(exc).__name__}: {exc}") from exc
    _check_account_key(private_key)
    expected = lowered.get("address")
    if isinstance(expected, str) and expected:
        actual = address_of_private_key(private_key).hex()
        if expected.lower().removeprefix("0x") != actual:
            raise CryptoError("account keystore decrypts to a key that does not match its 'address' field")
    return private_key


def _check_account_key(private_key: bytes) -> None:
    if not isinstance(private_key, bytes | bytearray) or len(private_key) != 32:
        raise CryptoError("an account key must be 32 bytes")
    if not 0 < int.from_bytes(private_key, "big") < SECP256K1_N:
        raise CryptoError("an account key must be in 1 .. n-1 of secp256k1")


# --------------------------------------------------------------------------- EIP-2335 (BLS)


def normalize_password(password: str) -> bytes:
    """EIP-2335 password bytes: NFKD-normalised UTF-8 with control codes removed."""
    normalized = unicodedata.normalize("NFKD", password)
    return "".join(c for c in normalized if ord(c) not in _CONTROL_CODES).encode("utf-8")


def encrypt_bls_key(
    secret_key: bytes,
    password: str,
    *,
    kdf_light: bool = False,
    description: str = "",
    path: str = "",
) -> dict[str, Any]:
    """Encrypt a BLS12-381 secret key as an EIP-2335 (version 4) keystore: scrypt, aes-128-ctr,
    sha256 checksum; ``pubkey`` is the key's public key, so the file names its validator."""
    n = LIGHT_SCRYPT_N if kdf_light else STANDARD_SCRYPT_N
    return _build_bls_keystore(
        secret_key, password, salt=os.urandom(32), iv=os.urandom(16), n=n, description=description, path=path
    )


def _build_bls_keystore(
    secret_key: bytes, password: str, *, salt: bytes, iv: bytes, n: int, description: str, path: str
) -> dict[str, Any]:
    pubkey = bls.public_key(secret_key)  # also validates the secret key
    derived = _scrypt(normalize_password(password), salt, n=n, r=SCRYPT_R, p=SCRYPT_P, dklen=DKLEN)
    cipher_message = _aes_128_ctr(derived[:16], iv, secret_key)
    checksum = hashlib.sha256(derived[16:32] + cipher_message).digest()
    return {
        "crypto": {
            "kdf": {
                "function": "scrypt",
                "params": {"dklen": DKLEN, "n": n, "r": SCRYPT_R, "p": SCRYPT_P, "salt": salt.hex()},
                "message": "",
            },
            "checksum": {"function": "sha256", "params": {}, "message": checksum.hex()},
            "cipher": {
                "function": "aes-128-ctr",
                "params": {"iv": iv.hex()},
                "message": cipher_message.hex(),
            },
        },
        "description": description,
        "pubkey": pubkey.hex(),
        "path": path,
        "uuid": str(uuid.uuid4()),
        "version": 4,
    }


def decrypt_bls_key(keystore: dict[str, Any], password: str) -> bytes:
    """Return the 32-byte BLS secret key of an EIP-2335 keystore (scrypt or pbkdf2); a wrong
    password, a tampered file, a malformed one or a ``pubkey`` that does not match the decrypted key
    raises CryptoError."""
    if not isinstance(keystore, dict):
        raise CryptoError("BLS keystore must be a JSON object")
    if keystore.get("version") != 4:
        raise CryptoError(f"not an EIP-2335 keystore (version {keystore.get('version')!r}); expected 4")
    try:
        crypto = keystore["crypto"]
        kdf, checksum, cipher = crypto["kdf"], crypto["checksum"], crypto["cipher"]
        kdf_function, kdf_params = kdf["function"], kdf["params"]
        checksum_function, checksum_message = checksum["function"], bytes.fromhex(checksum["message"])
        cipher_function = cipher["function"]
        iv = bytes.fromhex(cipher["params"]["iv"])
        cipher_message = bytes.fromhex(cipher["message"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CryptoError(f"malformed EIP-2335 keystore: {type(exc).__name__}: {exc}") from exc
    if checksum_function != "sha256":
        raise CryptoError(f"EIP-2335 keystore uses unsupported checksum {checksum_function!r}")
    if cipher_function != "aes-128-ctr":
        raise CryptoError(f"EIP-2335 keystore uses unsupported cipher {cipher_function!r}")
    if len(iv) != 16:
        raise CryptoError("malformed EIP-2335 keystore: the AES IV must be 16 bytes")
    pw = normalize_password(password)
    if kdf_function == "scrypt":
        salt, n, r, p, dklen = _check_scrypt_params(kdf_params)
        derived = _scrypt(pw, salt, n=n, r=r, p=p, dklen=dklen)
    elif kdf_function == "pbkdf2":
        salt, c, dklen = _check_pbkdf2_params(kdf_params)
        derived = PBKDF2HMAC(algorithm=hashes.SHA256(), length=dklen, salt=salt, iterations=c).derive(pw)
    else:
        raise CryptoError(f"EIP-2335 keystore uses unsupported KDF {kdf_function!r}")
    expected = hashlib.sha256(derived[16:32] + cipher_message).digest()
    if not hmac.compare_digest(expected, checksum_message):
        raise CryptoError("BLS keystore checksum does not match: wrong password or corrupted keystore")
    secret_key = _aes_128_ctr(derived[:16], iv, cipher_message)
    if len(secret_key) != bls.SECRET_KEY_SIZE:
        raise CryptoError(f"BLS keystore holds {len(secret_key)} bytes; a secret key is 32")
    pubkey = keystore.get("pubkey")
    if pubkey:
        actual = bls.public_key(secret_key).hex()
        if not isinstance(pubkey, str) or actual != pubkey.lower().removeprefix("0x"):
            raise CryptoError("BLS keystore decrypts to a key that does not match its 'pubkey' field")
    return secret_key


def _scrypt(password: bytes, salt: bytes, *, n: int, r: int, p: int, dklen: int) -> bytes:
    return Scrypt(salt=salt, length=dklen, n=n, r=r, p=p).derive(password)


def _aes_128_ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def _int_param(params: dict[str, Any], name: str) -> int:
    value = params.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise CryptoError(f"malformed keystore: KDF parameter {name!r} must be an integer")
    return value


def _salt_param(params: dict[str, Any]) -> bytes:
    salt = params.get("salt")
    try:
        if not isinstance(salt, str):
            raise ValueError
        return bytes.fromhex(salt.removeprefix("0x"))
    except ValueError:
        raise CryptoError("malformed keystore: KDF salt must be a hex string") from None


def _check_scrypt_params(params: dict[str, Any]) -> tuple[bytes, int, int, int, int]:
    n, r, p, dklen = (_int_param(params, k) for k in ("n", "r", "p", "dklen"))
    salt = _salt_param(params)
    if n < 2 or n & (n - 1):
        raise CryptoError(f"malformed keystore: scrypt n={n} is not a power of two >= 2")
    if r < 1 or not 1 <= p <= MAX_SCRYPT_P or 128 * r * n > MAX_SCRYPT_MEMORY:
        raise CryptoError(f"keystore scrypt parameters (n={n}, r={r}, p={p}) exceed the allowed cost")
    if dklen < 32:
        raise CryptoError(f"malformed keystore: derived key length {dklen} is below 32")
    return salt, n, r, p, dklen


def _check_pbkdf2_params(params: dict[str, Any]) -> tuple[bytes, int, int]:
    c, dklen = _int_param(params, "c"), _int_param(params, "dklen")
    salt = _salt_param(params)
    if params.get("prf") != "hmac-sha256":
        raise CryptoError(f"keystore pbkdf2 uses unsupported prf {params.get('prf')!r}")
    if not 1 <= c <= MAX_PBKDF2_ITERATIONS:
        raise CryptoError(f"keystore pbkdf2 iteration count {c} is outside 1 .. {MAX_PBKDF2_ITERATIONS}")
    if dklen < 32:
        raise CryptoError(f"malformed keystore: derived key length {dklen} is below 32")
    return salt, c, dklen


# --------------------------------------------------------------------------- files and passwords


def write_secret_file(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600: readers see the old file or the whole
    new one, and the content never exists on disk with wider permissions."""
    _write_atomic(Path(path), data, SECRET_FILE_MODE)


def write_public_file(path: Path, data: bytes | str) -> None:
    """Write ``data`` (a certificate, an identity) to ``path`` atomically with mode 0644."""
    _write_atomic(Path(path), data, PUBLIC_FILE_MODE)


def _write_atomic(path: Path, data: bytes | str, mode: int) -> None:
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    # mkstemp opens with O_CREAT|O_EXCL and mode 0600, in the target's directory so that
    # os.replace is a rename within one file system.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(payload)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass  # some file systems cannot fsync a directory; the rename itself is still atomic
    finally:
        os.close(dir_fd)


def read_password(password_file: Path | None, env_var: str = PASSWORD_ENV_VAR) -> str:
    """The password from ``password_file`` (its first line, without the line ending) or else from
    the environment variable ``env_var``; ConfigError when neither gives a non-empty password."""
    if password_file is not None:
        path = Path(password_file)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"password file {path} does not exist") from None
        except OSError as exc:
            raise ConfigError(f"cannot read password file {path}: {exc.strerror}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"password file {path} is not UTF-8 text") from None
        password = text.split("\n", 1)[0].removesuffix("\r")
        if not password:
            raise ConfigError(f"password file {path} is empty: put the password on its first line")
        return password
    password = os.environ.get(env_var, "")
    if not password:
        raise ConfigError(f"no password given: pass --password-file FILE or set {env_var}")
    return password
