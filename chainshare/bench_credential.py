"""``chainshare bench credential``: what a zero-knowledge credit credential costs with AnonCreds: issuer setup,
issuance, proof size, and prove / verify time (CPU and wall, per operation), plus the on-chain object sizes
(credential definition, registry definition, status list) for a registry of ``registry_size``."""

from __future__ import annotations

import functools
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from chainshare.credit import credentials as zk

SUBJECT = "91110000600037341L"
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
    load_before = os.getloadavg()
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
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()]}
