"""CreditRegistry driven as transactions are: signed calls (encoded by web3 from the ABI) in certified blocks,
configured through Governance; every lifecycle transition, every refusal with its reason, and the events
folded back into the same state the contract holds."""

from __future__ import annotations

from typing import Any

import pytest
from credit_kit import (
    CR,
    DAY,
    ISSUER_A,
    ISSUER_B,
    ORG,
    OUTSIDER,
    RULE,
    CreditKit,
    events,
    ok,
    record_id_of,
    reverted,
)
from hexbytes import HexBytes
from web3 import Web3

from chainshare.credit.lifecycle import fold_records
from chainshare.crypto.hashing import keccak256
from chainshare.execution.contracts.credit_registry import validate_uscc

ORG2 = "91350100M000100Y43"  # another valid USCC


@pytest.fixture
def kit() -> CreditKit:
    k = CreditKit()
    k.configure()
    return k


def test_valid_uscc_fixtures() -> None:
    assert validate_uscc(ORG) == ORG and validate_uscc(ORG2) == ORG2


def test_configuration_is_governance_only() -> None:
    k = CreditKit()
    reason = reverted(k.call(ISSUER_A, "setCategory", "penalty", "Administrative penalty", True))
    assert "only Governance" in reason
    assert "only Governance" in reverted(k.call(ISSUER_A, "installScoringRule", "{}"))
    # Through Governance it works, and the decision is an event.
    receipt = ok(k.govern("setCategory", "penalty", "Administrative penalty", True))
    assert ("CategorySet", {"code": "penalty", "title": "Administrative penalty", "active": True}) in events(receipt)
    assert k.view("getCategory", "penalty") == ("Administrative penalty", True)
    # An issuer of an unknown agency or category is refused inside the governed call.
    assert reverted(k.govern("setIssuer", "penalty", "Nobody", True)) is not None
    assert k.view("isIssuer", "penalty", ISSUER_A) == (False,)


def test_authorised_issuers_publish_and_others_revert_with_a_reason(kit: CreditKit) -> None:
    first = record_id_of(kit.publish(ISSUER_A))
    second = record_id_of(kit.publish(ISSUER_B, summary="Late tax filing"))
    assert (first, second) == (1, 2)
    assert kit.view("recordsOf", ORG) == ((1, 2),)
    reason = reverted(kit.publish(OUTSIDER))
    assert reason == f"agency {OUTSIDER!r} is not authorised by Governance to issue 'penalty' records"
    # Issuer A is not authorised for the red list; an unknown category is named as such.
    assert "not authorised" in reverted(kit.publish(ISSUER_A, category="red_list", polarity=1))
    assert "no active credit category 'blacklist'" in reverted(kit.publish(ISSUER_A, category="blacklist"))
    # Revoking the authorisation through Governance stops further publishing.
    ok(kit.govern("setIssuer", "penalty", ISSUER_B, False))
    assert "not authorised" in reverted(kit.publish(ISSUER_B))


def test_publish_event_carries_the_whole_record_and_decodes_with_web3(kit: CreditKit) -> None:
    receipt = kit.publish()
    ((name, args),) = events(receipt)
    assert name == "RecordPublished"
    assert args["subject"] == ORG and args["issuer"] == ISSUER_A and args["version"] == 1
    assert args["subjectKey"] == keccak256(ORG.encode()) and args["categoryKey"] == keccak256(b"penalty")
    assert args["summaryHash"] == keccak256(b"Fined for false advertising")
    assert args["previousVersionHash"] == bytes(32)
    lg = receipt.logs[0]
    entry = {"address": Web3.to_checksum_address(lg.address), "topics": [HexBytes(t) for t in lg.topics],
             "data": HexBytes(lg.data), "blockHash": HexBytes(bytes(32)), "blockNumber": 1,
             "transactionHash": HexBytes(bytes(32)), "transactionIndex": 0, "logIndex": 0, "removed": False}
    decoded = CR.events.RecordPublished().process_log(entry)
    assert decoded["args"]["documentNumber"] == "SAMR-2025-001" and decoded["args"]["id"] == 1


@pytest.mark.parametrize(("subject", "message"), [
    ("91110000600037341X", "has check character 'X'; expected 'L' for 91110000600037341"),
    ("91110000600037341l", "must be written in canonical form '91110000600037341L'"),
    ("9111000060003734", "has 16 characters; a USCC has 18"),
    ("9111000060003734IL", "outside 0-9 and A-Y without I, O, S, V, Z"),
    ("11010519491231002X", "check character"),  # a resident ID number is never a subject
    ("P-1234", "a person's subject is a handle"),
])
def test_invalid_subjects_revert_naming_the_problem(kit: CreditKit, subject: str, message: str) -> None:
    assert message in reverted(kit.publish(subject=subject))


def test_person_records_carry_a_handle_and_a_summary_hash_only(kit: CreditKit) -> None:
    handle = "P-" + "ab" * 32
    assert "only the hash of its summary" in reverted(kit.publish(subject=handle, summary="Name: Zhang San"))
    assert "needs the summary hash" in reverted(kit.publish(subject=handle, summary=""))
    receipt = kit.publish(subject=handle, summary="", summary_hash=b"\x42" * 32)
    ((_, args),) = events(ok(receipt))
    assert args["subject"] == handle and args["summary"] == "" and args["summaryHash"] == b"\x42" * 32


@pytest.mark.parametrize(("change", "message"), [
    ({"polarity": 3}, "polarity must be 1"),
    ({"severity": 0}, "severity tier must be 1..5"),
    ({"dmin": 10, "dmax": 5}, "display periods"),
    ({"dmax": 0}, "display periods"),
    ({"evidence": bytes(32)}, "evidence hash must not be zero"),
    ({"summary": ""}, "summary must be 1.."),
    ({"summary_hash": b"\x01" * 32}, "summaryHash must be zero or keccak256(summary)"),
])
def test_malformed_records_revert(kit: CreditKit, change: dict[str, Any], message: str) -> None:
    assert message in reverted(kit.publish(**change))


def test_effective_before_decision_and_future_decision_revert(kit: CreditKit) -> None:
    assert "effectiveFrom must not be before" in reverted(kit.publish(decision=kit.now, effective=kit.now - 10))
    assert "in the future" in reverted(kit.publish(decision=kit.now + 3 * DAY))


def test_objection_then_correction_appends_a_linked_version(kit: CreditKit) -> None:
    rid = record_id_of(kit.publish())
    v1_hash = kit.view("getRecord", rid)[12]
    assert "no objection waiting for review" in reverted(kit.call(ISSUER_A, "startReview", rid))
    filed = ok(kit.call(ISSUER_B, "fileObjection", rid, "the fine amount is wrong"))
    ((name, args),) = events(filed)
    assert name == "ObjectionFiled" and args["deadline"] == kit.now + 20 * DAY and args["agency"] == ISSUER_B
    assert "already has an open objection" in reverted(kit.call(OUTSIDER, "fileObjection", rid, "again"))
    assert "only accounts of agency" in reverted(kit.call(ISSUER_B, "startReview", rid))
    ok(kit.call(ISSUER_A, "startReview", rid))
    assert kit.view("getRecord", rid)[5] == "under_review"
    assert "only accounts of agency" in reverted(kit.correct(rid, who=ISSUER_B))
    corrected = ok(kit.correct(rid))
    (c_name, c_args), (r_name, r_args) = events(corrected)
    assert (c_name, r_name) == ("RecordCorrected", "ObjectionResolved")
    assert c_args["version"] == 2 and c_args["previousVersionHash"] == v1_hash and r_args["outcome"] == 4
    record = kit.view("getRecord", rid)
    assert record[3] == 2 and record[5] == "corrected" and record[9] == 1  # version, objection, severity
    # Version 1 is still there, and version 2 points to it.
    v1 = kit.view("getVersion", rid, 1)
    v2 = kit.view("getVersion", rid, 2)
    assert v1[0] == v1_hash and v2[1] == v1_hash and v1[5] == b"\xee" * 32 and v2[5] == b"\xef" * 32


def test_objection_upheld_and_overdue(kit: CreditKit) -> None:
    rid = record_id_of(kit.publish())
    ok(kit.call(ISSUER_B, "fileObjection", rid, "not us"))
    filed_at = kit.now
    kit.call(OUTSIDER, "recordCount", at=filed_at + 20 * DAY + 5)  # any block: time passes
    record = kit.view("getRecord", rid)
    assert record[5] == "filed" and record[6] is True  # overdue: the issuer missed its deadline
    assert "note must be 1.." in reverted(kit.call(ISSUER_A, "upholdRecord", rid, ""))
    ((name, args),) = events(ok(kit.call(ISSUER_A, "upholdRecord", rid, "decision stands")))
    assert name == "ObjectionResolved" and args["outcome"] == 3
    record = kit.view("getRecord", rid)
    assert record[5] == "upheld" and record[6] is False
    assert "no open objection" in reverted(kit.call(ISSUER_A, "upholdRecord", rid, "again"))


def test_repair_only_after_the_minimum_period_then_not_displayed(kit: CreditKit) -> None:
    rid = record_id_of(kit.publish(dmin=30 * DAY))
    start = kit.view("getRecord", rid)[10]
    reason = reverted(kit.call(ISSUER_B, "requestRepair", rid, "fine paid"))
    assert reason == f"repair may be requested from block time {start + 30 * DAY} (after the minimum display period)"
    ok(kit.call(ISSUER_B, "requestRepair", rid, "fine paid, rectified", at=start + 30 * DAY))
    assert "already has a repair request" in reverted(kit.call(ISSUER_B, "requestRepair", rid, "again"))
    assert "only accounts of agency" in reverted(kit.call(ISSUER_B, "decideRepair", rid, True, "ok"))
    ((name, args),) = events(ok(kit.call(ISSUER_A, "decideRepair", rid, True, "rectification verified")))
    assert name == "RepairDecided" and args["approved"] is True
    assert kit.view("getRecord", rid)[4] == "repaired"
    assert "is repaired; objections are to active records" in reverted(kit.call(ISSUER_B, "fileObjection", rid, "x"))


def test_repair_rejected_keeps_the_record_and_positive_records_are_not_repaired(kit: CreditKit) -> None:
    rid = record_id_of(kit.publish(dmin=0))
    ok(kit.call(ISSUER_B, "requestRepair", rid, "please"))
    ok(kit.call(ISSUER_A, "decideRepair", rid, False, "not rectified"))
    assert kit.view("getRecord", rid)[4] == "active" and kit.view("getRecord", rid)[7] == "rejected"
    red = record_id_of(kit.publish(ISSUER_B, category="red_list", polarity=1, severity=1, summary="Model taxpayer"))
    assert "only negative records" in reverted(kit.call(ISSUER_A, "requestRepair", red, "?"))


def test_expiry_by_block_time(kit: CreditKit) -> None:
    rid = record_id_of(kit.publish(dmin=DAY, dmax=10 * DAY))
    start = kit.view("getRecord", rid)[10]
    reason = reverted(kit.call(OUTSIDER, "expire", rid))
    assert reason == f"record {rid} is displayed until block time {start + 10 * DAY}"
    kit.call(OUTSIDER, "recordCount", at=start + 10 * DAY)  # a block at the end of the period
    assert kit.view("getRecord", rid)[4] == "expired"  # shown expired before anyone sends expire
    ((name, args),) = events(ok(kit.call(OUTSIDER, "expire", rid)))
    assert name == "RecordExpired" and args["expiredAt"] == start + 10 * DAY
    assert "only an active record expires" in reverted(kit.call(OUTSIDER, "expire", rid))


def test_withdraw_by_issuer_only_and_final(kit: CreditKit) -> None:
    rid = record_id_of(kit.publish())
    assert "only accounts of agency" in reverted(kit.call(ISSUER_B, "withdraw", rid, "revoked"))
    ((name, _),) = events(ok(kit.call(ISSUER_A, "withdraw", rid, "decision revoked by court ruling 2025-7")))
    assert name == "RecordWithdrawn"
    assert kit.view("getRecord", rid)[4] == "withdrawn"
    assert "only an active record can be corrected" in reverted(kit.correct(rid))
    assert "is withdrawn" in reverted(kit.call(ISSUER_A, "withdraw", rid, "again"))


def test_non_members_and_unknown_records(kit: CreditKit) -> None:
    assert "no credit record 99" in reverted(kit.call(ISSUER_A, "fileObjection", 99, "x"))
    assert "no credit record 0" in reverted(kit.call(ISSUER_A, "expire", 0))


def test_scoring_rules_are_versions_installed_by_governance(kit: CreditKit) -> None:
    import json

    assert "must be" in reverted(kit.govern("installScoringRule", json.dumps({"name": "x"})))
    bad = dict(RULE, weights={"penalty": {"9": 1}})
    assert "severities" in reverted(kit.govern("installScoringRule", json.dumps(bad)))
    assert "min <= base <= max" in reverted(kit.govern("installScoringRule", json.dumps(dict(RULE, base=5000))))
    r1 = ok(kit.govern("installScoringRule", json.dumps(RULE)))
    r2 = ok(kit.govern("installScoringRule", json.dumps(dict(RULE, name="v2"))))
    names = [n for n, _ in events(r1)] + [n for n, _ in events(r2)]
    assert names == ["ScoringRuleInstalled", "ScoringRuleInstalled"]
    assert kit.view("scoringRuleCount") == (2,)
    text, _ = kit.view("scoringRule", 1)
    assert json.loads(text)["name"] == "demo"


def test_events_fold_into_the_state_the_contract_holds(kit: CreditKit) -> None:
    a = record_id_of(kit.publish())
    b = record_id_of(kit.publish(ISSUER_B, subject=ORG2, dmin=0))
    ok(kit.call(ISSUER_B, "fileObjection", a, "wrong"))
    ok(kit.correct(a))
    ok(kit.call(OUTSIDER, "requestRepair", b, "paid"))
    ok(kit.call(ISSUER_B, "decideRepair", b, True, "ok"))
    records = fold_records(list(kit.source.iter_events([], 0, kit.source.head_height())))
    now = kit.now
    for rid in (a, b):
        on_chain = kit.view("getRecord", rid)
        folded = records[rid]
        assert (folded.subject, folded.category, folded.issuer, folded.current.version) == on_chain[:4]
        assert folded.compute_display_status(now) == on_chain[4]
        assert folded.current.version_hash == on_chain[12]
    assert [v.version for v in records[a].versions] == [1, 2]


def _publish_args(kit: CreditKit, subject: str = ORG, severity: int = 3) -> list[Any]:
    now = kit.now
    return [subject, "penalty", 2, severity, "D-1", "Authority", "Law 1", "Summary", bytes(32), now, now, 0, 86400,
            b"\x01" * 32]


def test_publish_batch_is_all_or_nothing_with_publishs_events(kit: CreditKit) -> None:
    import eth_abi

    types = [i["type"] for i in next(x for x in CR.abi if x.get("name") == "publish")["inputs"]]
    records = [eth_abi.encode(types, _publish_args(kit, s)) for s in (ORG, ORG2, ORG)]
    receipt = ok(kit.call(ISSUER_A, "publishBatch", records))
    assert [n for n, _ in events(receipt)] == ["RecordPublished"] * 3
    assert [a["id"] for _, a in events(receipt)] == [1, 2, 3]
    assert int.from_bytes(receipt.output[:32], "big") == 1 and int.from_bytes(receipt.output[32:64], "big") == 3
    bad = [records[0], eth_abi.encode(types, _publish_args(kit, "91110000600037341X")), records[2]]
    assert "record #1: USCC '91110000600037341X' has check character 'X'" in reverted(
        kit.call(ISSUER_A, "publishBatch", bad))
    assert "record #0: agency 'Outsider Agency' is not authorised" in reverted(
        kit.call(OUTSIDER, "publishBatch", records))
    assert "record #0 does not decode" in reverted(kit.call(ISSUER_A, "publishBatch", [b"\x00" * 5]))
    assert "a batch holds 1..200 records" in reverted(kit.call(ISSUER_A, "publishBatch", []))
    assert kit.view("recordCount") == (3,)


def _stdnum_verdict(code: str) -> bool:
    """The USCC rule stated with python-stdnum alone: valid, and already in the canonical form it compacts to."""
    from stdnum.cn import uscc

    return uscc.is_valid(code) and uscc.compact(code) == code


def test_uscc_fast_path_agrees_with_stdnum_on_random_and_near_miss_codes() -> None:
    import random

    from chainshare.bench_credit import make_uscc

    rng = random.Random(12)
    alphabet = "0123456789ABCDEFGHJKLMNPQRTUWXYIOSVZa -\n\u2013"
    codes = [make_uscc(rng.randrange(10**9)) for _ in range(300)]
    codes += [c[:i] + ch + c[i + 1:] for c in codes[:100] for i, ch in ((rng.randrange(18), rng.choice(alphabet)),)]
    codes += ["".join(rng.choice(alphabet) for _ in range(rng.choice((17, 18, 19)))) for _ in range(300)]
    codes += [c + "\n" for c in codes[:20]] + [" " + c for c in codes[:20]] + [c.lower() for c in codes[:20]]
    for code in codes:
        try:
            validate_uscc(code)
            accepted = True
        except ValueError:
            accepted = False
        assert accepted == _stdnum_verdict(code), code
