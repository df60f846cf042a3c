"""``chainshare credit`` acting commands: publish and manage credit records.

Acting commands (publish, correct, object, resolve, repair, withdraw, expire) sign CreditRegistry calls as an
agency (``--devnet DIR --as AGENCY`` or ``--node URL --keystore FILE``); subjects are validated here before
anything is sent (the contract validates them again). ``publish --csv FILE`` sends many records in
``publishBatch`` transactions (all or nothing per transaction), pipelined with consecutive nonces, with a
progress bar. A person record's details (its summary, only hashed on chain) go into the issuer node's
vault as a dataset (``chainshare.credit.details``), read through a governed fetch.
Exit codes as elsewhere: 0 ok, 1 the operation failed (e.g. reverted), 2 bad input.
"""

from __future__ import annotations

import csv
import os
import re
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import click

from chainshare.cli.common import acting_options, emit, json_option, parse_hash32, resolve_actor
from chainshare.cli.credit.details_store import read_details_policy, store_person_details
from chainshare.client import NodeClient, call_view, transact
from chainshare.credit.batches import (
    Batch,
    choose_sstore_word,
    plan_batches,
    sstore_word_prices,
)
from chainshare.credit.query import check_subject
from chainshare.crypto.hashing import keccak256
from chainshare.decimal_text import parse_ascii_decimal
from chainshare.errors import ChainshareError, InvalidInput, NotFound
from chainshare.execution.contracts.addresses import CREDIT_REGISTRY
from chainshare.execution.contracts.credit_registry import (
    NEGATIVE,
    POSITIVE,
    CreditRegistry,
)
from chainshare.execution.runtime import encode_call

group = click.Group("credit", help="Credit records: publish, correct, object, repair, show, score, watch.")

REGISTRY = CreditRegistry()
MAX_CSV_ROWS = 1_000_000
_PERIOD = re.compile(r"^([0-9]{1,10})([smhd]?)$")
_UNITS = {"": 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
CSV_COLUMNS = ("subject", "category", "polarity", "severity", "document_number", "authority", "legal_basis",
               "summary", "decision_date", "effective_from", "min_period", "max_period", "evidence_hash")


# --------------------------------------------------------------------------- input parsing


parse_subject = check_subject  # a USCC or person handle, else InvalidInput naming the problem


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
    seconds = parse_ascii_decimal(t, max_digits=12)
    if seconds is not None:
        return seconds
    try:
        if len(t) == 10:
            return int(datetime.combine(date.fromisoformat(t), datetime.min.time(), UTC).timestamp())
        dt = datetime.fromisoformat(t)
        return int((dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp())
    except ValueError:
        raise InvalidInput(f"{what} {text!r} must be YYYY-MM-DD, an ISO date-time or unix seconds") from None


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
    severity = parse_ascii_decimal(need("severity"), max_digits=1)
    if severity is None or not 1 <= severity <= 5:
        raise InvalidInput("severity must be 1..5")
    summary = row.get("summary") or ""
    summary_hash = bytes(32)
    if subject.startswith("P-"):
        if summary:
            summary_hash, summary = keccak256(summary.encode()), ""  # a person's summary never goes on chain
        elif row.get("summary_hash"):
            summary_hash = parse_hash32(row["summary_hash"], "summary hash")
    decision = parse_time(row.get("decision_date"), "decision date") or now
    effective = parse_time(row.get("effective_from"), "effective from") or decision
    return [subject, need("category"), parse_polarity(need("polarity")), severity, need("document_number"),
            need("authority"), need("legal_basis"), summary, summary_hash, decision, effective,
            parse_period(row.get("min_period") or "0s", "minimum period"),
            parse_period(need("max_period"), "maximum period"), parse_hash32(need("evidence_hash"), "evidence hash")]


# --------------------------------------------------------------------------- sending


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
    with NodeClient(url) as client:
        return _outcome(transact(client, key, CREDIT_REGISTRY, data, gas=3_000_000, timeout=60), method)


def _act(method: str, args: list[Any], actor: tuple[Any, ...], as_json: bool) -> None:
    url, key = resolve_actor(*actor)
    assert key is not None
    result = _send(url, key, encode_call(REGISTRY, method, *args), method)
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
    """The member agency of account ``sender``, from Membership on the node (ExecutionReverted "account is not
    a member of any active agency" if it belongs to none)."""
    from chainshare.execution.contracts.membership import Membership

    return str(call_view(client, Membership(), "agencyOf", sender)[0])


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
@click.option("--details-policy", "details_policy_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Cedar policy of a person record's details in this agency's vault (default: only this agency "
                   "reads them); see `credit details`.")
@acting_options
@json_option
def publish(**kw: Any) -> None:
    """Publish a credit record (or every record of --csv) as an authorised issuer agency."""
    as_json, csv_file, per_tx, in_flight = kw.pop("as_json"), kw.pop("csv_file"), kw.pop("per_tx"), kw.pop("in_flight")
    details_policy_file = kw.pop("details_policy_file")
    actor = _actor(kw)
    url, key = resolve_actor(*actor)
    assert key is not None
    now = _chain_now(url)
    if csv_file is None:
        row = _row_from_options(kw)
        args = record_args(row, now)
        result = _send(url, key, encode_call(REGISTRY, "publish", *args), "publish")
        if result["status"] == "success" and _has_details(row):
            result["details"] = store_person_details(url, key, result["record"], 1, row["subject"], row["summary"],
                                                     read_details_policy(details_policy_file))
        emit(result, as_json, f"publish: {result['status']}" + (f", record {result['record']}" if "record" in result
                                                                 else f": {result.get('reason')}")
             + (f", details in dataset {result['details']['dataset_id']}" if "details" in result else ""))
        if result["status"] != "success":
            raise click.exceptions.Exit(1)
        return
    if any(kw.get(k) for k in ("subject", "category", "summary")):
        raise InvalidInput("give either --csv FILE or the record's options, not both")
    rows = []
    csv_rows = _read_csv(csv_file)
    for i, row in enumerate(csv_rows, start=2):
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
    policy = read_details_policy(details_policy_file)
    details = [store_person_details(url, key, r["record"], 1, row["subject"].strip(), row["summary"], policy)
               for row, r in zip(csv_rows, results, strict=True) if r["status"] == "success" and _has_details(row)]
    summary = {"published": len(results) - len(failed), "failed": len(failed), "failures": failed[:100],
               "details_stored": len(details),
               "records": [r.get("record") for r in results], "seconds": round(time.monotonic() - started, 3),
               "block": max((r["block"] for r in results if "block" in r), default=None)}
    emit(summary, as_json, f"published {summary['published']} records, {len(failed)} failed "
                           f"in {summary['seconds']} s")
    if failed:
        raise click.exceptions.Exit(1)


def _has_details(row: dict[str, str]) -> bool:
    """True for a person record given with its summary: the summary goes into the issuer's vault."""
    return (row.get("subject") or "").strip().startswith("P-") and bool(row.get("summary"))


def _current(url: str, record_id: int) -> dict[str, Any]:
    from chainshare.cli.signing import api_get

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
    if not (_has_details(given | {"subject": cur["subject"]})):
        _act("correct", [record_id, *args[2:], reason], actor, as_json)
        return
    # A person's new summary: the new version's details go into the details dataset as its next version.
    url, key = resolve_actor(*actor)
    assert key is not None
    result = _send(url, key, encode_call(REGISTRY, "correct", record_id, *args[2:], reason), "correct")
    if result["status"] == "success":
        from chainshare.cli.signing import api_get

        try:
            dataset = api_get(url, f"/credit/records/{record_id}/details")["dataset"]["id"]
        except NotFound:  # published without details: they start now, readable by the issuer only
            dataset = None
        result["details"] = store_person_details(url, key, record_id, int(cur["version"]) + 1, cur["subject"],
                                                 given["summary"], None, dataset_id=dataset)
    emit(result, as_json, f"correct: {result['status']} in block {result['block']}"
                          + (f": {result.get('reason')}" if result["status"] != "success" else ""))
    if result["status"] != "success":
        raise click.exceptions.Exit(1)


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
