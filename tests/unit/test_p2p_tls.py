"""P2P TLS settings and peer verification (no sockets: the handshakes are in tests/integration/test_p2p.py)."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from chainshare.crypto.ca import (
    CertSubject,
    compute_certificate_fingerprint,
    init_ca,
    issue_agency,
    issue_node,
)
from chainshare.errors import ConfigError, CryptoError
from chainshare.p2p import PeerRefused, TlsIdentity, build_client_context, build_server_context, verify_peer

KEY_PASSWORD = "node key password"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("p2p-tls")
    init_ca(base / "ca", password=None)
    init_ca(base / "other-ca", name="another CA", password=None)
    issue_node(
        base / "ca", None, "Agency A", "node-a", base / "node-a", key_password=KEY_PASSWORD, kdf_light=True
    )
    issue_node(
        base / "other-ca", None, "Agency A", "node-f", base / "node-f", key_password=None, kdf_light=True
    )
    issue_agency(base / "ca", None, "Agency Z", base / "agency-z", key_password=None, kdf_light=True)
    return base


class _PeerCert:
    """Stands in for an established SSLObject: only the peer certificate is asked for."""

    def __init__(self, cert_file: Path | None) -> None:
        self._der = (
            x509.load_pem_x509_certificate(cert_file.read_bytes()).public_bytes(serialization.Encoding.DER)
            if cert_file is not None
            else None
        )

    def getpeercert(self, binary_form: bool = False) -> Any:
        assert binary_form
        return self._der


def _identity(pki: Path, password: str | None = KEY_PASSWORD) -> TlsIdentity:
    return TlsIdentity.from_dirs(pki / "ca", pki / "node-a", password)


def _verify(pki: Path, cert: Path | None, **kwargs: Any) -> CertSubject:
    settings: dict[str, Any] = {"at": datetime.now(UTC), "is_allowed": lambda s: True, **kwargs}
    return verify_peer(_PeerCert(cert), (pki / "ca" / "ca.crt").read_bytes(), **settings)  # type: ignore[arg-type]


@pytest.mark.parametrize("build", [build_server_context, build_client_context])
def test_contexts_speak_only_tls13_and_require_the_peer_certificate(pki: Path, build: Any) -> None:
    ctx = build(_identity(pki))
    assert ctx.minimum_version == ctx.maximum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname is False  # identity comes from the certificate's node URI
    assert [c["subject"] for c in ctx.get_ca_certs()] == [
        ((("organizationName", "chainshare consortium CA"),), (("commonName", "chainshare consortium CA"),))
    ]  # the consortium CA is the only trust anchor


def test_the_identity_never_shows_the_key_password(pki: Path) -> None:
    assert KEY_PASSWORD not in repr(_identity(pki))


def test_an_encrypted_node_key_needs_its_password(pki: Path) -> None:
    with pytest.raises(CryptoError, match="cannot load the node key") as info:
        build_server_context(_identity(pki, password="hunter2-not-it"))
    assert "hunter2" not in str(info.value)
    with pytest.raises(CryptoError, match="cannot load the node key"):
        build_client_context(_identity(pki, password=None))


def test_missing_files_are_a_configuration_error(pki: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the node certificate"):
        build_server_context(TlsIdentity.from_dirs(pki / "ca", tmp_path))


def test_a_node_certificate_of_the_consortium_is_accepted(pki: Path) -> None:
    subject = _verify(pki, pki / "node-a" / "node.crt")
    assert (subject.agency, subject.node) == ("Agency A", "node-a")


def test_no_certificate_is_refused(pki: Path) -> None:
    with pytest.raises(PeerRefused) as info:
        _verify(pki, None)
    assert info.value.reason == "no_certificate"


def test_a_certificate_of_another_ca_is_refused(pki: Path) -> None:
    with pytest.raises(PeerRefused) as info:
        _verify(pki, pki / "node-f" / "node.crt")
    assert info.value.reason == "invalid_certificate"


def test_a_certificate_checked_after_its_expiry_is_refused(pki: Path) -> None:
    with pytest.raises(PeerRefused, match="expired") as info:
        _verify(pki, pki / "node-a" / "node.crt", at=datetime.now(UTC) + timedelta(days=3000))
    assert info.value.reason == "invalid_certificate"


def test_an_agency_certificate_is_not_a_node(pki: Path) -> None:
    with pytest.raises(PeerRefused) as info:
        _verify(pki, pki / "agency-z" / "agency.crt")
    assert info.value.reason == "not_a_node"


def test_a_member_the_policy_refuses_is_refused(pki: Path) -> None:
    with pytest.raises(PeerRefused, match="not an allowed member") as info:
        _verify(pki, pki / "node-a" / "node.crt", is_allowed=lambda s: s.agency != "Agency A")
    assert info.value.reason == "not_allowed"


def test_a_failing_policy_refuses_instead_of_letting_the_peer_in(pki: Path) -> None:
    def broken(subject: CertSubject) -> bool:
        raise RuntimeError("membership store unavailable")

    with pytest.raises(PeerRefused, match="membership check failed") as info:
        _verify(pki, pki / "node-a" / "node.crt", is_allowed=broken)
    assert info.value.reason == "not_allowed"


def test_a_revoked_certificate_is_refused_with_the_policys_reason(pki: Path) -> None:
    """The policy sees the certificate's fingerprint (SHA-256 of its DER) and may refuse it with its own
    reason, e.g. a certificate revoked on chain."""
    cert = pki / "node-a" / "node.crt"
    revoked = {compute_certificate_fingerprint(cert.read_bytes())}
    assert len(next(iter(revoked))) == 32

    def policy(subject: CertSubject) -> bool:
        if subject.fingerprint in revoked:
            raise PeerRefused("revoked_certificate", "certificate revoked at block 7")
        return True

    with pytest.raises(PeerRefused, match="revoked at block 7") as info:
        _verify(pki, cert, is_allowed=policy)
    assert info.value.reason == "revoked_certificate"
    revoked.clear()
    assert _verify(pki, cert, is_allowed=policy).node == "node-a"
