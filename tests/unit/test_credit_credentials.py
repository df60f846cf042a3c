"""Zero-knowledge credit credentials: AnonCreds proofs of predicates (chainshare.credit.credentials) and the
CredentialRegistry contract that publishes the issuer's objects and revocation status lists."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from credit_kit import DAY, ISSUER_A, ISSUER_B, ORG, OUTSIDER, RULE, CreditKit, contract, encode, ok, reverted
from hexbytes import HexBytes
from web3 import Web3

from chainshare.credit import credentials as zk
from chainshare.credit.credential_chain import compute_credit_attributes
from chainshare.errors import InvalidInput
from chainshare.execution.contracts.addresses import CREDENTIAL_REGISTRY

CRED = contract("CredentialRegistry")
ATTRS = {"black_list_active": 0, "penalties_3y": 1, "score": 731, "computed_height": 42}
T = 1_750_000_000


@pytest.fixture(scope="module")
def issued() -> tuple[zk.IssuerState, dict[str, Any]]:
    """An issuer (CL keys: the slow part, made once) and one credential issued to ORG."""
    state = zk.create_issuer_state(ISSUER_A, "penalty", 8, T)
    return zk.issue_credential(state, ORG, ATTRS, zk.create_link_secret(), 42)


def public_of(state: zk.IssuerState) -> zk.PublicObjects:
    return state.to_public(7)


def prove(cred: dict[str, Any], state: zk.IssuerState, *preds: str, nonce: str = "1234567890") -> bytes:
    return json.dumps(zk.create_proof(cred, zk.parse_predicates(list(preds)), nonce, public_of(state))).encode()


def verify(raw: bytes, state: zk.IssuerState, nonce: str = "1234567890") -> zk.Verification:
    return zk.verify_proof(zk.parse_proof(raw), nonce, public_of(state))


def test_a_valid_proof_verifies(issued: tuple[zk.IssuerState, dict[str, Any]]) -> None:
    state, cred = issued
    raw = prove(cred, state, "score>=700", "black_list_active<=0", "penalties_3y<3")
    verdict = verify(raw, state)
    assert verdict.valid, verdict.reason
    assert verdict.predicates == ("score>=700", "black_list_active<=0", "penalties_3y<3")
    assert verdict.issuer == ISSUER_A and verdict.category == "penalty"


def test_the_presentation_reveals_no_attribute_beyond_the_predicates(
        issued: tuple[zk.IssuerState, dict[str, Any]]) -> None:
    state, cred = issued
    doc = json.loads(prove(cred, state, "score>=700"))
    pres = doc["presentation"]
    requested = pres["requested_proof"]
    assert requested["revealed_attrs"] == {} and requested["unrevealed_attrs"] == {}
    assert requested["self_attested_attrs"] == {} and set(requested["predicates"]) == {"predicate0"}
    sub_proofs = pres["proof"]["proofs"]
    assert len(sub_proofs) == 1
    primary = sub_proofs[0]["primary_proof"]
    assert primary["eq_proof"]["revealed_attrs"] == {}  # no attribute value, raw or encoded
    assert [g["predicate"] for g in primary["ge_proofs"]] == [{"attr_name": "score", "p_type": "GE", "value": 700}]

    def keys(node: Any) -> set[str]:
        if isinstance(node, dict):
            return set(node) | {k for v in node.values() for k in keys(v)}
        if isinstance(node, list):
            return {k for v in node for k in keys(v)}
        return set()
    assert not keys(pres) & {"raw", "encoded", "values"}
    # Neither the subject nor its revocation index travel with the proof (attribute NAMES do, as blinded
    # commitments in eq_proof.m: the schema is public).
    text = json.dumps(doc)
    assert ORG not in text
    assert "revocation_index" not in text
    assert set(primary["eq_proof"]["m"]) <= set(zk.ATTRIBUTES) | {"master_secret"}
    assert all(len(str(v)) > 100 for v in primary["eq_proof"]["m"].values())  # blinded responses, not values


def test_a_false_predicate_cannot_be_proven(issued: tuple[zk.IssuerState, dict[str, Any]]) -> None:
    state, cred = issued
    with pytest.raises(InvalidInput, match="score>=800 is false for this credential"):
        prove(cred, state, "score>=800")
    # A holder who edits its file's copy of the values still cannot: the library refuses the signed value.
    lying = {**cred, "attributes": {**cred["attributes"], "score": 900}}
    with pytest.raises(InvalidInput, match="Predicate is not satisfied"):
        prove(lying, state, "score>=800")


def test_a_tampered_proof_or_another_nonce_fails(issued: tuple[zk.IssuerState, dict[str, Any]]) -> None:
    state, cred = issued
    raw = prove(cred, state, "score>=700")
    assert not verify(raw, state, nonce="1234567891").valid  # a replay to another verifier
    doc = json.loads(raw)
    ge = doc["presentation"]["proof"]["proofs"][0]["primary_proof"]["ge_proofs"][0]
    ge["predicate"]["value"] = 600  # claim a weaker bound than the one proven ...
    doc["predicates"] = ["score>=600"]
    assert not verify(json.dumps(doc).encode(), state).valid
    doc = json.loads(raw)
    eq = doc["presentation"]["proof"]["proofs"][0]["primary_proof"]["eq_proof"]
    eq["e"] = str(int(eq["e"]) + 2)  # ... or alter a number of the proof
    assert not verify(json.dumps(doc).encode(), state).valid


def test_a_revoked_credentials_proof_fails_once_the_new_status_list_is_used(
        issued: tuple[zk.IssuerState, dict[str, Any]]) -> None:
    state, cred = issued
    state2, cred2 = zk.issue_credential(state, ORG, ATTRS, zk.create_link_secret(), 43)
    old_proof = prove(cred2, state2, "score>=700")
    assert verify(old_proof, state2).valid
    revoked = zk.revoke_credentials(state2, [cred2["revocation_index"]], T + 10)
    verdict = verify(old_proof, revoked)
    assert not verdict.valid and "ask the holder for a fresh proof" in verdict.reason
    with pytest.raises(InvalidInput, match="this credential is revoked"):
        prove(cred2, revoked, "score>=700")
    # Forced past the CLI's check, the library's proof does not verify against the new accumulator.
    public = public_of(revoked)
    unchecked = replace(public, status_list_json=json.dumps(
        {**json.loads(public.status_list_json), "revocationList": [0] * revoked.max_cred_num}))
    assert revoked.revoked() == {cred2["revocation_index"]}
    forced = zk.create_proof(cred2, zk.parse_predicates(["score>=700"]), "1234567890", unchecked)
    assert not zk.verify_proof(zk.parse_proof(json.dumps(forced)), "1234567890", public).valid
    # The other credential of the same registry still proves under the new list.
    assert verify(prove(cred, revoked, "score>=700"), revoked).valid


def test_required_predicates_must_be_proven(issued: tuple[zk.IssuerState, dict[str, Any]]) -> None:
    state, cred = issued
    claim = zk.parse_proof(prove(cred, state, "score>=700"))
    verdict = zk.verify_proof(claim, "1234567890", public_of(state), zk.parse_predicates(["black_list_active<=0"]))
    assert not verdict.valid and "black_list_active<=0" in verdict.reason


@pytest.mark.parametrize("raw, message", [
    (b"not json", "not JSON"), (b"[]", "not a chainshare credential proof"),
    (b'{"format": "chainshare-anoncreds-proof/1"}', "'predicates'"),
    (b'{"format": "chainshare-anoncreds-proof/1", "predicates": ["score>=1"], "presentation": {}}',
     "exactly one credential"),
    (b" " * (zk.MAX_PROOF_BYTES + 1), "at most"),
])
def test_garbage_proofs_are_refused_with_the_reason(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        zk.parse_proof(raw)


@pytest.mark.parametrize("text", ["score=700", "salary>=1", "score>=99999999999", "", "score >= x"])
def test_bad_predicates_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput, match="predicate"):
        zk.parse_predicate(text)


# -- the contract ---------------------------------------------------------------------------------


def call(kit: CreditKit, who: str, fn: str, *args: Any) -> Any:
    return kit.send(who, encode(CRED, fn, *args), to=CREDENTIAL_REGISTRY, gas=5_000_000)


def publish_all(kit: CreditKit, state: zk.IssuerState, who: str) -> list[Any]:
    return [call(kit, who, "publishSchema", state.category, state.schema_id, state.schema_json),
            call(kit, who, "publishCredentialDefinition", state.cred_def_id, state.cred_def_json),
            call(kit, who, "publishRevocationRegistry", state.rev_reg_id, state.rev_reg_def_json,
                 state.status_timestamp, state.status_list_json)]


def test_only_authorised_issuers_publish_and_every_step_is_an_event(
        issued: tuple[zk.IssuerState, dict[str, Any]]) -> None:
    state, _ = issued
    kit = CreditKit()
    kit.configure()
    # An agency not authorised for the category (or posing as another issuer) is refused with a reason.
    assert "not authorised by Governance to issue 'penalty'" in reverted(
        call(kit, OUTSIDER, "publishSchema", "penalty", state.schema_id, state.schema_json))
    assert "namespace" in reverted(call(kit, ISSUER_B, "publishSchema", "penalty", state.schema_id, state.schema_json))
    assert "no credential definition" in reverted(
        call(kit, ISSUER_A, "publishRevocationRegistry", state.rev_reg_id, state.rev_reg_def_json, T,
             state.status_list_json))
    receipts = [ok(r) for r in publish_all(kit, state, ISSUER_A)]
    topics = [bytes(HexBytes(Web3.keccak(text=s))) for s in (
        "SchemaPublished(bytes32,string,string,string)", "CredentialDefinitionPublished(bytes32,string,string,string)",
        "RevocationRegistryPublished(bytes32,string,string,string)")]
    assert [r.logs[0].topics[0] for r in receipts] == topics
    assert receipts[2].logs[1].topics[0] == bytes(HexBytes(Web3.keccak(
        text="RevocationStatusListPublished(bytes32,string,uint64,uint64,bytes32,string,string)")))
    assert "already published" in reverted(call(kit, ISSUER_A, "publishSchema", state.category, state.schema_id,
                                                state.schema_json))
    # Issuance and a revocation: events, and a stale timestamp is refused.
    ok(call(kit, ISSUER_A, "recordIssuance", state.rev_reg_id, 1, b"\x01" * 32, 1))
    assert "revocation index must be 1..7" in reverted(
        call(kit, ISSUER_A, "recordIssuance", state.rev_reg_id, 8, b"\x01" * 32, 1))
    revoked = zk.revoke_credentials(state, [1], kit.now)
    assert "later than the previous" in reverted(call(kit, ISSUER_A, "publishStatusList", state.rev_reg_id, T,
                                                      state.status_list_json, "again"))
    assert "belongs to agency" in reverted(call(kit, ISSUER_B, "publishStatusList", state.rev_reg_id,
                                                revoked.status_timestamp, revoked.status_list_json, "x"))
    ok(call(kit, ISSUER_A, "publishStatusList", state.rev_reg_id, revoked.status_timestamp,
            revoked.status_list_json, "credit status changed"))
    # Losing the Governance authorisation stops further revocation lists and issuances.
    ok(kit.govern("setIssuer", "penalty", ISSUER_A, False))
    assert "not authorised" in reverted(call(kit, ISSUER_A, "recordIssuance", state.rev_reg_id, 2, b"\x02" * 32, 1))


def test_credit_attributes_come_from_the_records_at_a_height() -> None:
    kit = CreditKit()
    kit.configure()
    ok(kit.govern("setCategory", "administrative_penalty", "Administrative penalty", True))
    ok(kit.govern("setCategory", "black_list", "Black list", True))
    for cat in ("administrative_penalty", "black_list"):
        ok(kit.govern("setIssuer", cat, ISSUER_A, True))
    ok(kit.govern("installScoringRule", json.dumps({**RULE, "weights": {"administrative_penalty": {"3": -100}}})))
    old = kit.now - 4 * 365 * DAY
    ok(kit.publish(category="administrative_penalty", decision=old, dmax=10 * 365 * DAY))  # older than 3 years
    ok(kit.publish(category="administrative_penalty"))
    before = compute_credit_attributes(kit.source, ORG)
    assert before == {"black_list_active": 0, "penalties_3y": 1, "score": 800,
                      "computed_height": kit.source.head_height()}
    ok(kit.publish(category="black_list"))
    after = compute_credit_attributes(kit.source, ORG)
    assert after["black_list_active"] == 1 and after["penalties_3y"] == 1
    assert compute_credit_attributes(kit.source, ORG, before["computed_height"]) == before


def test_find_changed_names_the_credentials_whose_credit_status_moved(
        issued: tuple[zk.IssuerState, dict[str, Any]]) -> None:
    state, cred = issued
    other = "91110000000000777" + "3"
    state2, cred2 = zk.issue_credential(state, other, ATTRS, zk.create_link_secret(), 42)
    status = {ORG: dict(ATTRS, computed_height=99), other: dict(ATTRS, computed_height=99)}
    assert zk.find_changed(state2, status.__getitem__) == []  # a later height alone is no change
    status[other] = dict(ATTRS, black_list_active=1)
    assert zk.find_changed(state2, status.__getitem__) == [cred2["revocation_index"]]
    revoked = zk.revoke_credentials(state2, [cred2["revocation_index"]], T + 5)
    assert zk.find_changed(revoked, status.__getitem__) == []  # already revoked
    restored = zk.IssuerState.from_json(json.loads(json.dumps(revoked.to_json())))
    assert restored == revoked


def test_mangled_presentations_are_invalid_never_a_crash(issued: tuple[zk.IssuerState, dict[str, Any]]) -> None:
    """Every field of the presentation removed or given the wrong type: a clean refusal each time."""
    state, cred = issued
    raw = json.loads(prove(cred, state, "score>=700"))

    def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        out = [prefix] if prefix else []
        if isinstance(node, dict):
            out += [p for k, v in node.items() for p in paths(v, prefix + (k,))]
        elif isinstance(node, list):
            out += [p for i, v in enumerate(node[:2]) for p in paths(v, prefix + (i,))]
        return out

    all_paths = paths(raw["presentation"])
    assert len(all_paths) > 20
    for path in all_paths[:: max(1, len(all_paths) // 12)]:
        for value in (None, "x", {}):
            doc = json.loads(json.dumps(raw))
            node = doc["presentation"]
            for key in path[:-1]:
                node = node[key]
            if node[path[-1]] == value:
                continue  # no change
            node[path[-1]] = value
            try:
                verdict = zk.verify_proof(zk.parse_proof(json.dumps(doc)), "1234567890", public_of(state))
            except InvalidInput:
                continue
            assert not verdict.valid, path


class _FlakySource:
    """Two record events (heights 3 and 4) of a subject holding no credential; the node drops once, after the
    first event was read."""

    def __init__(self) -> None:
        from chainshare.credit.events import CreditEvent
        from chainshare.execution.contracts.credit_registry import compute_subject_key

        key = compute_subject_key("91110000000000555" + "0")
        self.events = [CreditEvent(h, 0, 0, b"\0" * 32, T * 1000, "RecordPublished", {"id": h, "subjectKey": key})
                       for h in (3, 4)]
        self.dropped = False

    def head_height(self) -> int:
        return 4

    def block_timestamp_ms(self, height: int) -> int:
        return T * 1000

    def iter_events(self, topics: list[bytes | None], from_height: int, to_height: int) -> Any:
        from chainshare.client import NodeUnreachable

        for ev in self.events:
            if from_height <= ev.height <= to_height:
                yield ev
                if not self.dropped:
                    self.dropped = True
                    raise NodeUnreachable("cannot reach node at http://127.0.0.1:1: connection refused")


def test_the_follower_rides_out_a_node_outage_without_missing_or_repeating_an_event(
        issued: tuple[zk.IssuerState, dict[str, Any]]) -> None:
    from chainshare.credit.revocation_follower import RevocationFollower, select_changed

    state, _ = issued
    cursors: list[str] = []
    naps: list[float] = []
    follower = RevocationFollower(None, b"", lambda: state, lambda s: None, cursors.append,  # type: ignore[arg-type]
                                  source=_FlakySource())
    last = follower.follow((2, -1), stop=lambda: len(cursors) >= 2, next_head=None, poll_s=0.01, sleep=naps.append)
    assert cursors == ["3-0", "4-0"] and last == (4, 0) and naps == [0.01]  # one back-off, then resumed after 3-0
    assert follower.revocations == []  # the subject holds no credential: nothing to revoke
    assert select_changed(state, ORG, lambda s: dict(ATTRS, computed_height=99)) == []
    assert select_changed(state, ORG, lambda s: dict(ATTRS, score=500)) == [1]
    assert select_changed(state, "91110000000000555" + "0", lambda s: dict(ATTRS, score=500)) == []


def test_a_registry_stored_deeper_than_the_v4_cap_before_v4_takes_no_issuance_from_v4_on(
        issued: tuple[zk.IssuerState, dict[str, Any]]) -> None:
    """v1-v3 stored registry definitions of any nesting; from v4, recordIssuance checks a stored one against
    the cap before parsing it (json.loads of a deep one raised RecursionError depending on the stack depth)."""
    state, _ = issued
    kit = CreditKit()
    kit.configure()
    definition = json.loads(state.rev_reg_def_json)
    definition["value"]["extra"] = json.loads("[" * 40 + "]" * 40)
    published = publish_all(kit, replace(state, rev_reg_def_json=json.dumps(definition)), ISSUER_A)
    assert all(r.status == 1 for r in published), [reverted(r) for r in published if r.status != 1]
    ok(call(kit, ISSUER_A, "recordIssuance", state.rev_reg_id, 1, b"\x01" * 32, 1))  # v1 parses it
    kit.upgrade_protocol(4)
    assert reverted(call(kit, ISSUER_A, "recordIssuance", state.rev_reg_id, 2, b"\x02" * 32, 1)) == \
        f"revocation registry {state.rev_reg_id!r} nests deeper than 32 levels"

