"""Automatic revocation: follow the finalized credit-record events (``query.watch``) and, when one touches a
subject holding one of the issuer's unrevoked credentials, recompute its attributes at the finalized head and
revoke the credentials whose signed attributes differ, publishing the new status list on chain.

Guarantees: every record event after the cursor is looked at exactly once and in chain order; the issuer
state is re-read from its file before each decision (so credentials issued meanwhile are seen, even the
first) and written after each revocation is final, and the cursor only after that, so a stop or crash at any
point repeats at most the check of one event, never a revocation (a repeated check finds it revoked)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from chainshare.client import NodeClient
from chainshare.credit import credential_chain as chain
from chainshare.credit import credentials as zk
from chainshare.credit.events import CreditEvent, CreditSource, RpcSource
from chainshare.credit.query import watch_across_outages
from chainshare.execution.contracts.credit_registry import compute_subject_key
from chainshare.logs import log_event

LOG = logging.getLogger("chainshare.credit.revocation")


@dataclass(frozen=True)
class Revocation:
    """One revocation published because of one record event (what the follower logs)."""

    subject: str
    indexes: tuple[int, ...]
    record_block: int
    record_cursor: str
    block: int
    transaction: str
    blocktime_lag_ms: int  # the revocation block's time minus the record block's (finality lag cancels out)
    wall_ms: float  # from the event being read (its block final) to the revocation's receipt (its block final)


def select_changed(state: zk.IssuerState, subject: str, current: Callable[[str], Any]) -> list[int]:
    """The unrevoked credentials of ``subject`` whose signed attributes differ from ``current(subject)``."""
    mine = {i: s for i, s in state.issued.items() if s == subject}
    return zk.find_changed(replace(state, issued=mine), current) if mine else []


def revoke_and_publish(client: NodeClient, key: bytes, state: zk.IssuerState, indexes: list[int],
                       reason: str) -> tuple[zk.IssuerState, dict[str, Any]]:
    """``state`` with ``indexes`` revoked, and the receipt of its new status list published on chain."""
    state = zk.revoke_credentials(state, sorted(indexes), chain.get_chain_time(client))
    return state, chain.publish_status_list(client, key, state, reason)


class RevocationFollower:
    """Revokes, event by event, what a credit-record event made stale (``on_event`` is ``watch``'s callback)."""

    def __init__(self, client: NodeClient, key: bytes, load_state: Callable[[], zk.IssuerState | None],
                 save_state: Callable[[zk.IssuerState], None], save_cursor: Callable[[str], None],
                 source: CreditSource | None = None) -> None:
        self.client, self.key = client, key
        self.source = source or RpcSource(client)
        self.load_state, self.save_state, self.save_cursor = load_state, save_state, save_cursor
        self.revocations: list[Revocation] = []
        self.position = (0, -1)  # of the last event handled

    def on_event(self, ev: CreditEvent) -> None:
        seen = time.monotonic()
        state = self.load_state()
        revoked = state.revoked() if state is not None else set()
        holders = {compute_subject_key(s): s for i, s in state.issued.items() if i not in revoked} if state else {}
        subject = holders.get(bytes(ev.args["subjectKey"]))
        if state is not None and subject is not None:
            changed = select_changed(state, subject,
                                     lambda s: chain.compute_credit_attributes(self.source, s))
            if changed:
                reason = f"credit status changed: {ev.name} of record {ev.args['id']} (block {ev.height})"
                state, sent = revoke_and_publish(self.client, self.key, state, changed, reason)
                self.save_state(state)
                done = Revocation(subject, tuple(changed), ev.height, ev.cursor, sent["block"], sent["transaction"],
                                  self.source.block_timestamp_ms(sent["block"]) - ev.timestamp_ms,
                                  round((time.monotonic() - seen) * 1000, 1))
                self.revocations.append(done)
                log_event(LOG, logging.INFO, "revoked", subject=subject, indexes=list(changed),
                          record=ev.args["id"], event=ev.name, record_block=ev.height, cursor=ev.cursor,
                          block=done.block, transaction=done.transaction, blocktime_lag_ms=done.blocktime_lag_ms,
                          wall_ms=done.wall_ms, rev_reg_id=state.rev_reg_id)
            else:
                log_event(LOG, logging.INFO, "unchanged", subject=subject, record=ev.args["id"], event=ev.name,
                          cursor=ev.cursor)
        self.save_cursor(ev.cursor)
        self.position = ev.position

    def follow(self, after: tuple[int, int], *, stop: Callable[[], bool], next_head: Callable[[int], int] | None,
               poll_s: float, sleep: Callable[[float], None] = time.sleep) -> tuple[int, int]:
        """Watch every record event after ``after`` until ``stop()``; the position to resume from. While the
        node is unreachable (restarting, say) it logs, waits (backing off to 10 s) and resumes after the last
        event it handled, so an outage neither stops it nor skips an event."""
        self.position = max(self.position, after)
        return watch_across_outages(self.source, self.position, [], self.on_event, stop=stop, poll_s=poll_s,
                                    next_head=next_head, sleep=sleep, log=LOG)
