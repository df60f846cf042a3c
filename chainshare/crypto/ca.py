"""The consortium CA: one root (ECDSA P-256) that certifies each member agency and each node.

An agency certificate binds the agency's name to its Ethereum account (SAN URIs
``urn:chainshare:agency:<name>`` and ``urn:chainshare:account:<address>``); a node certificate binds
a node to its agency and serves mutual TLS between nodes. Each node also gets a BLS12-381 validator
key with its proof of possession. Private keys are written only as 0600 files, encrypted unless the
caller explicitly asks for development (unencrypted) keys by passing ``None`` as the password.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, unquote

import coincurve
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from chainshare.crypto import bls
from chainshare.crypto.keystore import (
    encrypt_account_key,
    encrypt_bls_key,
    write_public_file,
    write_secret_file,
)
from chainshare.crypto.secp import address_of_private_key, to_checksum_address
from chainshare.errors import ConfigError, CryptoError, InvalidInput

CA_CERT_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"
AGENCY_KEY_FILE = "agency.key"
AGENCY_CERT_FILE = "agency.crt"
ACCOUNT_KEYSTORE_FILE = "account.json"
AGENCY_IDENTITY_FILE = "identity.json"
NODE_KEY_FILE = "node.key"
NODE_CERT_FILE = "node.crt"
VALIDATOR_KEYSTORE_FILE = "validator.json"
NODE_IDENTITY_FILE = "node-identity.json"

AGENCY_URI_PREFIX = "urn:chainshare:agency:"
NODE_URI_PREFIX = "urn:chainshare:node:"
ACCOUNT_URI_PREFIX = "urn:chainshare:account:"

DEFAULT_CA_NAME = "chainshare consortium CA"
DEFAULT_NODE_HOSTS: tuple[str, ...] = ("127.0.0.1", "localhost")
CA_VALIDITY_DAYS = 3650
LEAF_VALIDITY_DAYS = 825
# Certificates start a little in the past so that peers whose clocks lag still accept them.
CLOCK_SKEW = timedelta(minutes=5)

_NAME_RE = re.compile(r"[A-Za-z0-9 ._-]{1,64}")
_ROLE_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_DNS_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")


@dataclass(frozen=True)
class CAInfo:
    """A consortium root as created by ``init_ca`` (public parts only)."""

    name: str
    cert_pem: str
    fingerprint_sha256: str
    not_after: datetime
    directory: Path

    def to_json(self) -> dict[str, str]:
        """JSON-safe summary for CLI output; holds no secret."""
        return {
            "name": self.name,
            "cert": str(self.directory / CA_CERT_FILE),
            "fingerprint_sha256": self.fingerprint_sha256,
            "not_after": self.not_after.isoformat(),
        }


@dataclass(frozen=True)
class AgencyIdentity:
    """A certified member agency: its name, role, account address and certificate."""

    name: str
    role: str
    address: str
    cert_pem: str
    directory: Path

    def to_json(self) -> dict[str, str]:
        return {
            "name": self.name,
            "role": self.role,
            "address": self.address,
            "cert": str(self.directory / AGENCY_CERT_FILE),
            "directory": str(self.directory),
        }


@dataclass(frozen=True)
class NodeIdentity:
    """A certified node: its agency, TLS certificate and BLS validator public key with its PoP."""

    name: str
    agency: str
    bls_public_key: bytes
    bls_pop: bytes
    cert_pem: str
    directory: Path

    def to_json(self) -> dict[str, str]:
        return {
            "name": self.name,
            "agency": self.agency,
            "bls_public_key": "0x" + self.bls_public_key.hex(),
            "bls_pop": "0x" + self.bls_pop.hex(),
            "cert": str(self.directory / NODE_CERT_FILE),
            "directory": str(self.directory),
        }


@dataclass(frozen=True)
class CertSubject:
    """Who a verified certificate speaks for."""

    agency: str
    node: str | None
    account: str | None
    not_after: datetime
    fingerprint: bytes = b""  # SHA-256 of the certificate's DER encoding


# --------------------------------------------------------------------------- the CA


def init_ca(
    directory: Path,
    *,
    name: str = DEFAULT_CA_NAME,
    password: str | None,
    validity_days: int = CA_VALIDITY_DAYS,
) -> CAInfo:
    """Create a new consortium root in ``directory`` (``ca.crt``, ``ca.key``); never overwrites
    an existing CA. The key is encrypted with ``password``; ``None`` writes it unencrypted (dev)."""
    directory = Path(directory)
    _check_ca_name(name)
    _check_validity_days(validity_days)
    _check_password(password)
    for file in (CA_CERT_FILE, CA_KEY_FILE):
        if (directory / file).exists():
            raise ConfigError(f"a CA already exists in {directory} ({file}); refusing to overwrite it")
    _make_private_dir(directory)

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, name), x509.NameAttribute(NameOID.COMMON_NAME, name)]
    )
    not_before = datetime.now(UTC) - CLOCK_SKEW
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + timedelta(days=validity_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_secret_file(directory / CA_KEY_FILE, _key_pem(key, password))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
    write_public_file(directory / CA_CERT_FILE, cert_pem)
    return CAInfo(
        name=name,
        cert_pem=cert_pem,
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
        not_after=cert.not_valid_after_utc,
        directory=directory,
    )


def load_ca(directory: Path, password: str | None) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA certificate and its private key from ``directory``; ConfigError if they are missing,
    CryptoError if the password is wrong or the key does not belong to the certificate."""
    directory = Path(directory)
    cert_path, key_path = directory / CA_CERT_FILE, directory / CA_KEY_FILE
    for path in (cert_path, key_path):
        if not path.is_file():
            raise ConfigError(
                f"no consortium CA in {directory}: {path.name} is missing "
                f"(create one with `chainshare ca init --dir {directory}`)"
            )
    cert = _load_cert(cert_path.read_bytes(), f"CA certificate {cert_path}")
    key_pem = key_path.read_bytes()
    encrypted = b"ENCRYPTED" in key_pem.split(b"\n", 1)[0]
    if encrypted and password is None:
        raise CryptoError(
            f"the CA key {key_path} is encrypted: give its password (--password-file or CHAINSHARE_PASSWORD)"
        )
    if not encrypted and password is not None:
        raise CryptoError(f"the CA key {key_path} is not encrypted (it was made with --dev): use --dev")
    try:
        key = serialization.load_pem_private_key(
            key_pem, password=password.encode("utf-8") if password is not None else None
        )
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        if encrypted:
            raise CryptoError(
                f"cannot decrypt the CA key {key_path}: wrong password (or a corrupted file)"
            ) from exc
        raise CryptoError(f"the CA key {key_path} is not a valid PEM private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise CryptoError(f"the CA key {key_path} is not an ECDSA P-256 key")
    if key.public_key() != cert.public_key():
        raise CryptoError(f"the CA key {key_path} does not belong to the certificate {cert_path}")
    return cert, key


# --------------------------------------------------------------------------- agencies and nodes


def issue_agency(
    ca_dir: Path,
    ca_password: str | None,
    name: str,
    out_dir: Path,
    *,
    role: str = "member",
    key_password: str | None,
    validity_days: int = LEAF_VALIDITY_DAYS,
    kdf_light: bool = False,
    not_before: datetime | None = None,
) -> AgencyIdentity:
    """Certify a member agency: writes a fresh P-256 key, a CA-signed certificate naming the agency
    and a fresh Ethereum account, the account's V3 keystore and ``identity.json`` to ``out_dir``.
    With ``key_password=None`` the keys are unencrypted / empty-password light keystores (dev only)."""
    check_name(name, "agency name")
    if not _ROLE_RE.fullmatch(role):
        raise InvalidInput(
            f"invalid role {role!r}: use 1..32 of a-z, 0-9, '_' or '-', starting with a letter"
        )
    _check_validity_days(validity_days)
    _check_password(key_password)
    out_dir = Path(out_dir)
    files = (AGENCY_KEY_FILE, AGENCY_CERT_FILE, ACCOUNT_KEYSTORE_FILE, AGENCY_IDENTITY_FILE)
    _check_out_dir(out_dir, files)
    ca_cert, ca_key = load_ca(ca_dir, ca_password)

    account_key = coincurve.PrivateKey().secret
    address = to_checksum_address(address_of_private_key(account_key))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, name), x509.NameAttribute(NameOID.COMMON_NAME, name)]
    )
    builder = _leaf_builder(ca_cert, key, subject, validity_days, not_before)
    cert = (
        builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier(_agency_uri(name)),
                    x509.UniformResourceIdentifier(ACCOUNT_URI_PREFIX + address),
                ]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    keystore = encrypt_account_key(
        account_key,
        key_password if key_password is not None else "",
        kdf_light=kdf_light or key_password is None,
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")

    _make_private_dir(out_dir)
    write_secret_file(out_dir / AGENCY_KEY_FILE, _key_pem(key, key_password))
    write_secret_file(out_dir / ACCOUNT_KEYSTORE_FILE, json.dumps(keystore, indent=2) + "\n")
    write_public_file(out_dir / AGENCY_CERT_FILE, cert_pem)
    identity = {"name": name, "role": role, "address": address, "cert": AGENCY_CERT_FILE}
    write_public_file(out_dir / AGENCY_IDENTITY_FILE, json.dumps(identity, indent=2) + "\n")
    return AgencyIdentity(name=name, role=role, address=address, cert_pem=cert_pem, directory=out_dir)


def issue_node(
    ca_dir: Path,
    ca_password: str | None,
    agency: str,
    node_name: str,
    out_dir: Path,
    *,
    key_password: str | None,
    hosts: Sequence[str] = DEFAULT_NODE_HOSTS,
    validity_days: int = LEAF_VALIDITY_DAYS,
    kdf_light: bool = False,
    not_before: datetime | None = None,
) -> NodeIdentity:
    """Certify a node of ``agency``: writes a P-256 TLS key and a CA-signed certificate (server and
    client auth for ``hosts``), a fresh BLS validator key as an EIP-2335 keystore, and
    ``node-identity.json`` with the BLS public key and its proof of possession, to ``out_dir``."""
    _check_password(key_password)
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, (VALIDATOR_KEYSTORE_FILE, NODE_IDENTITY_FILE))
    cert_pem = issue_node_certificate(ca_dir, ca_password, agency, node_name, out_dir, key_password=key_password,
                                      hosts=hosts, validity_days=validity_days, not_before=not_before)
    bls_secret = bls.generate_secret_key(os.urandom(32))
    bls_public_key = bls.public_key(bls_secret)
    bls_pop = bls.prove_possession(bls_secret)
    keystore = encrypt_bls_key(
        bls_secret,
        key_password if key_password is not None else "",
        kdf_light=kdf_light or key_password is None,
        description=f"chainshare validator key of node {node_name} ({agency})",
    )
    write_secret_file(out_dir / VALIDATOR_KEYSTORE_FILE, json.dumps(keystore, indent=2) + "\n")
    identity = {
        "name": node_name,
        "agency": agency,
        "bls_public_key": "0x" + bls_public_key.hex(),
        "bls_pop": "0x" + bls_pop.hex(),
        "cert": NODE_CERT_FILE,
    }
    write_public_file(out_dir / NODE_IDENTITY_FILE, json.dumps(identity, indent=2) + "\n")
    return NodeIdentity(
        name=node_name,
        agency=agency,
        bls_public_key=bls_public_key,
        bls_pop=bls_pop,
        cert_pem=cert_pem,
        directory=out_dir,
    )


def issue_node_certificate(
    ca_dir: Path,
    ca_password: str | None,
    agency: str,
    node_name: str,
    out_dir: Path,
    *,
    key_password: str | None,
    hosts: Sequence[str] = DEFAULT_NODE_HOSTS,
    validity_days: int = LEAF_VALIDITY_DAYS,
    not_before: datetime | None = None,
    key_file: str = NODE_KEY_FILE,
    cert_file: str = NODE_CERT_FILE,
) -> str:
    """Certify a node's TLS identity only (no validator key): a fresh P-256 key in ``out_dir/key_file``
    (0600, encrypted unless ``key_password`` is None) and its CA-signed certificate (server and client
    auth for ``hosts``, naming ``agency`` and ``node_name``) in ``out_dir/cert_file``; returns the PEM.
    Neither file may exist yet."""
    check_name(agency, "agency name")
    check_name(node_name, "node name")
    if isinstance(hosts, str):
        raise InvalidInput("hosts must be a list of host names or IP addresses, not one string")
    san_hosts = _host_names(hosts)
    _check_validity_days(validity_days)
    _check_password(key_password)
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, (key_file, cert_file))
    ca_cert, ca_key = load_ca(ca_dir, ca_password)

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, agency),
            x509.NameAttribute(NameOID.COMMON_NAME, node_name),
        ]
    )
    builder = _leaf_builder(ca_cert, key, subject, validity_days, not_before)
    cert = (
        builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    *san_hosts,
                    x509.UniformResourceIdentifier(_agency_uri(agency)),
                    x509.UniformResourceIdentifier(NODE_URI_PREFIX + quote(node_name, safe="._-")),
                ]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
    _make_private_dir(out_dir)
    write_secret_file(out_dir / key_file, _key_pem(key, key_password))
    write_public_file(out_dir / cert_file, cert_pem)
    return cert_pem


def compute_certificate_fingerprint(cert_pem: bytes) -> bytes:
    """The SHA-256 of the certificate's DER encoding (what revocation lists name); CryptoError if
    ``cert_pem`` is not a PEM certificate."""
    return _load_cert(cert_pem, "certificate").fingerprint(hashes.SHA256())


# --------------------------------------------------------------------------- verification


def verify_certificate(ca_cert_pem: bytes, cert_pem: bytes, *, at: datetime) -> CertSubject:
    """The agency, node and account a certificate names, if and only if ``ca_cert_pem`` signed it,
    both are valid at ``at`` and it is an end-entity certificate naming an agency; else CryptoError."""
    if at.tzinfo is None:
        raise InvalidInput("verification time must be timezone-aware (e.g. datetime.now(UTC))")
    ca_cert = _load_cert(ca_cert_pem, "CA certificate")
    cert = _load_cert(cert_pem, "certificate")
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CryptoError(
            "certificate was not issued by this CA (issuer or signature does not match)"
        ) from exc
    if _is_ca(cert):
        raise CryptoError("certificate is a CA certificate, not an agency or node certificate")
    if not ca_cert.not_valid_before_utc <= at <= ca_cert.not_valid_after_utc:
        raise CryptoError(
            f"the CA certificate is not valid at {at.isoformat()} "
            f"(valid {ca_cert.not_valid_before_utc.isoformat()} .. {ca_cert.not_valid_after_utc.isoformat()})"
        )
    if at < cert.not_valid_before_utc:
        raise CryptoError(f"certificate is not yet valid: valid from {cert.not_valid_before_utc.isoformat()}")
    if at > cert.not_valid_after_utc:
        raise CryptoError(f"certificate expired on {cert.not_valid_after_utc.isoformat()}")

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    except ValueError as exc:  # a malformed or duplicated extension
        raise CryptoError(f"certificate has malformed extensions: {exc}") from exc
    agencies = _uri_values(uris, AGENCY_URI_PREFIX)
    nodes = _uri_values(uris, NODE_URI_PREFIX)
    accounts = _uri_values(uris, ACCOUNT_URI_PREFIX)
    if not agencies:
        raise CryptoError(f"certificate has no agency URI ({AGENCY_URI_PREFIX}<name>) in its subjectAltName")
    if len(agencies) > 1 or len(nodes) > 1 or len(accounts) > 1:
        raise CryptoError("certificate names more than one agency, node or account")
    agency, node = agencies[0], nodes[0] if nodes else None
    for value, what in ((agency, "agency"), (node, "node")):
        if value is not None and not _NAME_RE.fullmatch(value):
            raise CryptoError(f"certificate has a malformed {what} name in its subjectAltName")
    account = accounts[0] if accounts else None
    if account is not None and not _ADDRESS_RE.fullmatch(account):
        raise CryptoError("certificate has a malformed account address in its subjectAltName")
    organizations = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    if [a.value for a in organizations] != [agency]:
        raise CryptoError("certificate subject organisation does not match its agency URI")
    return CertSubject(agency=agency, node=node, account=account, not_after=cert.not_valid_after_utc,
                       fingerprint=cert.fingerprint(hashes.SHA256()))


@dataclass(frozen=True)
class CertificateSummary:
    """The public facts of a certificate, read without checking who issued it."""

    fingerprint_sha256: bytes
    subject: str
    issuer: str
    serial: str
    not_before: datetime
    not_after: datetime


def describe_certificate(cert_pem: bytes) -> CertificateSummary:
    """Fingerprint (SHA-256 of the DER), subject, issuer, serial and validity of a PEM certificate;
    CryptoError if it is not one. Says nothing about its validity: see ``verify_certificate``."""
    cert = _load_cert(cert_pem, "certificate")
    return CertificateSummary(
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()), subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(), serial=f"{cert.serial_number:x}",
        not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc)


# --------------------------------------------------------------------------- helpers


def check_name(name: str, what: str = "name") -> None:
    """Raise InvalidInput unless ``name`` is 1..64 of A-Z a-z 0-9 space . _ - (no outer spaces)."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or name != name.strip():
        raise InvalidInput(
            f"invalid {what} {name!r}: use 1..64 letters, digits, spaces, '.', '_' or '-' "
            "(no leading or trailing space)"
        )


def _check_ca_name(name: str) -> None:
    if (
        not isinstance(name, str)
        or not 1 <= len(name) <= 64
        or name != name.strip()
        or not name.isprintable()
    ):
        raise InvalidInput(f"invalid CA name {name!r}: use 1..64 printable characters")


def _check_validity_days(days: int) -> None:
    if not isinstance(days, int) or isinstance(days, bool) or days < 1:
        raise InvalidInput(f"validity must be a whole number of days >= 1, got {days!r}")


def _check_password(password: str | None) -> None:
    if password is not None and not password:
        raise InvalidInput("a password must not be empty (use None for an unencrypted development key)")


def _agency_uri(name: str) -> str:
    # Names may contain spaces, which a URI may not: percent-encode them ('%' is not a name character,
    # so decoding is unambiguous).
    return AGENCY_URI_PREFIX + quote(name, safe="._-")


def _uri_values(uris: list[str], prefix: str) -> list[str]:
    return [unquote(u[len(prefix) :]) for u in uris if u.startswith(prefix)]


def _host_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    seen: set[str] = set()
    for host in hosts:
        if host in seen:
            continue
        seen.add(host)
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        labels = host.rstrip(".").split(".") if isinstance(host, str) else []
        if not labels or len(host) > 253 or not all(_DNS_LABEL_RE.fullmatch(label) for label in labels):
            raise InvalidInput(f"invalid host {host!r}: give a DNS name or an IP address")
        names.append(x509.DNSName(host.rstrip(".").lower()))
    return names


def _check_out_dir(out_dir: Path, files: Sequence[str]) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"output path {out_dir} exists and is not a directory")
    existing = [f for f in files if (out_dir / f).exists()]
    if existing:
        raise ConfigError(f"{out_dir} already holds {', '.join(existing)}; refusing to overwrite an identity")


def _make_private_dir(directory: Path) -> None:
    if directory.is_dir():
        return
    directory.mkdir(mode=0o700, parents=True)
    directory.chmod(0o700)  # mkdir's mode is filtered by the umask


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf_builder(
    ca_cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    subject: x509.Name,
    validity_days: int,
    not_before: datetime | None,
) -> x509.CertificateBuilder:
    now = datetime.now(UTC)
    if now > ca_cert.not_valid_after_utc:
        raise CryptoError(f"the CA certificate expired on {ca_cert.not_valid_after_utc.isoformat()}")
    start = now - CLOCK_SKEW if not_before is None else not_before
    if start.tzinfo is None:
        raise InvalidInput("not_before must be timezone-aware")
    # A certificate never outlives the CA that vouches for it.
    end = min(start + timedelta(days=validity_days), ca_cert.not_valid_after_utc)
    if end <= start:
        raise InvalidInput("the certificate would start after the CA certificate expires")
    try:
        ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_cert.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
    )


def _key_pem(key: ec.EllipticCurvePrivateKey, password: str | None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption()
        if password is None
        else serialization.BestAvailableEncryption(password.encode("utf-8"))
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def _load_cert(pem: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except (ValueError, TypeError) as exc:
        raise CryptoError(f"{what} is not a valid PEM X.509 certificate") from exc


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False
    except ValueError as exc:  # a malformed or duplicated extension
        raise CryptoError(f"certificate has malformed extensions: {exc}") from exc
