"""TLS 1.3 with mutual authentication between consortium nodes.

Both ends present a node certificate issued by the consortium CA and require one from the other
end; the consortium CA is the only trust anchor. Host names are not checked: a peer is who its
certificate's ``urn:chainshare:agency:`` / ``urn:chainshare:node:`` URIs say, which ``verify_peer``
checks after the handshake (``verify_certificate`` at the current time, then the caller's
membership policy).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from chainshare.crypto.ca import (
    CA_CERT_FILE,
    NODE_CERT_FILE,
    NODE_KEY_FILE,
    CertSubject,
    verify_certificate,
)
from chainshare.errors import ConfigError, CryptoError
from chainshare.p2p.errors import PeerRefused

AllowPolicy = Callable[[CertSubject], bool]


@dataclass(frozen=True)
class TlsIdentity:
    """Where a node's TLS material lives: the consortium CA certificate, the node certificate and
    its private key (with its password, or None for an unencrypted development key)."""

    ca_cert: Path
    cert: Path
    key: Path
    key_password: str | None = field(default=None, repr=False)

    @classmethod
    def from_dirs(cls, ca_dir: Path, node_dir: Path, key_password: str | None = None) -> TlsIdentity:
        """The identity laid out by ``chainshare ca``: ``ca_dir/ca.crt``, ``node_dir/node.{crt,key}``."""
        return cls(
            ca_cert=Path(ca_dir) / CA_CERT_FILE,
            cert=Path(node_dir) / NODE_CERT_FILE,
            key=Path(node_dir) / NODE_KEY_FILE,
            key_password=key_password,
        )

    def read_ca_cert(self) -> bytes:
        """The CA certificate (PEM); ConfigError if it cannot be read."""
        return _read(self.ca_cert, "consortium CA certificate")

    def read_cert(self) -> bytes:
        """The node certificate (PEM); ConfigError if it cannot be read."""
        return _read(self.cert, "node certificate")


def build_server_context(identity: TlsIdentity) -> ssl.SSLContext:
    """A context for accepting peers: TLS 1.3 only, client certificate required and verified
    against the consortium CA alone, this node's certificate presented."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _configure(ctx, identity)
    # Nodes never resume sessions; sending tickets would only cost a round of writes.
    ctx.num_tickets = 0
    return ctx


def build_client_context(identity: TlsIdentity) -> ssl.SSLContext:
    """A context for dialing peers: TLS 1.3 only, server certificate required and verified against
    the consortium CA alone (no host name check), this node's certificate presented."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    _configure(ctx, identity)
    return ctx


def verify_peer(
    ssl_object: ssl.SSLObject | ssl.SSLSocket | None,
    ca_cert_pem: bytes,
    *,
    at: datetime,
    is_allowed: AllowPolicy,
) -> CertSubject:
    """The subject of the peer's certificate on an established TLS connection, if it is a node
    certificate of the consortium CA valid at ``at`` and ``is_allowed`` accepts it; else PeerRefused
    (reason ``no_certificate``, ``invalid_certificate``, ``not_a_node``, ``not_allowed``, or the
    reason of a PeerRefused the policy raises itself)."""
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise PeerRefused("no_certificate", "the peer presented no certificate")
    try:
        subject = verify_certificate(ca_cert_pem, ssl.DER_cert_to_PEM_cert(der).encode("ascii"), at=at)
    except CryptoError as exc:
        raise PeerRefused("invalid_certificate", f"peer certificate refused: {exc.message}") from exc
    if subject.node is None:
        raise PeerRefused(
            "not_a_node", f"the peer presented a certificate of agency {subject.agency!r} that names no node"
        )
    try:
        allowed = is_allowed(subject)
    except PeerRefused:  # the policy's own precise refusal (e.g. ``revoked_certificate``)
        raise
    except Exception as exc:  # a failing policy must refuse, never let a peer in or crash the node
        raise PeerRefused(
            "not_allowed",
            f"membership check failed for node {subject.node!r} of agency {subject.agency!r}: {exc!r}",
        ) from exc
    if not allowed:
        raise PeerRefused(
            "not_allowed",
            f"node {subject.node!r} of agency {subject.agency!r} is not an allowed member (unknown or revoked)",
        )
    return subject


def describe_tls_error(exc: BaseException) -> str:
    """A short, secret-free description of a TLS or socket failure for logs."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verification failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return f"TLS error: {exc.reason}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _configure(ctx: ssl.SSLContext, identity: TlsIdentity) -> None:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    try:
        ctx.load_verify_locations(cadata=identity.read_ca_cert().decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{identity.ca_cert} is not a valid PEM CA certificate") from exc
    _read(identity.cert, "node certificate")
    _read(identity.key, "node key")
    try:
        ctx.load_cert_chain(identity.cert, identity.key, password=_password_callback(identity))
    except ssl.SSLError as exc:
        raise CryptoError(
            f"cannot load the node key {identity.key} with the certificate {identity.cert}: "
            "wrong password, an encrypted key without a password, or a key that does not match the certificate"
        ) from exc


def _password_callback(identity: TlsIdentity) -> Callable[[], str]:
    password = identity.key_password

    def callback() -> str:
        # OpenSSL asks only for encrypted keys; an empty answer fails cleanly instead of prompting.
        return password if password is not None else ""

    return callback


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc
