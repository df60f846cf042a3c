"""``chainshare ca ...``: create the consortium CA, certify agencies and nodes, verify certificates.

Outputs are identities (names, addresses, public keys, file paths), never a secret. Passwords come
from ``--password-file`` or ``CHAINSHARE_PASSWORD``; ``--dev`` writes unencrypted development keys.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from chainshare.cli.common import emit, json_option
from chainshare.crypto import ca
from chainshare.crypto.keystore import PASSWORD_ENV_VAR, read_password
from chainshare.errors import ConfigError, CryptoError

DEV_WARNING = (
    "warning: --dev writes UNENCRYPTED private keys and empty-password keystores; "
    "for development only, never for a production network"
)

group = click.Group(
    "ca",
    help="Consortium CA: create it, certify member agencies and their nodes, verify certificates.",
)

_password_file_option = click.option(
    "--password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"File whose first line is the CA key password (default: ${PASSWORD_ENV_VAR}).",
)
_dev_option = click.option(
    "--dev", is_flag=True, help="Development only: unencrypted keys, empty-password light keystores."
)
_key_password_file_option = click.option(
    "--key-password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File whose first line is the password for the NEW keys (default: the CA password).",
)
_ca_dir_option = click.option(
    "--ca-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory of the consortium CA (ca.crt, ca.key).",
)
_out_option = click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write the new identity to (created with mode 0700).",
)


def _ca_password(password_file: Path | None, dev: bool) -> str | None:
    """The CA password from the file or environment; None with --dev (after a warning)."""
    if dev:
        if password_file is not None:
            raise click.UsageError("--dev and --password-file exclude each other")
        click.echo(DEV_WARNING, err=True)
        return None
    try:
        return read_password(password_file)
    except ConfigError:
        if password_file is None:
            raise ConfigError(
                f"no password given: pass --password-file FILE or set {PASSWORD_ENV_VAR} "
                "(or --dev for unencrypted development keys)"
            ) from None
        raise


def _key_password(ca_password: str | None, key_password_file: Path | None, dev: bool) -> str | None:
    if key_password_file is None:
        return ca_password
    if dev:
        raise click.UsageError("--dev and --key-password-file exclude each other")
    return read_password(key_password_file)


@group.command("init")
@click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to create the CA in (ca.crt, ca.key).",
)
@click.option("--name", default=ca.DEFAULT_CA_NAME, show_default=True, help="Name of the CA.")
@_password_file_option
@_dev_option
@json_option
def init_command(directory: Path, name: str, password_file: Path | None, dev: bool, as_json: bool) -> None:
    """Create a new consortium CA; refuses to overwrite an existing one."""
    password = _ca_password(password_file, dev)
    info = ca.init_ca(directory, name=name, password=password)
    result = info.to_json()
    emit(
        result,
        as_json,
        f"created CA {info.name!r} in {directory}\n"
        f"  certificate  {result['cert']}\n"
        f"  sha256       {info.fingerprint_sha256}\n"
        f"  valid until  {result['not_after']}",
    )


@group.command("issue-agency")
@click.argument("name")
@_ca_dir_option
@_out_option
@click.option("--role", default="member", show_default=True, help="Role of the agency in the consortium.")
@_password_file_option
@_key_password_file_option
@_dev_option
@json_option
def issue_agency_command(
    name: str,
    ca_dir: Path,
    out_dir: Path,
    role: str,
    password_file: Path | None,
    key_password_file: Path | None,
    dev: bool,
    as_json: bool,
) -> None:
    """Certify a member agency NAME: TLS key + certificate, a fresh Ethereum account keystore."""
    ca_password = _ca_password(password_file, dev)
    key_password = _key_password(ca_password, key_password_file, dev)
    identity = ca.issue_agency(
        ca_dir, ca_password, name, out_dir, role=role, key_password=key_password, kdf_light=dev
    )
    emit(
        identity.to_json(),
        as_json,
        f"issued agency {identity.name!r} ({identity.role}) in {out_dir}\n  account  {identity.address}",
    )


@group.command("issue-node")
@click.argument("node")
@click.option("--agency", required=True, help="Name of the agency that runs the node.")
@_ca_dir_option
@_out_option
@click.option(
    "--host",
    "hosts",
    multiple=True,
    help="DNS name or IP address of the node (repeatable; default: 127.0.0.1 and localhost).",
)
@_password_file_option
@_key_password_file_option
@_dev_option
@json_option
def issue_node_command(
    node: str,
    agency: str,
    ca_dir: Path,
    out_dir: Path,
    hosts: tuple[str, ...],
    password_file: Path | None,
    key_password_file: Path | None,
    dev: bool,
    as_json: bool,
) -> None:
    """Certify node NODE of an agency: mutual-TLS key + certificate, BLS validator keystore."""
    ca_password = _ca_password(password_file, dev)
    key_password = _key_password(ca_password, key_password_file, dev)
    identity = ca.issue_node(
        ca_dir,
        ca_password,
        agency,
        node,
        out_dir,
        key_password=key_password,
        hosts=hosts or ca.DEFAULT_NODE_HOSTS,
        kdf_light=dev,
    )
    result = identity.to_json()
    emit(
        result,
        as_json,
        f"issued node {identity.name!r} of {identity.agency!r} in {out_dir}\n"
        f"  BLS public key  {result['bls_public_key']}",
    )


@group.command("verify")
@click.argument("cert", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_ca_dir_option
@json_option
def verify_command(cert: Path, ca_dir: Path, as_json: bool) -> None:
    """Check that CERT was issued by the CA and is valid now; exit 2 if it is refused."""
    ca_cert_path = ca_dir / ca.CA_CERT_FILE
    if not ca_cert_path.is_file():
        raise ConfigError(f"no consortium CA in {ca_dir}: {ca.CA_CERT_FILE} is missing")
    try:
        subject = ca.verify_certificate(ca_cert_path.read_bytes(), cert.read_bytes(), at=datetime.now(UTC))
    except CryptoError as exc:
        if as_json:
            emit({"valid": False, "cert": str(cert), "reason": exc.message}, as_json)
        raise CryptoError(f"{cert}: {exc.message}") from exc
    result = {
        "valid": True,
        "cert": str(cert),
        "agency": subject.agency,
        "node": subject.node,
        "account": subject.account,
        "not_after": subject.not_after.isoformat(),
    }
    what = (
        f"node {subject.node!r} of agency {subject.agency!r}"
        if subject.node
        else f"agency {subject.agency!r}"
    )
    emit(result, as_json, f"{cert}: valid, {what}, until {result['not_after']}")
