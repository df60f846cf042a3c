"""``chainshare bench credential``: what a zero-knowledge credit credential costs with AnonCreds: issuer setup,
issuance, proof size, and prove / verify time (CPU and wall, per operation), plus the on-chain object sizes
(credential definition, registry definition, status list) for a registry of ``registry_size``."""

from __future__ import annotations

import functools
import json
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chainshare.bench import read_load_average
from chainshare.credit import credentials as zk

SUBJECT = "91110000600037341L"
CATEGORY = "administrative_penalty"
ATTRIBUTES = {"black_list_active": 0, "penalties_3y": 1, "score": 812, "computed_height": 1000}


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, CPU ms, wall ms) of ``fn()``; CPU is the process's (all threads), which load distorts less."""
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn()
    return out, (time.process_time() - cpu) * 1000, (time.perf_counter() - wall) * 1000


def _verify(raw: bytes, nonce: str, public: zk.PublicObjects) -> zk.Verification:
    return zk.verify_proof(zk.parse_proof(raw), nonce, public)


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50": round(statistics.median(ordered), 1), "max": round(ordered[-1], 1)}


def run_credential_bench(registry_size: int = 1000, proofs: int = 10, predicates: int = 2) -> dict[str, Any]:
    load_before = read_load_average()
    state, setup_cpu, setup_wall = _timed(lambda: zk.create_issuer_state("bench", "administrative_penalty",
                                                                          registry_size, int(time.time())))
    (state, cred), issue_cpu, issue_wall = _timed(
        lambda: zk.issue_credential(state, SUBJECT, ATTRIBUTES, zk.create_link_secret(), 1000))
    public = state.to_public(1)
    preds = zk.parse_predicates(["score>=700", "black_list_active<=0", "penalties_3y<=2"][:predicates])
    prove_cpu, prove_wall, verify_cpu, verify_wall, sizes = [], [], [], [], []
    for _ in range(proofs):
        nonce = zk.generate_nonce()
        proof, c, w = _timed(functools.partial(zk.create_proof, cred, preds, nonce, public))
        prove_cpu.append(c)
        prove_wall.append(w)
        raw = json.dumps(proof).encode()
        sizes.append(len(raw))
        verdict, c, w = _timed(functools.partial(_verify, raw, nonce, public))
        assert verdict.valid, verdict.reason
        verify_cpu.append(c)
        verify_wall.append(w)
    revoked, revoke_cpu, _ = _timed(lambda: zk.revoke_credentials(state, [cred["revocation_index"]],
                                                                  state.status_timestamp + 1))
    return {"scenario": "credential", "library": zk.get_library_version(),
            "registry_size": registry_size, "predicates": [str(p) for p in preds], "proofs": proofs,
            "proof_bytes": _summary([float(s) for s in sizes]),
            "prove_cpu_ms": _summary(prove_cpu), "prove_wall_ms": _summary(prove_wall),
            "verify_cpu_ms": _summary(verify_cpu), "verify_wall_ms": _summary(verify_wall),
            "issuer_setup_cpu_ms": round(setup_cpu), "issuer_setup_wall_ms": round(setup_wall),
            "issue_cpu_ms": round(issue_cpu, 1), "issue_wall_ms": round(issue_wall, 1),
            "revoke_cpu_ms": round(revoke_cpu, 1),
            "bytes_on_chain": {"schema": len(state.schema_json), "credential_definition": len(state.cred_def_json),
                               "revocation_registry_definition": len(state.rev_reg_def_json),
                               "status_list": len(revoked.status_list_json)},
            "tails_file_bytes": len(state.tails), "credential_file_bytes": len(json.dumps(cred)),
            "load_average_before": load_before,
            "load_average_after": read_load_average()}


def run_revocation_bench(samples: int = 5, directory: Path | None = None) -> dict[str, Any]:
    """Automatic revocation latency on a one-node devnet: ``samples`` subjects each hold a credential; with
    ``chainshare credit credential revoke --changed --follow`` running as its own process, a negative record
    is published for one subject at a time and the time is measured from that record's receipt being served
    (final: the node serves finalized blocks only; receipt polled every 10 ms) to the issuer's new status
    list being served by ``getStatusList`` (final as well; polled every 10 ms)."""
    from chainshare.bench import devnet_directory, free_port_block
    from chainshare.bench_credit import _CR, RULE, _govern, _publish_data, make_uscc
    from chainshare.client import NodeClient, transact
    from chainshare.credit import credential_chain as chain
    from chainshare.credit.events import RpcSource
    from chainshare.devnet import create_devnet, start_devnet
    from chainshare.execution.contracts.addresses import CREDIT_REGISTRY
    from chainshare.execution.runtime import encode_call

    with devnet_directory(directory, "chainshare-bench-revocation-") as directory:
        create_devnet(directory, 1, free_port_block(1))
        info = start_devnet(directory)
        url = info["nodes"][0]["rpc"]
        keys = [bytes.fromhex(a["private_key"][2:]) for a in info["accounts"]]
        issuer, agency = keys[0], info["accounts"][0]["agency"]
        state_path = directory / "credentials" / f"{agency}.issuer.json"
        subjects = [make_uscc(700 + i) for i in range(samples)]
        with NodeClient(url, timeout=120) as client:
            for call in (encode_call(_CR, "setCategory", CATEGORY, "Administrative penalty", True),
                         encode_call(_CR, "setIssuer", CATEGORY, agency, True),
                         encode_call(_CR, "installScoringRule", json.dumps(RULE))):
                _govern(client, keys, call)
            state = zk.create_issuer_state(agency, CATEGORY, samples + 1, chain.get_chain_time(client))
            chain.publish_issuer_objects(client, issuer, state)
            for subject in subjects:
                attributes = chain.compute_credit_attributes(RpcSource(client), subject)
                state, cred = zk.issue_credential(state, subject, attributes, zk.create_link_secret(),
                                                  attributes["computed_height"])
                chain.record_issuance(client, issuer, state, cred["revocation_index"], subject,
                                      attributes["computed_height"])
            state_path.parent.mkdir(parents=True, exist_ok=True)
            state_path.write_text(json.dumps(state.to_json()))
            state_path.chmod(0o600)
            follower = subprocess.Popen(
                [sys.executable, "-m", "chainshare", "credit", "credential", "revoke", "--changed", "--follow",
                 "--devnet", str(directory), "--as", agency, "--json"],
                stdout=subprocess.PIPE, stderr=(directory / "follower.log").open("w"), stdin=subprocess.DEVNULL,
                text=True)
            try:
                _poll(lambda: follower.poll() is not None or '"following"' in (directory / "follower.log").read_text())
                assert follower.poll() is None, (directory / "follower.log").read_text()
                load_before = read_load_average()
                latencies = []
                for i, subject in enumerate(subjects):
                    before = chain.call_registry_view(client, "getStatusList", state.rev_reg_id)[3]
                    now = chain.get_chain_time(client)
                    sent = transact(client, issuer, CREDIT_REGISTRY, _publish_data(subject, 10_000 + i, now),
                                    wait=False)
                    receipt = _poll(functools.partial(client.rpc, "eth_getTransactionReceipt", sent["transactionHash"]))
                    assert receipt["status"] == "0x1", receipt
                    final = time.perf_counter()
                    _poll(functools.partial(_status_list_moved, client, state.rev_reg_id, before))
                    latencies.append((time.perf_counter() - final) * 1000)
                load_after = read_load_average()
            finally:
                follower.send_signal(signal.SIGTERM)
                out, _ = follower.communicate(timeout=60)
        summary = json.loads(out.strip().splitlines()[-1])
    assert summary["revoked"] == list(range(1, samples + 1)), summary
    return {"scenario": "credential-revocation", "samples": samples, "follower_exit": follower.returncode,
            "record_final_to_revocation_final_ms": {"p50": round(statistics.median(latencies), 1),
                                                     "max": round(max(latencies), 1),
                                                     "all": [round(x) for x in latencies]},
            "follower_event_to_receipt_ms_p50": round(statistics.median(
                r["wall_ms"] for r in summary["revocations"]), 1),
            "load_average_before": load_before,
            "load_average_after": load_after}


def _status_list_moved(client: Any, rev_reg_id: str, height: int) -> bool:
    from chainshare.credit.credential_chain import call_registry_view

    return bool(call_registry_view(client, "getStatusList", rev_reg_id)[3] != height)


def _poll(fn: Callable[[], Any], timeout: float = 120, every: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := fn()):
        if time.monotonic() > deadline:
            raise TimeoutError("bench: the condition did not hold in time")
        time.sleep(every)
    return value
