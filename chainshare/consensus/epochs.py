"""Validator-set epoch decisions (docs/consensus.md, "Validator-set epochs"), pure, called by the
replica and the simulator alike.

The set of epoch e finalizes every block below the activation height H of set e+1; blocks it
certifies at or above H form an empty suffix that only gives H-1 its 2-chain and is never stored.
Once H-1 is final the leaving core times out of its view (``compute_farewell``: the timeout carries
the QC that finalized H-1 to the validators that have not seen it), and a fresh core of set e+1 is
restored on H-1.
"""

from __future__ import annotations

from chainshare.consensus import core
from chainshare.consensus.core import Action, CoreState

__all__ = ["compute_farewell", "has_epoch_ended", "is_suffix"]


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
