"""Secure aggregation across agencies: a joint count / sum / mean (optionally per cell of a public
categorical domain) over the datasets of several owners, where no party sees another's rows or
per-owner subtotals and only the combined, differentially private result is released.

A joint query is a compute query (``chainshare.sharing.compute``) plus, when it groups, the public
``domain`` of every group_by column (the cells are fixed before anyone looks at data, so the shape
of the exchanged vectors reveals nothing)::

    {"select": [{"fn": "count"}, {"fn": "avg", "column": "income", "bounds": [0, 200000]}],
     "group_by": ["district"], "domain": {"district": ["north", "south"]}, "epsilon": 1.0}

Protocol (one input round, one output round; n owners = parties 1..n):

1. each owner measures its own rows locally (``compute_local_vector``: the exact per-cell measurements
   of the query's noise plan) and adds its own full-scale discrete Laplace noise vector;
2. it splits that vector into n Shamir shares of degree n-1 over GF(2^127-1) (MPyC's
   ``thresha.random_split``: any n-1 shares are uniformly random, independent of the secret) and
   sends share j to party j;
3. each party adds the n shares it received (Shamir is linear: a share of the noisy total) and
   sends that sum share to every other party;
4. each party recombines the n sum shares (``thresha.recombine``) into the noisy totals and releases
   them with the compute engine's rules (``release_joint_result``) under the joint schema: the
   strictest ``min_group`` of the datasets involved, and the query's epsilon.

Security model: semi-honest (honest-but-curious) parties over authenticated, encrypted channels
(the consortium's mutual TLS). Input privacy holds against any coalition of up to n-1 owners: it
sees n-1 shares of each honest input (uniform) and the opened noisy totals. Differential privacy
holds against any coalition that leaves at least one owner outside: every owner adds full-scale
noise, a coalition can subtract its own noises, and what remains is the released value plus at
least one independent full-scale discrete Laplace draw (post-processing of an epsilon-DP release).
The price is utility: the noise on each released number is the sum of n draws (standard deviation
sqrt(n) times the single-owner one). Degree n-1 means every party is needed: a party that drops
out aborts the job (no partial result is ever opened). A malicious party could send inconsistent
shares and bias the result; that is outside the model (it would need verifiable secret sharing).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from chainshare import codec
from chainshare.crypto.hashing import keccak256
from chainshare.errors import ChainshareError, InvalidInput
from chainshare.privacy.shamir import finfields, thresha
from chainshare.sharing.compute import (
    MAX_QUERY_BYTES,
    NoisePlan,
    Query,
    QueryResult,
    compute_noise_plan,
    measure_groups,
    parse_query,
    release_groups,
    sample_discrete_laplace,
)
from chainshare.sharing.schema import Column, Schema, Value, canonical_json

MODULUS = 2**127 - 1  # a Mersenne prime: every measurement plus noise fits in (-MODULUS/2, MODULUS/2)
FIELD = finfields.GF(MODULUS)
SHARE_BYTES = 16
MAX_OPENING_WIDTH = 4096  # entries of a local vector in an opening given to an auditor
MIN_PARTIES = 2
MAX_PARTIES = 16
MAX_CELLS = 1000
MAX_DOMAIN_VALUES = 1000

Noise = Callable[[Fraction], int]


class JointAborted(ChainshareError):
    """The joint computation stopped before any result was opened (a party dropped out or sent a
    malformed message); ``reason`` is the code recorded on chain."""

    http_status = 409

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class JointQuery:
    """A validated joint query: the compute query over the joint schema and its public cells."""

    query: Query
    schema: Schema  # the columns every dataset shares (same kind), with the strictest min_group
    cells: tuple[tuple[Value, ...], ...]  # one key per cell, in canonical order ((),) without group_by
    plan: NoisePlan

    @property
    def width(self) -> int:
        """Field elements in a party's vector: one per measurement per cell."""
        return len(self.cells) * len(self.plan.measurements)

    def to_json(self) -> dict[str, Any]:
        out = self.query.to_json()
        if self.query.group_by:
            out["domain"] = {name: sorted({cell[i] for cell in self.cells}, key=_rank)
                             for i, name in enumerate(self.query.group_by)}
        return out


def _rank(value: Value) -> tuple[int, Any]:
    if isinstance(value, bool):
        return (1, value)
    if isinstance(value, (int, float)):
        return (2, value)
    return (3, value)


def compute_joint_schema(schemas: Sequence[Schema]) -> Schema:
    """The schema part every dataset shares: the columns present in all of them with the same kind
    (order of the first), and the largest (strictest) ``min_group``."""
    if not schemas:
        raise InvalidInput("a joint query needs at least one dataset schema")
    first = schemas[0]
    shared: list[Column] = []
    for column in first.columns:
        if all((other := s.get_column(column.name)) is not None and other.kind == column.kind for s in schemas[1:]):
            shared.append(column)
    return Schema(columns=tuple(shared), min_group=max(s.min_group for s in schemas))


def parse_joint_query(obj: object, schemas: Sequence[Schema]) -> JointQuery:
    """A ``JointQuery`` over the joint schema of ``schemas``: InvalidInput for a malformed query, a
    column not shared by every dataset (same kind), or a group_by without a public ``domain``."""
    if isinstance(obj, (str, bytes, bytearray)):
        if len(obj) > MAX_QUERY_BYTES:
            raise InvalidInput(f"query exceeds {MAX_QUERY_BYTES} bytes")
        try:
            obj = json.loads(obj)
        except ValueError as exc:
            raise InvalidInput(f"query is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidInput("a joint query is a JSON object")
    body = dict(obj)
    domain = body.pop("domain", None)
    schema = compute_joint_schema(schemas)
    query = parse_query(body, schema)
    if not query.group_by:
        if domain not in (None, {}):
            raise InvalidInput("'domain' is only for a query with group_by")
        cells: tuple[tuple[Value, ...], ...] = ((),)
    else:
        if not isinstance(domain, dict) or set(domain) != set(query.group_by):
            raise InvalidInput("a joint query with group_by lists the public values of every group_by column in "
                               "'domain' (e.g. {\"district\": [\"north\", \"south\"]}): cells are fixed before "
                               "any data is read")
        axes = []
        for name in query.group_by:
            values = domain[name]
            if not isinstance(values, list) or not 1 <= len(values) <= MAX_DOMAIN_VALUES:
                raise InvalidInput(f"domain of {name!r}: a list of 1..{MAX_DOMAIN_VALUES} values")
            column = schema.get_column(name)
            assert column is not None
            parsed = []
            for raw in values:
                if isinstance(raw, (dict, list)) or raw is None:
                    raise InvalidInput(f"domain of {name!r}: values are strings, numbers or booleans")
                parsed.append(raw)
            if len({json.dumps(v) for v in parsed}) != len(parsed):
                raise InvalidInput(f"domain of {name!r} lists a value twice")
            axes.append(sorted(parsed, key=_rank))
        count = 1
        for axis in axes:
            count *= len(axis)
        if count > MAX_CELLS:
            raise InvalidInput(f"the domain makes {count} cells; at most {MAX_CELLS}")
        cells = tuple(itertools.product(*axes))
    return JointQuery(query=query, schema=schema, cells=cells, plan=compute_noise_plan(query, schema))


def compute_joint_query_hash(jq: JointQuery) -> bytes:
    """Keccak-256 of the joint query's canonical JSON (the hash recorded on chain)."""
    return keccak256(canonical_json(jq.to_json()))


# --------------------------------------------------------------------------- one owner, locally


def compute_local_vector(jq: JointQuery, rows: Any) -> list[int]:
    """This owner's exact measurements, cell by cell (never sent: only shares of it plus noise
    leave the node). Rows whose group key is outside the public domain are not counted."""
    exact = measure_groups(jq.query, rows, jq.plan)
    width = len(jq.plan.measurements)
    out: list[int] = []
    for cell in jq.cells:
        out.extend(exact.get(cell, [0] * width))
    return out


def compute_noise_vector(jq: JointQuery, noise: Noise = sample_discrete_laplace) -> list[int]:
    """One full-scale discrete Laplace draw per entry (the owner's own noise, see the docstring)."""
    return [noise(scale) for _ in jq.cells for scale in jq.plan.scales]


def compute_vector_commitment(vector: Sequence[int], salt: bytes) -> bytes:
    """The hiding commitment to an owner's exact local vector under a secret 32-byte ``salt``."""
    if len(salt) != 32:
        raise ValueError("the commitment salt is 32 bytes")
    return keccak256(codec.encode(["joint-vector", encode_vector(vector), salt]))


def compute_input_commitment(job_id: int, dataset_id: int, content_hash: bytes, vector_commitment: bytes) -> bytes:
    """The owner's commitment recorded on chain before any share is sent: it binds the job, the
    dataset and the version's content hash in the clear, and the exact local vector through
    ``vector_commitment`` (hiding), so the binding to the registered dataset version can be checked
    by anyone given ``vector_commitment`` without learning the vector."""
    return keccak256(codec.encode(["joint-input", job_id, dataset_id, content_hash, vector_commitment]))


@dataclass(frozen=True)
class CommitmentOpening:
    """What opens an owner's input commitment: the binding part (job, dataset, content hash, vector
    commitment) reveals nothing of the rows; ``vector`` and ``salt`` (the full opening) reveal the
    owner's exact local measurements (its subtotals) and are for an auditor only."""

    job_id: int
    dataset_id: int
    content_hash: bytes
    vector_commitment: bytes
    vector: tuple[int, ...] | None = None
    salt: bytes | None = None

    @property
    def is_full(self) -> bool:
        return self.vector is not None

    def binding_part(self) -> CommitmentOpening:
        return CommitmentOpening(self.job_id, self.dataset_id, self.content_hash, self.vector_commitment)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"job_id": self.job_id, "dataset_id": self.dataset_id,
                               "content_hash": "0x" + self.content_hash.hex(),
                               "vector_commitment": "0x" + self.vector_commitment.hex()}
        if self.vector is not None and self.salt is not None:
            out.update(vector=list(self.vector), salt="0x" + self.salt.hex())
        return out


def _hash32(value: object, what: str) -> bytes:
    if not (isinstance(value, str) and len(value) == 66 and value.startswith("0x")):
        raise InvalidInput(f"{what} must be 0x followed by 64 hex digits")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise InvalidInput(f"{what} must be 0x followed by 64 hex digits") from None


def parse_commitment_opening(obj: object) -> CommitmentOpening:
    """An opening from its JSON (``CommitmentOpening.to_json``); InvalidInput naming what is wrong."""
    if not isinstance(obj, dict) or not {"job_id", "dataset_id", "content_hash", "vector_commitment"} <= set(obj):
        raise InvalidInput("a commitment opening is an object with job_id, dataset_id, content_hash, "
                           "vector_commitment (and, for a full opening, vector and salt)")
    ids = (obj["job_id"], obj["dataset_id"])
    if not all(isinstance(i, int) and not isinstance(i, bool) and 1 <= i < 2**64 for i in ids):
        raise InvalidInput("job_id and dataset_id must be positive integers")
    vector: tuple[int, ...] | None = None
    salt: bytes | None = None
    if "vector" in obj or "salt" in obj:
        raw = obj.get("vector")
        if not (isinstance(raw, list) and 1 <= len(raw) <= MAX_OPENING_WIDTH
                and all(isinstance(v, int) and not isinstance(v, bool) and abs(v) < MODULUS // 2 for v in raw)):
            raise InvalidInput(f"vector must be a list of 1..{MAX_OPENING_WIDTH} integers")
        vector, salt = tuple(raw), _hash32(obj.get("salt"), "salt")
    return CommitmentOpening(int(ids[0]), int(ids[1]), _hash32(obj["content_hash"], "content_hash"),
                             _hash32(obj["vector_commitment"], "vector_commitment"), vector, salt)


def check_commitment_opening(opening: CommitmentOpening, commitment: bytes) -> None:
    """Raise InvalidInput unless ``opening`` opens ``commitment`` (the one on chain); a full opening
    must also open its own vector commitment."""
    if opening.vector is not None and opening.salt is not None:
        if compute_vector_commitment(opening.vector, opening.salt) != opening.vector_commitment:
            raise InvalidInput("the vector and salt do not open the vector commitment: the opening was altered")
    computed = compute_input_commitment(opening.job_id, opening.dataset_id, opening.content_hash,
                                        opening.vector_commitment)
    if computed != commitment:
        raise InvalidInput(f"the opening does not match the on-chain commitment 0x{commitment.hex()} of dataset "
                           f"{opening.dataset_id} in joint job {opening.job_id} (it hashes to 0x{computed.hex()})")


# --------------------------------------------------------------------------- shares


def encode_vector(values: Sequence[int]) -> bytes:
    """Field elements (or signed ints, taken modulo the field) as fixed-width big-endian bytes."""
    return b"".join((v % MODULUS).to_bytes(SHARE_BYTES, "big") for v in values)


def decode_vector(blob: bytes, width: int) -> list[int]:
    """The field elements of ``blob``; JointAborted when it is not ``width`` canonical elements."""
    if not isinstance(blob, bytes) or len(blob) != width * SHARE_BYTES:
        raise JointAborted(f"a share vector must be {width} elements ({width * SHARE_BYTES} bytes)",
                           reason="malformed-share")
    out = [int.from_bytes(blob[i:i + SHARE_BYTES], "big") for i in range(0, len(blob), SHARE_BYTES)]
    if any(v >= MODULUS for v in out):
        raise JointAborted("a share is not a field element", reason="malformed-share")
    return out


def split_into_shares(vector: Sequence[int], parties: int) -> list[bytes]:
    """n Shamir shares (degree n-1, MPyC) of ``vector``: element j goes to party j+1; any n-1 of them
    are uniformly random whatever the vector."""
    _check_parties(parties)
    rows = thresha.random_split(FIELD, [v % MODULUS for v in vector], parties - 1, parties)
    return [b"".join(int(v).to_bytes(SHARE_BYTES, "big") for v in row) for row in rows]


def add_shares(blobs: Sequence[bytes], width: int) -> bytes:
    """The elementwise sum of share vectors (a share of the sum of the secrets)."""
    totals = [0] * width
    for blob in blobs:
        for i, v in enumerate(decode_vector(blob, width)):
            totals[i] += v
    return encode_vector(totals)


def reconstruct_totals(sum_shares: Mapping[int, bytes], parties: int, width: int) -> list[int]:
    """The signed totals from all n parties' sum shares (MPyC Lagrange recombination at 0)."""
    _check_parties(parties)
    if sorted(sum_shares) != list(range(1, parties + 1)):
        missing = sorted(set(range(1, parties + 1)) - set(sum_shares))
        raise JointAborted(f"sum shares missing from parties {missing}", reason="dropout")
    points = [(i, decode_vector(sum_shares[i], width)) for i in range(1, parties + 1)]
    values = thresha.recombine(FIELD, points)
    return [_signed(int(v) % MODULUS) for v in values]


def _signed(v: int) -> int:
    return v - MODULUS if v > MODULUS // 2 else v


def _check_parties(parties: int) -> None:
    if not MIN_PARTIES <= parties <= MAX_PARTIES:
        raise InvalidInput(f"a joint job has {MIN_PARTIES}..{MAX_PARTIES} owner parties")


def _zero_noise(_: Fraction) -> int:
    return 0


def release_joint_result(jq: JointQuery, totals: Sequence[int]) -> QueryResult:
    """The released result from the opened NOISY totals: the compute engine's release rules under
    the joint schema (cells below the threshold withheld; QueryRefused when none reaches it).
    The noise was added inside the computation, so none is added here."""
    width = len(jq.plan.measurements)
    if len(totals) != jq.width:
        raise ValueError("totals do not match the query's cells")
    noisy = {cell: list(totals[k * width:(k + 1) * width]) for k, cell in enumerate(jq.cells)}
    return release_groups(jq.query, jq.schema, jq.plan, noisy, _zero_noise)


# --------------------------------------------------------------------------- one party's run


@dataclass(frozen=True)
class InputShare:
    """Owner ``sender``'s share for party ``receiver`` of its noisy input vector."""

    job_id: int
    sender: int
    receiver: int
    shares: bytes

    def encode(self) -> bytes:
        return codec.encode(["input", self.job_id, self.sender, self.receiver, self.shares])


@dataclass(frozen=True)
class SumShare:
    """Party ``sender``'s share of the noisy totals (the sum of the input shares it received)."""

    job_id: int
    sender: int
    shares: bytes

    def encode(self) -> bytes:
        return codec.encode(["sum", self.job_id, self.sender, self.shares])


def decode_message(data: bytes) -> InputShare | SumShare:
    """A protocol message from its bytes; JointAborted for anything else."""
    try:
        fields = codec.decode(data)
    except ChainshareError:
        raise JointAborted("a joint-computation message does not decode", reason="malformed-share") from None
    if isinstance(fields, list) and len(fields) == 5 and fields[0] == "input" and all(
            isinstance(x, int) for x in fields[1:4]) and isinstance(fields[4], bytes):
        return InputShare(fields[1], fields[2], fields[3], fields[4])
    if isinstance(fields, list) and len(fields) == 4 and fields[0] == "sum" and all(
            isinstance(x, int) for x in fields[1:3]) and isinstance(fields[3], bytes):
        return SumShare(fields[1], fields[2], fields[3])
    raise JointAborted("not a joint-computation message", reason="malformed-share")


@dataclass
class JointSession:
    """One party's side of one job: feed it its own noisy vector (``start``) and the messages it
    receives (``on_message``); it returns the messages to send and, at the end, the noisy totals.
    No I/O; a message for another job or party, or a repeated sender, aborts."""

    job_id: int
    index: int  # 1..parties
    parties: int
    width: int
    _inputs: dict[int, bytes] = field(default_factory=dict)
    _sums: dict[int, bytes] = field(default_factory=dict)
    _sent_sum: bool = False
    started: bool = False  # ``start`` ran: this party has shared its own input
    totals: list[int] | None = None

    def __post_init__(self) -> None:
        _check_parties(self.parties)
        if not 1 <= self.index <= self.parties:
            raise InvalidInput(f"party index {self.index} is not in 1..{self.parties}")

    def start(self, noisy_vector: Sequence[int]) -> list[InputShare | SumShare]:
        """Share this owner's noisy vector: the InputShares to send (its own share is kept)."""
        if len(noisy_vector) != self.width:
            raise ValueError("the vector does not match the query's cells")
        blobs = split_into_shares(noisy_vector, self.parties)
        self.started = True
        out: list[InputShare | SumShare] = []
        for j, blob in enumerate(blobs, start=1):
            msg = InputShare(self.job_id, self.index, j, blob)
            if j == self.index:
                out.extend(self._on_input(msg))
            else:
                out.append(msg)
        return out

    def on_message(self, msg: InputShare | SumShare) -> list[InputShare | SumShare]:
        if msg.job_id != self.job_id:
            raise JointAborted(f"message for job {msg.job_id} in job {self.job_id}", reason="malformed-share")
        if not 1 <= msg.sender <= self.parties or msg.sender == self.index:
            raise JointAborted(f"message from unknown party {msg.sender}", reason="malformed-share")
        if isinstance(msg, InputShare):
            if msg.receiver != self.index:
                raise JointAborted(f"input share for party {msg.receiver} sent to party {self.index}",
                                   reason="malformed-share")
            return self._on_input(msg)
        return self._on_sum(msg)

    def _on_input(self, msg: InputShare) -> list[InputShare | SumShare]:
        if msg.sender in self._inputs:
            raise JointAborted(f"party {msg.sender} sent its input share twice", reason="malformed-share")
        decode_vector(msg.shares, self.width)
        self._inputs[msg.sender] = msg.shares
        if len(self._inputs) < self.parties or self._sent_sum:
            return []
        self._sent_sum = True
        mine = SumShare(self.job_id, self.index, add_shares(list(self._inputs.values()), self.width))
        self._on_sum(mine)
        return [mine]

    def _on_sum(self, msg: SumShare) -> list[InputShare | SumShare]:
        if msg.sender in self._sums:
            raise JointAborted(f"party {msg.sender} sent its sum share twice", reason="malformed-share")
        decode_vector(msg.shares, self.width)
        self._sums[msg.sender] = msg.shares
        if len(self._sums) == self.parties:
            self.totals = reconstruct_totals(self._sums, self.parties, self.width)
        return []

    @property
    def missing(self) -> list[int]:
        """Parties whose input or sum share has not arrived (who dropped out, if the run stalls)."""
        return sorted(set(range(1, self.parties + 1)) - (set(self._inputs) & set(self._sums)))


Deliver = Callable[[int, bytes], bool]  # (receiver, message bytes) -> delivered?


def run_joint_in_process(jq: JointQuery, job_id: int, noisy_vectors: Sequence[Sequence[int]],
                         deliver: Deliver | None = None) -> list[int]:
    """Run every party's session in this process, passing each message as bytes through ``deliver``
    (which may capture it, or return False to drop it: a party gone); returns the noisy totals all
    parties agree on, or raises JointAborted naming the parties that never completed. For tests and
    the benchmark; nodes run one ``JointSession`` each over mutual TLS."""
    parties = len(noisy_vectors)
    sessions = [JointSession(job_id, i, parties, jq.width) for i in range(1, parties + 1)]
    queue: list[tuple[int, bytes]] = []

    def send(sender: JointSession, out: list[InputShare | SumShare]) -> None:
        for msg in out:
            receivers = [msg.receiver] if isinstance(msg, InputShare) else [
                s.index for s in sessions if s.index != sender.index]
            for r in receivers:
                data = msg.encode()
                if deliver is None or deliver(r, data):
                    queue.append((r, data))

    for session, vector in zip(sessions, noisy_vectors, strict=True):
        send(session, session.start(vector))
    while queue:
        receiver, data = queue.pop(0)
        session = sessions[receiver - 1]
        send(session, session.on_message(decode_message(data)))
    unfinished = [s for s in sessions if s.totals is None]
    if unfinished:
        missing = sorted({m for s in unfinished for m in s.missing})
        raise JointAborted(f"parties {missing} dropped out before their shares arrived; nothing was opened",
                           reason="dropout")
    results = {tuple(s.totals or ()) for s in sessions}
    if len(results) != 1:
        raise JointAborted("parties reconstructed different totals", reason="inconsistent")
    return list(results.pop())
