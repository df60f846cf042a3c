"""``chainshare credit`` person commands: the registrars' key, person handles (locally or from a registrar over
mutual TLS), and a person record's details through a governed fetch from the issuer's vault."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from chainshare.cli.common import acting_options, emit, json_option, resolve_actor
from chainshare.cli.credit.records import REGISTRY, _actor, agency_of, group
from chainshare.client import NodeClient, call_view
from chainshare.errors import ChainshareError, InvalidInput


@group.command("registrar-key")
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the new key (mode 0600; an existing file is never overwritten).")
def registrar_key(out_file: Path) -> None:
    """Generate the registrars' person-handle key (shared only among credit_registrar agencies' nodes)."""
    from chainshare.credit.subjects import generate_registrar_key

    try:
        generate_registrar_key(out_file)
    except FileExistsError:
        raise InvalidInput(f"{out_file} exists; a registrar key is never overwritten") from None
    click.echo(f"registrar key written to {out_file}", err=True)


@group.command("handle")
@click.option("--registrar-key", "key_file", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path))
@acting_options
@json_option
def handle(key_file: Path, **kw: Any) -> None:
    """As a credit_registrar agency: read a resident ID number from stdin (never from the command line) and
    print the person's subject handle. Refused unless Governance granted this agency the registrar role."""
    from chainshare.credit.subjects import compute_person_handle, read_registrar_key
    from chainshare.crypto.secp import address_of_private_key
    from chainshare.errors import Unauthorized

    as_json = kw.pop("as_json")
    url, key = resolve_actor(*_actor(kw))
    assert key is not None
    registrar_key_bytes = read_registrar_key(key_file)
    resident_id = sys.stdin.readline(128).strip()
    if not resident_id:
        raise InvalidInput("give the resident ID number on stdin")
    with NodeClient(url) as client:
        sender = "0x" + address_of_private_key(key).hex()
        agency = agency_of(client, sender)
        is_registrar = call_view(client, REGISTRY, "isRegistrar", agency)[0]
    if not is_registrar:
        raise Unauthorized(f"agency {agency!r} does not hold the credit_registrar role (Governance grants it)")
    subject_handle = compute_person_handle(registrar_key_bytes, resident_id)
    emit({"handle": subject_handle, "registrar": agency}, as_json, subject_handle)


def tls_options(fn: Any) -> Any:
    for opt in reversed([
        click.option("--tls-ca", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                     help="Consortium CA certificate (default with --devnet: DIR/ca/ca.crt)."),
        click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                     help="This agency's node certificate (default with --devnet: its node's keys/node.crt)."),
        click.option("--tls-key", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                     help="The node certificate's private key (default with --devnet: keys/node.key)."),
    ]):
        fn = opt(fn)
    return fn


def _tls_identity(kw: dict[str, Any], devnet_dir: Path | None, agency: str | None) -> Any:
    from chainshare.p2p.tls import TlsIdentity

    ca, cert, key = kw.pop("tls_ca"), kw.pop("tls_cert"), kw.pop("tls_key")
    if devnet_dir is not None and agency is not None and not (ca or cert or key):
        from chainshare.devnet import read_devnet

        node = next((n for n in read_devnet(devnet_dir)["nodes"] if n["agency"] == agency), None)
        if node is None:
            raise InvalidInput(f"agency {agency!r} runs no node in {devnet_dir}")
        return TlsIdentity.from_dirs(devnet_dir / "ca", devnet_dir / "nodes" / node["name"] / "keys")
    if not (ca and cert and key):
        raise InvalidInput("give --tls-ca, --tls-cert and --tls-key (or --devnet DIR --as AGENCY)")
    return TlsIdentity(ca, cert, key, os.environ.get("CHAINSHARE_TLS_KEY_PASSWORD"))


@group.command("registrar")
@click.option("--registrar-key", "key_file", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True, help="0: any free port.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--policy", "policy_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Cedar policy for lookups (default: issuers and registrars may resolve).")
@click.option("--per-minute", type=click.FloatRange(0.01, 100_000), default=30.0, show_default=True,
              help="Lookups each agency may make per minute (token bucket).")
@click.option("--burst", type=click.IntRange(1, 100_000), default=30, show_default=True)
@tls_options
@acting_options
def registrar(key_file: Path, port: int, host: str, policy_file: Path | None, per_minute: float, burst: int,
              **kw: Any) -> None:
    """Serve person-handle lookups over mutual TLS as a credit_registrar agency: each lookup is authorised
    by Cedar, rate-limited per agency and recorded on chain before it is answered. Runs until SIGTERM/Ctrl-C;
    prints {"listening": URL} first."""
    from chainshare.credit.registrar import (
        DEFAULT_LOOKUP_POLICY,
        ChainFacts,
        LookupRecorder,
        RegistrarService,
        TokenBucket,
    )
    from chainshare.credit.subjects import read_registrar_key

    devnet_dir, agency = kw.get("devnet_dir"), kw.get("as_agency")
    identity = _tls_identity(kw, devnet_dir, agency)
    url, account_key = resolve_actor(*_actor(kw))
    assert account_key is not None
    policy = policy_file.read_text() if policy_file is not None else DEFAULT_LOOKUP_POLICY
    service = RegistrarService(identity, read_registrar_key(key_file), ChainFacts(url.rstrip("/") + "/api/v1"),
                               LookupRecorder(url, account_key), policy_text=policy,
                               limiter=TokenBucket(burst, per_minute), host=host, port=port)
    signal.signal(signal.SIGTERM, lambda *_: threading_shutdown(service))
    click.echo(json.dumps({"listening": f"https://{host}:{service.port}"}))
    sys.stdout.flush()
    try:
        service.serve_forever()
    except KeyboardInterrupt:
        pass


def threading_shutdown(service: Any) -> None:
    import threading

    threading.Thread(target=service.shutdown, daemon=True).start()


@group.command("lookup")
@click.option("--registrar", "registrar_url", required=True, help="The registrar's lookup service, https://host:port.")
@click.option("--purpose", required=True, help="Why the handle is needed (recorded on chain).")
@click.option("--devnet", "devnet_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--as", "as_agency", help="Agency to ask as (with --devnet: its node's TLS identity).")
@tls_options
@json_option
def lookup(registrar_url: str, purpose: str, devnet_dir: Path | None, as_agency: str | None, as_json: bool,
           **kw: Any) -> None:
    """Ask a registrar for a person's handle over mutual TLS; the resident ID is read from stdin. Exit 2 if the
    registrar refuses (not authorised), 1 if rate-limited or unavailable."""
    from chainshare.credit.registrar import lookup_handle
    from chainshare.errors import Unauthorized

    identity = _tls_identity(kw, devnet_dir, as_agency)
    resident_id = sys.stdin.readline(128).strip()
    if not resident_id:
        raise InvalidInput("give the resident ID number on stdin")
    status, answer = lookup_handle(registrar_url, identity, resident_id, purpose)
    if status == 200:
        emit(answer, as_json, answer["handle"])
        return
    message = answer.get("error", {}).get("message", f"HTTP {status}")
    if status in (400, 403):
        raise (InvalidInput if status == 400 else Unauthorized)(f"registrar refused: {message}")
    raise ChainshareError(f"registrar did not answer the lookup (HTTP {status}): {message}")




# --------------------------------------------------------------------------- a person record's details


@group.command("details")
@click.argument("record_id", type=click.IntRange(1, 2**64 - 1))
@click.option("--grant", "grant_id", type=click.IntRange(1), help="Read grant to use (default: the newest valid).")
@acting_options
@json_option
def details(record_id: int, grant_id: int | None, **kw: Any) -> None:
    """Fetch a person record's details (its summary, only hashed on chain) from the issuer's vault under a
    read grant of this agency on the record's details dataset (`access request DATASET --action read`):
    delivered over mutual TLS, recorded on chain, the subject pseudonymised for this agency, and checked
    against the on-chain summary hash. Nothing is kept on disk."""
    import tempfile

    from chainshare.cli.dataset import fetch_dataset
    from chainshare.cli.signing import api_get
    from chainshare.credit.details import check_details

    as_json = kw.pop("as_json")
    url, key = resolve_actor(*_actor(kw))
    assert key is not None
    pointer = api_get(url, f"/credit/records/{record_id}/details")
    with tempfile.TemporaryDirectory(prefix="chainshare-details-") as tmp:
        out = Path(tmp) / "details.jsonl"
        fetched = fetch_dataset(url, key, pointer["dataset"]["id"], grant_id, out)
        content = out.read_bytes()
    found = check_details(content, pointer["record"])
    result = {**found, "issuer": pointer["record"]["issuer"], "verified": True,
              "dataset_id": fetched["dataset_id"], "grant_id": fetched["grant_id"], "action": fetched["action"],
              "delivery_tx": fetched["record_tx"], "recorded_height": fetched["recorded_height"]}
    emit(result, as_json, f"record {record_id} v{pointer['record']['version']} (issuer {result['issuer']}), "
                          f"subject {found['subject']}:\n  {found['summary']}\n  summary hash {found['summary_hash']} "
                          f"matches the chain; delivery recorded in tx {result['delivery_tx']}")
