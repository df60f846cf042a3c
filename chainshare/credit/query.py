"""What readers ask of the credit registry, answered from a CreditSource at any height: a subject's records,
a record's history, the rule in force, a score, and the stream of new events (the watch)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from chainshare.credit.events import RULE_TOPIC, CreditEvent, CreditSource, format_cursor
from chainshare.credit.lifecycle import RecordView, fold_records
from chainshare.credit.scoring import ScoringRule, compute_score, parse_rule
from chainshare.errors import InvalidInput, NotFound
from chainshare.execution.contracts.credit_registry import (
    compute_category_key,
    compute_subject_key,
    get_subject_kind,
)
from chainshare.logs import log_event

WATCH_LOG = logging.getLogger("chainshare.credit.watch")
MAX_RECORD_ID = 2**64 - 1


def check_subject(subject: str) -> str:
    """``subject`` if it is a valid USCC or person handle; InvalidInput naming the problem otherwise."""
    try:
        get_subject_kind(subject)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    return subject


def resolve_height(source: CreditSource, at: int | None) -> int:
    head = source.head_height()
    if at is None:
        return head
    if not 0 <= at <= head:
        raise InvalidInput(f"height {at} is not in 0..{head} (the finalized head)")
    return at


def get_subject_records(source: CreditSource, subject: str, at: int | None = None) -> tuple[int, list[RecordView]]:
    """(height, every record of ``subject`` as of that height)."""
    height = resolve_height(source, at)
    events = list(source.iter_events([None, None, compute_subject_key(check_subject(subject))], 0, height))
    return height, list(fold_records(events).values())


def get_record(source: CreditSource, record_id: int, at: int | None = None) -> tuple[int, RecordView]:
    if not 0 < record_id <= MAX_RECORD_ID:
        raise InvalidInput(f"a record id is 1..{MAX_RECORD_ID}")
    height = resolve_height(source, at)
    events = list(source.iter_events([None, record_id.to_bytes(32, "big")], 0, height))
    record = fold_records(events).get(record_id)
    if record is None:
        raise NotFound(f"no credit record {record_id} at height {height}")
    return height, record


def get_rule_at(source: CreditSource, height: int, version: int | None = None) -> ScoringRule:
    """The scoring rule in force at ``height`` (the last installed at or before it), or version ``version``
    if it was installed by then."""
    rules = [parse_rule(e.args["version"], e.height, e.args["ruleJson"])
             for e in source.iter_events([RULE_TOPIC], 0, height) if e.name == "ScoringRuleInstalled"]
    if version is not None:
        found = next((r for r in rules if r.version == version), None)
        if found is None:
            raise NotFound(f"no scoring rule version {version} installed at or before height {height}")
        return found
    if not rules:
        raise NotFound(f"no scoring rule installed at or before height {height} (Governance installs one)")
    return rules[-1]


def get_score(source: CreditSource, subject: str, at: int | None = None,
              rule_version: int | None = None) -> dict[str, Any]:
    """The score of ``subject`` at height ``at`` (block time of that block) under the rule in force then."""
    height, records = get_subject_records(source, subject, at)
    return score_records(source, subject, height, records, rule_version)


def score_records(source: CreditSource, subject: str, height: int, records: list[RecordView],
                  rule_version: int | None = None) -> dict[str, Any]:
    """``get_score`` of records already read at ``height`` (a page that shows both reads them once)."""
    rule = get_rule_at(source, height, rule_version)
    out = compute_score(subject, records, rule, source.block_timestamp_ms(height) // 1000)
    return {"height": height, **out}


def subject_json(source: CreditSource, subject: str, at: int | None = None) -> dict[str, Any]:
    height, records = get_subject_records(source, subject, at)
    return compose_subject_json(source, subject, height, records)


def compose_subject_json(source: CreditSource, subject: str, height: int, records: list[RecordView]) -> dict[str, Any]:
    """``subject_json`` of records already read at ``height``."""
    now = source.block_timestamp_ms(height) // 1000
    return {"subject": subject, "height": height, "time": now,
            "records": [r.to_json(now) for r in sorted(records, key=lambda r: r.id)]}


def watch_topics(category: str | None, subject: str | None) -> list[bytes | None]:
    topics: list[bytes | None] = [None, None,
                                  compute_subject_key(check_subject(subject)) if subject is not None else None,
                                  compute_category_key(category) if category is not None else None]
    while topics and topics[-1] is None:
        topics.pop()
    return topics


def iter_new_events(source: CreditSource, after: tuple[int, int], topics: list[bytes | None],
                    to_height: int) -> Iterator[CreditEvent]:
    """Record events strictly after position ``after`` up to ``to_height`` (in chain order)."""
    for ev in source.iter_events(topics, after[0], to_height):
        if ev.position > after and "id" in ev.args and "subjectKey" in ev.args:
            yield ev


def watch(source: CreditSource, after: tuple[int, int], topics: list[bytes | None],
          on_event: Callable[[CreditEvent], None], *, poll_s: float = 0.25,
          stop: Callable[[], bool] = lambda: False, sleep: Callable[[float], None] = time.sleep,
          next_head: Callable[[int], int] | None = None) -> tuple[int, int]:
    """Deliver every matching record event after ``after`` as its block finalizes, exactly once and in order,
    until ``stop()``; returns the position of the last event delivered (the cursor to resume from).

    ``next_head(scanned)`` waits for the finalized head to pass ``scanned`` (a websocket subscription,
    ``client.HeadSubscription``) or gives up after a while; by default it sleeps ``poll_s`` and asks the
    source (polling). Either way only finalized blocks are read (the node serves nothing else), each new
    range of heights is read whole from the source, and the next read starts at the height after the last
    one fully read, so neither a dropped subscription nor a reconnect with the returned cursor skips or
    repeats an event."""
    def poll(_: int) -> int:
        sleep(poll_s)
        return source.head_height()

    wait = next_head or poll
    position = after
    scanned = after[0] - 1  # heights up to here are fully read
    head = source.head_height()
    while not stop():
        if head > scanned:
            for ev in iter_new_events(source, position, topics, head):
                on_event(ev)
                position = ev.position
                if stop():
                    return position
            scanned = head
            position = max(position, (head, 2**31))  # everything up to head was read
        if stop():
            break
        head = wait(scanned)
    return position


def watch_across_outages(source: CreditSource, after: tuple[int, int], topics: list[bytes | None],
                         on_event: Callable[[CreditEvent], None], *, stop: Callable[[], bool], poll_s: float = 0.25,
                         next_head: Callable[[int], int] | None = None, sleep: Callable[[float], None] = time.sleep,
                         log: logging.Logger = WATCH_LOG) -> tuple[int, int]:
    """``watch`` that outlives the node: while it is unreachable (restarting, say) it logs a warning, waits
    (backing off to 10 s) and resumes after the last event delivered, so an outage neither stops it nor skips
    or repeats an event; returns, as ``watch`` does, the position to resume from once ``stop()``."""
    from chainshare.client import NodeUnreachable

    position = after
    backoff = poll_s

    def deliver(ev: CreditEvent) -> None:
        nonlocal position, backoff
        on_event(ev)
        position, backoff = ev.position, poll_s

    while True:
        try:
            return watch(source, position, topics, deliver, poll_s=poll_s, stop=stop, next_head=next_head,
                         sleep=sleep)
        except NodeUnreachable as exc:
            log_event(log, logging.WARNING, "node unreachable: retrying", error=str(exc)[:200],
                      cursor=format_cursor(position), retry_s=backoff)
            sleep(backoff)
            backoff = min(backoff * 2, 10.0)
            if stop():
                return position
