"""The in-browser verifier (chainshare/explorer/web/js/verify.js, run by Node.js on the same code the
pages bundle) against proofs made by chainshare's own code: a 3-of-4 BLS aggregate QC over a
5-transaction block verifies; every kind of tampering fails at its own step, including a signature
made under blspy's basic scheme (another hash-to-curve DST than the PoP scheme the chain uses)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from blspy import BasicSchemeMPL, PrivateKey

from chainshare.crypto import bls
from chainshare.crypto.hashing import keccak256
from chainshare.execution.contracts.membership import compute_validator_set_hash
from chainshare.ledger.merkle import compute_inclusion_proof, compute_root
from chainshare.ledger.quorum import aggregate_qc, vote_message
from chainshare.ledger.types import EMPTY_BLOOM, Header, QuorumCertificate, make_bitmap

REPO = Path(__file__).resolve().parents[2]
VERIFY = REPO / "chainshare" / "explorer" / "web" / "js" / "verify.js"
CHAIN_ID, EPOCH = 4242, 0
SKS = [bls.generate_secret_key(bytes([i + 1]) * 32) for i in range(4)]


@pytest.fixture(scope="module")
def node_ready() -> None:
    if shutil.which("node") is None or not (VERIFY.parent / "node_modules" / "@noble" / "curves").is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail("the verifier tests need node and `make install` (npm ci in chainshare/explorer/web/js)")
        pytest.skip("node or chainshare/explorer/web/js/node_modules missing (make install)")


def run_verifier(bundles: list[dict[str, Any]], fn: str = "verifyProof") -> list[dict[str, Any]]:
    """verify.js's ``fn`` (verifyProof, or verifyCreditProvenance) on each bundle, under Node.js."""
    script = (f"import {{ {fn} as verify }} from {json.dumps(VERIFY.as_uri())};\n"
              "import { readFileSync } from 'node:fs';\n"
              "const require_stdin = () => readFileSync(0, 'utf8');\n"
              "const input = JSON.parse(require_stdin());\n"
              "process.stdout.write(JSON.stringify(input.map((b) => verify(b))));\n")
    out = subprocess.run(["node", "--input-type=module", "-e", script], input=json.dumps(bundles), capture_output=True,
                         text=True, timeout=120, check=True)
    return list(json.loads(out.stdout))


VALIDATORS = [{"name": f"v{i}", "agency": f"a{i}", "address": keccak256(b"v%d" % i)[:20],
               "bls_public_key": bls.public_key(sk), "bls_pop": bls.prove_possession(sk)} for i, sk in enumerate(SKS)]


def validators_json(validators: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"index": i, **{k: "0x" + x.hex() if isinstance(x, bytes) else x for k, x in v.items()}}
            for i, v in enumerate(validators)]


def make_parent(validators: list[dict[str, Any]]) -> Header:
    """Block 76, whose validator_set_hash names ``validators`` (the set certifying block 77)."""
    return Header(os.urandom(32), 76, 8, 1_699_999_999_000, os.urandom(20), os.urandom(32), os.urandom(32),
                  os.urandom(32), EMPTY_BLOOM, compute_validator_set_hash(validators), 30_000_000, 0, os.urandom(32))


def make_genesis_header(validators: list[dict[str, Any]]) -> Header:
    return Header(bytes(32), 0, 0, 1_600_000_000_000, bytes(20), os.urandom(32), os.urandom(32), os.urandom(32),
                  EMPTY_BLOOM, compute_validator_set_hash(validators), 30_000_000, 0, bytes(32))


def make_bundle(position: int = 3, signers: tuple[int, ...] = (0, 1, 3),
                validators: list[dict[str, Any]] = VALIDATORS, epoch: int = EPOCH) -> dict[str, Any]:
    """A proof of a 5-transaction block 77 certified by ``signers`` of ``validators`` (keys SKS),
    the set block 76 (the parent header) commits to."""
    txs = [os.urandom(100 + i) for i in range(5)]
    receipts = [os.urandom(40 + i) for i in range(5)]
    parent = make_parent(validators)
    header = Header(parent.hash, 77, 9, 1_700_000_000_000, os.urandom(20), compute_root(txs),
                    compute_root(receipts), os.urandom(32), EMPTY_BLOOM, os.urandom(32), 30_000_000, 123_456,
                    os.urandom(32))
    msg = vote_message(CHAIN_ID, header.hash, header.height, header.round, epoch)
    qc = aggregate_qc(header.hash, header.height, header.round, {i: bls.sign(SKS[i], msg) for i in signers}, 4)
    genesis = make_genesis_header(validators)
    return {
        "chain_id": CHAIN_ID, "epoch": epoch, "genesis_hash": "0x" + genesis.hash.hex(),
        "genesis_header": "0x" + genesis.encode().hex(), "tx_hash": "0x" + keccak256(txs[position]).hex(),
        "block_height": header.height, "block_hash": "0x" + header.hash.hex(), "header": "0x" + header.encode().hex(),
        "parent_header": "0x" + parent.encode().hex(), "qc": "0x" + qc.encode().hex(),
        "transaction": {"leaf": "0x" + txs[position].hex(), "proof": compute_inclusion_proof(txs, position).to_json()},
        "receipt": {"leaf": "0x" + receipts[position].hex(),
                    "proof": compute_inclusion_proof(receipts, position).to_json()},
        "validators": validators_json(validators),
    }


def forge_keys_and_qc(b: dict[str, Any]) -> dict[str, Any]:
    """What a tampered explorer database serves: every key replaced by an attacker's (with its valid
    PoP) and a QC of the real block aggregated by the attacker keys."""
    sks = [bls.generate_secret_key(bytes([0xA0 + i]) * 32) for i in range(4)]
    forged = [{**v, "bls_public_key": bls.public_key(sk), "bls_pop": bls.prove_possession(sk)}
              for v, sk in zip(VALIDATORS, sks, strict=True)]
    msg = vote_message(CHAIN_ID, bytes.fromhex(b["block_hash"][2:]), 77, 9, EPOCH)
    qc = aggregate_qc(bytes.fromhex(b["block_hash"][2:]), 77, 9, {i: bls.sign(sks[i], msg) for i in (0, 1, 2, 3)}, 4)
    return {**b, "validators": validators_json(forged), "qc": "0x" + qc.encode().hex()}


def with_qc(b: dict[str, Any], **change: Any) -> dict[str, Any]:
    from chainshare import codec

    qc = QuorumCertificate.from_list(codec.decode(bytes.fromhex(b["qc"][2:])))
    fields = {**qc.__dict__, **change}
    return {**b, "qc": "0x" + QuorumCertificate(**fields).encode().hex()}


def test_a_quorum_certificate_made_by_chainshare_verifies_and_every_tampering_fails(node_ready: None) -> None:
    good = make_bundle()
    hdr = bytes.fromhex(good["header"][2:])
    msg = vote_message(CHAIN_ID, bytes.fromhex(good["block_hash"][2:]), 77, 9, EPOCH)
    basic_sig = BasicSchemeMPL.aggregate([BasicSchemeMPL.sign(PrivateKey.from_bytes(SKS[i]), msg) for i in (0, 1, 3)])
    path = good["transaction"]["proof"]["path"]
    cases: list[tuple[str, dict[str, Any], str | None]] = [
        ("valid 3 of 4", good, None),
        ("another leaf", {**good, "transaction": {**good["transaction"], "leaf": "0x" + os.urandom(100).hex()}},
         "Transaction in the block"),
        ("a path hash altered", {**good, "transaction": {**good["transaction"], "proof": {
            **good["transaction"]["proof"], "path": ["0x" + "11" * 32] + path[1:]}}}, "Transaction in the block"),
        ("another index", {**good, "transaction": {**good["transaction"], "proof": {
            **good["transaction"]["proof"], "index": 2}}}, "Transaction in the block"),
        ("receipt altered", {**good, "receipt": {**good["receipt"], "leaf": "0x00"}}, "Receipt in the block"),
        ("header byte altered", {**good, "header": "0x" + (hdr[:-40] + bytes([hdr[-40] ^ 1]) + hdr[-39:]).hex()},
         "Header hash"),
        ("QC of another block", with_qc(good, block_hash=os.urandom(32)), "QC certifies this block"),
        ("below quorum", with_qc(good, signers=make_bitmap([0, 1], 4)), "Quorum"),
        ("signer claimed who did not sign", with_qc(good, signers=make_bitmap([0, 1, 2], 4)), "BLS aggregate"),
        # a block claimed for a later epoch needs that epoch's set proven from genesis
        ("another epoch", {**good, "epoch": EPOCH + 1}, "Validator set proven from genesis (0 changes)"),
        ("a wholly fabricated epoch-3 block: set and QC signed by whoever made them",
         make_bundle(epoch=3), "Validator set proven from genesis (0 changes)"),
        ("another chain", {**good, "chain_id": CHAIN_ID + 1}, "BLS aggregate"),
        ("basic-scheme DST", with_qc(good, signature=bytes(basic_sig)), "BLS aggregate"),
        # the explorer serves attacker keys (valid PoPs) and a QC they signed: only the set hash catches it
        ("keys and QC forged together", forge_keys_and_qc(good), "Validator set matches the chain"),
        ("parent header altered", {**good, "parent_header": "0x" + make_parent(VALIDATORS).encode().hex()},
         "Validator set matches the chain"),
        ("no parent header", {**good, "parent_header": None}, "Validator set matches the chain"),
        ("no proofs of possession", {**good, "validators": [{**x, "bls_pop": None} for x in good["validators"]]},
         "Validator set matches the chain"),
        ("a member's key swapped with another's", {**good, "validators": [
            {**good["validators"][1], "index": 0}, {**good["validators"][0], "index": 1}, *good["validators"][2:]]},
         "Validator set matches the chain"),
        ("a set with a proof of possession that does not verify",
         make_bundle(validators=[VALIDATORS[0], {**VALIDATORS[1], "bls_pop": VALIDATORS[0]["bls_pop"]},
                                 *VALIDATORS[2:]]), "proofs of possession"),
    ]
    # epoch 0: the set is also the one block 0 (the genesis hash shown) commits to
    g0 = make_bundle(epoch=0)
    other_genesis = make_genesis_header(VALIDATORS[:3])
    cases += [
        ("epoch 0 with its genesis", g0, None),
        ("epoch 0, another genesis hash shown", {**g0, "genesis_hash": "0x" + os.urandom(32).hex()}, "genesis set"),
        ("epoch 0, block 0 commits to another set", {**g0, "genesis_header": "0x" + other_genesis.encode().hex(),
                                                     "genesis_hash": "0x" + other_genesis.hash.hex()}, "genesis set"),
        ("epoch 0, no genesis header", {**g0, "genesis_header": None}, "genesis set"),
    ]
    results = run_verifier([c[1] for c in cases])
    for (name, _, failing), res in zip(cases, results, strict=True):
        if failing is None:
            genesis_step = 1
            assert res["ok"] and len(res["steps"]) == 9 + genesis_step, (name, res)
            assert all(s["ok"] for s in res["steps"]), (name, res)
            assert "3 of 4 (quorum 3): v0, v1, v3" in res["steps"][7 + genesis_step]["detail"]
            assert not genesis_step or "epoch 0 set = the set of genesis" in res["steps"][5]["detail"]
            assert "4 validators hash to 0x" in res["steps"][4]["detail"]
            assert "leaf 4 of 5, 3 path hashes" in res["steps"][1]["detail"]
        else:
            assert not res["ok"], name
            assert failing in res["steps"][-1]["step"] and not res["steps"][-1]["ok"], (name, res["steps"][-1])
            assert all(s["ok"] for s in res["steps"][:-1]), name


def test_first_middle_and_last_leaves_of_trees_of_every_size_up_to_17_verify(node_ready: None) -> None:
    from chainshare import codec

    bundles = []
    for n in range(1, 18):
        for pos in sorted({0, n // 2, n - 1}):
            b = make_bundle()
            txs = [os.urandom(8) for _ in range(n)]
            f = codec.decode(bytes.fromhex(b["header"][2:]))
            f[5] = compute_root(txs)
            header = Header.from_list(f)
            msg = vote_message(CHAIN_ID, header.hash, header.height, header.round, EPOCH)
            qc = aggregate_qc(header.hash, 77, 9, {i: bls.sign(SKS[i], msg) for i in (0, 1, 2)}, 4)
            b.update(header="0x" + header.encode().hex(), block_hash="0x" + header.hash.hex(),
                     qc="0x" + qc.encode().hex(), tx_hash="0x" + keccak256(txs[pos]).hex(),
                     transaction={"leaf": "0x" + txs[pos].hex(),
                                  "proof": compute_inclusion_proof(txs, pos).to_json()})
            bundles.append(b)
    results = run_verifier(bundles)
    bad = [(i, r["steps"][-1]) for i, r in enumerate(results) if not r["ok"]]
    assert not bad, bad[:3]


# -- a block of a later epoch: its set proven from genesis by the chain's epoch-change proofs -----------

def changed_chain_bundle() -> tuple[dict[str, Any], dict[str, Any]]:
    """A real in-process chain (tests/unit/chainkit) whose genesis set [v1] Governance replaces by four
    validators at height A; the epoch-change proof of block A-1 as the leaving validator keeps it (its
    2-chain: the suffix block at A certified by [v1] in epoch 0); then a Governance transaction in a
    block of epoch 1. Returns the proof bundle of that transaction (as the explorer serves it) and the
    forgery material: the same 2-chain certified by the NEW set (the wrong signers)."""
    import sys

    sys.path.insert(0, str(REPO / "tests" / "unit"))
    from test_replica_sync import epoch_change
    from test_validator_sets import ALICE, Gov

    from chainshare.consensus import epochs
    from chainshare.execution.contracts.membership import get_validator_sets
    from chainshare.ledger.finality import encode_finality_proof

    chain, change, child, qc_of_new = epoch_change()  # the chain's head is the last block of epoch 0
    cid, next_set, activation = chain.genesis.chain_id, change.next_set, change.next_set.activation_height
    p = change.proof
    raw_change = epochs.encode_epoch_change_proof(change.last, encode_finality_proof(p.blocks[:-1], p.blocks[-1],
                                                                                     p.qc), next_set)
    forged_change = epochs.encode_epoch_change_proof(change.last, encode_finality_proof((), child, qc_of_new),
                                                     next_set)
    gov = Gov(chain)
    while chain.chain.head_height < activation + 1:
        chain.produce([])
    gov.send(ALICE, bytes(20), b"")  # a transaction in a block of epoch 1
    store = chain.chain
    block = store.get_head()
    receipts = [r.encode() for r in store.get_receipts(block.height)]
    txs = list(block.transactions)
    genesis_set = get_validator_sets(store.state)[0]
    g = store.get_block(0)
    bundle = {
        "chain_id": cid, "epoch": 1, "genesis_hash": "0x" + g.hash.hex(),
        "genesis_header": "0x" + g.header.encode().hex(),
        "genesis_set": {"epoch": 0, "activation_height": genesis_set.activation_height,
                        "validators": validators_json(list(genesis_set.validators))},
        "epoch_changes": ["0x" + raw_change.hex()],
        "tx_hash": "0x" + keccak256(txs[0]).hex(), "block_height": block.height, "block_hash": "0x" + block.hash.hex(),
        "header": "0x" + block.header.encode().hex(),
        "parent_header": "0x" + store.get_block(block.height - 1).header.encode().hex(),
        "qc": "0x" + store.get_qc(block.height).encode().hex(),
        "transaction": {"leaf": "0x" + txs[0].hex(), "proof": compute_inclusion_proof(txs, 0).to_json()},
        "receipt": {"leaf": "0x" + receipts[0].hex(), "proof": compute_inclusion_proof(receipts, 0).to_json()},
        "validators": validators_json(list(next_set.validators)),
    }
    return bundle, {"forged_change": "0x" + forged_change.hex(), "next_set": next_set, "genesis_set": genesis_set}


def python_proves(bundle: dict[str, Any]) -> bool:
    """The node's own rules on the same bundle: the epoch-change proofs walked from the genesis set
    (``verify_epoch_changes``), ending at the set served for the block."""
    from chainshare.consensus import epochs
    from chainshare.errors import ChainshareError
    from chainshare.execution.contracts.membership import ValidatorSet

    def unhex(v: str) -> bytes:
        return bytes.fromhex(v[2:])

    gs = bundle["genesis_set"]
    start = ValidatorSet(0, gs["activation_height"], tuple(
        {"name": v["name"], "agency": v["agency"], **{k: unhex(v[k]) for k in ("address", "bls_public_key", "bls_pop")}}
        for v in gs["validators"]))
    try:
        sets = epochs.prove_sets_from(start, [unhex(r) for r in bundle["epoch_changes"]], bundle["chain_id"])
    except ChainshareError:
        return False
    final = sets[-1] if sets else start
    served = [{"name": v["name"], "agency": v["agency"], **{k: unhex(v[k]) for k in ("address", "bls_public_key",
                                                                                   "bls_pop")}}
              for v in bundle["validators"]]
    return final.epoch == bundle["epoch"] and compute_validator_set_hash(final.validators) == \
        compute_validator_set_hash(served)


def test_a_later_epochs_set_is_proven_from_genesis_and_forged_changes_fail_at_that_step(node_ready: None) -> None:
    from chainshare.consensus import epochs
    from chainshare.execution.contracts.membership import ValidatorSet

    good, forge = changed_chain_bundle()
    nxt = forge["next_set"]
    short_set = ValidatorSet(1, nxt.activation_height, nxt.validators[:3])
    raw = epochs.decode_epoch_change_proof(bytes.fromhex(good["epoch_changes"][0][2:]))
    from chainshare.ledger.finality import encode_finality_proof
    not_committed = epochs.encode_epoch_change_proof(
        raw.last, encode_finality_proof(raw.proof.blocks[:-1], raw.proof.blocks[-1], raw.proof.qc), short_set)
    g_other = make_genesis_header(VALIDATORS)
    step = "Validator set proven from genesis"
    cases: list[tuple[str, dict[str, Any], bool]] = [
        ("honest walk", good, True),
        ("the 2-chain certified by the new set, not the leaving one", {**good, "epoch_changes": [forge["forged_change"]]},
         False),
        ("a next set that does not hash to the committed validator_set_hash",
         {**good, "epoch_changes": ["0x" + not_committed.hex()]}, False),
        ("a missing change", {**good, "epoch_changes": []}, False),
        ("another genesis set served", {**good, "genesis_set": {**good["genesis_set"],
                                                                 "validators": validators_json(VALIDATORS)}}, False),
        ("another genesis hash shown", {**good, "genesis_header": "0x" + g_other.encode().hex(),
                                        "genesis_hash": "0x" + g_other.hash.hex()}, False),
    ]
    results = run_verifier([c[1] for c in cases])
    for (name, bundle, honest), res in zip(cases, results, strict=True):
        if bundle["genesis_hash"] == good["genesis_hash"]:  # the Python twin only sees the set walk
            assert python_proves(bundle) is honest, name
        if honest:
            assert res["ok"] and all(s["ok"] for s in res["steps"]), (name, res)
            walk = [s for s in res["steps"] if s["step"].startswith(step)]
            assert len(walk) == 1 and walk[0]["step"] == f"{step} (1 changes)", res["steps"]
            assert "→ epoch 1 (active from block" in walk[0]["detail"]
        else:
            assert not res["ok"], name
            assert res["steps"][-1]["step"].startswith(step) and not res["steps"][-1]["ok"], (name, res["steps"][-1])
            assert all(s["ok"] for s in res["steps"][:-1]), name
    details = [r["steps"][-1]["detail"] for r in results[1:]]
    assert "not signed by a quorum of epoch 0" in details[0]
    assert "do not hash to block" in details[1]
    assert "a validator-set change is missing" in details[2]
    assert "genesis set served does not hash" in details[3]


def test_a_pairing_check_that_held_is_not_repeated_and_a_changed_one_is_checked_again(node_ready: None) -> None:
    """The second verification of the same epoch-1 page runs no pairing check (the walk's two QCs, the
    PoPs and the block's QC are remembered), yet a bundle whose QC signature differs in one byte is checked
    again and fails: a remembered result is keyed by every byte the check reads."""
    good, _ = changed_chain_bundle()
    qc = bytearray(bytes.fromhex(good["qc"][2:]))
    qc[-5] ^= 1  # inside the aggregate signature (the last field of the encoded QC)
    tampered = {**good, "qc": "0x" + qc.hex()}
    script = (f"import {{ verifyProof, countPairingChecks }} from {json.dumps(VERIFY.as_uri())};\n"
              "import { readFileSync } from 'node:fs';\n"
              "const out = JSON.parse(readFileSync(0, 'utf8')).map((b) => {\n"
              "  const before = countPairingChecks();\n"
              "  const r = verifyProof(b);\n"
              "  return { ok: r.ok, last: r.steps[r.steps.length - 1], checks: countPairingChecks() - before };\n"
              "});\n"
              "process.stdout.write(JSON.stringify(out));\n")
    out = subprocess.run(["node", "--input-type=module", "-e", script], input=json.dumps([good, good, tampered]),
                         capture_output=True, text=True, timeout=120, check=True)
    first, again, forged = json.loads(out.stdout)
    n = len(good["validators"])
    assert first["ok"] and first["checks"] == 2 + n + 1, first  # walk: 2 QCs; n PoPs; the block's QC
    assert again["ok"] and again["checks"] == 0, again
    assert not forged["ok"] and forged["checks"] == 1, forged
    assert forged["last"]["step"].startswith("BLS aggregate signature"), forged["last"]
