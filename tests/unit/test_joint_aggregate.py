"""Secure aggregation across agencies (chainshare.privacy.aggregate): shares, reconstruction, the
joint release rules and what a party's captured view holds."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest

from chainshare.errors import InvalidInput
from chainshare.privacy.aggregate import (
    MODULUS,
    SHARE_BYTES,
    CommitmentOpening,
    InputShare,
    JointAborted,
    JointSession,
    check_commitment_opening,
    compute_input_commitment,
    compute_joint_query_hash,
    compute_joint_schema,
    compute_local_vector,
    compute_noise_vector,
    compute_vector_commitment,
    decode_message,
    parse_commitment_opening,
    parse_joint_query,
    reconstruct_totals,
    release_joint_result,
    run_joint_in_process,
    split_into_shares,
)
from chainshare.sharing.compute import QueryRefused
from chainshare.sharing.schema import validate_schema

SCHEMA = {"columns": [{"name": "district", "kind": "string"}, {"name": "income", "kind": "integer"},
                      {"name": "age", "kind": "integer"}], "min_group": 5}
DISTRICTS = ["north", "south", "east"]


def _owner_rows(seed: int, n: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    return [{"district": rng.choice(DISTRICTS), "income": rng.randrange(1000, 90000), "age": rng.randrange(18, 90)}
            for _ in range(n)]


def _schemas(k: int, strictest: int = 5) -> list:
    out = [validate_schema(SCHEMA) for _ in range(k - 1)]
    out.append(validate_schema({**SCHEMA, "min_group": strictest}))
    return out


def _plain_vectors(jq, owners):
    return [compute_local_vector(jq, rows) for rows in owners]


@pytest.mark.parametrize("parties", [3, 5])
def test_joint_sum_count_mean_equals_plaintext_computation(parties: int) -> None:
    owners = [_owner_rows(seed, 200 + 37 * seed) for seed in range(parties)]
    jq = parse_joint_query({"select": [{"fn": "count"}, {"fn": "sum", "column": "income", "bounds": [0, 100000]},
                                       {"fn": "avg", "column": "income", "bounds": [0, 100000]}],
                            "where": [{"column": "age", "op": ">=", "value": 30}]}, _schemas(parties))
    totals = run_joint_in_process(jq, 7, _plain_vectors(jq, owners))
    result = release_joint_result(jq, totals)
    rows = [r for rows in owners for r in rows if r["age"] >= 30]
    total = sum(r["income"] for r in rows)
    assert result.groups == ((len(rows), total, round(total / len(rows), 2)),)


def test_grouped_counts_over_the_public_domain_equal_plaintext() -> None:
    owners = [_owner_rows(seed, 150) for seed in range(3)]
    jq = parse_joint_query({"select": [{"fn": "count"}], "group_by": ["district"],
                            "domain": {"district": DISTRICTS}, "epsilon": 10}, _schemas(3))
    result = release_joint_result(jq, run_joint_in_process(jq, 1, _plain_vectors(jq, owners)))
    expected = {d: sum(1 for rows in owners for r in rows if r["district"] == d) for d in DISTRICTS}
    assert dict((g[0], g[1]) for g in result.groups) == expected


def test_noise_is_added_inside_by_every_owner() -> None:
    owners = [_owner_rows(seed, 100) for seed in range(3)]
    jq = parse_joint_query({"select": [{"fn": "count"}]}, _schemas(3))
    vectors = [[v + n for v, n in zip(vec, compute_noise_vector(jq, lambda s: 4), strict=True)]
               for vec in _plain_vectors(jq, owners)]
    totals = run_joint_in_process(jq, 1, vectors)
    assert totals[0] == 300 + 3 * 4  # every owner's noise reaches the opened total


def test_strictest_min_group_of_the_datasets_withholds_small_cells() -> None:
    owners = [[{"district": "north", "income": 10, "age": 40}] * 4 for _ in range(3)]  # 12 rows in all
    query = {"select": [{"fn": "count"}]}
    released = release_joint_result(jq := parse_joint_query(query, _schemas(3, strictest=12)),
                                    run_joint_in_process(jq, 1, _plain_vectors(jq, owners)))
    assert released.groups == ((12,),)
    strict = parse_joint_query(query, _schemas(3, strictest=13))
    assert strict.schema.min_group == 13
    with pytest.raises(QueryRefused):
        release_joint_result(strict, run_joint_in_process(strict, 1, _plain_vectors(strict, owners)))


def test_captured_messages_hold_only_shares_never_a_row_or_subtotal() -> None:
    owners = [_owner_rows(seed, 120) for seed in range(3)]
    jq = parse_joint_query({"select": [{"fn": "count"}, {"fn": "sum", "column": "income", "bounds": [0, 100000]}],
                            "group_by": ["district"], "domain": {"district": DISTRICTS}}, _schemas(3))
    vectors = _plain_vectors(jq, owners)
    captured: list[tuple[int, bytes]] = []
    totals = run_joint_in_process(jq, 3, vectors, deliver=lambda r, data: captured.append((r, data)) is None)
    view_of_1 = [decode_message(data) for r, data in captured if r == 1]
    assert view_of_1 and all(len(m.shares) == jq.width * SHARE_BYTES for m in view_of_1)
    secrets = {v % MODULUS for vec in vectors for v in vec if v} | {v % MODULUS for v in totals if v}
    secrets |= {r["income"] for rows in owners for r in rows}
    for m in view_of_1:
        elements = {int.from_bytes(m.shares[i:i + SHARE_BYTES], "big") for i in range(0, len(m.shares), SHARE_BYTES)}
        assert not elements & secrets
    raw = b"".join(data for _, data in captured)
    for value in secrets:  # nor at any offset, as a field element or a 64-bit integer
        assert value.to_bytes(SHARE_BYTES, "big") not in raw
        if value < 2**64:
            assert value.to_bytes(8, "big") not in raw


def test_any_n_minus_1_shares_are_independent_of_the_secret() -> None:
    # degree n-1: the first n-1 shares of two different secrets have the same (uniform) distribution;
    # check the concrete consequence: the same n-1 shares are consistent with any secret.
    blobs = split_into_shares([42, 7], 3)
    assert reconstruct_totals({1: blobs[0], 2: blobs[1], 3: blobs[2]}, 3, 2) == [42, 7]
    other = split_into_shares([0, 0], 3)
    assert reconstruct_totals({1: blobs[0], 2: blobs[1], 3: other[2]}, 3, 2) != [42, 7]


def test_a_party_that_drops_out_aborts_before_anything_is_opened() -> None:
    owners = [_owner_rows(seed, 50) for seed in range(3)]
    jq = parse_joint_query({"select": [{"fn": "count"}]}, _schemas(3))

    def drop_party_3_sums(receiver: int, data: bytes) -> bool:
        msg = decode_message(data)
        return not (msg.sender == 3 and type(msg).__name__ == "SumShare")

    with pytest.raises(JointAborted) as caught:
        run_joint_in_process(jq, 1, _plain_vectors(jq, owners), deliver=drop_party_3_sums)
    assert caught.value.reason == "dropout" and "[3]" in str(caught.value)


def test_session_rejects_repeats_foreign_jobs_and_bad_shares() -> None:
    session = JointSession(job_id=5, index=1, parties=3, width=1)
    session.start([9])
    msg = decode_message(InputShare(5, 2, 1, split_into_shares([1], 3)[0]).encode())
    session.on_message(msg)
    with pytest.raises(JointAborted):
        session.on_message(msg)
    with pytest.raises(JointAborted):
        session.on_message(InputShare(6, 3, 1, bytes(SHARE_BYTES)))
    with pytest.raises(JointAborted):
        session.on_message(InputShare(5, 3, 1, b"\xff" * SHARE_BYTES))
    with pytest.raises(JointAborted):
        session.on_message(InputShare(5, 3, 2, bytes(SHARE_BYTES)))
    with pytest.raises(JointAborted):
        decode_message(b"\x00garbage")


def test_joint_query_validation() -> None:
    schemas = _schemas(3)
    with pytest.raises(InvalidInput, match="domain"):
        parse_joint_query({"select": [{"fn": "count"}], "group_by": ["district"]}, schemas)
    with pytest.raises(InvalidInput):
        parse_joint_query({"select": [{"fn": "sum", "column": "extra", "bounds": [0, 1]}], }, schemas)
    narrow = validate_schema({"columns": [{"name": "district", "kind": "string"}], "min_group": 5})
    assert [c.name for c in compute_joint_schema([*schemas, narrow]).columns] == ["district"]
    with pytest.raises(InvalidInput):
        parse_joint_query({"select": [{"fn": "sum", "column": "income", "bounds": [0, 1]}]}, [*schemas, narrow])
    with pytest.raises(InvalidInput, match="twice"):
        parse_joint_query({"select": [{"fn": "count"}], "group_by": ["district"],
                           "domain": {"district": ["a", "a"]}}, schemas)
    a = parse_joint_query({"select": [{"fn": "count"}], "group_by": ["district"],
                           "domain": {"district": ["b", "a"]}}, schemas)
    b = parse_joint_query('{"select": [{"fn": "count"}], "group_by": ["district"], '
                          '"domain": {"district": ["a", "b"]}}', schemas)
    assert compute_joint_query_hash(a) == compute_joint_query_hash(b)


def test_input_commitment_binds_the_vector_and_hides_it_behind_the_salt() -> None:
    salt = bytes(range(32))
    vc = compute_vector_commitment([5, 6], salt)
    assert vc != compute_vector_commitment([5, 7], salt) and vc != compute_vector_commitment([5, 6], bytes(32))
    c = compute_input_commitment(1, 2, b"\x11" * 32, vc)
    assert c != compute_input_commitment(1, 2, b"\x12" * 32, vc)  # bound to the dataset version
    assert c != compute_input_commitment(1, 3, b"\x11" * 32, vc) and c != compute_input_commitment(2, 2, b"\x11" * 32, vc)


def test_a_commitment_opening_checks_against_the_on_chain_commitment_and_detects_any_change() -> None:
    salt = bytes(range(32))
    full = CommitmentOpening(7, 2, b"\x11" * 32, compute_vector_commitment([41, -3], salt), (41, -3), salt)
    on_chain = compute_input_commitment(7, 2, b"\x11" * 32, full.vector_commitment)
    check_commitment_opening(full, on_chain)
    check_commitment_opening(full.binding_part(), on_chain)  # reveals no vector, still binds the version
    assert parse_commitment_opening(json.loads(json.dumps(full.to_json()))) == full
    assert "vector" not in full.binding_part().to_json()
    with pytest.raises(InvalidInput, match="altered"):
        check_commitment_opening(dataclasses.replace(full, vector=(42, -3)), on_chain)
    with pytest.raises(InvalidInput, match="does not match the on-chain commitment"):
        check_commitment_opening(dataclasses.replace(full.binding_part(), content_hash=b"\x12" * 32), on_chain)
    for bad, match in (([], "object with job_id"), ({**full.to_json(), "job_id": 0}, "positive"),
                       ({**full.to_json(), "salt": "0x12"}, "salt"), ({**full.to_json(), "vector": ["1"]}, "vector"),
                       ({**full.to_json(), "content_hash": None}, "content_hash")):
        with pytest.raises(InvalidInput, match=match):
            parse_commitment_opening(bad)


def test_importing_the_mpc_library_leaves_argv_logging_and_the_event_loop_alone() -> None:
    import subprocess
    import sys

    code = ("import asyncio, logging, sys; policy = type(asyncio.get_event_loop_policy()); "
            "import chainshare.privacy.aggregate; "
            "assert type(asyncio.get_event_loop_policy()) is policy, asyncio.get_event_loop_policy(); "
            "assert not logging.getLogger().handlers; assert sys.argv[1:] == ['-H', '--no-log']")
    done = subprocess.run([sys.executable, "-c", code, "-H", "--no-log"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""
