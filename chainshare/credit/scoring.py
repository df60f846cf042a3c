"""Credit scores: a pure function of a subject's records at a block time and a versioned rule.

The rule is the canonical JSON Governance installed (``canonicalize_scoring_rule`` in the contract defines
its form). Everything is integer arithmetic, so every node, the explorer and an offline auditor get the
same score and the same explanation:
- a record counts while it is displayed (active, effective, not past its maximum period, not repaired,
  withdrawn or expired);
- its weight is ``weights[category][severity]`` points; with ``decay_days[category] = D > 0`` it decays
  linearly to 0 over D days from ``effectiveFrom``, by whole days of age (truncated toward zero);
- each category's sum is capped to ``[-caps[category], caps[category]]``;
- score = clamp(base + sum over categories, min, max).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from chainshare.credit.lifecycle import RecordView
from chainshare.execution.contracts.credit_registry import canonicalize_scoring_rule

SCORING_ALGORITHM = 1  # bump if the evaluation itself ever changes (a protocol upgrade, never in place)


@dataclass(frozen=True)
class ScoringRule:
    version: int
    installed_block: int
    canonical_json: str

    @property
    def spec(self) -> dict[str, Any]:
        return dict(json.loads(self.canonical_json))


def parse_rule(version: int, installed_block: int, text: str) -> ScoringRule:
    """A ScoringRule from installed text (ValueError if the text is not a valid rule)."""
    return ScoringRule(version, installed_block, canonicalize_scoring_rule(text))


def _decayed(points: int, age_days: int, decay_days: int) -> int:
    if decay_days <= 0:
        return points
    remaining = max(0, decay_days - max(0, age_days))
    magnitude = abs(points) * remaining // decay_days
    return magnitude if points >= 0 else -magnitude


def compute_score(subject: str, records: list[RecordView], rule: ScoringRule, now: int) -> dict[str, Any]:
    """Score and explanation (each contributing record and its weight) of ``subject`` at block time ``now``."""
    spec = rule.spec
    weights, decay, caps = spec["weights"], spec.get("decay_days", {}), spec.get("caps", {})
    contributions: list[dict[str, Any]] = []
    per_category: dict[str, int] = {}
    for r in sorted(records, key=lambda x: x.id):
        if r.subject != subject or not r.is_displayed(now) or r.category not in weights:
            continue
        f = r.current.fields
        points = int(weights[r.category].get(str(f["severity"]), 0))
        age_days = (now - f["effectiveFrom"]) // 86400
        weight = _decayed(points, age_days, int(decay.get(r.category, 0)))
        per_category[r.category] = per_category.get(r.category, 0) + weight
        contributions.append({"record": r.id, "version": r.current.version, "category": r.category,
                              "severity": f["severity"], "points": points, "age_days": age_days,
                              "weight": weight})
    capped: dict[str, dict[str, int]] = {}
    total = 0
    for cat in sorted(per_category):
        raw = per_category[cat]
        cap = caps.get(cat)
        value = raw if cap is None else max(-cap, min(cap, raw))
        capped[cat] = {"sum": raw, "counted": value}
        total += value
    score = max(spec["min"], min(spec["max"], spec["base"] + total))
    return {"subject": subject, "score": score, "base": spec["base"], "min": spec["min"], "max": spec["max"],
            "rule_version": rule.version, "rule_name": spec["name"], "rule_installed_block": rule.installed_block,
            "algorithm": SCORING_ALGORITHM, "at_time": now, "categories": capped, "contributions": contributions}
