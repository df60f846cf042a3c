"""Consensus messages on the wire, and the signature scheme the consensus core is given.

Four messages travel between validators: a ``Proposal`` (a signed block, carrying the QC of its
parent in ``justify`` and, when its leader entered the view by timeout, the ``TimeoutCertificate``
of the previous view), a ``Vote`` (sent to the leader of the next view), a ``Timeout``
(broadcast) and a ``QcAnnouncement`` (a QC its aggregator broadcasts as soon as it forms). Every
type has a canonical encoding (``to_list`` / ``from_list`` via ``codec``); every decoder refuses
malformed input with ``DecodeError`` and never raises anything else, so the bytes a peer sends can be
decoded without a try/except around anything but ``DecodeError``.

Signatures are domain-separated by purpose, chain id and validator-set epoch
(``ledger.quorum``: ``vote_message``, ``proposal_message``, ``timeout_message``; ``Vote`` lives there
too, since the ledger's verifier and the Evidence contract check votes). A timeout signs (chain id,
epoch, view, the view of the sender's highest QC): a timeout certificate (TC) therefore proves, for each signer, the highest QC
view it reported, which is what rule 2 of docs/consensus.md checks (``B.qc.view >= max(TC.high_qc_views)``).

``Crypto`` is the pure signature interface the core calls; ``BlsCrypto`` implements it with the
network's BLS12-381 keys (``chainshare.ledger.quorum``) for the node, the simulator plugs in a fast
fake. Verification never raises: malformed input verifies as False.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from chainshare import codec
from chainshare.crypto import bls
from chainshare.errors import ChainshareError, ConsensusError, DecodeError
from chainshare.ledger import quorum as qcmod
from chainshare.ledger.quorum import Vote as Vote  # re-exported: a vote is one of the wire messages
from chainshare.ledger.quorum import timeout_message
from chainshare.ledger.types import (
    Block,
    QuorumCertificate,
    decode_bytes,
    decode_fields,
    decode_uint,
    make_bitmap,
)

SIGNATURE_SIZE = 96

MSG_PROPOSAL = 1
MSG_VOTE = 2
MSG_TIMEOUT = 3
MSG_QC = 4


def get_qc_view(qc: QuorumCertificate | None) -> int:
    """The view a QC certifies; ``None`` stands for the genesis block's implicit QC, view 0."""
    return qc.round if qc is not None else 0


# -- decoding helpers (DecodeError only) -----------------------------------------------------



def _opt_qc(v: Any) -> QuorumCertificate | None:
    return None if v is None else QuorumCertificate.from_list(v)


def _count_bits(bitmap: bytes) -> int:
    return sum(bin(b).count("1") for b in bitmap)


# -- messages --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Proposal:
    """A leader's signed block for view ``block.header.round``."""

    block: Block

    @property
    def view(self) -> int:
        return self.block.header.round

    def to_list(self) -> list[Any]:
        return self.block.to_list()

    @classmethod
    def from_list(cls, v: Any) -> Proposal:
        return cls(Block.from_list(v))


@dataclass(frozen=True)
class TimeoutCertificate:
    """q timeouts for ``view``: signer bitmap, each signer's highest QC view (in signer-index
    order), the QC of the greatest of those views (``None`` iff it is genesis, view 0) so whoever
    receives the TC also learns that QC, and one aggregate signature over the signers'
    ``timeout_message(chain_id, view, high_qc_views[i])``."""

    view: int
    signers: bytes
    high_qc_views: tuple[int, ...]
    high_qc: QuorumCertificate | None
    signature: bytes

    @property
    def max_high_qc_view(self) -> int:
        return max(self.high_qc_views, default=0)

    def signer_indices(self) -> list[int]:
        return [i for i in range(len(self.signers) * 8) if self.signers[i // 8] >> (i % 8) & 1]

    def to_list(self) -> list[Any]:
        return [self.view, self.signers, list(self.high_qc_views),
                self.high_qc.to_list() if self.high_qc is not None else None, self.signature]

    @classmethod
    def from_list(cls, v: Any) -> TimeoutCertificate:
        f = decode_fields(v, 5, "timeout certificate")
        if not isinstance(f[1], bytes):
            raise DecodeError("tc.signers must be bytes")
        if not isinstance(f[2], list):
            raise DecodeError("tc.high_qc_views must be an array")
        views = tuple(decode_uint(x, "tc.high_qc_view") for x in f[2])
        if len(views) != _count_bits(f[1]):
            raise DecodeError("tc.high_qc_views must hold one view per signer")
        return cls(decode_uint(f[0], "tc.view"), f[1], views, _opt_qc(f[3]),
                   decode_bytes(f[4], SIGNATURE_SIZE, "tc.signature"))

    def encode(self) -> bytes:
        return codec.encode(self.to_list())

    @classmethod
    def decode(cls, data: bytes) -> TimeoutCertificate:
        return cls.from_list(codec.decode(data))


@dataclass(frozen=True)
class Timeout:
    """Validator ``voter`` gives up on ``view``. It signs (view, view of ``high_qc``); ``high_qc``
    and ``last_tc`` (the TC for ``view - 1`` if the sender entered ``view`` by timeout) ride along
    unsigned: they are certificates that verify on their own, and let a lagging receiver catch up."""

    view: int
    voter: int
    high_qc: QuorumCertificate | None
    last_tc: TimeoutCertificate | None
    signature: bytes

    @property
    def high_qc_view(self) -> int:
        return get_qc_view(self.high_qc)

    def to_list(self) -> list[Any]:
        return [self.view, self.voter, self.high_qc.to_list() if self.high_qc is not None else None,
                self.last_tc.to_list() if self.last_tc is not None else None, self.signature]

    @classmethod
    def from_list(cls, v: Any) -> Timeout:
        f = decode_fields(v, 5, "timeout")
        last_tc = TimeoutCertificate.from_list(f[3]) if f[3] is not None else None
        return cls(decode_uint(f[0], "timeout.view"), decode_uint(f[1], "timeout.voter"), _opt_qc(f[2]), last_tc,
                   decode_bytes(f[4], SIGNATURE_SIZE, "timeout.signature"))


@dataclass(frozen=True)
class QcAnnouncement:
    """A QC, broadcast by the leader that aggregated it as soon as it formed (liveness only: the QC
    verifies on its own, so who sends it does not matter). The others learn it at once instead of in
    the next proposal, which that leader builds only ``block_time`` after the certified block."""

    qc: QuorumCertificate

    def to_list(self) -> list[Any]:
        return self.qc.to_list()

    @classmethod
    def from_list(cls, v: Any) -> QcAnnouncement:
        return cls(QuorumCertificate.from_list(v))


Message = Proposal | Vote | Timeout | QcAnnouncement

_TAGS: dict[type, int] = {Proposal: MSG_PROPOSAL, Vote: MSG_VOTE, Timeout: MSG_TIMEOUT, QcAnnouncement: MSG_QC}


def encode_message(message: Message) -> bytes:
    """The canonical wire bytes of a consensus message: [type tag, fields]."""
    return codec.encode([_TAGS[type(message)], message.to_list()])


def decode_message(data: bytes) -> Message:
    """Decode wire bytes; anything malformed raises DecodeError (and nothing else)."""
    f = decode_fields(codec.decode(data), 2, "consensus message")
    tag = f[0]
    if tag == MSG_PROPOSAL and not isinstance(tag, bool):
        return Proposal.from_list(f[1])
    if tag == MSG_VOTE and not isinstance(tag, bool):
        return Vote.from_list(f[1])
    if tag == MSG_TIMEOUT and not isinstance(tag, bool):
        return Timeout.from_list(f[1])
    if tag == MSG_QC and not isinstance(tag, bool):
        return QcAnnouncement.from_list(f[1])
    raise DecodeError(f"unknown consensus message type {tag!r}")


def decode_block_tc(block: Block) -> TimeoutCertificate | None:
    """The TC a block carries (``Block.timeout_cert`` holds its canonical encoding), or None."""
    if block.timeout_cert is None:
        return None
    return TimeoutCertificate.decode(block.timeout_cert)


# -- the signature scheme the core is given ------------------------------------------------------

class Crypto(Protocol):
    """What the consensus core needs from cryptography, for one validator of one validator set.

    Implementations are pure and deterministic (same inputs, same outputs, no I/O) and verifiers
    never raise: malformed input is simply not valid. ``index`` is the validator this object
    signs for; signing methods are only called by that validator's core."""

    @property
    def index(self) -> int: ...

    def sign_proposal(self, block_hash: bytes) -> bytes: ...

    def sign_vote(self, block_hash: bytes, height: int, view: int) -> bytes: ...

    def sign_timeout(self, view: int, high_qc_view: int) -> bytes: ...

    def verify_proposal(self, proposer: int, block_hash: bytes, signature: bytes) -> bool:
        """True iff ``signature`` is validator ``proposer``'s proposal signature of ``block_hash``."""
        ...

    def verify_vote(self, vote: Vote) -> bool:
        """True iff ``vote.signature`` is ``vote.voter``'s vote on its (block, height, view)."""
        ...

    def verify_timeout(self, timeout: Timeout) -> bool:
        """True iff ``timeout.signature`` is ``timeout.voter``'s signature of
        (view, high_qc_view). Does not verify the attached high_qc or last_tc."""
        ...

    def aggregate_qc(self, block_hash: bytes, height: int, view: int,
                     votes: Mapping[int, bytes]) -> QuorumCertificate:
        """Aggregate verified votes {voter: signature} into a QC."""
        ...

    def verify_qc(self, qc: QuorumCertificate) -> bool:
        """True iff ``qc`` carries a quorum of valid vote signatures (bitmap shape included)."""
        ...

    def aggregate_tc(self, view: int, timeouts: Mapping[int, tuple[int, bytes]],
                     high_qc: QuorumCertificate | None) -> TimeoutCertificate:
        """Aggregate verified timeouts {voter: (high_qc_view, signature)} into a TC."""
        ...

    def verify_tc(self, tc: TimeoutCertificate) -> bool:
        """True iff ``tc`` has a quorum of signers and its aggregate signature matches their
        (view, high_qc_view) pairs. The core checks ``tc.high_qc`` itself (with ``verify_qc``)."""
        ...


def check_tc_shape(tc: TimeoutCertificate, n: int) -> list[int] | None:
    """The signer indices of ``tc`` if its bitmap fits ``n`` validators and holds a quorum, else None."""
    if len(tc.signers) != (n + 7) // 8:
        return None
    indices = tc.signer_indices()
    if any(i >= n for i in indices) or len(indices) < qcmod.compute_quorum(n):
        return None
    if len(tc.high_qc_views) != len(indices) or any(hv >= tc.view for hv in tc.high_qc_views):
        return None
    return indices


class BlsCrypto:
    """``Crypto`` over the network's BLS12-381 keys (blspy, proof-of-possession scheme).

    ``public_keys[i]`` is validator i's 48-byte key (whose proof of possession the genesis /
    Governance checked); ``secret_key`` is this validator's own key (None for a verify-only object),
    and must be the one of ``public_keys[index]`` (ConsensusError otherwise): the core counts the
    vote it signs itself without verifying it; ``epoch`` numbers the set, and is part of every signed message. A QC of a block below
    ``activation_height`` (the set's first block: it carries the last QC of the previous set) is
    checked with ``prior``, the previous set's verifier."""

    def __init__(self, chain_id: int, public_keys: Sequence[bytes], index: int,
                 secret_key: bytes | None = None, epoch: int = 0, *, prior: BlsCrypto | None = None,
                 activation_height: int = 0) -> None:
        self.chain_id = chain_id
        self.epoch = epoch
        self.prior = prior
        self.activation_height = activation_height
        self.public_keys = tuple(public_keys)
        if secret_key is not None:
            _check_own_key(self.public_keys, index, secret_key, epoch)
        self._index = index
        self._secret = secret_key
        self._validators = [{"bls_public_key": pk} for pk in self.public_keys]
        self.failed_checks = 0  # signatures and certificates that did not verify, since this object was made

    def _counted(self, ok: bool) -> bool:
        if not ok:
            self.failed_checks += 1
        return ok

    @property
    def index(self) -> int:
        return self._index

    def _sk(self) -> bytes:
        if self._secret is None:
            raise ChainshareError("this BlsCrypto has no secret key: it can only verify")
        return self._secret

    def _pk(self, index: int) -> bytes | None:
        return self.public_keys[index] if 0 <= index < len(self.public_keys) else None

    def sign_proposal(self, block_hash: bytes) -> bytes:
        return qcmod.sign_proposal(self._sk(), self.chain_id, block_hash, self.epoch)

    def sign_vote(self, block_hash: bytes, height: int, view: int) -> bytes:
        return qcmod.sign_vote(self._sk(), self.chain_id, block_hash, height, view, self.epoch)

    def sign_timeout(self, view: int, high_qc_view: int) -> bytes:
        return bls.sign(self._sk(), timeout_message(self.chain_id, view, high_qc_view, self.epoch))

    def verify_proposal(self, proposer: int, block_hash: bytes, signature: bytes) -> bool:
        pk = self._pk(proposer)
        return self._counted(pk is not None and qcmod.verify_proposal_signature(pk, self.chain_id, block_hash,
                                                                                signature, self.epoch))

    def verify_vote(self, vote: Vote) -> bool:
        pk = self._pk(vote.voter)
        return self._counted(pk is not None and vote.verify(pk, self.chain_id, self.epoch))

    def verify_timeout(self, timeout: Timeout) -> bool:
        pk = self._pk(timeout.voter)
        return self._counted(pk is not None and bls.verify(
            pk, timeout_message(self.chain_id, timeout.view, timeout.high_qc_view, self.epoch), timeout.signature))

    def aggregate_qc(self, block_hash: bytes, height: int, view: int,
                     votes: Mapping[int, bytes]) -> QuorumCertificate:
        return qcmod.aggregate_qc(block_hash, height, view, dict(votes), len(self.public_keys))

    def verify_qc(self, qc: QuorumCertificate) -> bool:
        if qc.height < self.activation_height:
            return self._counted(self.prior is not None and self.prior.verify_qc(qc))
        try:
            qcmod.verify_qc(qc, self._validators, self.chain_id, self.epoch)
        except ChainshareError:
            return self._counted(False)
        return True

    def aggregate_tc(self, view: int, timeouts: Mapping[int, tuple[int, bytes]],
                     high_qc: QuorumCertificate | None) -> TimeoutCertificate:
        indices = sorted(timeouts)
        return TimeoutCertificate(view, make_bitmap(indices, len(self.public_keys)),
                                  tuple(timeouts[i][0] for i in indices), high_qc,
                                  bls.aggregate([timeouts[i][1] for i in indices]))

    def verify_tc(self, tc: TimeoutCertificate) -> bool:
        indices = check_tc_shape(tc, len(self.public_keys))
        if indices is None:
            return self._counted(False)
        messages = [timeout_message(self.chain_id, tc.view, hv, self.epoch) for hv in tc.high_qc_views]
        return self._counted(_verify_aggregate([self.public_keys[i] for i in indices], messages, tc.signature))


def _check_own_key(public_keys: Sequence[bytes], index: int, secret_key: bytes, epoch: int) -> None:
    """ConsensusError unless ``secret_key`` is the key of ``public_keys[index]``."""
    if not 0 <= index < len(public_keys):
        raise ConsensusError(f"this validator's index {index} is not in this validator set of "
                             f"{len(public_keys)} (epoch {epoch}): a signing BlsCrypto needs its own entry")
    if bls.public_key(secret_key) != public_keys[index]:
        raise ConsensusError(f"the secret key is not the one of validator {index}'s public key in the set of "
                             f"epoch {epoch}: sign with that validator's key, or pass no key to only verify")


def _verify_aggregate(pks: Sequence[bytes], messages: Sequence[bytes], signature: bytes) -> bool:
    """One aggregate signature over (pk_i, message_i) pairs, messages not necessarily distinct
    (sound under the proof-of-possession scheme). ``chainshare.crypto.bls`` has no such helper
    yet; it belongs there."""
    from blspy import G1Element, G2Element, PopSchemeMPL

    if len(signature) != bls.SIGNATURE_SIZE or any(len(pk) != bls.PUBLIC_KEY_SIZE for pk in pks):
        return False
    try:
        return bool(PopSchemeMPL.aggregate_verify([G1Element.from_bytes(pk) for pk in pks], list(messages),
                                                  G2Element.from_bytes(signature)))
    except Exception:  # blspy raises RuntimeError/ValueError on points off the curve
        return False
