"""``chainshare credit`` reading commands (show, history, subject, score, verify, watch, details).

They read over a node (``--node URL`` or ``--devnet DIR``) or, for show/subject/score/history, from a STOPPED
node's data directory (``--data-dir``): the score is recomputed here from the raw events with the same
functions the node uses, so the two must agree. Exit codes: 0 ok, 1 failed (e.g. does not verify), 2 bad input.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from chainshare.cli.common import emit, json_option, resolve_actor
from chainshare.cli.credit.records import group, parse_subject
from chainshare.client import NodeClient
from chainshare.errors import InvalidInput


def reading_options(fn: Any) -> Any:
    for opt in reversed([
        click.option("--node", "node_url", help="Node URL, e.g. http://127.0.0.1:8545."),
        click.option("--devnet", "devnet_dir", type=click.Path(file_okay=False, path_type=Path),
                     help="Devnet directory (reads its first node)."),
        click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
                     help="Data directory of a STOPPED node (read offline)."),
    ]):
        fn = opt(fn)
    return fn


def _node_url(node_url: str | None, devnet_dir: Path | None) -> str:
    if devnet_dir is not None:
        url, _ = resolve_actor(devnet_dir, None, None, None, None, need_key=False)
        return url
    if node_url is None:
        raise InvalidInput("say where to read: --node URL, --devnet DIR or --data-dir DIR")
    return node_url


@contextmanager
def open_data_dir(data_dir: Path) -> Iterator[Any]:
    """A ChainStore over a stopped node's LevelDB (InvalidInput if it is not one)."""
    from chainshare.ledger.chain import ChainStore
    from chainshare.ledger.store import LevelDBStore

    if not (data_dir / "CURRENT").exists():
        raise InvalidInput(f"{data_dir} is not a chainshare data directory (no LevelDB there)")
    store = LevelDBStore(data_dir, create=False)
    try:
        yield ChainStore(store)
    finally:
        store.close()


@contextmanager
def open_source(node_url: str | None, devnet_dir: Path | None, data_dir: Path | None) -> Iterator[Any]:
    """The CreditSource to read: a stopped node's data, or a node's JSON-RPC."""
    from chainshare.credit.events import ChainSource, RpcSource

    if data_dir is not None:
        if node_url or devnet_dir:
            raise InvalidInput("give one of --data-dir, --node or --devnet")
        with open_data_dir(data_dir) as chain:
            yield ChainSource(chain)
        return
    with NodeClient(_node_url(node_url, devnet_dir), timeout=120) as client:
        yield RpcSource(client)


def _record_human(r: dict[str, Any]) -> str:
    lines = [f"record {r['id']} v{r['version']}  {r['category']}  {r['polarity']}  severity {r['severity']}  "
             f"status {r['status']}  objection {r['objection']}{' (OVERDUE)' if r['objection_overdue'] else ''}",
             f"  subject {r['subject']}  issuer {r['issuer']}  document {r['documentNumber']}",
             f"  {r['summary'] or '(summary hash ' + r['summaryHash'] + ')'}"]
    return "\n".join(lines)


@group.command("show")
@click.argument("record_id", type=click.IntRange(1, 2**64 - 1))
@click.option("--at", type=click.IntRange(0), help="Height (default: the finalized head).")
@reading_options
@json_option
def show(record_id: int, at: int | None, node_url: str | None, devnet_dir: Path | None, data_dir: Path | None,
         as_json: bool) -> None:
    """A record: current version, status, versions and lifecycle timeline."""
    from chainshare.credit import query

    with open_source(node_url, devnet_dir, data_dir) as src:
        height, r = query.get_record(src, record_id, at)
        now = src.block_timestamp_ms(height) // 1000
        out = {"height": height, "time": now, **r.to_json(now, with_history=True)}
    emit(out, as_json, _record_human(out) + "\n" + "\n".join(
        f"  block {e['block']}: {e['event']}" for e in out["timeline"]))


@group.command("subject")
@click.argument("subject")
@click.option("--at", type=click.IntRange(0), help="Height (default: the finalized head).")
@reading_options
@json_option
def subject(subject: str, at: int | None, node_url: str | None, devnet_dir: Path | None, data_dir: Path | None,
            as_json: bool) -> None:
    """Validate SUBJECT (USCC or person handle) and show its records and score."""
    from chainshare.credit import query
    from chainshare.errors import NotFound

    parse_subject(subject)
    with open_source(node_url, devnet_dir, data_dir) as src:
        out = query.subject_json(src, subject, at)
        try:
            out["score"] = query.get_score(src, subject, out["height"])
        except NotFound:
            out["score"] = None
    human = f"{subject}: {len(out['records'])} records at height {out['height']}" + (
        f", score {out['score']['score']} (rule v{out['score']['rule_version']})" if out["score"] else "")
    emit(out, as_json, "\n".join([human, *(_record_human(r) for r in out["records"])]))


@group.command("score")
@click.argument("subject")
@click.option("--at", type=click.IntRange(0), help="Height (default: the finalized head).")
@click.option("--rule-version", type=click.IntRange(1), help="Score under this installed rule version.")
@reading_options
@json_option
def score(subject: str, at: int | None, rule_version: int | None, node_url: str | None, devnet_dir: Path | None,
          data_dir: Path | None, as_json: bool) -> None:
    """Recompute SUBJECT's score at a height from the raw record events (over a node, or offline)."""
    from chainshare.credit import query

    parse_subject(subject)
    with open_source(node_url, devnet_dir, data_dir) as src:
        out = query.get_score(src, subject, at, rule_version)
    lines = [f"{subject}: score {out['score']} at height {out['height']} (rule v{out['rule_version']} "
             f"{out['rule_name']!r}, base {out['base']})"]
    lines += [f"  record {c['record']} v{c['version']} {c['category']} severity {c['severity']}: {c['weight']:+d}"
              for c in out["contributions"]]
    emit(out, as_json, "\n".join(lines))


@group.command("history")
@click.argument("record_id", type=click.IntRange(1, 2**64 - 1))
@click.option("--genesis", "genesis_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Verify the provenance against this genesis document (default: the node's own).")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the provenance bundle here (verify later with `credit verify`).")
@reading_options
@json_option
def history(record_id: int, genesis_file: Path | None, out_file: Path | None, node_url: str | None,
            devnet_dir: Path | None, data_dir: Path | None, as_json: bool) -> None:
    """Every version and step of RECORD_ID back to its publication, each proven (header, QC, receipt
    inclusion proof) and verified here against the genesis. Exit 1 if the proof does not verify."""
    from chainshare.credit.events import ChainSource
    from chainshare.credit.provenance import ProvenanceError, build_provenance, verify_provenance

    if data_dir is not None:
        with open_data_dir(data_dir) as chain:
            bundle = build_provenance(chain, ChainSource(chain), record_id)
            genesis_doc = chain.get_genesis_document()
    else:
        from chainshare.cli.signing import api_get

        url = _node_url(node_url, devnet_dir)
        bundle = api_get(url, f"/credit/records/{record_id}/provenance")
        genesis_doc = json.dumps(api_get(url, "/genesis")).encode()
    if genesis_file is not None:
        genesis_doc = genesis_file.read_bytes()
    if out_file is not None:
        out_file.write_text(json.dumps(bundle, indent=1) + "\n")
    try:
        report = verify_provenance(bundle, genesis_doc)
    except ProvenanceError as exc:
        emit({"verified": False, "error": exc.message, "bundle": bundle}, as_json,
             f"provenance of record {record_id} does NOT verify: {exc.message}")
        raise click.exceptions.Exit(1) from None
    out = {**report, "bundle": bundle}
    emit(out, as_json, "\n".join(
        [f"record {record_id}: {report['subject']} {report['category']} by {report['issuer']}, "
         f"{report['versions']} version(s), provenance verified against the genesis"]
        + [f"  block {s['block']} ({s['block_hash'][:18]}…, {s['signers']} QC signers): {s['event']}"
           for s in report["steps"]]))


@group.command("verify")
@click.argument("bundle_file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--genesis", "genesis_file", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path))
@json_option
def verify(bundle_file: Path, genesis_file: Path, as_json: bool) -> None:
    """Verify a provenance bundle (from `credit history --out`) offline, with the genesis alone."""
    from chainshare.credit.provenance import ProvenanceError, load_bundle, verify_provenance

    try:
        report = verify_provenance(load_bundle(bundle_file.read_text()), genesis_file.read_bytes())
    except ProvenanceError as exc:
        emit({"verified": False, "error": exc.message}, as_json, f"does NOT verify: {exc.message}")
        raise click.exceptions.Exit(1) from None
    emit(report, as_json, f"record {report['record']}: verified ({len(report['steps'])} steps)")


@group.command("watch")
@click.option("--category", help="Only records of this category.")
@click.option("--subject", help="Only records of this subject.")
@click.option("--from-height", type=click.IntRange(0), help="Start at this height (default: the head).")
@click.option("--cursor", help="Resume after this cursor (BLOCK-LOG, printed with each event).")
@click.option("--cursor-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Resume from and keep the cursor in this file (survives restarts).")
@click.option("--max-events", type=click.IntRange(1), help="Stop after this many events.")
@click.option("--poll", type=click.FloatRange(0.05, 60), default=0.25, show_default=True, help="Seconds between polls.")
@click.option("--transport", type=click.Choice(["auto", "poll"]), default="auto", show_default=True,
              help="auto: woken by the node's websocket newHeads subscription, polling while it is down; "
                   "poll: polling only.")
@click.option("--ws", "ws_url", help="Websocket URL of the node (default: the node URL's host and port, ws://).")
@click.option("--node", "node_url", help="Node URL.")
@click.option("--devnet", "devnet_dir", type=click.Path(file_okay=False, path_type=Path))
def watch(category: str | None, subject: str | None, from_height: int | None, cursor: str | None,
          cursor_file: Path | None, max_events: int | None, poll: float, transport: str, ws_url: str | None,
          node_url: str | None, devnet_dir: Path | None) -> None:
    """Stream new and changed records (one JSON object a line) as their blocks finalize: resumable from a
    height or cursor, no gaps and no duplicates across a restart with --cursor-file. Woken by the node's
    websocket subscription to finalized heads (polling while it is unavailable); each new range of blocks is
    read from the node's finalized logs (eth_getLogs). While the node is unreachable (restarting, say) it
    warns on stderr, retries (backing off to 10 s) and resumes after the last event it printed."""
    from chainshare.client import HeadSubscription
    from chainshare.credit import query
    from chainshare.credit.events import RpcSource, format_cursor, parse_cursor
    from chainshare.logs import configure_logging

    configure_logging("warning")  # stdout carries the events; an outage is said on stderr

    if subject is not None:
        parse_subject(subject)
    if sum(x is not None for x in (from_height, cursor)) > 1:
        raise InvalidInput("give at most one of --from-height and --cursor")
    if cursor is None and cursor_file is not None and cursor_file.exists():
        cursor = cursor_file.read_text().strip() or None
    topics = query.watch_topics(category, subject)
    delivered = 0
    stopping = False

    def on_signal(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    url = _node_url(node_url, devnet_dir)
    with NodeClient(url, timeout=60) as client:
        src = RpcSource(client)
        heads = (HeadSubscription(ws_url or HeadSubscription.url_of(url), src.head_height, poll_s=poll)
                 if transport == "auto" else None)
        if cursor is not None:
            after = parse_cursor(cursor)
        else:
            start = src.head_height() + 1 if from_height is None else from_height
            after = (start, -1)

        def on_event(ev: Any) -> None:
            nonlocal delivered
            click.echo(json.dumps(ev.to_json(), separators=(",", ":")))
            sys.stdout.flush()
            if cursor_file is not None:
                tmp = cursor_file.with_suffix(".tmp")
                tmp.write_text(ev.cursor + "\n")
                tmp.replace(cursor_file)
            delivered += 1

        def stop() -> bool:
            return stopping or (max_events is not None and delivered >= max_events)

        try:
            last = query.watch_across_outages(src, after, topics, on_event, poll_s=poll, stop=stop,
                                              next_head=heads.next_head if heads is not None else None)
        except KeyboardInterrupt:
            return
        finally:
            if heads is not None:
                heads.close()
    if cursor_file is not None and max_events is None:
        cursor_file.write_text(format_cursor(last) + "\n")
