"""Rotating a node's TLS identity (ops/tls_rotation.py): a new key and certificate of the consortium CA
for the same node, agency and host names; the vault key and pseudonym secret re-sealed to the new key
(the old key opens nothing any more); the old certificate kept for its revocation; safe to run again."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509

from chainshare.config import load_config
from chainshare.crypto.ca import verify_certificate
from chainshare.devnet import create_devnet
from chainshare.errors import ConfigError, CryptoError
from chainshare.ops.tls_rotation import rotate_node_tls
from chainshare.sharing.vault import load_or_create_pseudonym_secret, load_or_create_vault_key


def _hosts(pem: bytes) -> list[str]:
    san = x509.load_pem_x509_certificate(pem).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return sorted([*san.get_values_for_type(x509.DNSName), *map(str, san.get_values_for_type(x509.IPAddress))])


def test_rotation_issues_a_new_certificate_and_reseals_the_vault(tmp_path: Path) -> None:
    create_devnet(tmp_path, nodes=2, base_port=20000)
    node = tmp_path / "nodes" / "node2"
    cfg = load_config(node / "node.toml")
    old_key, old_pem = (node / "keys" / "node.key").read_bytes(), (node / "keys" / "node.crt").read_bytes()
    vault = node / "vault"
    vault_key = load_or_create_vault_key(vault, old_key)
    secret = load_or_create_pseudonym_secret(vault, old_key)

    rotated = rotate_node_tls(cfg, tmp_path / "ca", None, None)
    new_key, new_pem = (node / "keys" / "node.key").read_bytes(), (node / "keys" / "node.crt").read_bytes()
    assert new_key != old_key and new_pem != old_pem and rotated.old_cert_pem == old_pem
    assert rotated.resealed == ("vault.key", "pseudonym.secret")
    subject = verify_certificate((tmp_path / "ca" / "ca.crt").read_bytes(), new_pem, at=datetime.now(UTC))
    assert (subject.node, subject.agency, subject.fingerprint) == ("node2", "agency2", rotated.new_fingerprint)
    assert _hosts(new_pem) == _hosts(old_pem)
    assert rotated.old_cert_copy.read_bytes() == old_pem and not (node / "keys" / ".rotate-tls").exists()
    assert load_or_create_vault_key(vault, new_key) == vault_key
    assert load_or_create_pseudonym_secret(vault, new_key) == secret
    with pytest.raises(CryptoError, match="sealed to another node key"):
        load_or_create_vault_key(vault, old_key)


def test_an_interrupted_rotation_resumes_with_its_staged_key(tmp_path: Path) -> None:
    create_devnet(tmp_path, nodes=2, base_port=20000)
    node = tmp_path / "nodes" / "node1"
    cfg = load_config(node / "node.toml")
    old_key = (node / "keys" / "node.key").read_bytes()
    vault_key = load_or_create_vault_key(node / "vault", old_key)
    # the first run stopped after re-sealing the vault key, before installing the new key
    rotate_node_tls(cfg, tmp_path / "ca", None, None)
    staged = node / "keys" / ".rotate-tls"
    staged.mkdir()
    (staged / "node.key").write_bytes((node / "keys" / "node.key").read_bytes())
    (staged / "node.crt").write_bytes((node / "keys" / "node.crt").read_bytes())
    (node / "keys" / "node.key").write_bytes(old_key)
    again = rotate_node_tls(cfg, tmp_path / "ca", None, None)
    assert again.resealed == ()  # already sealed to the staged key
    assert load_or_create_vault_key(node / "vault", (node / "keys" / "node.key").read_bytes()) == vault_key


def test_a_ca_other_than_the_nodes_is_refused(tmp_path: Path) -> None:
    create_devnet(tmp_path / "a", nodes=2, base_port=20000)
    create_devnet(tmp_path / "b", nodes=2, base_port=20000)
    cfg = load_config(tmp_path / "a" / "nodes" / "node1" / "node.toml")
    with pytest.raises(ConfigError, match="is not the consortium CA of this node"):
        rotate_node_tls(cfg, tmp_path / "b" / "ca", None, None)

