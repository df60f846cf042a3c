"""The consortium CA: root, agency and node certificates, their key files, and verification."""

from __future__ import annotations

import ipaddress
import json
import socket
import ssl
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from eth_account import Account

from chainshare.crypto import bls
from chainshare.crypto.ca import (
    AgencyIdentity,
    NodeIdentity,
    init_ca,
    issue_agency,
    issue_node,
    load_ca,
    verify_certificate,
)
from chainshare.crypto.keystore import decrypt_account_key, decrypt_bls_key
from chainshare.errors import ConfigError, CryptoError, InvalidInput

CA_PASSWORD = "ca password"
KEY_PASSWORD = "agency password"


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki") / "ca"
    init_ca(directory, password=CA_PASSWORD)
    return directory


@pytest.fixture(scope="module")
def ca_pem(ca_dir: Path) -> bytes:
    return (ca_dir / "ca.crt").read_bytes()


@pytest.fixture(scope="module")
def agency(ca_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> AgencyIdentity:
    out = tmp_path_factory.mktemp("agencies") / "ministry"
    return issue_agency(
        ca_dir, CA_PASSWORD, "Ministry of Data", out, role="member", key_password=KEY_PASSWORD, kdf_light=True
    )


@pytest.fixture(scope="module")
def node(ca_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> NodeIdentity:
    out = tmp_path_factory.mktemp("nodes") / "node-1"
    return issue_node(
        ca_dir,
        CA_PASSWORD,
        "Ministry of Data",
        "node-1",
        out,
        key_password=KEY_PASSWORD,
        hosts=["127.0.0.1", "node1.ministry.example", "::1"],
        kdf_light=True,
    )


def _cert(pem: str | bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _now() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------- the root


def test_root_certificate_is_a_p256_ca_that_may_only_sign_end_entities(ca_dir: Path) -> None:
    cert = _cert((ca_dir / "ca.crt").read_bytes())
    assert cert.version is x509.Version.v3
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    cert.verify_directly_issued_by(cert)  # self-signed


def test_ca_key_is_encrypted_and_private(ca_dir: Path) -> None:
    pem = (ca_dir / "ca.key").read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert _mode(ca_dir / "ca.key") == 0o600
    assert _mode(ca_dir) == 0o700


def test_ca_loads_with_its_password(ca_dir: Path) -> None:
    cert, key = load_ca(ca_dir, CA_PASSWORD)
    assert key.public_key() == cert.public_key()


def test_existing_ca_is_never_overwritten(ca_dir: Path) -> None:
    before = (ca_dir / "ca.key").read_bytes()
    with pytest.raises(ConfigError, match="already exists"):
        init_ca(ca_dir, password="another")
    assert (ca_dir / "ca.key").read_bytes() == before


def test_dev_ca_key_is_unencrypted_but_still_private(tmp_path: Path) -> None:
    init_ca(tmp_path / "dev-ca", password=None)
    pem = (tmp_path / "dev-ca" / "ca.key").read_bytes()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert _mode(tmp_path / "dev-ca" / "ca.key") == 0o600
    load_ca(tmp_path / "dev-ca", None)


def test_wrong_password_is_refused_with_clear_error(ca_dir: Path) -> None:
    with pytest.raises(CryptoError, match="wrong password"):
        load_ca(ca_dir, "not the password")


def test_encrypted_ca_without_password_asks_for_one(ca_dir: Path) -> None:
    with pytest.raises(CryptoError, match="is encrypted: give its password"):
        load_ca(ca_dir, None)


def test_dev_ca_with_password_says_to_use_dev(tmp_path: Path) -> None:
    init_ca(tmp_path / "dev-ca", password=None)
    with pytest.raises(CryptoError, match="use --dev"):
        load_ca(tmp_path / "dev-ca", "pw")


def test_missing_ca_is_a_clear_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no consortium CA .*ca.crt is missing.*chainshare ca init"):
        load_ca(tmp_path / "nowhere", "pw")


def test_ca_key_that_belongs_to_another_certificate_is_refused(tmp_path: Path) -> None:
    init_ca(tmp_path / "a", password=None)
    init_ca(tmp_path / "b", password=None)
    (tmp_path / "a" / "ca.key").write_bytes((tmp_path / "b" / "ca.key").read_bytes())
    with pytest.raises(CryptoError, match="does not belong"):
        load_ca(tmp_path / "a", None)


@pytest.mark.parametrize("name", ["", " padded", "x" * 65, "tab\tname"])
def test_invalid_ca_name_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidInput, match="invalid CA name"):
        init_ca(tmp_path / "ca", name=name, password=None)
    assert not (tmp_path / "ca").exists()


# --------------------------------------------------------------------------- agencies


def test_agency_certificate_binds_the_agency_to_its_account(agency: AgencyIdentity, ca_dir: Path) -> None:
    cert = _cert(agency.cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Ministry of Data"
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Ministry of Data"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "urn:chainshare:agency:Ministry%20of%20Data",
        f"urn:chainshare:account:{agency.address}",
    ]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    ca_cert = _cert((ca_dir / "ca.crt").read_bytes())
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest


def test_agency_directory_holds_private_keys_and_public_identity(agency: AgencyIdentity) -> None:
    out = agency.directory
    assert sorted(p.name for p in out.iterdir()) == [
        "account.json",
        "agency.crt",
        "agency.key",
        "identity.json",
    ]
    assert _mode(out) == 0o700
    assert _mode(out / "agency.key") == 0o600
    assert _mode(out / "account.json") == 0o600
    identity = json.loads((out / "identity.json").read_text())
    assert identity == {
        "name": "Ministry of Data",
        "role": "member",
        "address": agency.address,
        "cert": "agency.crt",
    }
    assert (out / "agency.crt").read_text() == agency.cert_pem


def test_agency_keys_are_encrypted_with_the_key_password(agency: AgencyIdentity) -> None:
    pem = (agency.directory / "agency.key").read_bytes()
    key = serialization.load_pem_private_key(pem, password=KEY_PASSWORD.encode())
    assert key.public_key() == _cert(agency.cert_pem).public_key()
    keystore = json.loads((agency.directory / "account.json").read_text())
    account_key = decrypt_account_key(keystore, KEY_PASSWORD)
    assert Account.from_key(account_key).address == agency.address
    with pytest.raises(CryptoError):
        decrypt_account_key(keystore, CA_PASSWORD)


def test_dev_agency_has_unencrypted_key_and_empty_password_keystore(ca_dir: Path, tmp_path: Path) -> None:
    identity = issue_agency(ca_dir, CA_PASSWORD, "Dev Agency", tmp_path / "dev", key_password=None)
    assert (tmp_path / "dev" / "agency.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    keystore = json.loads((tmp_path / "dev" / "account.json").read_text())
    assert keystore["crypto"]["kdfparams"]["n"] < 2**18  # light KDF
    assert Account.from_key(decrypt_account_key(keystore, "")).address == identity.address


@pytest.mark.parametrize(
    "name", ["", "x" * 65, "bad/name", "new\nline", " padded", "Bundesamt für Daten", "a%20b"]
)
def test_invalid_agency_name_is_refused(ca_dir: Path, tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidInput, match="invalid agency name"):
        issue_agency(ca_dir, CA_PASSWORD, name, tmp_path / "out", key_password=None)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("role", ["", "Member", "9lives", "has space", "x" * 33])
def test_invalid_role_is_refused(ca_dir: Path, tmp_path: Path, role: str) -> None:
    with pytest.raises(InvalidInput, match="invalid role"):
        issue_agency(ca_dir, CA_PASSWORD, "Agency", tmp_path / "out", role=role, key_password=None)


def test_existing_identity_is_never_overwritten(agency: AgencyIdentity, ca_dir: Path) -> None:
    before = (agency.directory / "agency.key").read_bytes()
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        issue_agency(ca_dir, CA_PASSWORD, "Ministry of Data", agency.directory, key_password=None)
    assert (agency.directory / "agency.key").read_bytes() == before


def test_issuing_with_the_wrong_ca_password_writes_nothing(ca_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(CryptoError, match="wrong password"):
        issue_agency(ca_dir, "nope", "Agency", tmp_path / "out", key_password=None)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- nodes


def test_node_certificate_serves_tls_for_its_hosts_and_names_its_agency(node: NodeIdentity) -> None:
    cert = _cert(node.cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Ministry of Data"
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "node-1"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert san.get_values_for_type(x509.DNSName) == ["node1.ministry.example"]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "urn:chainshare:agency:Ministry%20of%20Data",
        "urn:chainshare:node:node-1",
    ]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}


def test_node_directory_holds_validator_keystore_and_public_identity(node: NodeIdentity) -> None:
    out = node.directory
    assert sorted(p.name for p in out.iterdir()) == [
        "node-identity.json",
        "node.crt",
        "node.key",
        "validator.json",
    ]
    assert _mode(out / "node.key") == 0o600
    assert _mode(out / "validator.json") == 0o600
    identity = json.loads((out / "node-identity.json").read_text())
    assert identity == {
        "name": "node-1",
        "agency": "Ministry of Data",
        "bls_public_key": "0x" + node.bls_public_key.hex(),
        "bls_pop": "0x" + node.bls_pop.hex(),
        "cert": "node.crt",
    }


def test_validator_key_decrypts_and_its_proof_of_possession_verifies(node: NodeIdentity) -> None:
    keystore = json.loads((node.directory / "validator.json").read_text())
    secret = decrypt_bls_key(keystore, KEY_PASSWORD)
    assert bls.public_key(secret) == node.bls_public_key
    assert keystore["pubkey"] == node.bls_public_key.hex()
    assert bls.verify_possession(node.bls_public_key, node.bls_pop)


def test_each_node_gets_its_own_validator_key(ca_dir: Path, tmp_path: Path) -> None:
    a = issue_node(ca_dir, CA_PASSWORD, "Agency", "a", tmp_path / "a", key_password=None)
    b = issue_node(ca_dir, CA_PASSWORD, "Agency", "b", tmp_path / "b", key_password=None)
    assert a.bls_public_key != b.bls_public_key


@pytest.mark.parametrize("hosts", [["bad host"], ["-leading.example"], ["a..b"], ["x" * 64 + ".example"]])
def test_invalid_host_is_refused(ca_dir: Path, tmp_path: Path, hosts: list[str]) -> None:
    with pytest.raises(InvalidInput, match="invalid host"):
        issue_node(ca_dir, CA_PASSWORD, "Agency", "n", tmp_path / "n", key_password=None, hosts=hosts)


def test_invalid_node_name_is_refused(ca_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="invalid node name"):
        issue_node(ca_dir, CA_PASSWORD, "Agency", "node/1", tmp_path / "n", key_password=None)


def test_node_certificates_authenticate_both_ends_of_a_tls_connection(
    ca_dir: Path, node: NodeIdentity, tmp_path: Path
) -> None:
    peer = issue_node(ca_dir, CA_PASSWORD, "Other Agency", "node-2", tmp_path / "node-2", key_password=None)

    def context(purpose: ssl.Purpose, identity: NodeIdentity, password: str | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(purpose, cafile=str(ca_dir / "ca.crt"))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_cert_chain(
            identity.directory / "node.crt", identity.directory / "node.key", password=password
        )
        return ctx

    server_ctx = context(ssl.Purpose.CLIENT_AUTH, node, KEY_PASSWORD)
    client_ctx = context(ssl.Purpose.SERVER_AUTH, peer, None)
    left, right = socket.socketpair()
    seen: dict[str, object] = {}

    def serve() -> None:
        with server_ctx.wrap_socket(left, server_side=True) as tls:
            seen["client"] = tls.getpeercert()
            tls.sendall(b"ok")

    thread = threading.Thread(target=serve)
    thread.start()
    with client_ctx.wrap_socket(right, server_hostname="127.0.0.1") as tls:
        assert tls.recv(2) == b"ok"
        assert tls.version() == "TLSv1.3"
    thread.join(timeout=10)
    client_cert = seen["client"]
    assert isinstance(client_cert, dict)
    assert ("URI", "urn:chainshare:node:node-2") in client_cert["subjectAltName"]


# --------------------------------------------------------------------------- verification


def test_agency_certificate_verifies_and_names_agency_and_account(
    agency: AgencyIdentity, ca_pem: bytes
) -> None:
    subject = verify_certificate(ca_pem, agency.cert_pem.encode(), at=_now())
    assert subject.agency == "Ministry of Data"
    assert subject.node is None
    assert subject.account == agency.address
    assert subject.not_after == _cert(agency.cert_pem).not_valid_after_utc


def test_node_certificate_verifies_and_names_agency_and_node(node: NodeIdentity, ca_pem: bytes) -> None:
    subject = verify_certificate(ca_pem, node.cert_pem.encode(), at=_now())
    assert (subject.agency, subject.node, subject.account) == ("Ministry of Data", "node-1", None)


def test_certificate_from_another_ca_is_refused(tmp_path: Path, agency: AgencyIdentity) -> None:
    other = init_ca(tmp_path / "other", password=None)
    with pytest.raises(CryptoError, match="not issued by this CA"):
        verify_certificate(other.cert_pem.encode(), agency.cert_pem.encode(), at=_now())


def test_certificate_from_a_ca_with_the_same_name_is_refused(tmp_path: Path, ca_pem: bytes) -> None:
    init_ca(tmp_path / "impostor", password=None)  # same default name, different key
    forged = issue_agency(
        tmp_path / "impostor", None, "Ministry of Data", tmp_path / "forged", key_password=None
    )
    with pytest.raises(CryptoError, match="not issued by this CA"):
        verify_certificate(ca_pem, forged.cert_pem.encode(), at=_now())


def test_expired_certificate_is_refused(ca_dir: Path, ca_pem: bytes, tmp_path: Path) -> None:
    old = issue_agency(
        ca_dir,
        CA_PASSWORD,
        "Old Agency",
        tmp_path / "old",
        key_password=None,
        validity_days=1,
        not_before=_now() - timedelta(days=10),
    )
    with pytest.raises(CryptoError, match="expired on"):
        verify_certificate(ca_pem, old.cert_pem.encode(), at=_now())


def test_certificate_is_refused_after_its_validity(agency: AgencyIdentity, ca_pem: bytes) -> None:
    with pytest.raises(CryptoError, match="expired on"):
        verify_certificate(ca_pem, agency.cert_pem.encode(), at=_now() + timedelta(days=826))


def test_not_yet_valid_certificate_is_refused(ca_dir: Path, ca_pem: bytes, tmp_path: Path) -> None:
    future = issue_agency(
        ca_dir,
        CA_PASSWORD,
        "Future",
        tmp_path / "f",
        key_password=None,
        not_before=_now() + timedelta(days=3),
    )
    with pytest.raises(CryptoError, match="not yet valid"):
        verify_certificate(ca_pem, future.cert_pem.encode(), at=_now())


def test_certificate_never_outlives_its_ca(tmp_path: Path) -> None:
    info = init_ca(tmp_path / "short", password=None, validity_days=30)
    agency = issue_agency(tmp_path / "short", None, "Agency", tmp_path / "a", key_password=None)
    assert _cert(agency.cert_pem).not_valid_after_utc == info.not_after


def test_ca_certificate_itself_is_refused(ca_pem: bytes) -> None:
    with pytest.raises(CryptoError, match="is a CA certificate"):
        verify_certificate(ca_pem, ca_pem, at=_now())


def test_certificate_without_agency_uri_is_refused(ca_dir: Path, ca_pem: bytes) -> None:
    ca_cert, ca_key = load_ca(ca_dir, CA_PASSWORD)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stranger")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - timedelta(minutes=1))
        .not_valid_after(_now() + timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    with pytest.raises(CryptoError, match="no agency URI"):
        verify_certificate(ca_pem, cert.public_bytes(serialization.Encoding.PEM), at=_now())


def test_garbage_certificate_is_refused(ca_pem: bytes) -> None:
    with pytest.raises(CryptoError, match="not a valid PEM X.509 certificate"):
        verify_certificate(
            ca_pem, b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", at=_now()
        )


def test_verification_time_must_carry_a_timezone(agency: AgencyIdentity, ca_pem: bytes) -> None:
    with pytest.raises(InvalidInput, match="timezone"):
        verify_certificate(ca_pem, agency.cert_pem.encode(), at=datetime.now())
