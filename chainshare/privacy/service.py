"""A node's side of joint secure-aggregation jobs (``aggregate`` for the protocol, the contract
``JointCompute`` for the record), over the node's mutual-TLS P2P sessions only.

Requester (``run_joint_query``): checks its ``compute_joint`` grants on its own chain, creates the
job (``createJob``: the datasets' policies decided the grants; the job names the query hash, the
epsilon and the owners), waits until it is final, asks every owner's node to run it
(``joint.start``) and returns the released result once every owner has answered the same one (each
owner answers only after the job's ``JointResultRecorded`` is final). If an owner cannot be reached
or refuses, it aborts the job on chain with the reason.

Owner (``joint.start`` from the requester's node, authenticated by its consortium certificate):
re-reads the job on its own finalized chain (requester = the peer's agency, this agency a
participant, the query hashes to the job's), measures its own dataset from its vault, adds its
noise, commits to its input on chain (``commitInput``) and waits until every owner has; then sends
one Shamir share to each other owner's node (``joint.share``, checked against the sender's
certificate), adds the shares it gets, sends its sum share to all, recombines the noisy totals,
applies the release rule, confirms the outcome on chain (``confirmResult``) and answers once the job
is completed. A party missing past ``phase_timeout`` aborts the job on chain (``dropout``); no
result is ever opened without every party's sum share.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from chainshare.crypto.hashing import keccak256
from chainshare.errors import ChainshareError, InvalidInput, NotFound, Unauthorized
from chainshare.execution.contracts import cedar
from chainshare.execution.contracts.addresses import JOINT_COMPUTE
from chainshare.execution.contracts.joint import FINAL_STATUSES
from chainshare.execution.runtime import encode_call
from chainshare.logs import log_event
from chainshare.privacy.aggregate import (
    CommitmentOpening,
    InputShare,
    JointAborted,
    JointQuery,
    JointSession,
    SumShare,
    compute_input_commitment,
    compute_joint_query_hash,
    compute_local_vector,
    compute_noise_vector,
    compute_vector_commitment,
    decode_message,
    parse_commitment_opening,
    parse_joint_query,
    release_joint_result,
)
from chainshare.sharing import protocol as wire
from chainshare.sharing.compute import QueryRefused, compute_result_hash
from chainshare.sharing.records import JOINT_CONTRACT, call_view, read_dataset, select_grant
from chainshare.sharing.schema import canonical_json, iter_records, validate_schema
from chainshare.sharing.service import get_error_kind

log = logging.getLogger("chainshare.privacy")

MSG_PREFIX = "joint."
MSG_START = "joint.start"
MSG_SHARE = "joint.share"
MAX_PENDING = 64  # shares buffered for a job this node has not started yet
MAX_DATASETS = 16
LOCAL_PEER = ""
DEFAULT_JOB_TTL = 900  # seconds of block time a job has to complete before anyone may expire it
GAS_PER_CHARGE = 150_000  # AccessControl.chargeJointComputation, called by the job's last confirmation


@dataclass(frozen=True)
class JointJob:
    requester: str
    dataset_ids: tuple[int, ...]
    grant_ids: tuple[int, ...]
    participants: tuple[str, ...]
    query_hash: bytes
    epsilon_micro: int
    status: str
    reason: str
    outcome: str  # once completed: what every participant confirmed, and the result's hash
    result_hash: bytes
    commitments: tuple[bytes, ...]  # per participant; zero until it committed
    expires_at: int  # block time (seconds) of its deadline; 0: none


@dataclass
class _Run:
    session: JointSession
    participants: tuple[str, ...]
    done: asyncio.Event


class JointService:
    """Joint jobs on one node; built on the node's ``SharingService`` (its transport, vault, agency
    account and chain access)."""

    def __init__(self, sharing: Any, *, phase_timeout: float = 60.0, job_ttl: int = DEFAULT_JOB_TTL) -> None:
        self.sharing = sharing
        self.phase_timeout = phase_timeout
        self.job_ttl = job_ttl
        self._runs: dict[int, _Run] = {}
        self._pending: dict[int, list[tuple[str, bytes]]] = {}

    # ----------------------------------------------------------------------- wiring

    def route_message(self, fallback: Callable[[str, str, Any], Awaitable[None]]
                      ) -> Callable[[str, str, Any], Awaitable[None]]:
        async def on_message(peer: str, msg_type: str, body: Any) -> None:
            if msg_type == MSG_SHARE:
                self.on_share(peer, body)
            else:
                await fallback(peer, msg_type, body)

        return on_message

    def route_request(self, fallback: Callable[[str, str, Any], Awaitable[Any]]
                      ) -> Callable[[str, str, Any], Awaitable[Any]]:
        async def on_request(peer: str, msg_type: str, body: Any) -> Any:
            if msg_type == MSG_START:
                try:
                    return await self.serve_start(peer, body)
                except ChainshareError as exc:
                    if peer == LOCAL_PEER:
                        raise
                    raise ChainshareError(f"[{get_error_kind(exc)}] {exc.message}") from None
            return await fallback(peer, msg_type, body)

        return on_request

    # ----------------------------------------------------------------------- chain

    @property
    def node(self) -> Any:
        return self.sharing.node

    @property
    def agency(self) -> str:
        return str(self.sharing.agency)

    def read_job(self, job_id: int) -> JointJob:
        return read_joint_job(self.node, job_id)

    async def _record(self, fn: str, *args: Any, min_gas: int = 0) -> bytes:
        """Submit JointCompute.``fn`` from this agency's account and wait until it is final; its output."""
        tx, error = self.sharing.submit_call(JOINT_COMPUTE, encode_call(JOINT_CONTRACT, fn, *args), min_gas=min_gas)
        if tx is None:
            raise JointAborted(f"could not record {fn} on chain: {error}", reason="record")
        deadline = time.monotonic() + max(self.phase_timeout, 30.0)
        while (loc := self.node.chain.get_tx_location(tx)) is None:
            if time.monotonic() > deadline:
                raise JointAborted(f"{fn} (0x{tx.hex()}) was not final in time", reason="record")
            await asyncio.sleep(0.05)
        receipt = self.node.chain.get_receipts(loc.height)[loc.index]
        if receipt.status != 1:
            raise JointAborted(f"{fn} (0x{tx.hex()}) reverted", reason="record")
        return bytes(receipt.output)

    async def _abort(self, job_id: int, reason: str) -> None:
        """Abort the job on chain, or record its expiry if its deadline has passed."""
        try:
            if self.read_job(job_id).status not in FINAL_STATUSES:
                if self.is_expired(job_id):
                    await self._record("expireJob", job_id)
                else:
                    await self._record("abortJob", job_id, reason[:128])
        except ChainshareError as exc:
            log_event(log, logging.WARNING, "joint job abort not recorded", job=job_id, error=exc.message)

    def is_expired(self, job_id: int) -> bool:
        """Whether the job's deadline has passed by the time of this node's latest final block."""
        expires_at = self.read_job(job_id).expires_at
        return bool(expires_at) and self.node.chain.get_head().header.timestamp_ms // 1000 >= expires_at

    async def _wait_status(self, job_id: int, wanted: str) -> JointJob:
        deadline = time.monotonic() + self.phase_timeout
        while True:
            job = self.read_job(job_id)
            if job.status == wanted:
                return job
            if job.status in ("aborted", "expired"):
                raise JointAborted(f"joint job {job_id} was {job.status}: {job.reason}", reason=job.status)
            if time.monotonic() > deadline:
                raise JointAborted(f"joint job {job_id} is still {job.status} after {self.phase_timeout:.0f} s",
                                   reason="dropout")
            await asyncio.sleep(0.1)

    def read_commitment_opening(self, job_id: int, *, full: bool) -> CommitmentOpening:
        """This owner's opening of its input commitment to ``job_id`` (from its vault): the binding
        part (dataset, version hash, vector commitment: nothing of the rows), or with ``full`` also
        its exact local vector and salt (its subtotals; for an auditor the owner chose to show)."""
        if self.sharing.vault is None:
            raise NotFound("this node has no vault: it holds no commitment openings")
        try:
            opening = parse_commitment_opening(json.loads(self.sharing.vault.open_record(_opening_record(job_id))))
        except NotFound:
            raise NotFound(f"this node holds no commitment opening for joint job {job_id} (it committed no input "
                           "to it)") from None
        return opening if full else opening.binding_part()

    def _schemas(self, dataset_ids: tuple[int, ...]) -> list[Any]:
        return [validate_schema(json.loads(read_dataset(self.node, d).schema_json)) for d in dataset_ids]

    # ----------------------------------------------------------------------- requester

    async def run_joint_query(self, dataset_ids: list[int], query: object) -> dict[str, Any]:
        """Create, run and return a joint job over ``dataset_ids`` under this agency's grants."""
        if not 2 <= len(dataset_ids) <= MAX_DATASETS or len(set(dataset_ids)) != len(dataset_ids):
            raise InvalidInput(f"a joint query names 2..{MAX_DATASETS} distinct datasets")
        ids = tuple(dataset_ids)
        jq = parse_joint_query(query, self._schemas(ids))
        now = int(time.time())
        grants = [select_grant(self.node, d, self.agency, (cedar.ACTION_COMPUTE_JOINT,), now).id for d in ids]
        query_hash = compute_joint_query_hash(jq)
        out = await self._record("createJobWithDeadline", grants, query_hash, jq.query.epsilon_micro, self.job_ttl)
        job_id = int.from_bytes(out[:32], "big")
        job = self.read_job(job_id)
        body = [job_id, canonical_json(jq.to_json())]
        log_event(log, logging.INFO, "joint job created", job=job_id, datasets=list(ids),
                  participants=list(job.participants))
        tasks = [asyncio.ensure_future(self._ask_owner(owner, body)) for owner in job.participants]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        failed = [(o, t.exception()) for o, t in zip(job.participants, tasks, strict=True)
                  if t.done() and t.exception() is not None]
        if failed:  # abort on chain at once: the other owners see it and stop
            owner, exc = failed[0]
            text = exc.message if isinstance(exc, ChainshareError) else str(exc)
            await self._abort(job_id, f"dropout: {owner}: {text}"[:128])
            await asyncio.gather(*tasks, return_exceptions=True)
            raise JointAborted(f"joint job {job_id} aborted: {owner}: {text}", reason="dropout")
        answers = [t.result() for t in tasks]
        if not all(isinstance(a, list) and len(a) == 2 and isinstance(a[0], str) and isinstance(a[1], bytes)
                   for a in answers):
            raise JointAborted(f"an owner of joint job {job_id} answered a malformed result", reason="inconsistent")
        outcomes = {(a[0], a[1]) for a in answers}
        if len(outcomes) != 1:
            raise JointAborted(f"the owners of joint job {job_id} answered different results", reason="inconsistent")
        outcome, result_json = outcomes.pop()
        # An owner answers once the job's completion is final on its own node; this node may commit that
        # block a network hop later (it learns of the QC after them), so wait for it here too.
        final = await self._wait_status(job_id, "completed")
        # What the owners answered must be what they all signed on chain.
        expected = keccak256(result_json) if outcome == "released" else bytes(32)
        if final.status != "completed" or final.outcome != outcome or final.result_hash != expected:
            raise JointAborted(f"the owners' answer to joint job {job_id} does not match its on-chain record",
                               reason="inconsistent")
        if outcome == "min_group":
            raise QueryRefused(f"joint job {job_id} refused by the datasets' privacy rule: no cell reaches the "
                               f"strictest min_group={jq.schema.min_group} (measured with noise); the epsilon was "
                               "charged on every dataset")
        return {"job_id": job_id, "status": final.status, "datasets": list(ids), "participants": list(job.participants),
                "query_hash": "0x" + query_hash.hex(), "result_hash": "0x" + keccak256(result_json).hex(),
                "result": json.loads(result_json)}

    async def _ask_owner(self, owner: str, body: list[Any]) -> Any:
        if owner == self.agency:
            return await self.serve_start(LOCAL_PEER, body)
        peer = self.sharing.resolve_owner_peer(owner)
        return await self.sharing.request_peer(peer, MSG_START, body, 4 * self.phase_timeout)

    # ----------------------------------------------------------------------- owner

    async def serve_start(self, peer: str, body: Any) -> list[Any]:
        if not (isinstance(body, list) and len(body) == 2 and isinstance(body[0], int) and isinstance(body[1], bytes)
                and len(body[1]) <= 16 * 1024):
            raise InvalidInput("malformed joint.start")
        job_id, query_json = body
        requester = self.agency if peer == LOCAL_PEER else self.sharing.get_peer_agency(peer)
        deadline = time.monotonic() + min(30.0, self.phase_timeout)  # the requester saw it final; we may lag
        while True:
            try:
                job = self.read_job(job_id)
                break
            except NotFound:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        if job.requester != requester:
            raise Unauthorized(f"joint job {job_id} was created by {job.requester!r}, not {requester!r}")
        if self.agency not in job.participants:
            raise Unauthorized(f"this agency is not a participant of joint job {job_id}")
        if job.status != "committing" or job_id in self._runs:
            raise InvalidInput(f"joint job {job_id} is {job.status}: it can start only once")
        jq = parse_joint_query(query_json, self._schemas(job.dataset_ids))
        if compute_joint_query_hash(jq) != job.query_hash:
            raise InvalidInput(f"the query does not hash to joint job {job_id}'s query hash")
        index = job.participants.index(self.agency) + 1
        run = _Run(JointSession(job_id, index, len(job.participants), jq.width), job.participants, asyncio.Event())
        self._runs[job_id] = run
        try:
            return await self._run(job_id, job, jq, run)
        except JointAborted as exc:
            await self._abort(job_id, f"{exc.reason}: {exc.message}")
            raise
        finally:
            self._runs.pop(job_id, None)
            self._pending.pop(job_id, None)

    async def _run(self, job_id: int, job: JointJob, jq: JointQuery, run: _Run) -> list[Any]:
        index = run.session.index
        dataset = read_dataset(self.node, job.dataset_ids[index - 1])
        entry = self.sharing.find_vault_entry(dataset)
        vault = self.sharing.vault

        def measure() -> list[int]:
            with vault.open_plaintext(entry) as src:
                return compute_local_vector(jq, iter_records(src, entry.fmt, jq.schema, jq.query.columns))

        vector = await asyncio.get_running_loop().run_in_executor(None, measure)
        noisy = [v + n for v, n in zip(vector, compute_noise_vector(jq), strict=True)]
        salt = secrets.token_bytes(32)
        opening = CommitmentOpening(job_id, dataset.id, dataset.content_hash, compute_vector_commitment(vector, salt),
                                    tuple(vector), salt)
        # Kept sealed before the commitment is public: an auditor can be shown it after the fact.
        vault.seal_record(_opening_record(job_id), canonical_json(opening.to_json()))
        await self._record("commitInput", job_id, compute_input_commitment(job_id, dataset.id, dataset.content_hash,
                                                                           opening.vector_commitment))
        log_event(log, logging.INFO, "joint input committed", job=job_id, party=index, dataset=dataset.id)
        await self._wait_status(job_id, "running")
        self._send(run, run.session.start(noisy))
        for peer, data in self._pending.pop(job_id, []):
            self.on_share(peer, data)
        deadline = time.monotonic() + self.phase_timeout
        while not run.done.is_set():  # until every share is in, the job aborted elsewhere, or the deadline
            try:
                await asyncio.wait_for(run.done.wait(), 0.5)
            except TimeoutError:
                status = self.read_job(job_id)
                if status.status in ("aborted", "expired"):
                    raise JointAborted(f"joint job {job_id} was {status.status}: {status.reason}",
                                       reason=status.status) from None
                if time.monotonic() > deadline:
                    missing = [run.participants[i - 1] for i in run.session.missing]
                    raise JointAborted(f"no shares from {missing} within {self.phase_timeout:.0f} s",
                                       reason="dropout") from None
        assert run.session.totals is not None
        try:
            result = release_joint_result(jq, run.session.totals)
            outcome, result_json = "released", result.to_canonical_json()
            result_hash = compute_result_hash(result)
        except QueryRefused:
            outcome, result_json, result_hash = "min_group", b"", bytes(32)
        # The last confirmation charges every dataset's budget: more gas than this dry run may show.
        await self._record("confirmResult", job_id, outcome, result_hash,
                           min_gas=GAS_PER_CHARGE * len(run.participants) + 200_000)
        await self._wait_status(job_id, "completed")
        log_event(log, logging.INFO, "joint job completed", job=job_id, outcome=outcome, party=index)
        return [outcome, result_json]

    def _send(self, run: _Run, out: list[InputShare | SumShare]) -> None:
        for msg in out:
            if isinstance(msg, InputShare):
                targets = [msg.receiver]
            else:
                targets = [i for i in range(1, len(run.participants) + 1) if i != run.session.index]
            for target in targets:
                agency = run.participants[target - 1]
                if agency == self.agency:
                    continue
                peer = self.sharing.resolve_owner_peer(agency)
                self.sharing.transport.send(peer, MSG_SHARE, msg.encode())

    def on_share(self, peer: str, body: Any) -> None:
        """A share from another owner's node; never blocks. Checked against the sender's certificate."""
        try:
            if not isinstance(body, bytes) or len(body) > 1 << 20:
                raise JointAborted("malformed joint.share", reason="malformed-share")
            msg = decode_message(body)
            run = self._runs.get(msg.job_id)
            if run is None or not run.session.started:
                pending = self._pending.setdefault(msg.job_id, [])
                if len(pending) >= MAX_PENDING or len(self._pending) > MAX_DATASETS:
                    raise JointAborted("too many early shares", reason="malformed-share")
                pending.append((peer, body))
                return
            sender = self.sharing.get_peer_agency(peer)
            if not 1 <= msg.sender <= len(run.participants) or run.participants[msg.sender - 1] != sender:
                raise Unauthorized(f"peer of agency {sender!r} sent a share as party {msg.sender}")
            self._send(run, run.session.on_message(msg))
            if run.session.totals is not None:
                run.done.set()
        except ChainshareError as exc:
            log_event(log, logging.WARNING, "joint share dropped", peer=peer, reason=exc.message)


def compute_joint_query_message(dataset_ids: list[int], query_digest: bytes, node: str, chain_id: int,
                                timestamp: int, nonce: bytes) -> str:
    """What an agency signs to have its node ``node`` run a joint query over ``dataset_ids``."""
    return wire._signed("joint query", node, chain_id, [("datasets", ",".join(str(d) for d in dataset_ids)),
                                                         ("query", f"0x{query_digest.hex()}")], timestamp, nonce)


def _opening_record(job_id: int) -> str:
    return f"joint-opening-{job_id}"


def compute_joint_opening_message(job_id: int, node: str, chain_id: int, timestamp: int, nonce: bytes) -> str:
    """What an owner agency signs to have its node ``node`` reveal its full commitment opening of ``job_id``."""
    return wire._signed("joint opening", node, chain_id, [("job", str(job_id))], timestamp, nonce)


def read_joint_job(node: Any, job_id: int) -> JointJob:
    """Joint job ``job_id`` as this node's finalized chain records it (any node can read it: no data plane
    needed); NotFound if there is none."""
    try:
        r = call_view(node, JOINT_CONTRACT, "getJob", job_id)
    except ChainshareError:
        raise NotFound(f"no joint job {job_id} on this node's chain") from None
    return JointJob(str(r[0]), tuple(int(x) for x in r[1]), tuple(int(x) for x in r[2]),
                    tuple(str(x) for x in r[3]), bytes(r[4]), int(r[5]), str(r[6]), str(r[8]), str(r[9]),
                    bytes(r[10]), tuple(bytes(c) for c in r[7]),
                    int(call_view(node, JOINT_CONTRACT, "getJobDeadline", job_id)[0]))


def get_joint_service(sharing: Any) -> JointService:
    """The one JointService of the node whose data plane is ``sharing``."""
    service = _SERVICES.get(sharing)
    if service is None:
        service = _SERVICES[sharing] = JointService(sharing)
    return service


_SERVICES: weakref.WeakKeyDictionary[Any, JointService] = weakref.WeakKeyDictionary()
