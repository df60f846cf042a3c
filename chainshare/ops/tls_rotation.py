"""Rotating a node's TLS identity after a compromise (``chainshare emergency rotate-tls``).

What a node's P-256 TLS key (``[p2p] node_key``) protects besides mutual TLS: the vault key and the
owner's pseudonym secret are sealed to it (``sharing/vault.py``), and deliveries to this node are
wrapped to the key of its certificate. So a rotation (1) issues a new key and certificate from the
consortium CA for the same node, agency and host names, (2) re-seals ``vault.key`` and
``pseudonym.secret`` to the new key (datasets stay as they are: they are under the vault key), and
(3) installs the new key and certificate in place of the old ones, keeping a copy of the old
certificate (public) so that its revocation can be submitted, or submitted again. The BLS validator
key is another key (``[validator] key_file``) and is not touched: rotate it with ``rotate-validator``.

Every step can be repeated after an interruption: the staged key is reused, and files already sealed
to it are left as they are. The running node keeps its old identity in memory until it restarts.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from chainshare.config import NodeConfig
from chainshare.crypto.ca import (
    CA_CERT_FILE,
    compute_certificate_fingerprint,
    issue_node_certificate,
    verify_certificate,
)
from chainshare.errors import ConfigError, CryptoError, StorageError
from chainshare.sharing.vault import reseal_vault_key

STAGING_DIR = ".rotate-tls"
REVOKED_SUFFIX = ".revoked.crt"


@dataclass(frozen=True)
class RotatedTls:
    """The outcome of ``rotate_node_tls``: the node's old and new certificate and what was re-sealed."""

    node: str
    agency: str
    old_cert_pem: bytes
    old_fingerprint: bytes
    new_fingerprint: bytes
    old_cert_copy: Path
    resealed: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {"node": self.node, "agency": self.agency, "old_fingerprint": "0x" + self.old_fingerprint.hex(),
                "new_fingerprint": "0x" + self.new_fingerprint.hex(), "old_certificate": str(self.old_cert_copy),
                "resealed": list(self.resealed)}


def rotate_node_tls(cfg: NodeConfig, ca_dir: Path, ca_password: str | None, key_password: str | None) -> RotatedTls:
    """Give the node of ``cfg`` a new TLS key and certificate from the CA in ``ca_dir`` (same node,
    agency and host names as its current certificate, which must be one of that CA), re-seal its
    vault to the new key, and install both in place of the old ones (encrypted with ``key_password``,
    None for a development key); the old certificate is kept beside them as ``<fp>.revoked.crt``."""
    if not cfg.p2p.node_cert or not cfg.p2p.node_key or not cfg.p2p.ca_cert:
        raise ConfigError("the node configuration has no [p2p] ca_cert, node_cert and node_key: it has no TLS "
                          "identity to rotate")
    cert_path, key_path = cfg.path(cfg.p2p.node_cert), cfg.path(cfg.p2p.node_key)
    old_pem = _read(cert_path, "node certificate")
    ca_pem = _read(cfg.path(cfg.p2p.ca_cert), "consortium CA certificate")
    try:
        subject = verify_certificate(ca_pem, old_pem, at=datetime.now(UTC))
    except CryptoError as exc:
        raise CryptoError(f"the node certificate {cert_path} is not a valid certificate of the consortium CA "
                          f"({exc.message}): there is nothing to revoke; issue a new one with "
                          "`chainshare ca issue-node`") from exc
    if subject.node != cfg.node.name:
        raise ConfigError(f"{cert_path} names node {subject.node!r}, but the configuration names {cfg.node.name!r}")
    if _read(Path(ca_dir) / CA_CERT_FILE, "CA certificate").strip() != ca_pem.strip():
        raise ConfigError(f"{ca_dir} is not the consortium CA of this node ({cfg.path(cfg.p2p.ca_cert)})")

    staging = key_path.parent / STAGING_DIR
    new_key, new_cert = staging / key_path.name, staging / cert_path.name
    if not (new_key.exists() and new_cert.exists()):  # else: an interrupted rotation, resumed with its key
        shutil.rmtree(staging, ignore_errors=True)
        issue_node_certificate(ca_dir, ca_password, subject.agency, cfg.node.name, staging,
                               key_password=key_password, hosts=_host_names_of(old_pem),
                               key_file=key_path.name, cert_file=cert_path.name)
    new_pem = new_cert.read_bytes()
    old_fp, new_fp = compute_certificate_fingerprint(old_pem), compute_certificate_fingerprint(new_pem)
    copy = cert_path.parent / f"{old_fp.hex()[:16]}{REVOKED_SUFFIX}"
    copy.write_bytes(old_pem)

    resealed: list[str] = []
    if cfg.sharing.vault_dir and (cfg.path(cfg.sharing.vault_dir) / "vault.key").exists():
        resealed = reseal_vault_key(cfg.path(cfg.sharing.vault_dir), key_path.read_bytes(), new_pem,
                                    password=key_password, new_private_key=new_key.read_bytes())
    try:
        os.replace(new_key, key_path)  # the old private key is gone from here on
        os.replace(new_cert, cert_path)
        staging.rmdir()
    except OSError as exc:
        raise StorageError(f"cannot install the new TLS identity in {key_path.parent}: {exc.strerror}; run the "
                           "command again to finish") from exc
    return RotatedTls(node=cfg.node.name, agency=subject.agency, old_cert_pem=old_pem, old_fingerprint=old_fp,
                      new_fingerprint=new_fp, old_cert_copy=copy, resealed=tuple(resealed))


def _host_names_of(cert_pem: bytes) -> list[str]:
    san = x509.load_pem_x509_certificate(cert_pem).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    return [*san.get_values_for_type(x509.DNSName), *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc
