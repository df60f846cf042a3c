"""``chainshare credit credential ...``: zero-knowledge credit credentials (Hyperledger AnonCreds).

issue (an authorised issuer agency: attributes computed from the chain's credit records at the finalized
head, objects published on chain on first use, issuance recorded), revoke (a new revocation status list on
chain), prove (the subject, from its credential file, against the latest status list on chain), verify
(anyone, against the chain), nonce (a verifier's fresh nonce). Exit codes: 0 ok / valid, 1 failed / invalid,
2 bad input.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import click

from chainshare.cli.common import acting_options, emit, json_option, resolve_actor
from chainshare.client import HeadSubscription, NodeClient
from chainshare.errors import ExecutionReverted, InvalidInput

group = click.Group("credential", help="Zero-knowledge credit credentials: issue, revoke, prove, verify.")
MAX_FILE = 4 * 1024 * 1024


def _issuer_state_path(path: Path | None, devnet_dir: Path | None, agency: str | None) -> Path:
    if path is not None:
        return path
    if devnet_dir is None or agency is None:
        raise InvalidInput("--issuer-state FILE is required with --node/--keystore")
    return devnet_dir / "credentials" / f"{agency}.issuer.json"


def _read_json(path: Path, what: str) -> Any:
    try:
        if path.stat().st_size > MAX_FILE:
            raise InvalidInput(f"{path}: a {what} file is at most {MAX_FILE} bytes")
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InvalidInput(f"{path}: no such {what} file") from None
    except ValueError as exc:
        raise InvalidInput(f"{path}: not a JSON {what} file: {exc}") from None


def _write_private(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON readable by its owner only (it holds private keys or a link secret)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh)
    os.replace(tmp, path)


def _node(node_url: str | None, devnet_dir: Path | None) -> str:
    if devnet_dir is not None:
        return resolve_actor(devnet_dir, None, None, None, None, need_key=False)[0]
    if node_url is None:
        raise InvalidInput("say which chain to read: --node URL or --devnet DIR")
    return node_url


def _reading(fn: Any) -> Any:
    fn = click.option("--devnet", "devnet_dir", type=click.Path(file_okay=False, path_type=Path),
                      help="Devnet directory (reads its first node).")(fn)
    return click.option("--node", "node_url", help="Node URL, e.g. http://127.0.0.1:8545.")(fn)


_state_option = click.option("--issuer-state", "issuer_state", type=click.Path(dir_okay=False, path_type=Path),
                             help="The issuer's PRIVATE key file (default with --devnet: "
                                  "DIR/credentials/AGENCY.issuer.json).")


@group.command("issue")
@click.option("--subject", required=True, help="USCC of the organisation the credential is about.")
@click.option("--category", default="administrative_penalty", show_default=True,
              help="Credit category the issuer is authorised for (its credential definition's tag).")
@click.option("--registry-size", type=click.IntRange(2, 100_000), default=1000, show_default=True,
              help="Credentials a new revocation registry holds (+1); used when the issuer state is created.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The subject's credential file (holds its link secret: keep it private).")
@_state_option
@acting_options
@json_option
def issue(subject: str, category: str, registry_size: int, out: Path, issuer_state: Path | None,
          as_json: bool, devnet_dir: Path | None, as_agency: str | None, node_url: str | None, keystore: Path | None,
          password_file: Path | None) -> None:
    """Issue SUBJECT a credential over its credit status at the finalized head."""
    from chainshare.credit import credential_chain as chain
    from chainshare.credit import credentials as zk
    from chainshare.credit.events import RpcSource
    from chainshare.credit.query import check_subject
    from chainshare.crypto.secp import address_of_private_key

    check_subject(subject)
    if subject.startswith("P-"):
        raise InvalidInput("credentials are issued to organisations (a USCC), not to person handles")
    url, key = resolve_actor(devnet_dir, as_agency, node_url, keystore, password_file)
    assert key is not None
    path = _issuer_state_path(issuer_state, devnet_dir, as_agency)
    with NodeClient(url, timeout=120) as client:
        agency = _agency_of(client, "0x" + address_of_private_key(key).hex())
        if path.exists():
            state = zk.IssuerState.from_json(_read_json(path, "issuer state"))
            if state.agency != agency:
                raise InvalidInput(f"{path} is agency {state.agency!r}'s, not {agency!r}'s")
        else:
            click.echo(f"creating {agency}'s credential keys and a revocation registry of {registry_size} "
                       "(CL key generation takes tens of seconds)...", err=True)
            state = zk.create_issuer_state(agency, category, registry_size, chain.get_chain_time(client))
            _write_private(path, state.to_json())
        published = chain.publish_issuer_objects(client, key, state)
        attributes = chain.compute_credit_attributes(RpcSource(client), subject)
        state, credential = zk.issue_credential(state, subject, attributes, zk.create_link_secret(),
                                                attributes["computed_height"])
        _write_private(path, state.to_json())
        _write_private(out, credential)
        recorded = chain.record_issuance(client, key, state, credential["revocation_index"], subject,
                                         attributes["computed_height"])
    click.echo(f"warning: {zk.LINK_SECRET_WARNING}", err=True)
    result = {"subject": subject, "issuer": agency, "cred_def_id": state.cred_def_id, "rev_reg_id": state.rev_reg_id,
              "revocation_index": credential["revocation_index"], "computed_at_height": attributes["computed_height"],
              "attributes": attributes, "out": str(out), "published": published, **recorded}
    emit(result, as_json, f"issued {out} to {subject} (index {credential['revocation_index']} of {state.rev_reg_id}, "
                          f"attributes at height {attributes['computed_height']}: {attributes})")


def _agency_of(client: NodeClient, address: str) -> str:
    from chainshare.cli.credit.records import agency_of

    try:
        return agency_of(client, address)
    except ExecutionReverted as exc:
        raise InvalidInput(f"account {address} belongs to no member agency") from exc


@group.command("revoke")
@click.option("--subject", help="Revoke every credential issued to this USCC (its credit status changed).")
@click.option("--index", "indexes", type=click.IntRange(1), multiple=True, help="Revoke this revocation index.")
@click.option("--changed", is_flag=True, help="Revoke every credential whose subject's credit status on chain "
                                              "(at the finalized head) differs from what was signed.")
@click.option("--reason", default=None, help="Why, e.g. 'new black-list record 12' (default with --changed: "
                                             "'credit status changed').")
@click.option("--follow", is_flag=True, help="With --changed: keep running next to the issuer's node and revoke "
                                             "as finalized credit records change a holder's status (stop: "
                                             "SIGINT/SIGTERM; resumes from --cursor-file).")
@click.option("--cursor-file", type=click.Path(dir_okay=False, path_type=Path),
              help="With --follow: where the last record event handled is kept (default: the issuer state file "
                   "with suffix .cursor).")
@click.option("--poll", type=click.FloatRange(0.05, 60), default=0.25, show_default=True,
              help="With --follow: seconds between polls while the websocket is down.")
@click.option("--transport", type=click.Choice(["auto", "poll"]), default="auto", show_default=True,
              help="With --follow: auto = woken by the node's websocket newHeads subscription; poll = polling.")
@click.option("--ws", "ws_url", help="With --follow: the node's websocket URL (default: the node URL's, ws://).")
@_state_option
@acting_options
@json_option
def revoke(subject: str | None, indexes: tuple[int, ...], changed: bool, reason: str | None, follow: bool,
           cursor_file: Path | None, poll: float, transport: str, ws_url: str | None,
           issuer_state: Path | None, as_json: bool,
           devnet_dir: Path | None, as_agency: str | None, node_url: str | None, keystore: Path | None,
           password_file: Path | None) -> None:
    """Revoke credentials: a new revocation status list goes on chain; proofs must use it once it is final.
    With --changed --follow, keep doing so automatically as the subjects' credit records change."""
    from chainshare.credit import credential_chain as chain
    from chainshare.credit import credentials as zk
    from chainshare.credit.revocation_follower import revoke_and_publish

    url, key = resolve_actor(devnet_dir, as_agency, node_url, keystore, password_file)
    assert key is not None
    path = _issuer_state_path(issuer_state, devnet_dir, as_agency)
    if follow and (not changed or subject is not None or indexes):
        raise InvalidInput("--follow goes with --changed alone (it revokes what the chain's records change)")
    if not follow and (cursor_file is not None or ws_url is not None):
        raise InvalidInput("--cursor-file and --ws go with --follow")
    if follow:  # it may start before the first issuance: the state file is read at each event
        with NodeClient(url, timeout=120) as client:
            _follow(client, key, path, cursor_file or path.with_suffix(".cursor"), poll,
                    ws_url or HeadSubscription.url_of(url) if transport == "auto" else None, as_json)
        return
    if not path.exists():
        raise InvalidInput(f"{path}: no issuer state (issue a credential first)")
    state = zk.IssuerState.from_json(_read_json(path, "issuer state"))
    if reason is None and not changed:
        raise InvalidInput("--reason is required (say why the credentials are revoked)")
    chosen = set(indexes) | {i for i, s in state.issued.items() if s == subject}
    with NodeClient(url, timeout=120) as client:
        if changed:
            from chainshare.credit.events import RpcSource

            source = RpcSource(client)
            chosen |= set(zk.find_changed(state, lambda s: chain.compute_credit_attributes(source, s)))
        chosen -= state.revoked()
        if not chosen:
            if changed and not indexes and subject is None:
                emit({"revoked": [], "rev_reg_id": state.rev_reg_id}, as_json, "no credit status changed: nothing "
                     "to revoke")
                return
            raise InvalidInput("nothing to revoke: name --subject or --index of an issued, unrevoked credential")
        state, sent = revoke_and_publish(client, key, state, sorted(chosen), reason or "credit status changed")
    _write_private(path, state.to_json())
    result = {"revoked": sorted(chosen), "rev_reg_id": state.rev_reg_id, "status_timestamp": state.status_timestamp,
              **sent}
    emit(result, as_json, f"revoked {sorted(chosen)} of {state.rev_reg_id} in block {sent['block']}")


def _follow(client: NodeClient, key: bytes, path: Path, cursor_file: Path, poll: float, ws_url: str | None,
            as_json: bool) -> None:
    """``revoke --changed --follow``: a first sweep (unless resuming from ``cursor_file``), then revoke as the
    finalized record events come, until SIGINT/SIGTERM; the cursor is kept in ``cursor_file``."""
    import logging
    import signal

    from chainshare.credit import credential_chain as chain
    from chainshare.credit import credentials as zk
    from chainshare.credit.events import format_cursor, parse_cursor
    from chainshare.credit.revocation_follower import LOG, RevocationFollower, revoke_and_publish
    from chainshare.crypto.secp import address_of_private_key
    from chainshare.logs import configure_logging, log_event

    configure_logging("info")
    stopping = False

    def on_signal(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def save_cursor(cursor: str) -> None:
        tmp = cursor_file.with_suffix(cursor_file.suffix + ".tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(cursor + "\n")
        tmp.replace(cursor_file)

    def load_state() -> Any:
        """The issuer state as on disk now (``issue`` may have added credentials); None before the first."""
        return zk.IssuerState.from_json(_read_json(path, "issuer state")) if path.exists() else None

    follower = RevocationFollower(client, key, load_state, lambda s: _write_private(path, s.to_json()), save_cursor)
    swept: list[int] = []
    if cursor_file.exists():
        after = parse_cursor(cursor_file.read_text().strip())
    else:  # first start: what changed up to now is revoked by a sweep, then events after the head it saw
        after = (follower.source.head_height(), 2**31)
        state = load_state()
        swept = [] if state is None else zk.find_changed(
            state, lambda s: chain.compute_credit_attributes(follower.source, s))
        if swept:
            state, sent = revoke_and_publish(client, key, state, swept, "credit status changed")
            _write_private(path, state.to_json())
            log_event(LOG, logging.INFO, "revoked", indexes=swept, block=sent["block"],
                      transaction=sent["transaction"], rev_reg_id=state.rev_reg_id, sweep=True)
        save_cursor(format_cursor(after))
    heads = HeadSubscription(ws_url, follower.source.head_height, poll_s=poll) if ws_url is not None else None
    log_event(LOG, logging.INFO, "following", agency=_agency_of(client, "0x" + address_of_private_key(key).hex()),
              cursor=format_cursor(after), cursor_file=str(cursor_file),
              transport="websocket (polling while it is down)" if heads is not None else "poll")
    try:
        last = follower.follow(after, stop=lambda: stopping, poll_s=poll,
                               next_head=heads.next_head if heads is not None else None)
    finally:
        if heads is not None:
            heads.close()
    save_cursor(format_cursor(last))
    log_event(LOG, logging.INFO, "stopped", cursor=format_cursor(last))
    revoked = swept + [i for r in follower.revocations for i in r.indexes]
    emit({"revoked": revoked, "cursor": format_cursor(last), "revocations": [
        {"subject": r.subject, "indexes": list(r.indexes), "record_cursor": r.record_cursor, "block": r.block,
         "transaction": r.transaction, "blocktime_lag_ms": r.blocktime_lag_ms, "wall_ms": r.wall_ms}
        for r in follower.revocations]}, as_json, f"stopped at {format_cursor(last)}; revoked {revoked}")


@group.command("prove")
@click.option("--cred", "cred_file", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--predicate", "predicates", multiple=True, required=True,
              help="e.g. score>=700, black_list_active<=0, penalties_3y<=2 (repeat for several).")
@click.option("--nonce", required=True, help="The verifier's nonce (decimal digits).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@_reading
@json_option
def prove(cred_file: Path, predicates: tuple[str, ...], nonce: str, out: Path, node_url: str | None,
          devnet_dir: Path | None, as_json: bool) -> None:
    """Prove PREDICATES from a credential, against the latest revocation status list on chain."""
    from chainshare.credit import credential_chain as chain
    from chainshare.credit import credentials as zk

    cred = zk.load_credential_file(_read_json(cred_file, "credential"))
    preds = zk.parse_predicates(list(predicates))
    zk.check_nonce(nonce)
    with NodeClient(_node(node_url, devnet_dir), timeout=60) as client:
        public = chain.read_public_objects(client, cred["cred_def_id"], cred["rev_reg_id"])
    t0 = time.process_time()
    proof = zk.create_proof(cred, preds, nonce, public)
    cpu_ms = (time.process_time() - t0) * 1000
    text = json.dumps(proof)
    out.write_text(text)
    result = {"out": str(out), "predicates": proof["predicates"], "bytes": len(text.encode()),
              "status_list_height": public.status_height, "cpu_ms": round(cpu_ms, 1)}
    emit(result, as_json, f"proved {', '.join(proof['predicates'])} in {out} ({len(text.encode()):,} bytes)")


@group.command("verify")
@click.option("--proof", "proof_file", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--nonce", required=True, help="The nonce you gave the prover.")
@click.option("--require", "required", multiple=True, help="A predicate the proof must prove (repeatable).")
@_reading
@json_option
def verify(proof_file: Path, nonce: str, required: tuple[str, ...], node_url: str | None, devnet_dir: Path | None,
           as_json: bool) -> None:
    """Verify a proof against the chain; exit 0 if valid, 1 if invalid (with the reason)."""
    from chainshare.credit import credential_chain as chain
    from chainshare.credit import credentials as zk

    try:
        raw = proof_file.read_bytes()[:zk.MAX_PROOF_BYTES + 1]
    except FileNotFoundError:
        raise InvalidInput(f"{proof_file}: no such proof file") from None
    claim = zk.parse_proof(raw)
    zk.check_nonce(nonce)
    needed = zk.parse_predicates(list(required)) if required else ()
    with NodeClient(_node(node_url, devnet_dir), timeout=60) as client:
        public = chain.read_public_objects(client, claim.cred_def_id, claim.rev_reg_id)
    verdict = zk.verify_proof(claim, nonce, public, needed)
    emit(verdict.to_json(), as_json,
         f"{'valid' if verdict.valid else 'INVALID'}: " + (
             f"{', '.join(verdict.predicates)} (credential of issuer {verdict.issuer}, not revoked as of height "
             f"{verdict.status_height})" if verdict.valid else verdict.reason))
    if not verdict.valid:
        raise click.exceptions.Exit(1)


@group.command("nonce")
def nonce() -> None:
    """Print a fresh verifier nonce (80 random bits, decimal)."""
    from chainshare.credit.credentials import generate_nonce

    click.echo(generate_nonce())
