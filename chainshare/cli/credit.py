"""``chainshare credit ...``: publish and manage credit records, read them, score subjects, follow new records.

Acting commands (publish, correct, object, resolve, repair, withdraw, expire) sign CreditRegistry calls as an
agency (``--devnet DIR --as AGENCY`` or ``--node URL --keystore FILE``); subjects are validated here before
anything is sent (the contract validates them again). ``publish --csv FILE`` sends many records in
``publishBatch`` transactions (all or nothing per transaction), pipelined with consecutive nonces, with a
progress bar.

Reading commands (show, history, subject, score, watch) read over a node (``--node URL`` or ``--devnet DIR``)
or, for show/subject/score/history, from a STOPPED node's data directory (``--data-dir``): the score is
recomputed here from the raw events with the same functions the node uses, so the two must agree.
Exit codes as elsewhere: 0 ok, 1 the operation failed (e.g. reverted), 2 bad input.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import click

from chainshare.cli.common import acting_options, emit, json_option, resolve_actor
from chainshare.client import NodeClient
from chainshare.credit.batches import Batch, choose_sstore_word, plan_batches, sstore_word_prices
from chainshare.crypto.hashing import keccak256
from chainshare.errors import ChainshareError, InvalidInput
from chainshare.execution import abi
from chainshare.execution.contracts.addresses import CREDIT_REGISTRY
from chainshare.execution.contracts.credit_registry import (
    NEGATIVE,
    POSITIVE,
    CreditRegistry,
    get_subject_kind,
)

group = click.Group("credit", help="Credit records: publish, correct, object, repair, show, score, watch.")

REGISTRY = CreditRegistry()
MAX_CSV_ROWS = 1_000_000
_PERIOD = re.compile(r"^([0-9]{1,10})([smhd]?)$")
_UNITS = {"": 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
CSV_COLUMNS = ("subject", "category", "polarity", "severity", "document_number", "authority", "legal_basis",
               "summary", "decision_date", "effective_from", "min_period", "max_period", "evidence_hash")


# --------------------------------------------------------------------------- input parsing


def parse_subject(subject: str) -> str:
    try:
        get_subject_kind(subject)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    return subject


def parse_period(text: str, what: str) -> int:
    """Seconds of ``90d``, ``12h``, ``30m``, ``45s`` or a bare number of days."""
    m = _PERIOD.match(text.strip())
    if not m:
        raise InvalidInput(f"{what} {text!r} must be a number with a unit d, h, m or s (e.g. 90d)")
    return int(m.group(1)) * _UNITS[m.group(2)]


def parse_time(text: str | None, what: str) -> int | None:
    """Unix seconds of ``YYYY-MM-DD`` (UTC midnight), an ISO date-time, or a bare unix time."""
    if text is None or text == "":
        return None
    t = text.strip()
    if t.isdigit() and len(t) <= 12:
        return int(t)
    try:
        if len(t) == 10:
            return int(datetime.combine(date.fromisoformat(t), datetime.min.time(), UTC).timestamp())
        dt = datetime.fromisoformat(t)
        return int((dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp())
    except ValueError:
        raise InvalidInput(f"{what} {text!r} must be YYYY-MM-DD, an ISO date-time or unix seconds") from None


def parse_hash(text: str, what: str) -> bytes:
    body = text[2:] if text.startswith("0x") else text
    try:
        raw = bytes.fromhex(body)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise InvalidInput(f"{what} must be 32 bytes of hex (64 hex digits)")
    return raw


def parse_polarity(text: str) -> int:
    value = {"positive": POSITIVE, "negative": NEGATIVE, "1": POSITIVE, "2": NEGATIVE}.get(text.strip().lower())
    if value is None:
        raise InvalidInput(f"polarity {text!r} must be positive or negative")
    return value


def record_args(row: dict[str, str], now: int) -> list[Any]:
    """The ``publish`` arguments of one record given as strings (a CSV row or the command's options)."""
    def need(key: str) -> str:
        value = (row.get(key) or "").strip()
        if not value:
            raise InvalidInput(f"{key} is required")
        return value

    subject = parse_subject(need("subject"))
    severity = need("severity")
    if not severity.isdigit() or not 1 <= int(severity) <= 5:
        raise InvalidInput("severity must be 1..5")
    summary = row.get("summary") or ""
    summary_hash = bytes(32)
    if subject.startswith("P-"):
        if summary:
            summary_hash, summary = keccak256(summary.encode()), ""  # a person's summary never goes on chain
        elif row.get("summary_hash"):
            summary_hash = parse_hash(row["summary_hash"], "summary hash")
    decision = parse_time(row.get("decision_date"), "decision date") or now
    effective = parse_time(row.get("effective_from"), "effective from") or decision
    return [subject, need("category"), parse_polarity(need("polarity")), int(severity), need("document_number"),
            need("authority"), need("legal_basis"), summary, summary_hash, decision, effective,
            parse_period(row.get("min_period") or "0s", "minimum period"),
            parse_period(need("max_period"), "maximum period"), parse_hash(need("evidence_hash"), "evidence hash")]


# --------------------------------------------------------------------------- sending


def _encode(name: str, *args: Any) -> bytes:
    spec = next(s for s in REGISTRY.methods.values() if s.name == name)
    return spec.selector + abi.encode_values([p.type for p in spec.params], list(args))


def _outcome(receipt: dict[str, Any], method: str) -> dict[str, Any]:
    from chainshare.credit.events import decode_credit_log
    from chainshare.execution.abi import to_jsonable
    from chainshare.ledger.types import Log

    out: dict[str, Any] = {"transaction": receipt["transactionHash"], "block": int(receipt["blockNumber"], 16),
                           "status": "success" if receipt["status"] == "0x1" else "reverted"}
    if receipt["status"] != "0x1":
        out["reason"] = receipt.get("revertReason")
        return out
    events = []
    for entry in receipt.get("logs", []):
        lg = Log(bytes.fromhex(entry["address"][2:]), tuple(bytes.fromhex(t[2:]) for t in entry["topics"]),
                 bytes.fromhex(entry["data"][2:]))
        decoded = decode_credit_log(lg)
        if decoded is not None:
            events.append({"event": decoded[0], "args": to_jsonable(decoded[1])})
    out["events"] = events
    if events and "id" in events[0]["args"]:
        out["record"] = events[0]["args"]["id"]
    return out


def _send(url: str, key: bytes, data: bytes, method: str) -> dict[str, Any]:
    """Sign and send one call with an explicit gas limit (so a refused call is mined and shows its reason)."""
    from chainshare.crypto.secp import address_of_private_key
    from chainshare.ledger.txs import sign_eip1559

    with NodeClient(url) as client:
        sender = "0x" + address_of_private_key(key).hex()
        chain_id = int(client.rpc("eth_chainId"), 16)
        nonce = int(client.rpc("eth_getTransactionCount", sender, "pending"), 16)
        raw = sign_eip1559(key, chain_id=chain_id, nonce=nonce, to=CREDIT_REGISTRY, data=data, gas=3_000_000)
        tx_hash = client.rpc("eth_sendRawTransaction", "0x" + raw.hex())
        return _outcome(client.wait_for_receipt(tx_hash, 60), method)


def _act(method: str, args: list[Any], actor: tuple[Any, ...], as_json: bool) -> None:
    url, key = resolve_actor(*actor)
    assert key is not None
    result = _send(url, key, _encode(method, *args), method)
    human = (f"{method}: {result['status']} in block {result['block']}"
             + (f" (record {result['record']})" if "record" in result else "")
             + (f": {result.get('reason')}" if result["status"] == "reverted" else ""))
    emit(result, as_json, human)
    if result["status"] != "success":
        raise click.exceptions.Exit(1)


def _chain_now(url: str) -> int:
    with NodeClient(url) as client:
        return int(client.rpc("eth_getBlockByNumber", "latest", False)["timestamp"], 16)


def agency_of(client: NodeClient, sender: str) -> str:
    """The member agency of account ``sender`` ("" if none), from Membership on the node."""
    from chainshare.execution.contracts.addresses import MEMBERSHIP

    spec = abi.parse_signature("agencyOf(address account)")
    raw = client.rpc("eth_call", {"to": "0x" + MEMBERSHIP.hex(), "data": "0x" + (
        abi.compute_selector(*spec) + abi.encode_values(["address"], [sender])).hex()}, "latest")
    return str(abi.decode_values(["string"], bytes.fromhex(raw[2:]))[0])


def plan_publish(client: NodeClient, sender: str, rows: list[list[Any]], *, per_tx: int) -> list[Batch]:
    """``rows`` cut into ``publishBatch`` transactions for the node behind ``client``: for ``sender``'s agency,
    at the stored-word price of the node's protocol version (one ``eth_estimateGas`` of the first batch tells
    it), each at most a tenth of a block's gas so that ten of them fill a block."""
    if not rows:
        return []
    issuer = agency_of(client, sender)
    gas_cap = int(client.rpc("eth_getBlockByNumber", "latest", False)["gasLimit"], 16) // 10
    prices = sstore_word_prices()
    probe = plan_batches(rows[:per_tx], issuer, prices[-1], per_tx=per_tx, gas_cap=gas_cap)[0]
    try:
        estimated = int(client.rpc("eth_estimateGas", {"from": sender, "to": "0x" + CREDIT_REGISTRY.hex(),
                                                       "data": "0x" + probe.data.hex(), "gas": hex(probe.gas)}), 16)
        price = choose_sstore_word(probe.rows, issuer, estimated, prices)
    except (ChainshareError, ValueError):  # the probe reverts (a bad record): the dearest price bounds every batch
        price = prices[-1]
    return plan_batches(rows, issuer, price, per_tx=per_tx, gas_cap=gas_cap)


def publish_many(url: str, key: bytes, rows: list[list[Any]], *, per_tx: int = 100, in_flight: int = 20,
                 progress: Any = None) -> list[dict[str, Any]]:
    """Publish ``rows`` (publish arguments) ``per_tx`` records a transaction (``publishBatch``), ``in_flight``
    transactions at a time with consecutive nonces; wait for every receipt. One result per row, in order
    (a reverted batch fails each of its rows with the batch's reason)."""
    from chainshare.crypto.secp import address_of_private_key
    from chainshare.ledger.txs import sign_eip1559

    results: list[dict[str, Any]] = []
    with NodeClient(url, timeout=120) as client:
        sender = "0x" + address_of_private_key(key).hex()
        chain_id = int(client.rpc("eth_chainId"), 16)
        nonce = int(client.rpc("eth_getTransactionCount", sender, "pending"), 16)
        batches = plan_publish(client, sender, rows, per_tx=per_tx)
        for start in range(0, len(batches), in_flight):
            sent = []
            for batch in batches[start:start + in_flight]:
                raw = sign_eip1559(key, chain_id=chain_id, nonce=nonce, to=CREDIT_REGISTRY, data=batch.data,
                                   gas=batch.gas)
                sent.append((batch.rows, client.rpc("eth_sendRawTransaction", "0x" + raw.hex())))
                nonce += 1
            for chunk, tx_hash in sent:
                outcome = _outcome(client.wait_for_receipt(tx_hash, 300), "publish")
                if outcome["status"] == "success":
                    ids = [e["args"]["id"] for e in outcome["events"] if e["event"] == "RecordPublished"]
                    results += [{"status": "success", "record": rid, "transaction": outcome["transaction"],
                                 "block": outcome["block"]} for rid in ids]
                else:
                    results += [dict(outcome) for _ in chunk]
                if progress is not None:
                    progress(len(chunk))
    return results


# --------------------------------------------------------------------------- acting commands


def _actor(kw: dict[str, Any]) -> tuple[Any, ...]:
    return (kw.pop("devnet_dir"), kw.pop("as_agency"), kw.pop("node_url"), kw.pop("keystore"),
            kw.pop("password_file"))


_record_options = [
    click.option("--subject", help="USCC of an organisation, or a person handle P-<64 hex> from a registrar."),
    click.option("--category", help="Category code, e.g. administrative_penalty."),
    click.option("--polarity", type=click.Choice(["positive", "negative"])),
    click.option("--severity", type=click.IntRange(1, 5)),
    click.option("--document", "document_number", help="Decision document number."),
    click.option("--authority", help="Deciding authority."),
    click.option("--legal-basis", "legal_basis"),
    click.option("--summary", help="Public summary (organisations); for a person only its hash goes on chain."),
    click.option("--decision-date", "decision_date", help="YYYY-MM-DD (default: now, by block time)."),
    click.option("--effective-from", "effective_from", help="YYYY-MM-DD (default: the decision date)."),
    click.option("--min-period", "min_period", help="Minimum display period, e.g. 90d (before repair)."),
    click.option("--max-period", "max_period", help="Maximum display period, e.g. 3y as 1095d."),
    click.option("--evidence-hash", "evidence_hash", help="Keccak-256 of the evidence (0x + 64 hex)."),
    click.option("--evidence", "evidence_file", type=click.Path(dir_okay=False, path_type=Path),
                 help="Evidence file (its Keccak-256 goes on chain)."),
]


def record_options(fn: Any) -> Any:
    for opt in reversed(_record_options):
        fn = opt(fn)
    return fn


def _row_from_options(kw: dict[str, Any]) -> dict[str, str]:
    evidence_file = kw.pop("evidence_file", None)
    row = {k: (str(v) if v is not None else "") for k, v in kw.items() if k in CSV_COLUMNS}
    if evidence_file is not None:
        row["evidence_hash"] = "0x" + keccak256(evidence_file.read_bytes()).hex()
    return row


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"subject", "category", "polarity", "severity", "document_number", "authority", "legal_basis",
                   "max_period", "evidence_hash"} - set(reader.fieldnames or [])
        if missing:
            raise InvalidInput(f"{path}: missing columns {', '.join(sorted(missing))} (columns: "
                               f"{', '.join(CSV_COLUMNS)})")
        rows = []
        for row in reader:
            rows.append(row)
            if len(rows) > MAX_CSV_ROWS:
                raise InvalidInput(f"{path}: more than {MAX_CSV_ROWS} rows; split the file")
    return rows


@group.command("publish")
@record_options
@click.option("--csv", "csv_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Publish every record of a CSV (columns: " + ", ".join(CSV_COLUMNS) + ").")
@click.option("--per-tx", type=click.IntRange(1, 200), default=100, show_default=True,
              help="Records per transaction at most with --csv (publishBatch); a batch also stays under a tenth "
                   "of a block's gas and the 128 KiB transaction limit.")
@click.option("--in-flight", type=click.IntRange(1, 1000), default=20, show_default=True,
              help="Transactions in flight at a time with --csv.")
@acting_options
@json_option
def publish(**kw: Any) -> None:
    """Publish a credit record (or every record of --csv) as an authorised issuer agency."""
    as_json, csv_file, per_tx, in_flight = kw.pop("as_json"), kw.pop("csv_file"), kw.pop("per_tx"), kw.pop("in_flight")
    actor = _actor(kw)
    url, key = resolve_actor(*actor)
    assert key is not None
    now = _chain_now(url)
    if csv_file is None:
        args = record_args(_row_from_options(kw), now)
        result = _send(url, key, _encode("publish", *args), "publish")
        emit(result, as_json, f"publish: {result['status']}" + (f", record {result['record']}" if "record" in result
                                                                 else f": {result.get('reason')}"))
        if result["status"] != "success":
            raise click.exceptions.Exit(1)
        return
    if any(kw.get(k) for k in ("subject", "category", "summary")):
        raise InvalidInput("give either --csv FILE or the record's options, not both")
    rows = []
    for i, row in enumerate(_read_csv(csv_file), start=2):
        try:
            rows.append(record_args(row, now))
        except InvalidInput as exc:
            raise InvalidInput(f"{csv_file} line {i}: {exc.message}") from exc
    started = time.monotonic()
    show = not as_json and sys.stderr.isatty()
    with click.progressbar(length=len(rows), label="publishing", file=sys.stderr if show else open(os.devnull, "w"),
                           show_pos=True) as bar:
        results = publish_many(url, key, rows, per_tx=per_tx, in_flight=in_flight, progress=bar.update)
    failed = [dict(r, line=i + 2) for i, r in enumerate(results) if r["status"] != "success"]
    summary = {"published": len(results) - len(failed), "failed": len(failed), "failures": failed[:100],
               "records": [r.get("record") for r in results], "seconds": round(time.monotonic() - started, 3),
               "block": max((r["block"] for r in results if "block" in r), default=None)}
    emit(summary, as_json, f"published {summary['published']} records, {len(failed)} failed "
                           f"in {summary['seconds']} s")
    if failed:
        raise click.exceptions.Exit(1)


def _current(url: str, record_id: int) -> dict[str, Any]:
    from chainshare.cli.dataset import api_get

    return dict(api_get(url, f"/credit/records/{record_id}"))


@group.command("correct")
@click.argument("record_id", type=click.IntRange(1, 2**64 - 1))
@record_options
@click.option("--reason", required=True, help="Why the record is corrected (e.g. the objection upheld).")
@acting_options
@json_option
def correct(record_id: int, reason: str, **kw: Any) -> None:
    """Append a corrected version of RECORD_ID (fields not given keep their current values)."""
    as_json = kw.pop("as_json")
    actor = _actor(kw)
    url, _ = resolve_actor(*actor)
    cur = _current(url, record_id)
    given = _row_from_options(kw)
    if given.get("subject") or given.get("category"):
        raise InvalidInput("a correction keeps the subject and category (withdraw and publish anew to change them)")
    row = {"subject": cur["subject"], "category": cur["category"], "polarity": cur["polarity"],
           "severity": str(cur["severity"]), "document_number": cur["documentNumber"], "authority": cur["authority"],
           "legal_basis": cur["legalBasis"], "summary": cur["summary"], "summary_hash": cur["summaryHash"],
           "decision_date": str(cur["decisionDate"]), "effective_from": str(cur["effectiveFrom"]),
           "min_period": f"{cur['displayMinSeconds']}s", "max_period": f"{cur['displayMaxSeconds']}s",
           "evidence_hash": cur["evidenceHash"]}
    row.update({k: v for k, v in given.items() if v})
    args = record_args(row, _chain_now(url))
    _act("correct", [record_id, *args[2:], reason], actor, as_json)


@group.command("object")
@click.argument("record_id", type=click.IntRange(1, 2**64 - 1))
@click.option("--reason", required=True)
@acting_options
@json_option
def object_(record_id: int, reason: str, **kw: Any) -> None:
    """File an objection to RECORD_ID (the issuer must answer by the deadline Governance set)."""
    as_json = kw.pop("as_json")
    _act("fileObjection", [record_id, reason], _actor(kw), as_json)


@group.command("resolve")
@click.argument("record_id", type=click.IntRange(1, 2**64 - 1))
@click.option("--review", "action", flag_value="review", help="Take the objection under review.")
@click.option("--uphold", "action", flag_value="uphold", help="Keep the record as it is (needs --note).")
@click.option("--note", default="")
@acting_options
@json_option
def resolve(record_id: int, action: str | None, note: str, **kw: Any) -> None:
    """Answer an objection as the issuer: --review, or --uphold --note (a correction answers it otherwise)."""
    as_json = kw.pop("as_json")
    if action is None:
        raise InvalidInput("say --review or --uphold (to correct the record, use `credit correct`)")
    if action == "review":
        _act("startReview", [record_id], _actor(kw), as_json)
    else:
        _act("upholdRecord", [record_id, note], _actor(kw), as_json)


@group.command("repair")
@click.argument("record_id", type=click.IntRange(1, 2**64 - 1))
@click.option("--reason", help="Request a repair (after the minimum display period).")
@click.option("--approve", "decision", flag_value="approve", help="As the issuer: approve the pending request.")
@click.option("--reject", "decision", flag_value="reject", help="As the issuer: reject the pending request.")
@click.option("--note", default="")
@acting_options
@json_option
def repair(record_id: int, reason: str | None, decision: str | None, note: str, **kw: Any) -> None:
    """Request credit repair of RECORD_ID (--reason), or decide a request as its issuer (--approve/--reject)."""
    as_json = kw.pop("as_json")
    if (reason is None) == (decision is None):
        raise InvalidInput("give --reason to request a repair, or --approve/--reject --note to decide one")
    if decision is None:
        _act("requestRepair", [record_id, reason], _actor(kw), as_json)
    else:
        _act("decideRepair", [record_id, decision == "approve", note], _actor(kw), as_json)


@group.command("withdraw")
@click.argument("record_id", type=click.IntRange(1, 2**64 - 1))
@click.option("--reason", required=True, help="E.g. the underlying decision was revoked.")
@acting_options
@json_option
def withdraw(record_id: int, reason: str, **kw: Any) -> None:
    """Withdraw RECORD_ID as its issuer (the record and its history stay on chain)."""
    as_json = kw.pop("as_json")
    _act("withdraw", [record_id, reason], _actor(kw), as_json)


@group.command("expire")
@click.argument("record_id", type=click.IntRange(1, 2**64 - 1))
@acting_options
@json_option
def expire(record_id: int, **kw: Any) -> None:
    """Mark RECORD_ID expired (any member, once its maximum period has passed by block time)."""
    as_json = kw.pop("as_json")
    _act("expire", [record_id], _actor(kw), as_json)


# --------------------------------------------------------------------------- reading commands


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
        from chainshare.cli.dataset import api_get

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
@click.option("--node", "node_url", help="Node URL.")
@click.option("--devnet", "devnet_dir", type=click.Path(file_okay=False, path_type=Path))
def watch(category: str | None, subject: str | None, from_height: int | None, cursor: str | None,
          cursor_file: Path | None, max_events: int | None, poll: float, node_url: str | None,
          devnet_dir: Path | None) -> None:
    """Stream new and changed records (one JSON object a line) as their blocks finalize: resumable from a
    height or cursor, no gaps and no duplicates across a restart with --cursor-file. Polls the node's
    finalized logs (eth_getLogs); a websocket subscription can replace the polling without changing output."""
    from chainshare.credit import query
    from chainshare.credit.events import RpcSource, format_cursor, parse_cursor

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
    with NodeClient(_node_url(node_url, devnet_dir), timeout=60) as client:
        src = RpcSource(client)
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
            last = query.watch(src, after, topics, on_event, poll_s=poll, stop=stop)
        except KeyboardInterrupt:
            return
        except ChainshareError:
            raise
    if cursor_file is not None and max_events is None:
        cursor_file.write_text(format_cursor(last) + "\n")


# --------------------------------------------------------------------------- persons (registrar side)


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
        out = client.rpc("eth_call", {"to": "0x" + CREDIT_REGISTRY.hex(),
                                      "data": "0x" + _encode("isRegistrar", agency).hex()}, "latest")
    if not abi.decode_values(["bool"], bytes.fromhex(out[2:]))[0]:
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


# --------------------------------------------------------------------------- Governance of the registry

govern = click.Group("govern", help="Propose, vote and execute CreditRegistry configuration through Governance.")
group.add_command(govern)


def _governance_tx(kw: dict[str, Any], data: bytes, what: str) -> dict[str, Any]:
    from chainshare.execution.contracts.addresses import GOVERNANCE

    url, key = resolve_actor(*_actor(kw))
    assert key is not None
    from chainshare.crypto.secp import address_of_private_key
    from chainshare.ledger.txs import sign_eip1559

    with NodeClient(url) as client:
        sender = "0x" + address_of_private_key(key).hex()
        chain_id = int(client.rpc("eth_chainId"), 16)
        nonce = int(client.rpc("eth_getTransactionCount", sender, "pending"), 16)
        raw = sign_eip1559(key, chain_id=chain_id, nonce=nonce, to=GOVERNANCE, data=data, gas=5_000_000)
        receipt = client.wait_for_receipt(client.rpc("eth_sendRawTransaction", "0x" + raw.hex()), 60)
    out: dict[str, Any] = {"transaction": receipt["transactionHash"], "block": int(receipt["blockNumber"], 16),
                           "status": "success" if receipt["status"] == "0x1" else "reverted"}
    if receipt["status"] != "0x1":
        out["reason"] = receipt.get("revertReason")
    elif what == "propose":
        out["proposal"] = int(receipt["logs"][0]["topics"][1], 16)
    return out


def _finish(out: dict[str, Any], as_json: bool, human: str) -> None:
    emit(out, as_json, human if out["status"] == "success" else f"reverted: {out.get('reason')}")
    if out["status"] != "success":
        raise click.exceptions.Exit(1)


def _propose(kw: dict[str, Any], method: str, args: list[Any], description: str) -> None:
    from chainshare.execution.contracts.governance import Governance

    as_json = kw.pop("as_json")
    gov = Governance()
    spec = next(s for s in gov.methods.values() if s.name == "propose")
    data = spec.selector + abi.encode_values([p.type for p in spec.params],
                                             ["0x" + CREDIT_REGISTRY.hex(), _encode(method, *args), description])
    out = _governance_tx(kw, data, "propose")
    _finish(out, as_json, f"proposal {out.get('proposal')}: {description} (agencies vote, then execute it)")


@govern.command("set-category")
@click.argument("code")
@click.argument("title")
@click.option("--inactive", is_flag=True, help="Close the category to new records.")
@acting_options
@json_option
def govern_set_category(code: str, title: str, inactive: bool, **kw: Any) -> None:
    """Propose defining (or closing) a credit category."""
    _propose(kw, "setCategory", [code, title, not inactive], f"credit category {code}: {title}")


@govern.command("set-issuer")
@click.argument("category")
@click.argument("agency")
@click.option("--revoke", is_flag=True)
@acting_options
@json_option
def govern_set_issuer(category: str, agency: str, revoke: bool, **kw: Any) -> None:
    """Propose authorising AGENCY to issue CATEGORY records (or revoking it)."""
    _propose(kw, "setIssuer", [category, agency, not revoke],
             f"{'revoke' if revoke else 'authorise'} {agency} as issuer of {category}")


@govern.command("set-registrar")
@click.argument("agency")
@click.option("--revoke", is_flag=True)
@acting_options
@json_option
def govern_set_registrar(agency: str, revoke: bool, **kw: Any) -> None:
    """Propose granting (or revoking) the credit_registrar role."""
    _propose(kw, "setRegistrar", [agency, not revoke], f"{'revoke' if revoke else 'grant'} credit_registrar {agency}")


@govern.command("set-objection-deadline")
@click.argument("period")
@acting_options
@json_option
def govern_set_deadline(period: str, **kw: Any) -> None:
    """Propose the issuers' deadline to answer an objection, e.g. 20d."""
    seconds = parse_period(period, "deadline")
    _propose(kw, "setObjectionDeadline", [seconds], f"objection deadline {period}")


@govern.command("install-rule")
@click.argument("rule_file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@acting_options
@json_option
def govern_install_rule(rule_file: Path, **kw: Any) -> None:
    """Propose installing a scoring rule (JSON) as the next rule version."""
    from chainshare.execution.contracts.credit_registry import canonicalize_scoring_rule

    try:
        canonical = canonicalize_scoring_rule(rule_file.read_text())
    except ValueError as exc:
        raise InvalidInput(f"{rule_file}: {exc}") from exc
    _propose(kw, "installScoringRule", [canonical], f"scoring rule {json.loads(canonical)['name']}")


@govern.command("vote")
@click.argument("proposal", type=click.IntRange(1))
@click.option("--no", "against", is_flag=True, help="Vote against.")
@acting_options
@json_option
def govern_vote(proposal: int, against: bool, **kw: Any) -> None:
    """Vote on a Governance proposal."""
    from chainshare.execution.contracts.governance import Governance

    as_json = kw.pop("as_json")
    spec = next(s for s in Governance().methods.values() if s.name == "vote")
    out = _governance_tx(kw, spec.selector + abi.encode_values(["uint256", "bool"], [proposal, not against]), "vote")
    _finish(out, as_json, f"voted {'no' if against else 'yes'} on proposal {proposal}")


@govern.command("execute")
@click.argument("proposal", type=click.IntRange(1))
@acting_options
@json_option
def govern_execute(proposal: int, **kw: Any) -> None:
    """Execute a proposal that has enough yes votes (reverts with the count otherwise)."""
    from chainshare.execution.contracts.governance import Governance

    as_json = kw.pop("as_json")
    spec = next(s for s in Governance().methods.values() if s.name == "execute")
    out = _governance_tx(kw, spec.selector + abi.encode_values(["uint256"], [proposal]), "execute")
    _finish(out, as_json, f"proposal {proposal} executed")
