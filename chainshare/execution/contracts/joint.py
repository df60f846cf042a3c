"""JointCompute: the on-chain record of joint (multi-owner) secure-aggregation jobs.

A job is created by the requesting agency with one ``compute_joint`` grant per dataset
(``AccessControl.request(datasetId, "compute_joint", purpose, ...)``: each dataset's own Cedar policy,
plus the consortium's, decided it), the hash of the joint query and its epsilon. ``createJob`` checks
that every grant is the requester's, valid, for ``compute_joint``, on distinct datasets of distinct
owner agencies (2..16), and that each grant's privacy budget and hourly rate still allow the query
(``AccessControl.getComputeAllowance``); the participants are the datasets' owners, in grant order
(party i of the computation is participant i).

Then, in order:

- each participant commits to its input (``commitInput``: a hiding hash of its dataset version and
  exact local vector, ``chainshare.privacy.aggregate.compute_input_commitment``) before it sends any
  share; the job is ``running`` once all have committed;
- each participant confirms the outcome it computed (``confirmResult``: the result hash, or the
  ``min_group`` refusal): its own signed transaction is its signature on the result. When all have
  confirmed the same outcome the job is ``completed``: the query's epsilon is charged to the
  requester's budget on EVERY dataset involved (``AccessControl.chargeJointComputation``), and
  ``JointResultRecorded`` is emitted; owners release the result to the requester only once that
  record is final. Two different outcomes abort the job (``inconsistent``);
- a participant or the requester may abort a job that is not completed (``abortJob``, e.g. a party
  dropped out): ``JointJobAborted`` with the reason; nothing was opened, nothing is charged.

Expiry (block time, never a wall clock): a job created with ``createJobWithDeadline`` must complete
before block time ``expiresAt`` (the creating block's time + ``ttlSeconds``). From the first block at
or past it, every commitment, confirmation or abort of the job reverts ("joint job N expired at
..."), and the requester or any participant records the expiry with ``expireJob``
(``JointJobExpired``; status ``expired``; nothing was opened, nothing is charged). Jobs made by
``createJob`` have no deadline, as before (``getJobDeadline`` answers 0).
"""

from __future__ import annotations

from typing import Any

from chainshare import codec
from chainshare.execution import abi
from chainshare.execution.contracts.addresses import ACCESS_CONTROL, JOINT_COMPUTE
from chainshare.execution.contracts.cedar import ACTION_COMPUTE_JOINT
from chainshare.execution.contracts.datasets import get_dataset
from chainshare.execution.contracts.membership import get_agency_of
from chainshare.execution.runtime import G_SLOAD, CallContext, Revert, SystemContract, event, method

MIN_PARTICIPANTS = 2
MAX_PARTICIPANTS = 16
MAX_REASON_BYTES = 128
STATUS_COMMITTING = "committing"
STATUS_RUNNING = "running"
STATUS_COMPLETED = "completed"
STATUS_ABORTED = "aborted"
STATUS_EXPIRED = "expired"
FINAL_STATUSES = (STATUS_COMPLETED, STATUS_ABORTED, STATUS_EXPIRED)
MIN_TTL_SECONDS = 1
MAX_TTL_SECONDS = 7 * 24 * 3600
OUTCOME_RELEASED = "released"
OUTCOME_MIN_GROUP = "min_group"
OUTCOMES = (OUTCOME_RELEASED, OUTCOME_MIN_GROUP)
K_JOBS = b"jobs"


def _job_key(job_id: int) -> bytes:
    return b"j:" + job_id.to_bytes(8, "big")


def _call(ctx: CallContext, signature: str, returns: str, *args: Any) -> tuple[Any, ...]:
    """Call AccessControl's method ``signature`` (ABI) and decode its ``returns``."""
    name, params = abi.parse_signature(signature)
    data = abi.compute_selector(name, params) + abi.encode_values([p.type for p in params], list(args))
    out = ctx.call(ACCESS_CONTROL, data)
    return abi.decode_values([p.type for p in abi.parse_params(returns)], out) if returns else ()


class JointCompute(SystemContract):
    NAME = "JointCompute"
    ADDRESS = JOINT_COMPUTE
    E_CREATED = event("JointJobCreated(uint256 indexed jobId, string requester, uint256[] datasetIds, "
                      "uint256[] grantIds, string[] participants, bytes32 queryHash, uint64 epsilonMicro)")
    E_COMMITTED = event("JointInputCommitted(uint256 indexed jobId, string participant, uint256 datasetId, "
                        "bytes32 commitment)")
    E_CONFIRMED = event("JointResultConfirmed(uint256 indexed jobId, string participant, string outcome, "
                        "bytes32 resultHash)")
    E_RECORDED = event("JointResultRecorded(uint256 indexed jobId, string outcome, bytes32 resultHash, "
                       "string[] participants, uint64 epsilonMicro)")
    E_ABORTED = event("JointJobAborted(uint256 indexed jobId, string by, string reason)")
    E_DEADLINE = event("JointJobDeadline(uint256 indexed jobId, uint64 expiresAt)")
    E_EXPIRED = event("JointJobExpired(uint256 indexed jobId, string by, uint64 expiresAt)")
    EVENTS = (E_CREATED, E_COMMITTED, E_CONFIRMED, E_RECORDED, E_ABORTED, E_DEADLINE, E_EXPIRED)

    # -- storage ------------------------------------------------------------------------------------

    def _load(self, ctx: CallContext, job_id: int) -> list[Any]:
        raw = ctx.sload(_job_key(job_id)) if 0 < job_id < 2**64 else None
        if raw is None:
            raise Revert(f"no joint job {job_id}")
        return list(codec.decode(raw))

    def _store(self, ctx: CallContext, job_id: int, job: list[Any]) -> None:
        ctx.sstore(_job_key(job_id), codec.encode(job))

    # job = [requester, dataset_ids, grant_ids, participants, query_hash, epsilon, status,
    #        commitments (per participant, b"" until sent), confirmations (per participant: [outcome, hash] or []),
    #        reason(, expires_at: block time in seconds, only for jobs made by createJobWithDeadline)]

    def _check_not_expired(self, ctx: CallContext, job: list[Any], job_id: int, action: str) -> None:
        """Revert ``action`` on a job whose deadline has passed (by this block's time)."""
        expires_at = _deadline(job)
        now = ctx.env.timestamp_ms // 1000
        if expires_at and now >= expires_at and job[6] not in FINAL_STATUSES:
            raise Revert(f"joint job {job_id} expired at block time {expires_at} (this block: {now}): {action} "
                         "refused; record the expiry with expireJob")

    # -- methods ------------------------------------------------------------------------------------

    @method("createJob(uint256[] grantIds, bytes32 queryHash, uint64 epsilonMicro)", returns="uint256 jobId")
    def create_job(self, ctx: CallContext, grant_ids: list[int], query_hash: bytes, epsilon_micro: int) -> int:
        return self._create(ctx, grant_ids, query_hash, epsilon_micro, 0)

    @method("createJobWithDeadline(uint256[] grantIds, bytes32 queryHash, uint64 epsilonMicro, uint32 ttlSeconds)",
            returns="uint256 jobId")
    def create_job_with_deadline(self, ctx: CallContext, grant_ids: list[int], query_hash: bytes,
                                 epsilon_micro: int, ttl_seconds: int) -> int:
        """``createJob`` for a job that expires at this block's time + ``ttlSeconds`` unless completed."""
        if not MIN_TTL_SECONDS <= ttl_seconds <= MAX_TTL_SECONDS:
            raise Revert(f"ttlSeconds must be {MIN_TTL_SECONDS}..{MAX_TTL_SECONDS}, got {ttl_seconds}")
        return self._create(ctx, grant_ids, query_hash, epsilon_micro, ctx.env.timestamp_ms // 1000 + ttl_seconds)

    def _create(self, ctx: CallContext, grant_ids: list[int], query_hash: bytes, epsilon_micro: int,
                expires_at: int) -> int:
        requester = get_agency_of(ctx.state, ctx.sender)
        if requester is None:
            raise Revert("only accounts of member agencies may create a joint job")
        if not MIN_PARTICIPANTS <= len(grant_ids) <= MAX_PARTICIPANTS:
            raise Revert(f"a joint job needs {MIN_PARTICIPANTS}..{MAX_PARTICIPANTS} grants, one per dataset")
        if epsilon_micro == 0:
            raise Revert("a joint query spends a positive epsilonMicro")
        dataset_ids: list[int] = []
        participants: list[str] = []
        for grant_id in grant_ids:
            dataset_id, grantee, action, _, _, _ = _call(
                ctx, "getGrant(uint256 grantId)", "uint256, string, string, string, uint64, bool", grant_id)
            if grantee != requester:
                raise Revert(f"grant {grant_id} is {grantee!r}'s, not {requester!r}'s")
            if action != ACTION_COMPUTE_JOINT:
                raise Revert(f"grant {grant_id} is for {action!r}; a joint job needs a {ACTION_COMPUTE_JOINT!r} "
                             f"grant on each dataset (request it: each dataset's policy decides)")
            (valid,) = _call(ctx, "isGrantValid(uint256 grantId, string grantee)", "bool", grant_id, requester)
            if not valid:
                raise Revert(f"grant {grant_id} is not valid now (revoked, expired, dataset retired or an agency "
                             "revoked)")
            budget, spent, per_hour, used, _ = _call(
                ctx, "getComputeAllowance(uint256 grantId)", "uint64, uint64, uint32, uint32, uint64", grant_id)
            if spent + epsilon_micro > budget:
                raise Revert(f"privacy budget exhausted on dataset {dataset_id}: {spent} of {budget} micro-epsilon "
                             f"spent, the query needs {epsilon_micro}")
            if used >= per_hour:
                raise Revert(f"rate limit: grant {grant_id} ran its {per_hour} queries of this hour")
            ctx.charge(G_SLOAD)
            dataset = get_dataset(ctx.state, dataset_id)
            assert dataset is not None  # a valid grant's dataset exists
            if dataset_id in dataset_ids:
                raise Revert(f"dataset {dataset_id} appears twice")
            if dataset.owner in participants:
                raise Revert(f"agency {dataset.owner!r} owns two of the datasets: one dataset per owner")
            dataset_ids.append(dataset_id)
            participants.append(dataset.owner)
        raw = ctx.sload(K_JOBS)
        job_id = (int.from_bytes(raw, "big") if raw else 0) + 1
        ctx.sstore(K_JOBS, job_id.to_bytes(8, "big"))
        n = len(participants)
        job = [requester, dataset_ids, list(grant_ids), participants, query_hash, epsilon_micro, STATUS_COMMITTING,
               [b""] * n, [[] for _ in range(n)], ""]
        if expires_at:
            job.append(expires_at)
        self._store(ctx, job_id, job)
        ctx.emit(self.E_CREATED, job_id, requester, dataset_ids, list(grant_ids), participants, query_hash,
                 epsilon_micro)
        if expires_at:
            ctx.emit(self.E_DEADLINE, job_id, expires_at)
        return job_id

    def _participant(self, ctx: CallContext, job: list[Any], job_id: int) -> tuple[str, int]:
        agency = get_agency_of(ctx.state, ctx.sender)
        participants: list[str] = job[3]
        if agency is None or agency not in participants:
            raise Revert(f"only accounts of the participants {participants} may act on joint job {job_id}")
        return agency, participants.index(agency)

    @method("commitInput(uint256 jobId, bytes32 commitment)")
    def commit_input(self, ctx: CallContext, job_id: int, commitment: bytes) -> None:
        job = self._load(ctx, job_id)
        agency, index = self._participant(ctx, job, job_id)
        self._check_not_expired(ctx, job, job_id, "a late commitment is")
        if job[6] != STATUS_COMMITTING:
            raise Revert(f"joint job {job_id} is {job[6]}: inputs are committed before the computation")
        if commitment == bytes(32):
            raise Revert("a commitment is a hash, never zero")
        if job[7][index]:
            raise Revert(f"{agency!r} already committed its input to joint job {job_id}")
        job[7][index] = commitment
        if all(job[7]):
            job[6] = STATUS_RUNNING
        self._store(ctx, job_id, job)
        ctx.emit(self.E_COMMITTED, job_id, agency, job[1][index], commitment)

    @method("confirmResult(uint256 jobId, string outcome, bytes32 resultHash)")
    def confirm_result(self, ctx: CallContext, job_id: int, outcome: str, result_hash: bytes) -> None:
        job = self._load(ctx, job_id)
        agency, index = self._participant(ctx, job, job_id)
        self._check_not_expired(ctx, job, job_id, "a late confirmation is")
        if job[6] != STATUS_RUNNING:
            raise Revert(f"joint job {job_id} is {job[6]}: a result is confirmed while it runs")
        if outcome not in OUTCOMES:
            raise Revert(f"unknown outcome {outcome[:64]!r}: use one of {', '.join(OUTCOMES)}")
        if outcome == OUTCOME_MIN_GROUP and result_hash != bytes(32):
            raise Revert("a min_group refusal has no result: its resultHash is zero")
        if job[8][index]:
            raise Revert(f"{agency!r} already confirmed the result of joint job {job_id}")
        job[8][index] = [outcome, result_hash]
        ctx.emit(self.E_CONFIRMED, job_id, agency, outcome, result_hash)
        confirmed = [c for c in job[8] if c]
        if any(c != confirmed[0] for c in confirmed):
            job[6], job[9] = STATUS_ABORTED, "inconsistent"
            self._store(ctx, job_id, job)
            ctx.emit(self.E_ABORTED, job_id, agency, "inconsistent: participants computed different outcomes")
            return
        if len(confirmed) == len(job[8]):
            job[6] = STATUS_COMPLETED
            for grant_id in job[2]:
                _call(ctx, "chargeJointComputation(uint256 grantId, bytes32 queryHash, bytes32 resultHash, "
                      "uint64 epsilonMicro)", "", grant_id, job[4], result_hash, job[5])
            ctx.emit(self.E_RECORDED, job_id, outcome, result_hash, job[3], job[5])
        self._store(ctx, job_id, job)

    @method("abortJob(uint256 jobId, string reason)")
    def abort_job(self, ctx: CallContext, job_id: int, reason: str) -> None:
        job = self._load(ctx, job_id)
        agency = get_agency_of(ctx.state, ctx.sender)
        if agency is None or (agency not in job[3] and agency != job[0]):
            raise Revert(f"only the requester or a participant may abort joint job {job_id}")
        if not 1 <= len(reason.encode()) <= MAX_REASON_BYTES:
            raise Revert(f"reason must be 1..{MAX_REASON_BYTES} bytes")
        if job[6] in FINAL_STATUSES:
            raise Revert(f"joint job {job_id} is already {job[6]}")
        self._check_not_expired(ctx, job, job_id, "an abort is")
        job[6], job[9] = STATUS_ABORTED, reason
        self._store(ctx, job_id, job)
        ctx.emit(self.E_ABORTED, job_id, agency, reason)

    @method("expireJob(uint256 jobId)")
    def expire_job(self, ctx: CallContext, job_id: int) -> None:
        """Record that a job with a deadline did not complete before it (requester or participant)."""
        job = self._load(ctx, job_id)
        agency = get_agency_of(ctx.state, ctx.sender)
        if agency is None or (agency not in job[3] and agency != job[0]):
            raise Revert(f"only the requester or a participant may expire joint job {job_id}")
        expires_at = _deadline(job)
        if not expires_at:
            raise Revert(f"joint job {job_id} has no deadline (created by createJob): abort it with abortJob")
        if job[6] in FINAL_STATUSES:
            raise Revert(f"joint job {job_id} is already {job[6]}")
        now = ctx.env.timestamp_ms // 1000
        if now < expires_at:
            raise Revert(f"joint job {job_id} expires at block time {expires_at}; this block's time is {now}")
        job[6], job[9] = STATUS_EXPIRED, f"expired at block time {expires_at}"
        self._store(ctx, job_id, job)
        ctx.emit(self.E_EXPIRED, job_id, agency, expires_at)

    @method("getJobDeadline(uint256 jobId)", returns="uint64 expiresAt", view=True)
    def get_job_deadline(self, ctx: CallContext, job_id: int) -> int:
        """The block time (seconds) the job expires at; 0 for a job without a deadline."""
        return _deadline(self._load(ctx, job_id))

    @method("getJob(uint256 jobId)", returns="string requester, uint256[] datasetIds, uint256[] grantIds, "
            "string[] participants, bytes32 queryHash, uint64 epsilonMicro, string status, bytes32[] commitments, "
            "string reason, string outcome, bytes32 resultHash", view=True)
    def get_job(self, ctx: CallContext, job_id: int) -> tuple[Any, ...]:
        """The job; ``outcome`` and ``resultHash`` are those every participant confirmed once it is
        completed ("" and zero before)."""
        job = self._load(ctx, job_id)
        commitments = [c or bytes(32) for c in job[7]]
        outcome, result_hash = job[8][0] if job[6] == STATUS_COMPLETED else ("", bytes(32))
        return job[0], job[1], job[2], job[3], job[4], job[5], job[6], commitments, job[9], outcome, result_hash

    @method("jobCount()", returns="uint256", view=True)
    def job_count(self, ctx: CallContext) -> int:
        raw = ctx.sload(K_JOBS)
        return int.from_bytes(raw, "big") if raw else 0


def _deadline(job: list[Any]) -> int:
    return int(job[10]) if len(job) > 10 else 0
