"""REST endpoints of the credit registry, mounted under /api/v1/credit (reads of finalized data only).

- ``GET /credit/subjects/{subject}?at=H``: the subject's records as of height H (default: head), each with its
  display status at that block's time, and its score under the rule in force then (null if none installed).
- ``GET /credit/subjects/{subject}/score?at=H&rule_version=V``: score and explanation.
- ``GET /credit/records/{id}?at=H``: a record with every version and its lifecycle timeline.
- ``GET /credit/records/{id}/provenance``: the bundle ``chainshare credit verify`` checks offline with the
  genesis alone (headers, QCs, receipt inclusion proofs).
- ``GET /credit/records/{id}/details``: for a natural person's record, where its details are (the issuer's
  dataset ``credit record {id} details``) and the on-chain values they must match; the details themselves are
  fetched with the signed ``POST /datasets/{dataset}/fetch`` under a read grant (``chainshare.credit.details``).
- ``GET /credit/events?after=CURSOR&category=&subject=&limit=``: finalized record events after a cursor, in
  chain order, with the cursor to continue from (what a poller such as ``credit watch`` follows).
- ``GET /credit/config``: categories, issuers, registrars, objection deadline and scoring rules, from the
  Governance decisions' events.

Subjects and cursors are validated before any read (a bad USCC names the expected check character: 400).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from chainshare.api.limits import ApiWorkers
from chainshare.credit import query
from chainshare.credit.details import details_title, find_details_dataset
from chainshare.credit.events import REGISTRY, ChainSource, format_cursor, parse_cursor
from chainshare.credit.provenance import build_provenance
from chainshare.errors import InvalidInput, NotFound
from chainshare.execution.abi import to_jsonable
from chainshare.execution.contracts.credit_registry import DEFAULT_OBJECTION_DEADLINE
from chainshare.node import Node
from chainshare.sharing.records import DatasetTitleIndex, dataset_json

SUBJECT = Path(min_length=1, max_length=66)
CURSOR = r"^[0-9]{1,19}-[0-9]{1,19}$"
_CONFIG_TOPICS = [REGISTRY.E_CATEGORY.topic, REGISTRY.E_ISSUER.topic, REGISTRY.E_REGISTRAR.topic,
                  REGISTRY.E_DEADLINE.topic, REGISTRY.E_RULE.topic]


def _on_workers(workers: ApiWorkers) -> Callable[[Callable[..., dict[str, Any]]],
                                                 Callable[..., Awaitable[dict[str, Any]]]]:
    """Run a read on the API worker threads (charged to its client and to the API's CPU share, like every
    other heavy REST read), never on the event loop that runs consensus."""
    def wrap(fn: Callable[..., dict[str, Any]]) -> Callable[..., Awaitable[dict[str, Any]]]:
        @functools.wraps(fn)
        async def run(*args: Any, **kwargs: Any) -> dict[str, Any]:
            return await workers.run(functools.partial(fn, *args, **kwargs))
        return run
    return wrap


def create_credit_router(node: Node, workers: ApiWorkers) -> APIRouter:
    router = APIRouter(prefix="/credit", tags=["credit"])
    offloaded = _on_workers(workers)
    titles = DatasetTitleIndex(node)  # where a person record's details are: by (issuer, title), no scan

    def source() -> ChainSource:
        return ChainSource(node.chain)

    @router.get("/subjects/{subject}", summary="A subject's credit records and score at a height")
    @offloaded
    def subject(subject: Annotated[str, SUBJECT], at: Annotated[int | None, Query(ge=0)] = None) -> dict[str, Any]:
        src = source()
        height, records = query.get_subject_records(src, subject, at)  # read once, for records and score
        out = query.compose_subject_json(src, subject, height, records)
        try:
            out["score"] = query.score_records(src, subject, height, records)
        except NotFound:
            out["score"] = None
        return out

    @router.get("/subjects/{subject}/score", summary="Score and explanation of a subject at a height")
    @offloaded
    def score(subject: Annotated[str, SUBJECT], at: Annotated[int | None, Query(ge=0)] = None,
              rule_version: Annotated[int | None, Query(ge=1, le=2**63)] = None) -> dict[str, Any]:
        return query.get_score(source(), subject, at, rule_version)

    @router.get("/records/{record_id}", summary="A credit record with its versions and lifecycle timeline")
    @offloaded
    def record(record_id: Annotated[int, Path(ge=1, le=2**64 - 1)],
               at: Annotated[int | None, Query(ge=0)] = None) -> dict[str, Any]:
        src = source()
        height, r = query.get_record(src, record_id, at)
        now = src.block_timestamp_ms(height) // 1000
        return {"height": height, "time": now, **r.to_json(now, with_history=True)}

    @router.get("/records/{record_id}/provenance", summary="Provenance bundle (verify offline with the genesis)")
    @offloaded
    def provenance(record_id: Annotated[int, Path(ge=1, le=2**64 - 1)]) -> dict[str, Any]:
        return build_provenance(node.chain, source(), record_id)

    @router.get("/records/{record_id}/details",
                summary="Where a person record's details are (the issuer's dataset) and the hash they must match")
    @offloaded
    def details(record_id: Annotated[int, Path(ge=1, le=2**64 - 1)]) -> dict[str, Any]:
        src = source()
        height, r = query.get_record(src, record_id)
        if not r.subject.startswith("P-"):
            raise InvalidInput(f"record {record_id} is about an organisation: its summary is public on chain")
        now = src.block_timestamp_ms(height) // 1000
        view = r.to_json(now)
        found = find_details_dataset((dataset_json(d) for d in titles.find(r.issuer, details_title(record_id))),
                                     r.issuer, record_id)
        return {"height": height, "record": {k: view[k] for k in ("id", "version", "subject", "issuer",
                                                                   "summaryHash", "version_hash")},
                "dataset": found, "fetch": f"POST /api/v1/datasets/{found['id']}/fetch (signed, under a read grant)"}

    @router.get("/events", summary="Finalized record events after a cursor (for pollers)")
    @offloaded
    def events(after: Annotated[str | None, Query(pattern=CURSOR)] = None,
               category: Annotated[str | None, Query(max_length=64)] = None,
               subject: Annotated[str | None, Query(max_length=66)] = None,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
        src = source()
        head = src.head_height()
        position = parse_cursor(after) if after else (0, -1)
        items: list[Any] = []
        next_position = (head, 2**31)
        for ev in query.iter_new_events(src, position, query.watch_topics(category, subject), head):
            if len(items) == limit:
                next_position = items[-1].position
                break
            items.append(ev)
        return {"head": head, "items": [e.to_json() for e in items], "next": format_cursor(next_position)}

    @router.get("/config", summary="Categories, issuers, registrars, objection deadline and scoring rules")
    @offloaded
    def config() -> dict[str, Any]:
        src = source()
        cats: dict[str, Any] = {}
        issuers: dict[tuple[str, str], bool] = {}
        registrars: dict[str, bool] = {}
        deadline = DEFAULT_OBJECTION_DEADLINE
        rules = []
        for topic in _CONFIG_TOPICS:
            for ev in src.iter_events([topic], 0, src.head_height()):
                a = ev.args
                if ev.name == "CategorySet":
                    cats[a["code"]] = {"title": a["title"], "active": a["active"], "block": ev.height}
                elif ev.name == "IssuerSet":
                    issuers[(a["category"], a["agency"])] = a["authorised"]
                elif ev.name == "RegistrarSet":
                    registrars[a["agency"]] = a["granted"]
                elif ev.name == "ObjectionDeadlineSet":
                    deadline = a["seconds"]
                elif ev.name == "ScoringRuleInstalled":
                    rules.append({"version": a["version"], "block": ev.height, "rule": to_jsonable(a["ruleJson"])})
        for code, cat in cats.items():
            cat["issuers"] = sorted(ag for (c, ag), ok in issuers.items() if c == code and ok)
        return {"categories": cats, "registrars": sorted(a for a, ok in registrars.items() if ok),
                "objection_deadline_seconds": deadline, "scoring_rules": rules}

    return router
