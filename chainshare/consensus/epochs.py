"""Validator-set epoch decisions (docs/consensus.md, "Validator-set epochs"), pure, called by the
replica and the simulator alike.

The set of epoch e finalizes every block below the activation height H of set e+1; blocks it
certifies at or above H form an empty suffix that only gives H-1 its 2-chain and is never stored.
Once H-1 is final the leaving core times out of its view (``compute_farewell``: the timeout carries
the QC that finalized H-1 to the validators that have not seen it), and a fresh core of set e+1 is
restored on H-1.

Epoch-change proofs (docs/consensus.md, "Catching up across validator sets"): the last block of set e
with its 2-chain (the suffix and the certified child, signed by set e) and the member list of set
e+1, which must hash to that block's ``validator_set_hash`` (a header names the set that certifies
the next block). Checked one after the other from the genesis set (``verify_epoch_changes``), they
let a node that holds only genesis learn the set in force today, after every earlier set is gone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from chainshare import codec
from chainshare.consensus import core
from chainshare.consensus.core import Action, CoreState
from chainshare.consensus.sync import get_set_verifier, proof_signatures_hold
from chainshare.errors import ConsensusError, DecodeError
from chainshare.execution.contracts.membership import ValidatorSet, compute_validator_set_hash
from chainshare.ledger.finality import FinalityProof, decode_finality_proof, is_finality_proof_of
from chainshare.ledger.types import Block, QuorumCertificate, decode_bytes, decode_fields, decode_uint

__all__ = ["EpochChangeProof", "compute_farewell", "decode_epoch_change_proof", "encode_epoch_change_proof",
           "get_bls_verify_qc",
           "has_epoch_ended", "is_suffix", "prove_sets_from", "verify_epoch_change", "verify_epoch_changes"]

MAX_SET_SIZE = 64  # Membership.MAX_VALIDATORS: a served set larger than any the chain accepts is refused unread


def is_suffix(epoch_of_height: int, core_epoch: int) -> bool:
    """True iff a block whose height belongs to ``epoch_of_height`` is, for a core of
    ``core_epoch``, an empty suffix block (certified only to give the set's last block its
    2-chain, never stored, no transactions)."""
    return epoch_of_height != core_epoch


def has_epoch_ended(epoch_after_head: int, core_epoch: int) -> bool:
    """True iff the committed head is the last block of the core's set: the block after it
    belongs to another epoch, and the core must be replaced (``compute_farewell`` first)."""
    return epoch_after_head != core_epoch


def compute_farewell(state: CoreState) -> tuple[CoreState, list[Action]]:
    """The leaving core's last step: time out of its view and keep only what that allows, the
    persisted safety data and the broadcast timeout (which carries the QC that finalized the set's
    last block). Safe: leaving the set, the validator never votes in that epoch again."""
    state, actions = core.step(state, core.LocalTimeout(state.view))
    return state, [a for a in actions if isinstance(a, (core.PersistSafety, core.Broadcast))]


@dataclass(frozen=True)
class EpochChangeProof:
    """``last`` is the last block of set ``next_set.epoch - 1``, ``proof`` its 2-chain (signed by that
    set), ``next_set`` the set that certifies every block from ``last.height + 1`` on."""

    last: Block
    proof: FinalityProof
    next_set: ValidatorSet


def encode_epoch_change_proof(last: Block, finality_proof: bytes, next_set: ValidatorSet) -> bytes:
    """The stored and served form: [last block, its encoded finality proof, epoch, activation height,
    validator rows as the Membership state holds them]."""
    rows = [[v["name"], v["agency"], v["address"], v["bls_public_key"], v["bls_pop"]] for v in next_set.validators]
    return codec.encode([last.encode(), finality_proof, next_set.epoch, next_set.activation_height, rows])


def decode_epoch_change_proof(raw: bytes) -> EpochChangeProof:
    """Decode a stored or served proof; DecodeError on anything malformed."""
    try:
        last, proof, epoch, activation, rows = decode_fields(codec.decode(raw), 5, "epoch-change proof")
        if not isinstance(rows, list) or not 0 < len(rows) <= MAX_SET_SIZE:
            raise DecodeError(f"epoch-change proof: a set has 1..{MAX_SET_SIZE} validators")
        validators = []
        for row in rows:
            name, agency, address, pk, pop = decode_fields(row, 5, "validator")
            if not isinstance(name, str) or not isinstance(agency, str):
                raise DecodeError("epoch-change proof: validator name and agency must be strings")
            validators.append({"name": name, "agency": agency, "address": decode_bytes(address, 20, "address"),
                               "bls_public_key": decode_bytes(pk, 48, "BLS public key"),
                               "bls_pop": decode_bytes(pop, 96, "BLS proof of possession")})
        next_set = ValidatorSet(decode_uint(epoch, "epoch"), decode_uint(activation, "activation height"),
                                tuple(validators))
        return EpochChangeProof(Block.decode(decode_bytes(last, None, "block")),
                                decode_finality_proof(decode_bytes(proof, None, "finality proof")), next_set)
    except (TypeError, ValueError, IndexError) as exc:
        raise DecodeError(f"epoch-change proof: {exc}") from exc


def verify_epoch_change(current: ValidatorSet, change: EpochChangeProof,
                        verify_qc: Callable[[QuorumCertificate], bool]) -> str | None:
    """None iff ``change`` proves, with the signatures of ``current`` alone, that ``current`` ended and
    ``change.next_set`` followed it: the next epoch number, activation right after the proven block
    (which lies in ``current``'s epoch), a 2-chain over that block whose every QC a quorum of
    ``current`` signed (``verify_qc``: that set's QC check, in its epoch), and the new member list
    hashing to the block's ``validator_set_hash``, unlike the current one. Otherwise the reason it
    is refused. Cheap checks come first; signatures last."""
    last, nxt = change.last, change.next_set
    if nxt.epoch != current.epoch + 1:
        return f"proves epoch {nxt.epoch} where epoch {current.epoch + 1} comes next"
    if last.height < current.activation_height or nxt.activation_height != last.height + 1:
        return (f"block {last.height} is not the last block of epoch {current.epoch} (active from "
                f"{current.activation_height}) before activation height {nxt.activation_height}")
    if compute_validator_set_hash(nxt.validators) != last.header.validator_set_hash:
        return f"the members of epoch {nxt.epoch} do not hash to block {last.height}'s validator_set_hash"
    if last.header.validator_set_hash == compute_validator_set_hash(current.validators):
        # Headers name members, not epochs: a change that keeps every member cannot be told from no
        # change, so any final block of the set would "prove" it. Refused (such a chain's fresh nodes
        # fall back to confirmations by the last set they can prove).
        return f"block {last.height} names the members of epoch {current.epoch} again: no proven change"
    if not is_finality_proof_of(change.proof, last):
        return f"no 2-chain over block {last.height}"
    if not proof_signatures_hold(change.proof, verify_qc):
        return f"the 2-chain over block {last.height} is not signed by a quorum of epoch {current.epoch}"
    return None


def get_bls_verify_qc(chain_id: int, vs: ValidatorSet) -> Callable[[QuorumCertificate], bool]:
    """The QC check of set ``vs`` in its epoch (BLS, cached per set): what the replica passes."""
    return get_set_verifier(chain_id, vs.epoch, tuple(v["bls_public_key"] for v in vs.validators)).verify_qc


def verify_epoch_changes(start: ValidatorSet, changes: Sequence[EpochChangeProof],
                         verifier_of: Callable[[ValidatorSet], Callable[[QuorumCertificate], bool]]
                         ) -> list[ValidatorSet]:
    """The sets that ``changes`` prove, in order, walking from ``start`` (the genesis set, or a set
    proven before): each change is verified with the set the previous one proved (``verifier_of``
    gives a set's QC check). ConsensusError naming the first change refused (a gap, a forged set,
    wrong signers)."""
    sets, current = [], start
    for change in changes:
        reason = verify_epoch_change(current, change, verifier_of(current))
        if reason is not None:
            raise ConsensusError(f"epoch-change proof refused: {reason}")
        current = change.next_set
        sets.append(current)
    return sets


def prove_sets_from(start: ValidatorSet, raws: Sequence[bytes], chain_id: int) -> list[ValidatorSet]:
    """``verify_epoch_changes`` over encoded proofs with each set's BLS QC check: the sets that ``raws``
    prove one after the other from ``start``. DecodeError if one is malformed, ConsensusError if one is
    refused."""
    return verify_epoch_changes(start, [decode_epoch_change_proof(r) for r in raws],
                                lambda vs: get_bls_verify_qc(chain_id, vs))
