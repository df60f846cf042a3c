"""Compute-to-data: aggregate queries that the owner's node runs over its own dataset.

A query is JSON::

    {"select": [{"fn": "count"}, {"fn": "avg", "column": "age"}],
     "group_by": ["district"],
     "where": [{"column": "age", "op": ">=", "value": 18}]}

Functions: count (rows, or non-empty values of a column), sum and avg (integer/number columns),
min and max (integer/number/date columns). Filters: == != < <= > >= in, all of them must hold
(AND); a row whose value is missing matches no filter. Personal columns may appear nowhere.

The privacy rule (the dataset's ``min_group``, default 5): the query is refused as a whole — not
filtered — if fewer than ``min_group`` rows match, if any reported group has fewer than
``min_group`` rows, or if any column aggregate of a group rests on fewer than ``min_group``
non-empty values. The refusal never says which group or how many rows, since that would leak
what the rule protects. Results hold aggregates only, never rows.

``compute_query_hash`` and ``compute_result_hash`` are Keccak-256 of canonical JSON (sorted keys,
no spaces, groups sorted by key) so that requester, owner and auditor compute the same hashes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

from chainshare.crypto.hashing import keccak256
from chainshare.errors import InvalidInput, Unauthorized
from chainshare.sharing.schema import (
    KIND_BOOLEAN,
    KIND_DATE,
    KIND_INTEGER,
    KIND_NUMBER,
    KIND_PERSONAL,
    KIND_STRING,
    NUMERIC_KINDS,
    Schema,
    Value,
    canonical_json,
    iter_records,
    parse_value,
)

FUNCTIONS = ("count", "sum", "avg", "min", "max")
OPERATORS = ("==", "!=", "<", "<=", ">", ">=", "in")
ORDERED_OPERATORS = frozenset({"<", "<=", ">", ">="})
MAX_QUERY_BYTES = 16 * 1024
MAX_SELECT = 16
MAX_GROUP_BY = 4
MAX_WHERE = 16
MAX_IN_VALUES = 100
MAX_STRING_VALUE_LEN = 256
MAX_GROUPS = 10_000

_MINMAX_KINDS = frozenset({KIND_INTEGER, KIND_NUMBER, KIND_DATE})


class QueryRefused(Unauthorized):
    """The query is well-formed but the dataset's privacy rule forbids answering it."""


@dataclass(frozen=True)
class Aggregate:
    fn: str
    column: str | None = None

    @property
    def label(self) -> str:
        return self.fn if self.column is None else f"{self.fn}({self.column})"

    def to_json(self) -> dict[str, str]:
        return {"fn": self.fn} if self.column is None else {"fn": self.fn, "column": self.column}


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
        }


@dataclass(frozen=True)
class QueryResult:
    """Aggregates only: one tuple per group (group key values, then one value per select item),
    groups sorted by key."""

    columns: tuple[str, ...]
    groups: tuple[tuple[Value, ...], ...]

    def to_json(self) -> dict[str, Any]:
        return {"columns": list(self.columns), "groups": [list(group) for group in self.groups]}

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
    unknown = [str(key) for key in obj if key not in ("select", "group_by", "where")]
    if unknown:
        raise InvalidInput(f"query has unknown keys {sorted(unknown)}: allowed are select, group_by, where")

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
    return Query(select=select, group_by=tuple(group_by), where=where)


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
    if not isinstance(item, Mapping) or "fn" not in item or not set(item) <= {"fn", "column"}:
        raise InvalidInput(f'{where} must be an object {{"fn": ..., "column": ...}} ("column" optional for count)')
    fn = item["fn"]
    if not isinstance(fn, str) or fn not in FUNCTIONS:
        raise InvalidInput(f"{where}: unknown function {_show(fn)}; use one of {', '.join(FUNCTIONS)}")
    column = item.get("column")
    if column is None:
        if fn != "count":
            raise InvalidInput(f"{where}: {fn} needs a column")
        return Aggregate(fn=fn)
    kind = _check_column(column, schema, where)
    assert isinstance(column, str)
    if fn in ("sum", "avg") and kind not in NUMERIC_KINDS:
        raise InvalidInput(f"{where}: {fn} needs an integer or number column; {column!r} is {kind}")
    if fn in ("min", "max") and kind not in _MINMAX_KINDS:
        raise InvalidInput(f"{where}: {fn} needs an integer, number or date column; {column!r} is {kind}")
    return Aggregate(fn=fn, column=column)


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


# --------------------------------------------------------------------------- running


class _Accumulator:
    __slots__ = ("count", "values", "totals", "extremes")

    def __init__(self, width: int) -> None:
        self.count = 0
        self.values = [0] * width  # non-empty values per select item
        self.totals: list[int | float] = [0] * width
        self.extremes: list[Value] = [None] * width


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


def run_query(query: Query, rows: Iterable[Mapping[str, Value]], schema: Schema) -> QueryResult:
    """Aggregate ``rows`` (typed records, e.g. from ``schema.iter_records``) in one pass; raises
    QueryRefused when the privacy rule forbids the answer."""
    min_group = schema.min_group
    width = len(query.select)
    plan = [(i, agg.fn, agg.column) for i, agg in enumerate(query.select)]
    groups: dict[tuple[Value, ...], _Accumulator] = {}
    for row in rows:
        if not all(_matches(row.get(cond.column), cond) for cond in query.where):
            continue
        key = tuple(row.get(name) for name in query.group_by)
        acc = groups.get(key)
        if acc is None:
            if len(groups) >= MAX_GROUPS:
                raise InvalidInput(
                    f"query would form more than {MAX_GROUPS} groups: group by fewer or coarser columns"
                )
            acc = groups[key] = _Accumulator(width)
        acc.count += 1
        for i, fn, column in plan:
            if column is None:
                continue
            value = row.get(column)
            if value is None:
                continue
            acc.values[i] += 1
            if fn in ("sum", "avg"):
                acc.totals[i] += value  # type: ignore[operator]
            elif fn == "min":
                current = acc.extremes[i]
                if current is None or value < current:  # type: ignore[operator]
                    acc.extremes[i] = value
            elif fn == "max":
                current = acc.extremes[i]
                if current is None or value > current:  # type: ignore[operator]
                    acc.extremes[i] = value

    total = sum(acc.count for acc in groups.values())
    if total < min_group:
        raise QueryRefused(
            f"query refused by the dataset's privacy rule: fewer than min_group={min_group} rows "
            "match its filters; broaden the filters"
        )
    if any(acc.count < min_group for acc in groups.values()):
        raise QueryRefused(
            f"query refused by the dataset's privacy rule: at least one group has fewer than "
            f"min_group={min_group} rows; group by fewer or coarser columns, or broaden the filters"
        )
    for i, _fn, column in plan:
        if column is not None and any(acc.values[i] < min_group for acc in groups.values()):
            raise QueryRefused(
                f"query refused by the dataset's privacy rule: {query.select[i].label} would rest on "
                f"fewer than min_group={min_group} non-empty values in at least one group"
            )

    result_groups = []
    for key in sorted(groups, key=_sort_key):
        acc = groups[key]
        values: list[Value] = list(key)
        for i, fn, column in plan:
            if fn == "count":
                values.append(acc.count if column is None else acc.values[i])
            elif fn == "sum":
                values.append(acc.totals[i])
            elif fn == "avg":
                values.append(acc.totals[i] / acc.values[i])
            else:
                values.append(acc.extremes[i])
        result_groups.append(tuple(values))
    return QueryResult(
        columns=(*query.group_by, *(agg.label for agg in query.select)), groups=tuple(result_groups)
    )


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


def run_query_on_stream(query: Query, src: BinaryIO, fmt: str, schema: Schema) -> QueryResult:
    """``run_query`` over the dataset read from ``src`` (e.g. ``Vault.open_plaintext``), reading
    only the columns the query uses."""
    return run_query(query, iter_records(src, fmt, schema, query.columns), schema)


def compute_query_hash(query: Query) -> bytes:
    """Keccak-256 of the query's canonical JSON (the hash recorded on chain)."""
    return keccak256(canonical_json(query.to_json()))


def compute_result_hash(result: QueryResult) -> bytes:
    """Keccak-256 of the result's canonical JSON (the hash recorded on chain)."""
    return keccak256(result.to_canonical_json())
