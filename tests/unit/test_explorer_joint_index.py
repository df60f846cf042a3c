"""The explorer's fold of JointCompute events into joint_jobs rows (explorer.indexer.joint)."""

from __future__ import annotations

import json
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from chainshare.explorer.db.joint_tables import joint_job_events, joint_jobs
from chainshare.explorer.indexer.joint import apply_joint_event

QH, C1, C2, RH = "0x" + "51" * 32, "0x" + "01" * 32, "0x" + "02" * 32, "0x" + "52" * 32


class Entities:
    def __init__(self) -> None:
        self.rows: dict[Any, dict[str, Any]] = {}
        self.touched: set[Any] = set()

    def get(self, table: Any, key: Any) -> dict[str, Any] | None:
        return self.rows.get(key)

    def put(self, table: Any, key: Any, row: dict[str, Any]) -> None:
        self.rows[key] = row

    def touch(self, table: Any, key: Any) -> None:
        self.touched.add(key)


def fold(events: list[tuple[str, dict[str, Any]]]) -> tuple[Entities, dict[str, list[dict[str, Any]]]]:
    ents, inserts = Entities(), defaultdict(list)
    for i, (name, args) in enumerate(events):
        ev = SimpleNamespace(seq=i + 1, event=name, args=args, tx_hash=bytes([i + 1]) * 32)
        apply_joint_event(ents, inserts, ev, 10 + i, 1_000 * i)
    return ents, inserts


CREATED = ("JointJobCreated", {"jobId": 4, "requester": "stats", "datasetIds": [7, 9], "grantIds": [3, 5],
                               "participants": ["a", "b"], "queryHash": QH, "epsilonMicro": 500_000})


def test_a_job_is_created_committed_confirmed_and_recorded_in_participant_order() -> None:
    ents, inserts = fold([CREATED, ("JointJobDeadline", {"jobId": 4, "expiresAt": 1_700_000_900}),
                          ("JointInputCommitted", {"jobId": 4, "participant": "b", "datasetId": 9, "commitment": C2}),
                          ("JointInputCommitted", {"jobId": 4, "participant": "a", "datasetId": 7, "commitment": C1}),
                          ("JointResultConfirmed", {"jobId": 4, "participant": "a", "outcome": "released",
                                                    "resultHash": RH}),
                          ("JointResultConfirmed", {"jobId": 4, "participant": "b", "outcome": "released",
                                                    "resultHash": RH}),
                          ("JointResultRecorded", {"jobId": 4, "outcome": "released", "resultHash": RH,
                                                   "participants": ["a", "b"], "epsilonMicro": 500_000})])
    job = ents.rows[4]
    assert job["status"] == "completed" and job["expires_at"] == 1_700_000_900 and job["closed_height"] == 16
    assert json.loads(job["commitments"]) == [C1, C2]
    assert json.loads(job["confirmations"]) == [{"outcome": "released", "result_hash": RH}] * 2
    assert job["result_hash"] == bytes.fromhex(RH[2:]) and job["created_tx"] == b"\x01" * 32
    history = inserts["joint_job_events"]
    assert [h["event"] for h in history][:2] == ["JointJobCreated", "JointJobDeadline"] and len(history) == 7
    assert [h["agency"] for h in history][2:4] == ["b", "a"]


def test_running_after_every_commitment_then_aborted_or_expired_with_the_reason() -> None:
    commits = [("JointInputCommitted", {"jobId": 4, "participant": p, "datasetId": d, "commitment": C1})
               for p, d in (("a", 7), ("b", 9))]
    ents, _ = fold([CREATED, *commits])
    assert ents.rows[4]["status"] == "running"
    ents, _ = fold([CREATED, commits[0], ("JointJobAborted", {"jobId": 4, "by": "b", "reason": "dropout: a"})])
    assert ents.rows[4]["status"] == "aborted" and ents.rows[4]["reason"] == "dropout: a"
    ents, _ = fold([CREATED, ("JointJobExpired", {"jobId": 4, "by": "stats", "expiresAt": 99})])
    assert ents.rows[4]["status"] == "expired" and ents.rows[4]["reason"] == "expired at block time 99"


def test_events_of_a_job_created_before_the_index_keep_their_history_only() -> None:
    ents, inserts = fold([("JointJobAborted", {"jobId": 8, "by": "b", "reason": "x"})])
    assert ents.rows == {} and len(inserts["joint_job_events"]) == 1


def test_the_joint_pages_and_api_render_an_indexed_job(tmp_path: Any) -> None:
    from fastapi.testclient import TestClient

    from chainshare.explorer.api.app import create_explorer_app
    from chainshare.explorer.db.engine import apply_migrations, create_db_engine

    engine = create_db_engine(f"sqlite:///{tmp_path}/explorer.db")
    apply_migrations(engine)
    ents, inserts = fold([CREATED, ("JointInputCommitted", {"jobId": 4, "participant": "a", "datasetId": 7,
                                                            "commitment": C1}),
                          ("JointJobExpired", {"jobId": 4, "by": "b", "expiresAt": 99})])
    with engine.begin() as conn:
        conn.execute(joint_jobs.insert(), [ents.rows[4]])
        conn.execute(joint_job_events.insert(), inserts["joint_job_events"])
    client = TestClient(create_explorer_app(engine))
    listed = client.get("/joint")
    assert listed.status_code == 200 and 'href="/joint/4"' in listed.text and "expired" in listed.text
    one = client.get("/joint/4")
    assert one.status_code == 200 and "JointJobExpired" in one.text and C1[:10] in one.text
    assert "expired at block time 99" in one.text
    assert client.get("/api/v1/joint/jobs/4").json()["commitments"] == [C1, None]
    assert [client.get(p).status_code for p in ("/joint/5", "/joint/x", "/api/v1/joint/jobs/x")] == [404, 400, 400]
