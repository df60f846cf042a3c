"""Compute-to-data: differentially private aggregate queries that the owner's node runs over its
own dataset.

A query is JSON::

    {"select": [{"fn": "count"}, {"fn": "avg", "column": "income", "bounds": [0, 200000]}],
     "group_by": ["district"],
     "where": [{"column": "age", "op": ">=", "value": 18}],
     "epsilon": 1.0}

Functions: count (rows, or non-empty values of a column), sum and avg (integer/number columns,
with ``bounds`` [lower, upper] that every value is clamped to). There is no min or max: each
returns one person's exact value. Filters: == != < <= > >= in, all of them must hold (AND); a
row whose value is missing matches no filter. Personal columns may appear nowhere. ``epsilon``
(default 1.0, at most 10) is the privacy cost of the query, charged to the grantee's budget.

The guarantee: every released number is a measurement plus discrete Laplace noise (Canonne,
Kamath and Steinke 2020, sampled exactly from the OS CSPRNG) calibrated to its sensitivity when
one row is added or removed: 1 for a count, max(|lower|, |upper|) for a sum of clamped values.
The query's epsilon is split evenly over its measurements (rows per group, non-empty values per
column, clamped sums), so the whole answer is epsilon-differentially private per row; groups are
disjoint, so a group_by costs no more than one group. Without group_by a query is refused when the
NOISY row count is below the dataset's ``min_group``; with group_by a group is released only when
its noisy row count reaches ``max(min_group, 1 + scale * ln(1/DELTA))`` (Laplace partition
selection: a group made of one row appears with probability at most DELTA), and the query is
refused when no group does. Refusals are decided on noisy values too, so they leak no more than
an answer and cost the same epsilon. The owner's node charges every query's epsilon on chain
(``AccessControl``), refuses once the budget is spent, and rate-limits queries per grant: averaging
many answers to cancel the noise, or differencing two overlapping queries, costs budget that runs
out. The unit of privacy is one row (a person with several rows is protected per row).

``compute_query_hash`` and ``compute_result_hash`` are Keccak-256 of canonical JSON (sorted keys,
no spaces, groups sorted by key) so that requester, owner and auditor compute the same hashes.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any, BinaryIO

from chainshare.crypto.hashing import keccak256
from chainshare.errors import InvalidInput, Unauthorized
from chainshare.execution.contracts.access_control import (
    EPSILON_UNIT,
    REFUSED_BUDGET,
    REFUSED_MIN_GROUP,
    REFUSED_RATE_LIMIT,
)
from chainshare.sharing.schema import (
    KIND_BOOLEAN,
    KIND_DATE,
    KIND_INTEGER,
    KIND_PERSONAL,
    KIND_STRING,
    NUMERIC_KINDS,
    Schema,
    Value,
    canonical_json,
    iter_records,
    parse_value,
)

FUNCTIONS = ("count", "sum", "avg")
DROPPED_FUNCTIONS = ("min", "max")
OPERATORS = ("==", "!=", "<", "<=", ">", ">=", "in")
ORDERED_OPERATORS = frozenset({"<", "<=", ">", ">="})
MAX_QUERY_BYTES = 16 * 1024
MAX_SELECT = 16
MAX_GROUP_BY = 4
MAX_WHERE = 16
MAX_IN_VALUES = 100
MAX_STRING_VALUE_LEN = 256
MAX_GROUPS = 10_000
MAX_BOUND = 10**15
DEFAULT_QUERY_EPSILON = 1.0
MIN_QUERY_EPSILON = 0.01
MAX_QUERY_EPSILON = 10.0
DELTA = 1e-6  # the chance that a group of one row is released under group_by
MECHANISM = "discrete_laplace"
_SUM_DIGITS = 6  # a number column's sum is counted in units of 10**(digits(max |bound|) - 7)
_MIN_SUM_EXPONENT = -12  # ... and never finer than 1e-12

Noise = Callable[[Fraction], int]


class QueryRefused(Unauthorized):
    """The query is well-formed but the dataset's privacy rules forbid answering it; ``reason`` is
    the code recorded on chain and ``epsilon_micro`` the budget the decision spent (noisy checks)."""

    def __init__(self, message: str, *, reason: str = REFUSED_MIN_GROUP, epsilon_micro: int = 0) -> None:
        super().__init__(message)
        self.reason = reason
        self.epsilon_micro = epsilon_micro


class QueryRateLimited(QueryRefused):
    """The grant has run all the queries its rate allows in the current window."""

    http_status = 429
    rpc_code = -32005


@dataclass(frozen=True)
class Aggregate:
    fn: str
    column: str | None = None
    bounds: tuple[int | float, int | float] | None = None  # sum and avg: values are clamped to these

    @property
    def label(self) -> str:
        return self.fn if self.column is None else f"{self.fn}({self.column})"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"fn": self.fn}
        if self.column is not None:
            out["column"] = self.column
        if self.bounds is not None:
            out["bounds"] = list(self.bounds)
        return out


@dataclass(frozen=True)
class Condition:
    column: str
    op: str
    value: Value | tuple[Value, ...]

    def to_json(self) -> dict[str, Any]:
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return {"column": self.column, "op": self.op, "value": value}


@dataclass(frozen=True)
class Query:
    """A validated aggregate query (build it with ``parse_query``)."""

    select: tuple[Aggregate, ...]
    group_by: tuple[str, ...] = ()
    where: tuple[Condition, ...] = ()
    epsilon_micro: int = int(DEFAULT_QUERY_EPSILON * EPSILON_UNIT)

    @property
    def epsilon(self) -> float:
        return self.epsilon_micro / EPSILON_UNIT

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column the query reads, in first-use order."""
        seen: dict[str, None] = {}
        for name in self.group_by:
            seen[name] = None
        for agg in self.select:
            if agg.column is not None:
                seen[agg.column] = None
        for cond in self.where:
            seen[cond.column] = None
        return tuple(seen)

    def to_json(self) -> dict[str, Any]:
        return {
            "select": [agg.to_json() for agg in self.select],
            "group_by": list(self.group_by),
            "where": [cond.to_json() for cond in self.where],
            "epsilon": self.epsilon,
        }


@dataclass(frozen=True)
class QueryResult:
    """Noisy aggregates only: one tuple per released group (group key values, then one value per
    select item), groups sorted by key; ``privacy`` says how they were made (public parameters)."""

    columns: tuple[str, ...]
    groups: tuple[tuple[Value, ...], ...]
    epsilon_micro: int = 0
    privacy: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"columns": list(self.columns), "groups": [list(group) for group in self.groups],
                "epsilon": self.epsilon_micro / EPSILON_UNIT, "privacy": dict(self.privacy or {})}

    def to_canonical_json(self) -> bytes:
        return canonical_json(self.to_json())


# --------------------------------------------------------------------------- parsing


def parse_query(obj: object, schema: Schema) -> Query:
    """A ``Query`` checked against ``schema``: InvalidInput for a malformed query or an unknown
    column, Unauthorized for a personal column. ``obj`` is the JSON object (or its text)."""
    if isinstance(obj, (str, bytes, bytearray)):
        if len(obj) > MAX_QUERY_BYTES:
            raise InvalidInput(f"query exceeds {MAX_QUERY_BYTES} bytes")
        try:
            obj = json.loads(obj, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            raise InvalidInput("query is not valid JSON") from None
    if not isinstance(obj, Mapping):
        raise InvalidInput('query must be a JSON object: {"select": [...], "group_by": [...], "where": [...]}')
    unknown = [str(key) for key in obj if key not in ("select", "group_by", "where", "epsilon")]
    if unknown:
        raise InvalidInput(f"query has unknown keys {sorted(unknown)}: allowed are select, group_by, where, "
                           "epsilon")

    raw_select = obj.get("select")
    if not isinstance(raw_select, list) or not raw_select:
        raise InvalidInput('query "select" must be a non-empty list such as [{"fn": "count"}]')
    if len(raw_select) > MAX_SELECT:
        raise InvalidInput(f"query selects {len(raw_select)} aggregates; at most {MAX_SELECT} are allowed")
    select = tuple(_parse_aggregate(item, i, schema) for i, item in enumerate(raw_select))
    labels = [agg.label for agg in select]
    if len(set(labels)) != len(labels):
        raise InvalidInput("query selects the same aggregate twice")

    raw_group_by = obj.get("group_by", [])
    if not isinstance(raw_group_by, list):
        raise InvalidInput('query "group_by" must be a list of column names')
    if len(raw_group_by) > MAX_GROUP_BY:
        raise InvalidInput(f"query groups by {len(raw_group_by)} columns; at most {MAX_GROUP_BY} are allowed")
    group_by: list[str] = []
    for name in raw_group_by:
        _check_column(name, schema, "group_by")
        if name in group_by:
            raise InvalidInput(f"query groups by column {name!r} twice")
        group_by.append(name)

    raw_where = obj.get("where", [])
    if not isinstance(raw_where, list):
        raise InvalidInput('query "where" must be a list of {"column", "op", "value"} filters')
    if len(raw_where) > MAX_WHERE:
        raise InvalidInput(f"query has {len(raw_where)} filters; at most {MAX_WHERE} are allowed")
    where = tuple(_parse_condition(item, i, schema) for i, item in enumerate(raw_where))
    return Query(select=select, group_by=tuple(group_by), where=where,
                 epsilon_micro=_parse_epsilon(obj.get("epsilon", DEFAULT_QUERY_EPSILON)))


def _parse_epsilon(raw: object) -> int:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw) \
            or not MIN_QUERY_EPSILON <= raw <= MAX_QUERY_EPSILON:
        raise InvalidInput(f'query "epsilon" must be a number in {MIN_QUERY_EPSILON}..{MAX_QUERY_EPSILON} '
                           f"(the privacy cost charged to the grant's budget; default {DEFAULT_QUERY_EPSILON})")
    return round(raw * EPSILON_UNIT)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _check_column(name: object, schema: Schema, where: str) -> str:
    if not isinstance(name, str):
        raise InvalidInput(f"a column in {where} must be a column name (string)")
    column = schema.get_column(name)
    if column is None:
        shown = name if len(name) <= 64 else name[:61] + "..."
        raise InvalidInput(f"unknown column {shown!r} in {where}; the dataset has {list(schema.names)}")
    if column.kind == KIND_PERSONAL:
        raise Unauthorized(
            f"column {name!r} is personal: compute queries may not use personal columns "
            f"(found in {where}); ask for a 'read' grant to receive pseudonyms instead"
        )
    return column.kind


def _parse_aggregate(item: object, index: int, schema: Schema) -> Aggregate:
    where = f"select[{index}]"
    if not isinstance(item, Mapping) or "fn" not in item or not set(item) <= {"fn", "column", "bounds"}:
        raise InvalidInput(f'{where} must be an object {{"fn": ..., "column": ..., "bounds": [lower, upper]}} '
                           '("column" optional for count, "bounds" for sum and avg only)')
    fn = item["fn"]
    if isinstance(fn, str) and fn in DROPPED_FUNCTIONS:
        raise InvalidInput(f"{where}: {fn} is not offered: it would return one person's exact value; use avg or "
                           "count with a range filter (noisy, under the privacy budget)")
    if not isinstance(fn, str) or fn not in FUNCTIONS:
        raise InvalidInput(f"{where}: unknown function {_show(fn)}; use one of {', '.join(FUNCTIONS)}")
    column = item.get("column")
    if column is None:
        if fn != "count":
            raise InvalidInput(f"{where}: {fn} needs a column")
        if "bounds" in item:
            raise InvalidInput(f"{where}: count takes no bounds")
        return Aggregate(fn=fn)
    kind = _check_column(column, schema, where)
    assert isinstance(column, str)
    if fn == "count":
        if "bounds" in item:
            raise InvalidInput(f"{where}: count takes no bounds")
        return Aggregate(fn=fn, column=column)
    if kind not in NUMERIC_KINDS:
        raise InvalidInput(f"{where}: {fn} needs an integer or number column; {column!r} is {kind}")
    return Aggregate(fn=fn, column=column, bounds=_parse_bounds(item.get("bounds"), kind, column, f"{where}"))


def _parse_bounds(raw: object, kind: str, column: str, where: str) -> tuple[int | float, int | float]:
    hint = (f'{where}: {{"bounds": [lower, upper]}} is required: every value of {column!r} is clamped to it, '
            "and the noise grows with max(|lower|, |upper|), so choose the range you expect, not the data's")
    if not isinstance(raw, list) or len(raw) != 2:
        raise InvalidInput(hint)
    for bound in raw:
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound) \
                or abs(bound) > MAX_BOUND:
            raise InvalidInput(f"{where}: bounds must be finite numbers within +-{MAX_BOUND}")
        if kind == KIND_INTEGER and not isinstance(bound, int):
            raise InvalidInput(f"{where}: {column!r} is an integer column: its bounds must be integers")
    lower, upper = raw
    if lower > upper:
        raise InvalidInput(f"{where}: bounds [lower, upper] need lower <= upper")
    return lower, upper


def _parse_condition(item: object, index: int, schema: Schema) -> Condition:
    where = f"where[{index}]"
    if not isinstance(item, Mapping) or set(item) != {"column", "op", "value"}:
        raise InvalidInput(f'{where} must be an object with exactly "column", "op" and "value"')
    kind = _check_column(item["column"], schema, where)
    column = item["column"]
    assert isinstance(column, str)
    op = item["op"]
    if not isinstance(op, str) or op not in OPERATORS:
        raise InvalidInput(f"{where}: unknown operator {_show(op)}; use one of {' '.join(OPERATORS)}")
    if op in ORDERED_OPERATORS and kind == KIND_BOOLEAN:
        raise InvalidInput(f"{where}: {op} does not apply to the boolean column {column!r}; use == or !=")
    raw = item["value"]
    if op == "in":
        if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_IN_VALUES:
            raise InvalidInput(f"{where}: 'in' needs a list of 1..{MAX_IN_VALUES} values")
        values = tuple(_parse_filter_value(v, kind, column, where) for v in raw)
        return Condition(column=column, op=op, value=values)
    return Condition(column=column, op=op, value=_parse_filter_value(raw, kind, column, where))


def _parse_filter_value(raw: object, kind: str, column: str, where: str) -> Value:
    if raw is None:
        raise InvalidInput(f"{where}: a filter value may not be null")
    if kind in NUMERIC_KINDS:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
            raise InvalidInput(f"{where}: column {column!r} is {kind}: compare it with a finite number")
        if isinstance(raw, int) and not -(2**63) <= raw < 2**64:
            raise InvalidInput(f"{where}: number out of range")
        return raw
    if kind == KIND_BOOLEAN:
        if not isinstance(raw, bool):
            raise InvalidInput(f"{where}: column {column!r} is boolean: compare it with true or false")
        return raw
    if not isinstance(raw, str) or len(raw) > MAX_STRING_VALUE_LEN:
        raise InvalidInput(f"{where}: column {column!r} is {kind}: compare it with a string of at most {MAX_STRING_VALUE_LEN} characters")
    if kind == KIND_DATE:
        try:
            parse_value(KIND_DATE, raw)
        except InvalidInput:
            raise InvalidInput(f"{where}: column {column!r} is a date: compare it with \"YYYY-MM-DD\"") from None
    else:
        assert kind == KIND_STRING
    return raw


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."



# --------------------------------------------------------------------------- noise


def _bernoulli(p: Fraction) -> bool:
    return secrets.randbelow(p.denominator) < p.numerator


def _bernoulli_exp_minus(gamma: Fraction) -> bool:
    """True with probability exp(-gamma), gamma >= 0, exactly (CKS 2020, Algorithm 1)."""
    while gamma > 1:
        if not _bernoulli_exp_minus(Fraction(1)):
            return False
        gamma -= 1
    k = 1
    while _bernoulli(gamma / k):
        k += 1
    return k % 2 == 1


def sample_discrete_laplace(scale: Fraction) -> int:
    """An integer Z with P(Z = z) proportional to exp(-|z| / scale), drawn exactly from the OS
    CSPRNG (``secrets``): no floating point, nothing a requester can reproduce (Canonne, Kamath,
    Steinke, "The Discrete Gaussian for Differential Privacy", 2020, Algorithm 2)."""
    if scale <= 0:
        raise ValueError("the noise scale must be positive")
    t, s = scale.numerator, scale.denominator  # scale = t / s
    while True:
        u = secrets.randbelow(t)
        if not _bernoulli_exp_minus(Fraction(u, t)):
            continue
        v = 0
        while _bernoulli_exp_minus(Fraction(1)):
            v += 1
        y = (u + t * v) // s
        negative = secrets.randbits(1) == 1
        if negative and y == 0:
            continue
        return -y if negative else y


@dataclass(frozen=True)
class Measurement:
    """One noisy measurement per group: ``rows``, ``values`` (non-empty values of a column) or
    ``sum`` (of a column's values clamped to ``bounds``, counted in ``unit``s)."""

    kind: str
    column: str | None = None
    bounds: tuple[int | float, int | float] | None = None
    unit: Fraction = Fraction(1)
    sensitivity: int = 1  # in units: how much one row can change the measurement

    @property
    def label(self) -> str:
        if self.kind == "rows":
            return "rows"
        if self.kind == "values":
            return f"values({self.column})"
        assert self.bounds is not None
        return f"sum({self.column} in [{self.bounds[0]}, {self.bounds[1]}])"


@dataclass(frozen=True)
class NoisePlan:
    """What a query measures and how much noise each measurement gets (public: depends on the
    query and the schema only, never on the data)."""

    epsilon_micro: int
    measurements: tuple[Measurement, ...]
    scales: tuple[Fraction, ...]  # discrete Laplace scale of each measurement, in its units
    release_threshold: int  # noisy rows a group needs to be released
    delta: float

    def index(self, measurement: Measurement) -> int:
        return self.measurements.index(measurement)

    def to_json(self) -> dict[str, Any]:
        return {"mechanism": MECHANISM, "delta": self.delta, "release_threshold": self.release_threshold,
                "noise_scale": {m.label: float(scale * m.unit) for m, scale in zip(self.measurements, self.scales,
                                                                                    strict=True)}}


def _sum_measurement(column: str, bounds: tuple[int | float, int | float], kind: str) -> Measurement:
    largest = Fraction(max(abs(bounds[0]), abs(bounds[1])))
    if kind == KIND_INTEGER or largest == 0:
        return Measurement("sum", column, bounds, Fraction(1), max(1, math.ceil(largest)))
    exponent = max(math.floor(math.log10(largest)) - _SUM_DIGITS, _MIN_SUM_EXPONENT)
    unit = Fraction(10) ** exponent
    return Measurement("sum", column, bounds, unit, math.ceil(largest / unit))


def _measurements_of(agg: Aggregate, schema: Schema) -> list[Measurement]:
    if agg.column is None:
        return [Measurement("rows")]
    if agg.fn == "count":
        return [Measurement("values", agg.column)]
    column = schema.get_column(agg.column)
    assert column is not None and agg.bounds is not None
    total = _sum_measurement(agg.column, agg.bounds, column.kind)
    return [total] if agg.fn == "sum" else [total, Measurement("values", agg.column)]


def compute_noise_plan(query: Query, schema: Schema) -> NoisePlan:
    """The measurements of ``query`` and their noise: the query's epsilon split evenly over them,
    each scale = sensitivity / share; the group release threshold (see the module docstring)."""
    found: dict[Measurement, None] = {Measurement("rows"): None}
    for agg in query.select:
        for m in _measurements_of(agg, schema):
            found[m] = None
    measurements = tuple(found)
    share = Fraction(query.epsilon_micro, EPSILON_UNIT * len(measurements))
    scales = tuple(m.sensitivity / share for m in measurements)
    threshold, delta = schema.min_group, 0.0
    if query.group_by:
        delta = DELTA
        threshold = max(threshold, 1 + math.ceil(float(scales[0]) * math.log(1 / DELTA)))
    return NoisePlan(query.epsilon_micro, measurements, scales, threshold, delta)


# --------------------------------------------------------------------------- running


def _matches(value: Value, cond: Condition) -> bool:
    # Filter values were checked against the column's kind, so both sides have the same type
    # family (numbers, strings, booleans); a missing value matches nothing, as in SQL.
    if value is None:
        return False
    target = cond.value
    op = cond.op
    if op == "in":
        assert isinstance(target, tuple)
        return value in target
    if op == "==":
        return value == target
    if op == "!=":
        return value != target
    try:
        if op == "<":
            return value < target  # type: ignore[operator]
        if op == "<=":
            return value <= target  # type: ignore[operator]
        if op == ">":
            return value > target  # type: ignore[operator]
        return value >= target  # type: ignore[operator]
    except TypeError:
        return False


def _in_units(value: int | float, m: Measurement) -> int:
    assert m.bounds is not None
    clamped = min(max(value, m.bounds[0]), m.bounds[1])
    units = clamped if m.unit == 1 and isinstance(clamped, int) else round(clamped / float(m.unit))
    return max(-m.sensitivity, min(m.sensitivity, int(units)))


def measure_groups(query: Query, rows: Iterable[Mapping[str, Value]], plan: NoisePlan
                   ) -> dict[tuple[Value, ...], list[int]]:
    """The exact measurements of ``plan`` per group key (one pass; never released as such). A query
    without group_by always has its one group, even when no row matches."""
    width = len(plan.measurements)
    groups: dict[tuple[Value, ...], list[int]] = {} if query.group_by else {(): [0] * width}
    for row in rows:
        if not all(_matches(row.get(cond.column), cond) for cond in query.where):
            continue
        key = tuple(row.get(name) for name in query.group_by)
        totals = groups.get(key)
        if totals is None:
            if len(groups) >= MAX_GROUPS:
                raise InvalidInput(
                    f"query would form more than {MAX_GROUPS} groups: group by fewer or coarser columns"
                )
            totals = groups[key] = [0] * width
        for i, m in enumerate(plan.measurements):
            if m.kind == "rows":
                totals[i] += 1
                continue
            value = row.get(m.column or "")
            if value is None:
                continue
            if m.kind == "values":
                totals[i] += 1
            else:
                totals[i] += _in_units(value, m)  # type: ignore[arg-type]
    return groups


def _decimals(unit: Fraction) -> int:
    return max(0, -math.floor(math.log10(unit)))


def release_groups(query: Query, schema: Schema, plan: NoisePlan, exact: Mapping[tuple[Value, ...], list[int]],
                   noise: Noise = sample_discrete_laplace) -> QueryResult:
    """Noisy aggregates of the groups whose noisy row count reaches the plan's threshold; raises
    QueryRefused (charged the query's epsilon) when none does. Every output is post-processing
    of the noisy measurements: clamped (counts >= 0, averages within their bounds) and rounded."""
    result_groups = []
    for key in sorted(exact, key=_sort_key):
        noisy = [total + noise(scale) for total, scale in zip(exact[key], plan.scales, strict=True)]
        if noisy[0] < plan.release_threshold:
            continue
        values: list[Value] = list(key)
        for agg in query.select:
            values.append(_release(agg, schema, plan, noisy))
        result_groups.append(tuple(values))
    if not result_groups:
        if query.group_by:
            message = (f"query refused by the dataset's privacy rule: no group reaches {plan.release_threshold} "
                       f"rows (min_group={schema.min_group}, measured with noise); group by fewer or coarser "
                       "columns, broaden the filters or spend a larger epsilon")
        else:
            message = (f"query refused by the dataset's privacy rule: fewer than min_group={schema.min_group} "
                       "rows match its filters (measured with noise); broaden the filters")
        raise QueryRefused(message, reason=REFUSED_MIN_GROUP, epsilon_micro=plan.epsilon_micro)
    return QueryResult(columns=(*query.group_by, *(agg.label for agg in query.select)), groups=tuple(result_groups),
                       epsilon_micro=plan.epsilon_micro, privacy=plan.to_json())


def _release(agg: Aggregate, schema: Schema, plan: NoisePlan, noisy: list[int]) -> Value:
    measured = _measurements_of(agg, schema)
    if agg.fn == "count":
        return max(0, noisy[plan.index(measured[0])])
    total_m = measured[0]
    assert total_m.bounds is not None
    lower, upper = total_m.bounds
    total = Fraction(noisy[plan.index(total_m)]) * total_m.unit
    digits = _decimals(total_m.unit)
    if agg.fn == "sum":
        if lower >= 0:
            total = max(total, Fraction(0))
        if upper <= 0:
            total = min(total, Fraction(0))
        return int(total) if total_m.unit == 1 else round(float(total), digits)
    count = noisy[plan.index(measured[1])]
    if count < schema.min_group:
        return None  # too few values for a meaningful (and well-protected) mean
    mean = min(max(total / count, Fraction(lower)), Fraction(upper))
    return round(float(mean), max(2, digits))


def run_query(query: Query, rows: Iterable[Mapping[str, Value]], schema: Schema,
              noise: Noise = sample_discrete_laplace) -> QueryResult:
    """The differentially private answer to ``query`` over ``rows`` (typed records, e.g. from
    ``schema.iter_records``); raises QueryRefused when the noisy counts fall below the privacy
    rule. ``noise`` is for tests only (the default draws from the CSPRNG)."""
    plan = compute_noise_plan(query, schema)
    return release_groups(query, schema, plan, measure_groups(query, rows, plan), noise)


def _sort_key(key: tuple[Value, ...]) -> tuple[tuple[int, Any], ...]:
    # A total order over mixed values: missing first, then booleans, numbers, strings.
    def rank(value: Value) -> tuple[int, Any]:
        if value is None:
            return (0, 0)
        if isinstance(value, bool):
            return (1, value)
        if isinstance(value, (int, float)):
            return (2, value)
        return (3, value)

    return tuple(rank(value) for value in key)


# --------------------------------------------------------------------------- budget and rate


@dataclass(frozen=True)
class ComputeAllowance:
    """What the chain allows a grant now (``AccessControl.getComputeAllowance``): the grantee's
    privacy budget on the dataset and what it spent, in micro-epsilon; the grant's queries per
    hour and those used in the current hour of block time, which ends at ``window_ends_at``."""

    budget_micro: int
    spent_micro: int
    queries_per_hour: int
    used_this_hour: int
    window_ends_at: int


def decide_query_admission(grant_id: int, allowance: ComputeAllowance, epsilon_micro: int) -> QueryRefused | None:
    """Why a query of ``epsilon_micro`` under ``grant_id`` may not run now (the refusal to record and
    raise), or None. Data-independent: it looks at the chain's counters only."""
    if allowance.used_this_hour >= allowance.queries_per_hour:
        return QueryRateLimited(
            f"rate limit: grant {grant_id} may run {allowance.queries_per_hour} queries per hour and has run them; "
            f"retry after {_iso(allowance.window_ends_at)}", reason=REFUSED_RATE_LIMIT)
    left = allowance.budget_micro - allowance.spent_micro
    if epsilon_micro > left:
        return QueryRefused(
            f"privacy budget exhausted: the grantee has spent epsilon {allowance.spent_micro / EPSILON_UNIT:g} of "
            f"{allowance.budget_micro / EPSILON_UNIT:g} on this dataset and the query asks for "
            f"{epsilon_micro / EPSILON_UNIT:g}; ask with an epsilon of at most {max(left, 0) / EPSILON_UNIT:g}, "
            "or ask the owner to raise the budget", reason=REFUSED_BUDGET)
    return None


def _iso(seconds: int) -> str:
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return str(seconds)


def run_query_on_stream(query: Query, src: BinaryIO, fmt: str, schema: Schema,
                        noise: Noise = sample_discrete_laplace) -> QueryResult:
    """``run_query`` over the dataset read from ``src`` (e.g. ``Vault.open_plaintext``), reading
    only the columns the query uses."""
    return run_query(query, iter_records(src, fmt, schema, query.columns), schema, noise)


def compute_query_hash(query: Query) -> bytes:
    """Keccak-256 of the query's canonical JSON (the hash recorded on chain)."""
    return keccak256(canonical_json(query.to_json()))


def compute_result_hash(result: QueryResult) -> bytes:
    """Keccak-256 of the result's canonical JSON (the hash recorded on chain)."""
    return keccak256(result.to_canonical_json())
