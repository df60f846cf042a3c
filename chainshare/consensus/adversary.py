"""An adversary that schedules the network: attack schedules against real honest cores.

``simulate`` (``consensus/sim.py``) draws its faults at random; the attacks that break a weakened
rule need a few decisions in a row to go the adversary's way (which timeouts form a TC, who sees a
QC, when a validator crashes), and random schedules almost never line them up. ``AdversaryNet``
gives those decisions to a script: it runs the honest validators' cores (``core.step``, with the
durable state a node keeps: ``PersistSafety`` data, the blocks voted for, the finalized chain, a
crash that loses everything not persisted and ``restore_core`` on restart) and hands every message
they send to the adversary, which delivers what it wants, when it wants, to whom it wants (an
asynchronous network before GST: every message is eventually delivered, in any order). The f
byzantine validators are the adversary's: it signs anything with their keys (equivocating
proposals, votes, timeouts reporting any high-QC view) and aggregates any signed votes and
timeouts it has seen, but it cannot sign for an honest validator.

Validator-set epochs go through the replica's own decisions (``consensus/epochs.py``: the empty
suffix is never stored, the farewell timeout, a fresh core of the next epoch on the set's last
block), and block sync through ``consensus/sync.py``. ``run_twins`` adds random Twins schedules
(Bano et al.): each of f byzantine validators is two honest cores holding one key.

The check is the simulator's: no two honest validators finalize different blocks at one height
(``AdversaryNet.violations``, "SAFETY: ..."), and a commit must extend the validator's own
finalized chain. ``ATTACKS`` are the schedules; each takes a ``variant`` (which crash cut, which
order of the honest validators' timeouts and votes, which validator is fooled), and
``run_attack(name, variant)`` runs one. With the rules of docs/consensus.md intact no variant
finalizes conflicting blocks (tests/sim/test_mutations.py checks every one); each rule that is
weakened (the mutation table of that test) lets some variant do it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from chainshare.consensus import core, epochs, sync
from chainshare.consensus.core import (
    Action,
    BlockValidated,
    Broadcast,
    BuildProposal,
    Commit,
    CoreConfig,
    CoreState,
    Event,
    FetchBlock,
    LocalTimeout,
    PersistSafety,
    ProposalBuilt,
    ProposalReceived,
    RecordEvidence,
    SafetyData,
    SendTo,
    Start,
    ValidateBlock,
)
from chainshare.consensus.messages import Message, Proposal, Timeout, TimeoutCertificate, Vote, get_qc_view
from chainshare.consensus.sim import (
    SIM_CHAIN_ID,
    FakeCrypto,
    build_sim_block,
    is_valid_sim_block,
    make_genesis_block,
    validator_address,
)
from chainshare.ledger import quorum as ledger_quorum
from chainshare.ledger.finality import FinalityProof
from chainshare.ledger.types import Block, QuorumCertificate


@dataclass
class _Validator:
    """An honest validator: its core (None while down) and what it keeps durably."""

    index: int
    config: CoreConfig
    core: CoreState | None
    safety: SafetyData | None = None
    voted: dict[bytes, Block] = field(default_factory=dict)
    chain: list[Block] = field(default_factory=list)
    crash_after: Callable[[Action], bool] | None = None
    epoch: int = 0


class AttackFailed(Exception):
    """The schedule could not go on (an honest validator did not do what the attack needed):
    the attack is stopped; it is no violation."""


class Refused(AttackFailed):
    """An honest validator refused the step the attack needed (a vote, a certificate): a rule held."""


class AdversaryNet:
    """n validators; those in ``byzantine`` are the adversary's, the others run ``core.step``.

    Every message an honest validator sends lands in ``log`` as (sender, receiver or None for a
    broadcast, message) and reaches nobody until the script ``deliver``s it. Block building,
    re-execution and block fetches are answered at once (the adversary gains nothing by delaying
    them here); timers fire only when the script calls ``fire_timeout``."""

    def __init__(self, n: int, byzantine: frozenset[int]) -> None:
        self.n = n
        self.byzantine = byzantine
        self.genesis = make_genesis_block()
        self.addresses = tuple(validator_address(i) for i in range(n))
        self.crypto = [FakeCrypto.for_network(n, i) for i in range(n)]
        self.log: list[tuple[int, int | None, Message]] = []
        self.blocks: dict[bytes, Block] = {self.genesis.hash: self.genesis}
        self.finalized: dict[int, bytes] = {}
        self.violations: list[str] = []
        self.evidence = 0
        self.activation_height: int | None = None   # of epoch 1 (same validators), if the script sets one
        self.validators: dict[int, _Validator] = {}
        self._sync_qcs: dict[bytes, QuorumCertificate] = {}
        self._ending: list[_Validator] = []
        for i in range(n):
            if i in byzantine:
                continue
            config = CoreConfig(SIM_CHAIN_ID, self.addresses, i)
            self.validators[i] = _Validator(i, config, core.initial_state(config, self.crypto[i], self.genesis))

    @property
    def quorum(self) -> int:
        return ledger_quorum.compute_quorum(self.n)

    def leader(self, view: int) -> int:
        return view % self.n

    # -- honest validators --------------------------------------------------------------------
    def start(self) -> None:
        for i in sorted(self.validators):
            self._step(i, Start())

    def deliver(self, to: int, message: Message, sender: int) -> None:
        """Hand ``message`` (from validator ``sender``) to honest validator ``to``."""
        self._step(to, core.event_of(message, sender))

    def fire_timeout(self, i: int) -> Timeout:
        """The local timer of honest validator ``i``'s current view fires; returns its timeout."""
        v = self.validators[i]
        if v.core is None:
            raise AttackFailed(f"validator {i} is down")
        view = v.core.view
        self._step(i, LocalTimeout(view))
        return self.timeout_of(i, view)

    def crash_after(self, i: int, when: Callable[[Action], bool]) -> None:
        """Validator ``i`` dies right after carrying out the first action for which ``when`` holds
        (the rest of that action list is lost: nothing after it is written or sent)."""
        self.validators[i].crash_after = when

    def restart(self, i: int) -> None:
        """What a node does on start: ``restore_core`` from its finalized head and what it persisted."""
        v = self.validators[i]
        head = v.chain[-1] if v.chain else self.genesis
        head_qc = self._qc_of(head)
        v.core = core.restore_core(v.config, self.crypto[i], head, head_qc, v.safety,
                                   [b for b in v.voted.values() if b.height > head.height])
        v.crash_after = None
        self._step(i, Start())

    def sync(self, i: int, served: list[tuple[Block, QuorumCertificate]], proof: FinalityProof | None,
             peer_is_validator: bool = True) -> int:
        """Block sync of honest ``i`` from a peer (the adversary's) serving ``served`` and ``proof``,
        decided by ``consensus/sync.py`` as the replica and the simulator decide it; the others
        answer with their finalized hashes. The blocks taken are finalized (checked as a commit),
        then the core is restored on the new head. Returns the number taken."""
        v = self.validators[i]
        head = v.chain[-1] if v.chain else self.genesis
        checked, parent = 0, head
        for b, qc in served:
            if (b.header.parent_hash != parent.hash or qc.block_hash != b.hash or qc.height != b.height
                    or not self.crypto[i].verify_qc(qc)):
                break
            checked, parent = checked + 1, b
        blocks = [b for b, _ in served]
        answers = [[b.hash for b in w.chain[head.height:]] for j, w in self.validators.items() if j != i]
        take = sync.decide_sync(blocks, checked, answers, sync.count_needed_holders(self.n, peer_is_validator),
                                proof, self.crypto[i].verify_qc)
        if take:
            for b, qc in served[:take]:
                self._sync_qcs[b.hash] = qc
            self._on_commit(v, Commit(tuple(core.CommittedBlock(b, qc) for b, qc in served[:take]),
                                      core.FinalityProof(served[take - 1][0], served[take - 1][1])))
            self.restart(i)
        return take

    def is_down(self, i: int) -> bool:
        return self.validators[i].core is None

    def state(self, i: int) -> CoreState:
        s = self.validators[i].core
        if s is None:
            raise AttackFailed(f"validator {i} is down")
        return s

    def _qc_of(self, block: Block) -> QuorumCertificate | None:
        if block.height == 0:
            return None
        if block.hash in self._sync_qcs:
            return self._sync_qcs[block.hash]
        for b in self.blocks.values():
            if b.justify is not None and b.justify.block_hash == block.hash:
                return b.justify
        for qc in self.qcs:
            if qc.block_hash == block.hash:
                return qc
        raise AttackFailed("no QC known for the finalized head")

    @property
    def qcs(self) -> list[QuorumCertificate]:
        out: list[QuorumCertificate] = []
        for v in self.validators.values():
            if v.core is not None:
                out.extend(v.core.certified.values())
        return out

    def _step(self, i: int, event: Event) -> None:
        v = self.validators[i]
        pending: list[Event] = [event]
        while pending:
            if v.core is None:
                return   # down: the event is lost
            v.core, actions = core.step(v.core, pending.pop(0))
            for action in actions:
                self._carry_out(v, action, pending)
                if v.crash_after is not None and v.crash_after(action):
                    v.core, v.crash_after = None, None
                    return
            if v in self._ending:   # the rest of the step was carried out under the old epoch
                self._ending.remove(v)
                self._switch_epoch(v)
                return

    def _carry_out(self, v: _Validator, action: Action, pending: list[Event]) -> None:
        i = v.index
        if isinstance(action, PersistSafety):
            v.safety = action.data
            if action.block is not None:
                v.voted[action.block.hash] = action.block
        elif isinstance(action, Broadcast):
            self._record(i, None, action.message)
        elif isinstance(action, SendTo):
            self._record(i, action.index, action.message)
        elif isinstance(action, BuildProposal):
            suffix = epochs.is_suffix(self.epoch_at(action.parent.height + 1), v.epoch)   # empty, as the replica's
            txs = () if suffix else (b"tx/%d/%d/%d" % (i, action.view, v.epoch),)
            block = build_sim_block(action, self.addresses[i], 0, txs)
            pending.append(ProposalBuilt(block))
        elif isinstance(action, ValidateBlock):
            pending.append(BlockValidated(action.block.hash, is_valid_sim_block(action.block)))
        elif isinstance(action, FetchBlock):
            fetched = self.blocks.get(action.block_hash)
            if fetched is not None and fetched.height > 0:
                pending.append(ProposalReceived(Proposal(fetched), action.peer))
        elif isinstance(action, Commit):
            self._on_commit(v, action)
        elif isinstance(action, RecordEvidence):
            self.evidence += 1

    def _record(self, sender: int, to: int | None, message: Message) -> None:
        self.log.append((sender, to, message))
        if isinstance(message, Proposal):
            self.blocks.setdefault(message.block.hash, message.block)

    def epoch_at(self, height: int) -> int:
        return 1 if self.activation_height is not None and height >= self.activation_height else 0

    def _switch_epoch(self, v: _Validator) -> None:
        """The replica's epoch switch (``consensus/epochs.py``): farewell timeout, then a core of
        epoch 1 (the same validators, signatures of epoch 1) restored on the set's last block."""
        assert v.core is not None and self.activation_height is not None
        v.core, farewell = epochs.compute_farewell(v.core)
        pending: list[Event] = []
        for action in farewell:
            self._carry_out(v, action, pending)
        head = v.chain[-1]
        crypto = FakeCrypto(self.crypto[v.index].keys, v.index, SIM_CHAIN_ID, 1, prior=self.crypto[v.index],
                            activation_height=self.activation_height)
        v.epoch, v.safety, v.voted = 1, None, {}
        v.core = core.restore_core(v.config, crypto, head, self._qc_of(head))
        self._step(v.index, Start())

    def _on_commit(self, v: _Validator, commit: Commit) -> None:
        for cb in commit.blocks:
            b = cb.block
            if epochs.is_suffix(self.epoch_at(b.height), v.epoch):
                break   # the empty suffix past the set's last block: never stored
            last = v.chain[-1] if v.chain else self.genesis
            if b.header.parent_hash != last.hash or b.height != last.height + 1:
                self.violations.append(f"validator {v.index} finalized block {b.height} that does not extend its chain")
                return
            known = self.finalized.setdefault(b.height, b.hash)
            if known != b.hash:
                self.violations.append(
                    f"SAFETY: validator {v.index} finalized {b.hash.hex()[:12]} at height {b.height}, another "
                    f"honest validator finalized {known.hex()[:12]}")
            v.chain.append(b)
        if v.chain and epochs.has_epoch_ended(self.epoch_at(v.chain[-1].height + 1), v.epoch):
            self._ending.append(v)

    # -- what the adversary sees ---------------------------------------------------------------
    def blocks_in_view(self, view: int) -> list[Block]:
        return [b for b in self.blocks.values() if b.height > 0 and b.header.round == view]

    def proposal(self, view: int, sender: int | None = None) -> Block:
        for src, _, m in self.log:
            if isinstance(m, Proposal) and m.view == view and (sender is None or src == sender):
                return m.block
        raise AttackFailed(f"no proposal for view {view}")

    def vote_of(self, voter: int, block: Block) -> Vote | None:
        for src, _, m in self.log:
            if isinstance(m, Vote) and src == voter and m.block_hash == block.hash:
                return m
        s = self.validators[voter].core
        if s is not None and s.last_vote is not None and s.last_vote.block_hash == block.hash:
            return s.last_vote   # a leader's vote for the next view stays inside its own core
        return None

    def timeout_of(self, voter: int, view: int) -> Timeout:
        for src, _, m in reversed(self.log):
            if isinstance(m, Timeout) and src == voter and m.view == view:
                return m
        raise AttackFailed(f"validator {voter} sent no timeout for view {view}")

    # -- what the byzantine validators do (with their own keys only) ----------------------------
    def byz_block(self, view: int, parent: Block, justify: QuorumCertificate | None,
                  tc: TimeoutCertificate | None, tx: bytes) -> Block:
        """A block for ``view`` signed by its leader, which must be byzantine."""
        leader = self.leader(view)
        if leader not in self.byzantine:
            raise AttackFailed(f"the leader of view {view} is honest")
        b = build_sim_block(BuildProposal(view, parent, justify, tc), self.addresses[leader], 0, (tx,))
        signed = Block(b.header, b.transactions, b.justify, b.timeout_cert, self.crypto[leader].sign_proposal(b.hash))
        self.blocks[signed.hash] = signed
        return signed

    def byz_timeout(self, voter: int, view: int, high_qc: QuorumCertificate | None) -> Timeout:
        assert voter in self.byzantine
        return Timeout(view, voter, high_qc, None, self.crypto[voter].sign_timeout(view, get_qc_view(high_qc)))

    def byz_vote(self, voter: int, block: Block) -> Vote:
        assert voter in self.byzantine
        h, v = block.height, block.header.round
        return Vote(block.hash, h, v, voter, self.crypto[voter].sign_vote(block.hash, h, v))

    def qc(self, block: Block, signers: tuple[int, ...]) -> QuorumCertificate:
        """Aggregate the signed votes for ``block``: honest signers' votes must have been sent."""
        sigs: dict[int, bytes] = {}
        for i in signers:
            vote = self.byz_vote(i, block) if i in self.byzantine else self.vote_of(i, block)
            if vote is None:
                raise Refused(f"validator {i} did not vote for the block of view {block.header.round}")
            sigs[i] = vote.signature
        return self.crypto[0].aggregate_qc(block.hash, block.height, block.header.round, sigs)

    def tc(self, view: int, honest: tuple[int, ...], byz_high_qc: QuorumCertificate | None) -> TimeoutCertificate:
        """Aggregate the honest validators' signed timeouts for ``view`` with the byzantine ones',
        which report ``byz_high_qc``; the TC carries the QC of the greatest reported view."""
        parts = [self.timeout_of(i, view) for i in honest]
        parts += [self.byz_timeout(b, view, byz_high_qc) for b in sorted(self.byzantine)]
        parts = parts[: self.quorum]
        high = max((t.high_qc for t in parts if t.high_qc is not None), key=lambda q: q.round, default=None)
        return self.crypto[0].aggregate_tc(view, {t.voter: (t.high_qc_view, t.signature) for t in parts}, high)


# -- attack schedules ----------------------------------------------------------------------------
# n = 4, validator 3 byzantine (f = 1), leader(v) = v mod 4. The adversary wants two honest
# validators to finalize different blocks at height 1.

BYZ = 3


def _is_vote_send(action: Action) -> bool:
    return isinstance(action, SendTo) and isinstance(action.message, Vote)


def _is_timeout_send(action: Action) -> bool:
    return isinstance(action, Broadcast) and isinstance(action.message, Timeout)


def _is_persist(action: Action) -> bool:
    return isinstance(action, PersistSafety)


def attack_hidden_qc(net: AdversaryNet, variant: int) -> None:
    """Validator 2 finalizes b1 (views 1, 2); validators 0 and 1 are made to certify a sibling F of
    b1 in view 3 by a TC for view 2 that reports no QC above genesis.

    b1 (view 1, leader 1) is certified by 1, 2 and the byzantine; its QC1 reaches only 2 (the
    leader of view 2), whose b2 carries it; b2's votes go to the byzantine leader of view 3, which
    aggregates QC2 and shows it to 2 alone (2 finalizes b1). 0 and 1 enter view 2 by a TC for view
    1 and time out in view 2. Whether 1 both votes for b2 and times out in view 2 reporting no QC
    (a double signature that the rules forbid) is what ``variant`` varies:

    - 0: 1 times out in view 2, then is shown b2 (highest_voted_view forbids the vote);
    - 1: as 0, with a crash of 1 right after it sent its (persisted) timeout, and a restart
      (the persisted highest_voted_view forbids the vote);
    - 2: 1 is shown b2 first and crashes right after sending its vote, restarts and times out in
      view 2 (what it persisted before the vote makes its timeout report QC1);
    - 3: 1 votes for b2 and times out in view 2 (reporting QC1: rule 2's TC clause refuses F).

    The byzantine then proposes F (view 3, on genesis, with the TC {0, 1, byzantine} of view 2);
    if 0 and 1 vote for it, leader 0 certifies F and proposes F4 (view 4), and 1 finalizes F."""
    net.start()
    b1 = net.proposal(1, 1)
    net.deliver(2, Proposal(b1), 1)
    vote1 = net.vote_of(1, b1)
    if vote1 is None:
        raise AttackFailed("1 did not vote for b1")
    net.deliver(2, vote1, 1)
    net.deliver(2, net.byz_vote(BYZ, b1), BYZ)     # QC1 at 2, which proposes b2
    b2 = net.proposal(2, 2)
    # 0 and 1 time out in view 1 (neither holds QC1) and form TC(1)
    t0, t1 = net.fire_timeout(0), net.fire_timeout(1)
    tb = net.byz_timeout(BYZ, 1, None)
    net.deliver(0, t1, 1)
    net.deliver(0, tb, BYZ)
    net.deliver(1, t0, 0)
    net.deliver(1, tb, BYZ)
    if net.state(0).view != 2 or net.state(1).view != 2:
        raise AttackFailed("0 and 1 did not enter view 2")
    net.fire_timeout(0)
    if variant in (0, 1):
        if variant == 1:
            net.crash_after(1, _is_timeout_send)
            net.fire_timeout(1)
            net.restart(1)
            net.deliver(1, Proposal(b2), 2)
        else:
            net.fire_timeout(1)
            net.deliver(1, Proposal(b2), 2)
    elif variant == 2:
        net.crash_after(1, _is_vote_send)
        net.deliver(1, Proposal(b2), 2)
        if net.is_down(1):
            net.restart(1)
        for t in (t0, tb):   # the TC of view 1 again, for a restart that forgot it
            net.deliver(1, t, t.voter)
        if net.state(1).view == 1:
            net.fire_timeout(1)
        net.fire_timeout(1)
    else:
        net.deliver(1, Proposal(b2), 2)
        net.fire_timeout(1)
    qc2 = net.qc(b2, (1, 2, BYZ))
    net.deliver(2, net.byz_timeout(BYZ, 3, qc2), BYZ)   # 2 learns QC2: b1 is final at 2
    _certify_sibling(net, net.tc(2, (0, 1), None))


def _certify_sibling(net: AdversaryNet, tc2: TimeoutCertificate) -> None:
    """The byzantine leader of view 3 proposes F on genesis with ``tc2``; 0 and 1 get F, its
    certificate, and the child F4 that leader 0 proposes; 1 aggregates the QC that finalizes F."""
    f = net.byz_block(3, net.genesis, None, tc2, b"F")
    for i in (0, 1):
        net.deliver(i, Proposal(f), BYZ)
    v1 = net.vote_of(1, f)
    if v1 is None or net.vote_of(0, f) is None:
        raise Refused("0 and 1 refused F")
    net.deliver(0, v1, 1)
    net.deliver(0, net.byz_vote(BYZ, f), BYZ)      # QC(F) at 0, the leader of view 4
    f4 = net.proposal(4, 0)
    net.deliver(1, Proposal(f4), 0)
    v0 = net.vote_of(0, f4)
    if v0 is None:
        raise AttackFailed("0 did not vote for F4")
    net.deliver(1, v0, 0)
    net.deliver(1, net.byz_vote(BYZ, f4), BYZ)     # QC(F4) at 1: F is final at 1


def attack_non_consecutive_chain(net: AdversaryNet, variant: int) -> None:
    """A QC on b3 (view 3) whose parent b1 is of view 1 is no 2-chain: b1 is not final.

    Votes for b1 (view 1) are withheld from its aggregator 2 (only the byzantine holds QC1); 2
    enters view 2 by timeout and proposes c2 on genesis, which all three honest vote for (its QC
    goes to the byzantine leader of view 3). The byzantine proposes b3 on b1 with a TC for view 2
    reporting genesis; 1 and 2 vote for it, and the byzantine shows QC(b3) to 1 alone. 0 and 2 then
    time out through views 3-6 (the honest leaders' blocks are dropped), and the byzantine leader of
    view 7 proposes F on c2 (QC view 2, TC(6) reporting at most view 1); 0 and 2 certify F and F8
    (leader 0), and finalize c2 at height 1. ``variant`` 1 shows QC(b3) to 1 only after F8."""
    net.start()
    b1 = net.proposal(1, 1)
    for i in (0, 2):
        net.deliver(i, Proposal(b1), 1)
    qc1 = net.qc(b1, (0, 1, BYZ))                  # votes withheld from 2
    t1 = {i: net.fire_timeout(i) for i in (0, 1, 2)}
    for i in (0, 1, 2):
        for j in (0, 1, 2):
            if i != j:
                net.deliver(i, t1[j], j)
    c2 = net.proposal(2, 2)                        # on genesis, with TC(1)
    for i in (0, 1):
        net.deliver(i, Proposal(c2), 2)
    qc_c2 = net.qc(c2, (0, 1, 2))                  # sent to the byzantine leader of view 3 only
    for i in (0, 1, 2):
        net.fire_timeout(i)
    tcs = {2: net.tc(2, (1, 2), None)}
    b3 = net.byz_block(3, b1, qc1, tcs[2], b"b3")
    for i in (1, 2):
        net.deliver(i, Proposal(b3), BYZ)
    qc3 = net.qc(b3, (1, 2, BYZ))
    fool = Timeout(4, BYZ, qc3, None, net.crypto[BYZ].sign_timeout(4, qc3.round))
    if variant == 0:
        net.deliver(1, fool, BYZ)
    for view in range(3, 7):                       # 0 and 2 time out; the leaders' blocks are dropped
        for i in (0, 2):
            if net.state(i).view < view:
                net.deliver(i, _carrying(net, BYZ, tcs[view - 1]), BYZ)
            if net.state(i).view != view:
                raise AttackFailed(f"validator {i} is not in view {view}")
            net.fire_timeout(i)
        tcs[view] = net.tc(view, (0, 2), None)
    f = net.byz_block(7, c2, qc_c2, tcs[6], b"F")
    for i in (0, 2):
        net.deliver(i, Proposal(f), BYZ)
    v2 = net.vote_of(2, f)
    if v2 is None or net.vote_of(0, f) is None:
        raise Refused("0 and 2 refused F")
    net.deliver(0, v2, 2)
    net.deliver(0, net.byz_vote(BYZ, f), BYZ)      # QC(F) at 0, the leader of view 8
    f8 = net.proposal(8, 0)
    net.deliver(2, Proposal(f8), 0)
    qc8 = net.qc(f8, (0, 2, BYZ))
    for i in (0, 2):
        net.deliver(i, net.byz_timeout(BYZ, 9, qc8), BYZ)
    if variant == 1:
        net.deliver(1, fool, BYZ)
    if variant == 2:
        return   # (for attack_sync_certified_not_final: 1 keeps nothing of the abandoned branch)


def attack_sync_certified_not_final(net: AdversaryNet, variant: int) -> None:
    """After the schedule of ``attack_non_consecutive_chain`` (0 and 2 finalize c2 at height 1; b1
    and b3 are certified, b1 abandoned), validator 1, which finalized nothing, syncs from the
    byzantine: it serves b1 and b3 with their QCs (every QC valid), and as proof of b3's finality a
    certified child of b1 that is no 2-chain (``variant`` 0) or none (``variant`` 1). Neither
    f + 1 validators hold b1 nor does anything prove it final: a sync that took it would store
    b1 at height 1, where 0 and 2 finalized c2."""
    attack_non_consecutive_chain(net, 2)
    b1, b3 = net.proposal(1, 1), net.blocks_in_view(3)[0]
    qc1 = net.qc(b1, (0, 1, BYZ))
    qc3 = net.qc(b3, (1, 2, BYZ))
    proof = FinalityProof((b3,), qc3) if variant == 0 else None
    if net.sync(1, [(b1, qc1)], proof) == 0 and net.sync(1, [(b1, qc1), (b3, qc3)], None) == 0:
        raise Refused("1 took nothing from the byzantine's batch")


def attack_stale_epoch_tc(net: AdversaryNet, variant: int) -> None:
    """A TC of the previous validator-set epoch replayed into the next (same validators, epoch 1
    from height 2, so b1 is the last block of epoch 0 and b2 of view 2 an empty suffix block).

    In epoch 0, b2's QC goes to the byzantine leader of view 3 only; the honest time out through
    views 2-6 reporting QC1, and the byzantine keeps their TC(6). It then releases QC2: everyone
    finalizes b1 and switches to epoch 1 on it. There, X2 (view 2, leader 2) and X3 (byzantine) are
    certified and QC(X3) is shown to 1 alone (1 finalizes X2). The byzantine leader of view 7
    proposes F on b1 carrying the epoch-0 TC(6) (max high-QC view 1 = QC1's); if 0 and 2 take it,
    they certify F and F8 (leader 0) and finalize F at height 2. ``variant`` 1 shows QC(X3) to 1
    only at the end."""
    net.activation_height = 2
    net.start()
    b1 = net.proposal(1, 1)
    for i in (0, 2):
        net.deliver(i, Proposal(b1), 1)
    for i in (0, 1):
        vote = net.vote_of(i, b1)
        if vote is None:
            raise AttackFailed("no vote for b1")
        net.deliver(2, vote, i)
    b2 = net.proposal(2, 2)                           # the suffix block (it carries QC1)
    for i in (0, 1):
        net.deliver(i, Proposal(b2), 2)
    qc2 = net.qc(b2, (0, 1, 2))                       # to the byzantine only
    tcs: dict[int, TimeoutCertificate] = {}
    for view in range(2, 7):
        for i in (0, 1, 2):
            if net.state(i).view < view:
                net.deliver(i, _carrying(net, BYZ, tcs.get(view - 1)), BYZ)
            net.fire_timeout(i)
        tcs[view] = net.tc(view, (0, 1, 2), None)
    stale = tcs[6]
    for i in (0, 1, 2):                               # QC2 released: b1 final, epoch 1 begins
        net.deliver(i, Timeout(7, BYZ, qc2, None, net.crypto[BYZ].sign_timeout(7, qc2.round)), BYZ)
        if net.validators[i].epoch != 1:
            raise AttackFailed(f"validator {i} did not switch to epoch 1")
    e1 = FakeCrypto(net.crypto[BYZ].keys, BYZ, SIM_CHAIN_ID, 1, prior=net.crypto[BYZ], activation_height=2)
    x2 = next((m.block for src, _, m in reversed(net.log) if isinstance(m, Proposal) and src == 2
               and m.block.height == 2 and m.view == 2 and m.block.hash != b2.hash), None)
    if x2 is None:
        raise AttackFailed("leader 2 proposed nothing in epoch 1")
    for i in (0, 1):
        net.deliver(i, Proposal(x2), 2)
    votes_x2 = {i: net.vote_of(i, x2) for i in (0, 1, 2)}
    if any(v is None for v in votes_x2.values()):
        raise AttackFailed("no epoch-1 votes for X2")
    qc_x2 = e1.aggregate_qc(x2.hash, 2, 2, {i: v.signature for i, v in votes_x2.items() if v is not None})
    x3u = build_sim_block(BuildProposal(3, x2, qc_x2, None), net.addresses[BYZ], 0, (b"X3",))
    x3 = Block(x3u.header, x3u.transactions, x3u.justify, x3u.timeout_cert, e1.sign_proposal(x3u.hash))
    net.blocks[x3.hash] = x3
    for i in (0, 1, 2):
        net.deliver(i, Proposal(x3), BYZ)
    votes_x3 = {i: net.vote_of(i, x3) for i in (0, 1, 2)}
    if any(v is None for v in votes_x3.values()):
        raise AttackFailed("no epoch-1 votes for X3")
    qc_x3 = e1.aggregate_qc(x3.hash, 3, 3, {i: v.signature for i, v in votes_x3.items() if v is not None})
    show = Timeout(4, BYZ, qc_x3, None, e1.sign_timeout(4, 3))
    if variant == 0:
        net.deliver(1, show, BYZ)                     # 1 finalizes X2
    fu = build_sim_block(BuildProposal(7, b1, b2.justify, stale), net.addresses[BYZ], 0, (b"F",))
    f = Block(fu.header, fu.transactions, fu.justify, fu.timeout_cert, e1.sign_proposal(fu.hash))
    net.blocks[f.hash] = f
    for i in (0, 2):
        net.deliver(i, Proposal(f), BYZ)
    v2, v0 = net.vote_of(2, f), net.vote_of(0, f)
    if v2 is None or v0 is None:
        raise Refused("0 and 2 refused F (it carries a TC of epoch 0)")
    net.deliver(0, v2, 2)
    net.deliver(0, Vote(f.hash, 2, 7, BYZ, e1.sign_vote(f.hash, 2, 7)), BYZ)   # QC(F) at 0, leader of view 8
    f8 = net.proposal(8, 0)
    net.deliver(2, Proposal(f8), 0)
    sigs = {}
    for i in (0, 2):
        vote = net.vote_of(i, f8)
        if vote is None:
            raise AttackFailed("no votes for F8")
        sigs[i] = vote.signature
    sigs[BYZ] = e1.sign_vote(f8.hash, 3, 8)
    qc8 = e1.aggregate_qc(f8.hash, 3, 8, sigs)
    for i in (0, 2):
        net.deliver(i, Timeout(9, BYZ, qc8, None, e1.sign_timeout(9, 8)), BYZ)
    if variant == 1:
        net.deliver(1, show, BYZ)


def _carrying(net: AdversaryNet, byz: int, tc: TimeoutCertificate | None) -> Timeout:
    """A byzantine timeout for ``tc.view + 1`` carrying ``tc`` (a way to hand someone a TC)."""
    if tc is None:
        raise AttackFailed("no TC to hand over")
    t = net.byz_timeout(byz, tc.view + 1, tc.high_qc)
    return Timeout(t.view, t.voter, t.high_qc, tc, t.signature)


def attack_small_quorum(net: AdversaryNet, variant: int) -> None:
    """The byzantine leader of view 3 equivocates: P to 0, P' to 1, both on b2. With a quorum of
    n - f neither is certified by one honest vote and the byzantine's; with one vote less, 0
    certifies P and its child C4 (views 3, 4) alone with the byzantine and finalizes P, while 1
    and 2 certify P', D5 (leader 1, by a TC for view 4) and E6 (leader 2) and finalize P'.
    ``variant`` 1 gives 2 the two branches in the other order."""
    net.start()
    b1 = net.proposal(1, 1)
    for i in (0, 2):
        net.deliver(i, Proposal(b1), 1)
    for i in (0, 1):
        vote = net.vote_of(i, b1)
        if vote is not None:
            net.deliver(2, vote, i)
    b2 = net.proposal(2, 2)
    for i in (0, 1):
        net.deliver(i, Proposal(b2), 2)
    qc2 = net.qc(b2, (0, 1, 2))
    p = net.byz_block(3, b2, qc2, None, b"P")
    p2 = net.byz_block(3, b2, qc2, None, b"P'")
    net.deliver(0, Proposal(p), BYZ)
    net.deliver(1, Proposal(p2), BYZ)
    q = net.quorum
    # branch P at 0, the leader of view 4
    net.deliver(0, net.byz_vote(BYZ, p), BYZ)
    if net.state(0).view != 4:
        raise Refused("0 did not certify P from its vote and the byzantine's")
    c4 = net.proposal(4, 0)
    qc4 = net.qc(c4, (0, BYZ, 2)[:q])
    net.deliver(0, net.byz_timeout(BYZ, 5, qc4), BYZ)
    # branch P' at 1 and 2
    qc_p2 = net.qc(p2, (1, BYZ, 2)[:q])
    net.deliver(1, net.byz_timeout(BYZ, 4, qc_p2), BYZ)
    net.fire_timeout(1)
    tc4 = net.tc(4, (1,), qc_p2)
    net.deliver(1, _carrying(net, BYZ, tc4), BYZ)
    d5 = net.proposal(5, 1)
    qc5 = net.qc(d5, (1, BYZ, 2)[:q])
    order = (p2, d5, net.byz_timeout(BYZ, 6, qc5))
    if variant == 1:
        net.deliver(2, Proposal(p), BYZ)
    for m in order:
        net.deliver(2, m if isinstance(m, Timeout) else Proposal(m), BYZ)
    e6 = net.proposal(6, 2)
    net.deliver(1, Proposal(e6), 2)
    qc6 = net.qc(e6, (1, 2, BYZ)[:q])
    net.deliver(1, net.byz_timeout(BYZ, 7, qc6), BYZ)


ATTACKS: dict[str, tuple[Callable[[AdversaryNet, int], None], int]] = {
    "hidden_qc": (attack_hidden_qc, 4),
    "non_consecutive_chain": (attack_non_consecutive_chain, 2),
    "small_quorum": (attack_small_quorum, 2),
    "sync_certified_not_final": (attack_sync_certified_not_final, 2),
    "stale_epoch_tc": (attack_stale_epoch_tc, 2),
}
"""name -> (schedule, number of variants)."""


@dataclass(frozen=True)
class AttackResult:
    name: str
    variant: int
    violations: tuple[str, ...]
    stopped: str | None      # why the schedule stopped early (AttackFailed), None if it ran through
    refused: bool            # it stopped because an honest validator refused a step (a rule held)
    evidence: int


def run_attack(name: str, variant: int) -> AttackResult:
    """Run one attack schedule against four validators (one byzantine) and report what it broke."""
    schedule, _ = ATTACKS[name]
    net = AdversaryNet(4, frozenset({BYZ}))
    stopped, refused = None, False
    try:
        schedule(net, variant)
    except AttackFailed as e:
        stopped, refused = str(e), isinstance(e, Refused)
    return AttackResult(name, variant, tuple(net.violations), stopped, refused, net.evidence)


def run_all_attacks() -> list[AttackResult]:
    return [run_attack(name, v) for name, (_, variants) in ATTACKS.items() for v in range(variants)]


# -- Twins: random schedules where the byzantine validators are honest cores run twice -----------

@dataclass(frozen=True)
class TwinsResult:
    seed: int
    n: int
    twins: tuple[int, ...]          # validator indices whose key two nodes hold
    violations: tuple[str, ...]
    finalized_height: int           # the highest height any non-twin validator finalized
    delivered: int
    crashes: int


class _TwinsNet(AdversaryNet):
    """Twins (Bano et al., 2020): each of up to f byzantine validators is two nodes holding its key,
    each running the honest core; a message to validator i reaches both, and a partition that puts
    the twins on different sides makes them equivocate (proposals, votes, timeouts) without a line
    of attack code. The adversary (seeded) picks which pending message is delivered next, when
    timers fire, the partitions (which also split honest validators), and crash cuts after any
    action (a crash loses what was not persisted; a restart restores from it)."""

    def __init__(self, n: int, twins: frozenset[int]) -> None:
        super().__init__(n, frozenset())
        self.twin_ids = twins
        self.node_index: list[int] = list(range(n)) + sorted(twins)   # node -> validator index
        self.nodes: list[_Validator] = [self.validators[i] for i in range(n)]
        for i in sorted(twins):
            config = CoreConfig(SIM_CHAIN_ID, self.addresses, i)
            self.nodes.append(_Validator(i, config, core.initial_state(config, self.crypto[i], self.genesis)))
        self.pending: list[tuple[int, int, Message]] = []   # (node, sender index, message)
        self.nodes_of = {i: [node for node, ix in enumerate(self.node_index) if ix == i] for i in range(n)}
        self.sending_node = 0
        self.honest_finalized: dict[int, bytes] = {}

    def _record(self, sender: int, to: int | None, message: Message) -> None:
        super()._record(sender, to, message)
        for node, index in enumerate(self.node_index):
            if node == self.sending_node:
                continue
            if (to is None and index != sender) or to == index:
                self.pending.append((node, sender, message))

    def step_node(self, node: int, event: Event) -> None:
        v = self.nodes[node]
        self.sending_node = node
        pending: list[Event] = [event]
        while pending and v.core is not None:
            v.core, actions = core.step(v.core, pending.pop(0))
            for action in actions:
                self._carry_out(v, action, pending)
                if v.crash_after is not None and v.crash_after(action):
                    v.core, v.crash_after = None, None
                    break

    def _on_commit(self, v: _Validator, commit: Commit) -> None:
        for cb in commit.blocks:
            b = cb.block
            last = v.chain[-1] if v.chain else self.genesis
            if b.header.parent_hash != last.hash:
                if v.index not in self.twin_ids:
                    self.violations.append(f"validator {v.index} finalized a block that does not extend its chain")
                return
            v.chain.append(b)
            if v.index in self.twin_ids:
                continue   # a twin is byzantine: what it finalizes proves nothing
            known = self.honest_finalized.setdefault(b.height, b.hash)
            if known != b.hash:
                self.violations.append(
                    f"SAFETY: validator {v.index} finalized {b.hash.hex()[:12]} at height {b.height}, another "
                    f"honest validator finalized {known.hex()[:12]}")

    def restart_node(self, node: int) -> None:
        v = self.nodes[node]
        head = v.chain[-1] if v.chain else self.genesis
        try:
            head_qc = self._qc_of(head)
        except AttackFailed:
            return
        v.core = core.restore_core(v.config, self.crypto[v.index], head, head_qc, v.safety,
                                   [b for b in v.voted.values() if b.height > head.height])
        self.step_node(node, Start())


def run_twins(seed: int, n: int = 4, twins: int | None = None, steps: int = 2_500) -> TwinsResult:
    """One seeded Twins schedule of ``steps`` adversary decisions over n validators, ``twins`` of
    them (default f) doubled. Before each decision the adversary may re-partition the nodes; then
    it delivers a pending message within a side (most often), fires a node's timer, or crashes a
    node after a random kind of action / restarts a crashed one."""
    import random

    rng = random.Random(seed)
    f = (n - 1) // 3
    doubled = frozenset(rng.sample(range(n), min(f if twins is None else twins, f)))
    net = _TwinsNet(n, doubled)
    nodes = len(net.nodes)
    for node in range(nodes):
        net.step_node(node, Start())
    side = [0] * nodes
    delivered = crashes = 0
    down = [0] * nodes
    cuts: tuple[Callable[[Action], bool], ...] = (_is_persist, _is_vote_send, _is_timeout_send,
                                                  lambda a: isinstance(a, Broadcast), lambda a: True)
    for _ in range(steps):
        roll = rng.random()
        if roll < 0.004:   # a new partition: twins apart, honest validators split at random
            side = [rng.randrange(2) for _ in range(nodes)]
            for i in doubled:
                a, b = i, net.node_index.index(i, n)
                side[b] = 1 - side[a]
        elif roll < 0.006:
            side = [0] * nodes
        elif roll < 0.08:
            node = rng.randrange(nodes)
            s = net.nodes[node].core
            if s is not None:
                net.step_node(node, LocalTimeout(s.view))
        elif roll < 0.085:
            node = rng.randrange(nodes)
            if net.nodes[node].core is not None and net.nodes[node].crash_after is None:
                net.nodes[node].crash_after = rng.choice(cuts)   # dies after its next such action
                crashes += 1
        elif net.pending:
            # a pending message whose sender and receiver are on one side (most often a recent one)
            first = len(net.pending) - min(48, len(net.pending)) if rng.random() < 0.8 else 0
            window = [k for k in range(first, len(net.pending))
                      if any(side[x] == side[net.pending[k][0]] for x in net.nodes_of[net.pending[k][1]])]
            if not window:
                continue
            k = rng.choice(window)
            dst, src, message = net.pending[k]
            net.pending.pop(k)
            if net.nodes[dst].core is not None:
                net.step_node(dst, core.event_of(message, src))
                delivered += 1
        for node in range(nodes):   # a crashed node restarts a while later
            if net.nodes[node].core is None:
                down[node] += 1
                if down[node] > 40:
                    down[node] = 0
                    net.restart_node(node)
        if len(net.pending) > 2_000:   # the oldest are lost (a network may drop before GST)
            del net.pending[: len(net.pending) - 2_000]
        if net.violations:
            break
    honest = [v for v in net.nodes if v.index not in doubled]
    return TwinsResult(seed, n, tuple(sorted(doubled)), tuple(net.violations),
                       max((len(v.chain) for v in honest), default=0), delivered, crashes)


def run_adversary_bench(twins_seeds: int, n: int = 4) -> dict[str, object]:
    """The scripted attack schedules (each must stop at an honest refusal or end without a fork)
    and ``twins_seeds`` random Twins schedules: what ``chainshare bench sim`` adds to its report."""
    import time

    started = time.perf_counter()
    attacks = run_all_attacks()
    twins = [run_twins(seed, n) for seed in range(twins_seeds)]
    heights = sorted(r.finalized_height for r in twins)
    return {
        "attack_schedules": len(attacks),
        "attack_violations": sum(len(r.violations) for r in attacks),
        "attacks_refused": sum(1 for r in attacks if r.refused),
        "twins_seeds": twins_seeds,
        "twins_violations": sum(len(r.violations) for r in twins),
        "twins_failed_seeds": [r.seed for r in twins if r.violations][:20],
        "twins_finalized_height_p50": heights[len(heights) // 2] if heights else None,
        "twins_crashes": sum(r.crashes for r in twins),
        "wall_s": round(time.perf_counter() - started, 3),
    }
