"""Reading the credit registry back from events: scores at any height under the rule in force then, provenance
bundles verified offline with the genesis alone (and refused when anything in them is altered), and the
watch: every record event exactly once, in order, across a reconnect from a cursor."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from credit_kit import DAY, ISSUER_A, ISSUER_B, ORG, OUTSIDER, RULE, CreditKit, ok, record_id_of

from chainshare.credit.events import CreditEvent, format_cursor, parse_cursor
from chainshare.credit.provenance import ProvenanceError, build_provenance, verify_provenance
from chainshare.credit.query import get_score, subject_json, watch, watch_topics
from chainshare.credit.scoring import compute_score, parse_rule
from chainshare.errors import InvalidInput, NotFound


@pytest.fixture
def kit() -> CreditKit:
    k = CreditKit()
    k.configure()
    return k


def test_score_follows_records_decay_caps_and_rule_versions(kit: CreditKit) -> None:
    with pytest.raises(NotFound, match="no scoring rule"):
        get_score(kit.source, ORG)
    ok(kit.govern("installScoringRule", json.dumps(RULE)))
    penalty = record_id_of(kit.publish(severity=3, dmin=0))
    h_pub = kit.source.head_height()
    s = get_score(kit.source, ORG)
    assert s["score"] == 900 and s["rule_version"] == 1
    assert s["contributions"] == [{"record": penalty, "version": 1, "category": "penalty", "severity": 3,
                                   "points": -100, "age_days": 0, "weight": -100}]
    for sev in (1, 2):
        ok(kit.publish(ISSUER_B, category="red_list", polarity=1, severity=sev, summary="Model taxpayer"))
    s = get_score(kit.source, ORG)
    assert s["categories"]["red_list"] == {"sum": 130, "counted": 100}  # capped
    assert s["score"] == 1000
    # 50 days later the penalty weighs half (linear decay over 100 days).
    start = kit.now
    kit.call(OUTSIDER, "recordCount", at=start + 50 * DAY)
    assert get_score(kit.source, ORG)["categories"]["penalty"]["counted"] == -50
    # A new rule version: today's score uses it, the old height keeps the old rule and the old answer.
    ok(kit.govern("installScoringRule", json.dumps(dict(RULE, name="v2", base=500))))
    assert get_score(kit.source, ORG)["rule_version"] == 2
    old = get_score(kit.source, ORG, h_pub)
    assert (old["score"], old["rule_version"], old["height"]) == (900, 1, h_pub)
    assert get_score(kit.source, ORG, rule_version=1)["rule_version"] == 1
    # Repairing the penalty removes it from the score.
    ok(kit.call(OUTSIDER, "requestRepair", penalty, "paid"))
    ok(kit.call(ISSUER_A, "decideRepair", penalty, True, "ok"))
    assert "penalty" not in get_score(kit.source, ORG)["categories"]


def test_score_is_a_pure_function_of_records_rule_and_time(kit: CreditKit) -> None:
    ok(kit.govern("installScoringRule", json.dumps(RULE)))
    ok(kit.publish(severity=5, dmin=0))
    from chainshare.credit.query import get_subject_records

    _, records = get_subject_records(kit.source, ORG)
    rule = parse_rule(1, 0, json.dumps(RULE))
    a = compute_score(ORG, records, rule, kit.now + 10 * DAY)
    b = compute_score(ORG, list(reversed(records)), rule, kit.now + 10 * DAY)
    assert a == b and a["categories"]["penalty"]["counted"] == -270  # -300 * 90/100
    assert compute_score(ORG, records, rule, kit.now + 200 * DAY)["score"] == 1000  # fully decayed


def test_subject_view_and_bad_input(kit: CreditKit) -> None:
    ok(kit.publish())
    view = subject_json(kit.source, ORG)
    assert [r["status"] for r in view["records"]] == ["active"]
    with pytest.raises(InvalidInput, match="expected 'L'"):
        subject_json(kit.source, "91110000600037341X")
    with pytest.raises(InvalidInput, match="not in 0.."):
        subject_json(kit.source, ORG, 10**6)


def _genesis_doc(kit: CreditKit) -> bytes:
    return json.dumps(kit.chain.genesis.to_json()).encode()


def test_provenance_verifies_offline_with_the_genesis_alone(kit: CreditKit) -> None:
    rid = record_id_of(kit.publish())
    ok(kit.call(ISSUER_B, "fileObjection", rid, "wrong amount"))
    ok(kit.correct(rid))
    bundle = json.loads(json.dumps(build_provenance(kit.chain.chain, kit.source, rid)))  # as sent over HTTP
    report = verify_provenance(bundle, _genesis_doc(kit))
    assert report["verified"] and report["issuer"] == ISSUER_A and report["versions"] == 2
    assert [s["event"] for s in report["steps"]] == ["RecordPublished", "ObjectionFiled", "RecordCorrected",
                                                     "ObjectionResolved"]


def _tampered(bundle: dict[str, Any], fn: Any) -> dict[str, Any]:
    out = copy.deepcopy(bundle)
    fn(out)
    return out


def test_altered_provenance_is_refused(kit: CreditKit) -> None:
    rid = record_id_of(kit.publish())
    ok(kit.correct(rid))
    bundle = json.loads(json.dumps(build_provenance(kit.chain.chain, kit.source, rid)))
    doc = _genesis_doc(kit)

    def swap_summary(b: dict[str, Any]) -> None:
        b["steps"][0]["args"]["summary"] = "nothing happened"

    def drop_first(b: dict[str, Any]) -> None:
        b["steps"].pop(0)

    def other_block_qc(b: dict[str, Any]) -> None:
        b["steps"][0]["qc"] = b["steps"][1]["qc"]

    def bad_path(b: dict[str, Any]) -> None:
        b["steps"][0]["receipt_proof"]["size"] += 1

    def index_in_other_digits(b: dict[str, Any]) -> None:  # int() reads "٠" as 0, the index it replaces
        proof = b["steps"][0]["receipt_proof"]
        proof["index"] = str(proof["index"]).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))

    def flip_qc_signature(b: dict[str, Any]) -> None:
        q = b["steps"][0]["qc"]
        b["steps"][0]["qc"] = q[:-4] + ("00" if q[-4:-2] != "00" else "11") + q[-2:]

    for fn, message in ((swap_summary, "differs from the one claimed"), (drop_first, "does not start"),
                        (other_block_qc, "certifies another block"), (bad_path, "not in block"),
                        (index_in_other_digits, "receipt_proof must be"),
                        (flip_qc_signature, "QC")):
        with pytest.raises(ProvenanceError, match=message):
            verify_provenance(_tampered(bundle, fn), doc)
    other = json.loads(doc)
    other["chain_id"] = 9
    with pytest.raises(ProvenanceError, match="another chain"):
        verify_provenance(bundle, json.dumps(other).encode())


class Polls:
    """stop() after ``n`` polls (the watch sleeps once after each poll)."""

    def __init__(self, n: int) -> None:
        self.left = n

    def sleep(self, _: float) -> None:
        self.left -= 1

    def stop(self) -> bool:
        return self.left <= 0


def _watch(kit: CreditKit, after: tuple[int, int], topics: list[bytes | None], sink: list[CreditEvent],
           polls: int = 2) -> tuple[int, int]:
    p = Polls(polls)
    return watch(kit.source, after, topics, sink.append, poll_s=0, stop=p.stop, sleep=p.sleep)


def test_watch_delivers_each_event_once_in_order_across_a_reconnect(kit: CreditKit) -> None:
    a = record_id_of(kit.publish())
    got: list[CreditEvent] = []
    cursor = _watch(kit, (0, -1), watch_topics(None, ORG), got)
    assert [e.name for e in got] == ["RecordPublished"]
    # Disconnected: meanwhile two more records and a correction land (one for another subject).
    ok(kit.publish(ISSUER_B))
    ok(kit.publish(ISSUER_B, subject="91350100M000100Y43"))
    ok(kit.correct(a))
    _watch(kit, parse_cursor(format_cursor(cursor)), watch_topics(None, ORG), got)
    assert [e.name for e in got] == ["RecordPublished", "RecordPublished", "RecordCorrected"]
    assert len({e.position for e in got}) == 3 and [e.position for e in got] == sorted(e.position for e in got)
    # Resuming from an event's own cursor skips exactly that event and what came before.
    rest: list[CreditEvent] = []
    _watch(kit, parse_cursor(got[1].cursor), watch_topics("penalty", None), rest)
    assert [(e.name, e.args["subject"] if "subject" in e.args else None) for e in rest] == [
        ("RecordPublished", "91350100M000100Y43"), ("RecordCorrected", ORG)]
    assert rest[1].position == got[2].position
    # A stop between two events of one poll returns the cursor of the last one delivered.
    one: list[CreditEvent] = []
    delivered = {"n": 0}

    def stop_after_one() -> bool:
        return delivered["n"] >= 1

    def on_event(ev: CreditEvent) -> None:
        one.append(ev)
        delivered["n"] += 1

    last = watch(kit.source, (0, -1), watch_topics(None, ORG), on_event, poll_s=0, stop=stop_after_one,
                 sleep=lambda _: None)
    assert len(one) == 1 and last == one[0].position
    with pytest.raises(InvalidInput):
        parse_cursor("12")


def test_watch_polls_while_no_websocket_answers(kit: CreditKit) -> None:
    """With no websocket to subscribe to, the watch's head source falls back to polling the chain (and
    retries the subscription later), so the watch still delivers everything."""
    import socket

    from chainshare.client import HeadSubscription

    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]  # closed below: nothing listens there
    a = record_id_of(kit.publish())
    heads = HeadSubscription(f"ws://127.0.0.1:{port}/", kit.source.head_height, poll_s=0, retry_s=60)
    got: list[CreditEvent] = []
    calls = {"n": 0}
    later: list[int] = []

    def next_head(scanned: int) -> int:
        calls["n"] += 1
        if calls["n"] == 1:  # a record lands while the watch waits: only the polled head can reveal it
            later.append(record_id_of(kit.publish(ISSUER_B)))
        return heads.next_head(scanned)

    watch(kit.source, (0, -1), watch_topics(None, ORG), got.append, stop=lambda: calls["n"] >= 2,
          next_head=next_head)
    assert [e.args["id"] for e in got] == [a, *later] and heads.transport == "poll" and heads.connects == 0
    with pytest.raises(InvalidInput):
        HeadSubscription("http://127.0.0.1:1/", kit.source.head_height)
