"""A record's state at any height, folded from its events (the node keeps only the latest state).

``apply_credit_event`` mirrors the CreditRegistry's transitions: replaying every event of a record up to a
height gives what the contract held after that height, plus the whole version history (which the contract
state keeps too, but this way any height is reachable from events alone).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from chainshare.credit.events import CreditEvent
from chainshare.execution.abi import to_jsonable
from chainshare.execution.contracts import credit_registry as cr

_VERSION_KEYS = ("polarity", "severity", "documentNumber", "authority", "legalBasis", "summary", "summaryHash",
                 "decisionDate", "effectiveFrom", "displayMinSeconds", "displayMaxSeconds", "evidenceHash")


@dataclass(frozen=True)
class VersionView:
    version: int
    fields: dict[str, Any]  # the event's version fields
    version_hash: bytes
    previous_hash: bytes
    height: int
    tx_hash: bytes
    timestamp_ms: int
    account: str


@dataclass(frozen=True)
class RecordView:
    id: int
    subject: str
    category: str
    issuer: str
    status: int
    objection: int
    objection_deadline: int
    repair: int
    versions: tuple[VersionView, ...]
    events: tuple[CreditEvent, ...]

    @property
    def current(self) -> VersionView:
        return self.versions[-1]

    def compute_display_status(self, now: int) -> str:
        """Status a reader sees at block time ``now`` (``expired`` once the maximum period passed)."""
        f = self.current.fields
        if self.status == cr.ACTIVE:
            if now >= f["effectiveFrom"] + f["displayMaxSeconds"]:
                return "expired"
            if now < f["effectiveFrom"]:
                return "pending"
        return cr.STATUS_NAMES[self.status]

    def is_displayed(self, now: int) -> bool:
        return self.compute_display_status(now) == "active"

    def is_overdue(self, now: int) -> bool:
        return self.objection in (cr.OBJ_FILED, cr.OBJ_UNDER_REVIEW) and now > self.objection_deadline

    def to_json(self, now: int, *, with_history: bool = False) -> dict[str, Any]:
        f = self.current.fields
        out: dict[str, Any] = {
            "id": self.id, "subject": self.subject, "category": self.category, "issuer": self.issuer,
            "version": self.current.version, "status": self.compute_display_status(now),
            "objection": cr.OBJECTION_NAMES[self.objection], "objection_overdue": self.is_overdue(now),
            "objection_deadline": self.objection_deadline or None, "repair": cr.REPAIR_NAMES[self.repair],
            "polarity": {cr.POSITIVE: "positive", cr.NEGATIVE: "negative"}.get(f["polarity"], "unknown"),
            **{k: to_jsonable(f[k]) for k in _VERSION_KEYS if k != "polarity"},
            "version_hash": "0x" + self.current.version_hash.hex(),
            "published_block": self.versions[0].height, "updated_block": self.events[-1].height,
        }
        if with_history:
            out["versions"] = [{"version": v.version, "block": v.height, "transaction": "0x" + v.tx_hash.hex(),
                                "timestamp": v.timestamp_ms // 1000, "account": v.account,
                                "version_hash": "0x" + v.version_hash.hex(),
                                "previous_version_hash": "0x" + v.previous_hash.hex(),
                                **{k: to_jsonable(v.fields[k]) for k in _VERSION_KEYS}} for v in self.versions]
            out["timeline"] = [e.to_json() for e in self.events]
        return out


def _version_of(ev: CreditEvent) -> VersionView:
    a = ev.args
    return VersionView(a["version"], {k: a[k] for k in _VERSION_KEYS}, a["versionHash"], a["previousVersionHash"],
                       ev.height, ev.tx_hash, ev.timestamp_ms, a["account"])


def apply_credit_event(records: dict[int, RecordView], ev: CreditEvent) -> None:
    """Fold one CreditRegistry record event into ``records`` (other events are ignored)."""
    a = ev.args
    if ev.name == "RecordPublished":
        records[a["id"]] = RecordView(a["id"], a["subject"], a["category"], a["issuer"], cr.ACTIVE, cr.OBJ_NONE, 0,
                                      cr.REPAIR_NONE, (_version_of(ev),), (ev,))
        return
    r = records.get(a.get("id", -1)) if "id" in a else None
    if r is None:
        return
    events = r.events + (ev,)
    if ev.name == "RecordCorrected":
        open_objection = r.objection in (cr.OBJ_FILED, cr.OBJ_UNDER_REVIEW)
        r = replace(r, versions=r.versions + (_version_of(ev),),
                    objection=cr.OBJ_CORRECTED if open_objection else r.objection)
    elif ev.name == "ObjectionFiled":
        r = replace(r, objection=cr.OBJ_FILED, objection_deadline=a["deadline"])
    elif ev.name == "ObjectionUnderReview":
        r = replace(r, objection=cr.OBJ_UNDER_REVIEW)
    elif ev.name == "ObjectionResolved":
        r = replace(r, objection=a["outcome"])
    elif ev.name == "RepairRequested":
        r = replace(r, repair=cr.REPAIR_REQUESTED)
    elif ev.name == "RepairDecided":
        r = replace(r, repair=cr.REPAIR_APPROVED if a["approved"] else cr.REPAIR_REJECTED,
                    status=cr.REPAIRED if a["approved"] else r.status)
    elif ev.name == "RecordExpired":
        r = replace(r, status=cr.EXPIRED)
    elif ev.name == "RecordWithdrawn":
        r = replace(r, status=cr.WITHDRAWN)
    records[r.id] = replace(r, events=events)


def fold_records(events: list[CreditEvent]) -> dict[int, RecordView]:
    """Every record named by ``events`` (in chain order), as of the last of them."""
    records: dict[int, RecordView] = {}
    for ev in events:
        apply_credit_event(records, ev)
    return records
