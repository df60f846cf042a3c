"""Dataset schemas and compute-to-data: aggregate queries under the minimum-group privacy rule."""

from __future__ import annotations

import io
import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chainshare.crypto.hashing import keccak256
from chainshare.errors import ChainshareError, InvalidInput, Unauthorized
from chainshare.sharing.compute import (
    QueryRefused,
    compute_query_hash,
    compute_result_hash,
    parse_query,
    run_query,
    run_query_on_stream,
)
from chainshare.sharing.schema import (
    Schema,
    compute_content_hash,
    infer_schema,
    iter_records,
    load_schema,
    mark_personal,
    validate_schema,
    with_min_group,
)

DISTRICTS = ("north", "south", "east", "west")
ROWS = 400


def _generate_rows(seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for i in range(ROWS):
        rows.append(
            {
                "citizen_id": f"ID{100000 + i}",
                "name": f"Person {i}",
                "district": DISTRICTS[i % 4] if i < ROWS - 1 else "island",  # one row alone in its district
                "age": rng.randint(0, 90),
                "income": round(rng.uniform(1000, 9000), 2),
                "registered": f"20{rng.randint(10, 23):02d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                "active": rng.random() < 0.5,
            }
        )
    return rows


DATA = _generate_rows()
SCHEMA = validate_schema(
    {
        "columns": [
            {"name": "citizen_id", "kind": "personal"},
            {"name": "name", "kind": "personal"},
            {"name": "district", "kind": "string"},
            {"name": "age", "kind": "integer"},
            {"name": "income", "kind": "number"},
            {"name": "registered", "kind": "date"},
            {"name": "active", "kind": "boolean"},
        ],
        "min_group": 5,
    }
)


def _csv_text(rows: list[dict[str, Any]]) -> str:
    header = list(rows[0])
    lines = [",".join(header)]
    for row in rows:
        lines.append(",".join(("true" if v else "false") if isinstance(v, bool) else str(v) for v in row.values()))
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("datasets")
    (root / "people.csv").write_text(_csv_text(DATA))
    (root / "people.jsonl").write_text("".join(json.dumps(row) + "\n" for row in DATA))
    return {"csv": root / "people.csv", "jsonl": root / "people.jsonl"}


def _run(query: object, path: Path, fmt: str, schema: Schema = SCHEMA) -> Any:
    parsed = parse_query(query, schema)
    with path.open("rb") as src:
        return run_query_on_stream(parsed, src, fmt, schema)


# --------------------------------------------------------------------------- schema


def test_inferred_csv_schema_has_kinds_and_no_personal_column(datasets: dict[str, Path]) -> None:
    schema = infer_schema(datasets["csv"], "csv", sample_rows=50)
    kinds = {c.name: c.kind for c in schema.columns}
    assert kinds == {
        "citizen_id": "string",
        "name": "string",
        "district": "string",
        "age": "integer",
        "income": "number",
        "registered": "date",
        "active": "boolean",
    }
    assert schema.personal_columns == frozenset() and schema.min_group == 5


def test_inferred_jsonl_schema_matches_the_csv_one(datasets: dict[str, Path]) -> None:
    assert infer_schema(datasets["jsonl"], "jsonl") == infer_schema(datasets["csv"], "csv")


def test_inference_samples_only_the_first_rows(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("code\n1\n2\nx\n")
    assert infer_schema(path, "csv", sample_rows=2).columns[0].kind == "integer"
    assert infer_schema(path, "csv").columns[0].kind == "string"


def test_mark_personal_and_min_group_make_the_owner_schema(datasets: dict[str, Path]) -> None:
    inferred = infer_schema(datasets["csv"], "csv")
    schema = with_min_group(mark_personal(inferred, ["citizen_id", "name"]), 10)
    assert schema.personal_columns == {"citizen_id", "name"} and schema.min_group == 10
    with pytest.raises(InvalidInput, match="unknown columns"):
        mark_personal(inferred, ["ssn"])
    with pytest.raises(InvalidInput, match="min_group 1"):
        with_min_group(inferred, 1)


def test_schema_round_trips_through_its_json_file(tmp_path: Path) -> None:
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(SCHEMA.to_json()))
    assert load_schema(path) == SCHEMA
    assert SCHEMA.to_canonical_json().startswith(b'{"columns":[{"kind":"personal","name":"citizen_id"}')


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([], "JSON object"),
        ({"columns": []}, "non-empty list"),
        ({"columns": [{"name": "a"}]}, 'exactly "name" and "kind"'),
        ({"columns": [{"name": "a", "kind": "float"}]}, "unknown kind 'float'"),
        ({"columns": [{"name": "a", "kind": "string"}] * 2}, "appears twice"),
        ({"columns": [{"name": "", "kind": "string"}]}, "1..128"),
        ({"columns": [{"name": "a", "kind": "string"}], "min_group": "5"}, "integer"),
        ({"columns": [{"name": "a", "kind": "string"}], "min_groups": 5}, "unknown keys"),
    ],
)
def test_invalid_schemas_are_refused_with_a_clear_message(obj: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        validate_schema(obj)


def test_content_hash_is_keccak_of_the_raw_file(datasets: dict[str, Path]) -> None:
    assert compute_content_hash(datasets["csv"]) == keccak256(datasets["csv"].read_bytes())


def test_records_are_typed_and_exclude_personal_columns(datasets: dict[str, Path]) -> None:
    with datasets["csv"].open("rb") as src:
        first = next(iter_records(src, "csv", SCHEMA))
    assert "citizen_id" not in first and "name" not in first
    assert first == {k: v for k, v in DATA[0].items() if k not in ("citizen_id", "name")}


def test_a_value_of_the_wrong_kind_names_its_line() -> None:
    src = io.BytesIO(b"age\n1\ntwelve\n")
    schema = validate_schema({"columns": [{"name": "age", "kind": "integer"}]})
    with pytest.raises(InvalidInput, match="CSV line 3: 'twelve' is not an integer"):
        list(iter_records(src, "csv", schema))


def test_csv_bom_is_ignored_and_bad_text_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    schema = validate_schema({"columns": [{"name": "age", "kind": "integer"}]})
    assert list(iter_records(io.BytesIO(b"\xef\xbb\xbfage\r\n7\r\n"), "csv", schema)) == [{"age": 7}]
    with pytest.raises(InvalidInput, match="line 2 is not valid UTF-8"):
        list(iter_records(io.BytesIO(b"age\n\xff\n"), "csv", schema))
    monkeypatch.setattr("chainshare.sharing.schema.MAX_LINE_BYTES", 64)
    with pytest.raises(InvalidInput, match="longer than 64 bytes"):
        list(iter_records(io.BytesIO(b"age\n" + b"1" * 100 + b"\n"), "csv", schema))
    with pytest.raises(InvalidInput, match="longer than 64 bytes"):
        list(iter_records(io.BytesIO(b'{"age": 1}\n' + b" " * 100 + b"\n"), "jsonl", schema))


# --------------------------------------------------------------------------- compute


def _expected(rows: list[dict[str, Any]], keep: Any = lambda r: True) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if keep(row):
            groups[row["district"]].append(row)
    return groups


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_grouped_count_avg_sum_min_max_are_correct(datasets: dict[str, Path], fmt: str) -> None:
    query = {
        "select": [
            {"fn": "count"},
            {"fn": "avg", "column": "age"},
            {"fn": "sum", "column": "age"},
            {"fn": "min", "column": "registered"},
            {"fn": "max", "column": "income"},
        ],
        "group_by": ["district"],
        "where": [
            {"column": "age", "op": ">=", "value": 18},
            {"column": "district", "op": "in", "value": list(DISTRICTS)},
        ],
    }
    result = _run(query, datasets[fmt], fmt)
    expected = _expected(DATA, lambda r: r["age"] >= 18 and r["district"] in DISTRICTS)
    assert result.columns == ("district", "count", "avg(age)", "sum(age)", "min(registered)", "max(income)")
    assert [g[0] for g in result.groups] == sorted(expected)
    for group in result.groups:
        rows = expected[group[0]]
        ages = [r["age"] for r in rows]
        assert group[1:] == (
            len(rows),
            sum(ages) / len(ages),
            sum(ages),
            min(r["registered"] for r in rows),
            max(r["income"] for r in rows),
        )
    for item in result.to_json()["groups"]:
        assert all(not isinstance(v, str) or v in DISTRICTS or v[:2] == "20" for v in item)  # no identifiers


def test_csv_and_jsonl_give_the_same_result_hash(datasets: dict[str, Path]) -> None:
    query = {"select": [{"fn": "count"}, {"fn": "avg", "column": "income"}], "where": [{"column": "active", "op": "==", "value": True}]}
    by_csv = _run(query, datasets["csv"], "csv")
    by_jsonl = _run(query, datasets["jsonl"], "jsonl")
    assert by_csv == by_jsonl
    assert compute_result_hash(by_csv) == keccak256(by_csv.to_canonical_json())
    assert by_csv.groups[0][0] == sum(1 for r in DATA if r["active"])


def test_query_hash_is_canonical() -> None:
    a = parse_query({"select": [{"fn": "count"}], "group_by": ["district"]}, SCHEMA)
    b = parse_query('{"group_by": ["district"], "where": [], "select": [{"column": null, "fn": "count"}]}', SCHEMA)
    assert compute_query_hash(a) == compute_query_hash(b)
    assert compute_query_hash(a) != compute_query_hash(parse_query({"select": [{"fn": "count"}]}, SCHEMA))


def test_a_group_below_the_minimum_refuses_the_whole_query(datasets: dict[str, Path]) -> None:
    # Every district has ~100 rows, but "island" has one: the query is refused, not filtered.
    with pytest.raises(QueryRefused, match="at least one group has fewer than min_group=5") as info:
        _run({"select": [{"fn": "count"}], "group_by": ["district"]}, datasets["csv"], "csv")
    assert "island" not in str(info.value)  # the refusal does not say which group
    assert isinstance(info.value, Unauthorized)


def test_a_filter_on_a_unique_value_is_refused(datasets: dict[str, Path]) -> None:
    unique_income = DATA[17]["income"]
    query = {"select": [{"fn": "avg", "column": "age"}], "where": [{"column": "income", "op": "==", "value": unique_income}]}
    with pytest.raises(QueryRefused, match="fewer than min_group=5 rows match"):
        _run(query, datasets["csv"], "csv")
    with pytest.raises(QueryRefused):
        _run({"select": [{"fn": "count"}], "where": [{"column": "age", "op": ">", "value": 1000}]}, datasets["csv"], "csv")


def test_the_minimum_comes_from_the_dataset_schema(datasets: dict[str, Path]) -> None:
    query = {"select": [{"fn": "count"}], "group_by": ["district"], "where": [{"column": "district", "op": "!=", "value": "island"}]}
    assert len(_run(query, datasets["csv"], "csv").groups) == 4
    with pytest.raises(QueryRefused, match="min_group=200"):
        _run(query, datasets["csv"], "csv", with_min_group(SCHEMA, 200))


def test_an_aggregate_over_too_few_non_empty_values_is_refused() -> None:
    schema = validate_schema({"columns": [{"name": "g", "kind": "string"}, {"name": "x", "kind": "integer"}]})
    rows = [{"g": "a", "x": 5 if i < 2 else None} for i in range(10)]
    query = parse_query({"select": [{"fn": "count"}, {"fn": "max", "column": "x"}]}, schema)
    with pytest.raises(QueryRefused, match=r"max\(x\) would rest on fewer than"):
        run_query(query, rows, schema)
    assert run_query(parse_query({"select": [{"fn": "count"}]}, schema), rows, schema).groups == ((10,),)


@pytest.mark.parametrize(
    "query",
    [
        {"select": [{"fn": "count", "column": "citizen_id"}]},
        {"select": [{"fn": "count"}], "group_by": ["name"]},
        {"select": [{"fn": "count"}], "where": [{"column": "citizen_id", "op": "==", "value": "ID100000"}]},
    ],
)
def test_personal_columns_are_refused_anywhere_in_a_query(query: dict[str, Any]) -> None:
    with pytest.raises(Unauthorized, match="is personal"):
        parse_query(query, SCHEMA)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("not json", "not valid JSON"),
        ([], "JSON object"),
        ({}, "non-empty list"),
        ({"select": [{"fn": "count"}], "limit": 5}, "unknown keys"),
        ({"select": [{"fn": "median", "column": "age"}]}, "unknown function 'median'"),
        ({"select": [{"fn": "sum"}]}, "sum needs a column"),
        ({"select": [{"fn": "avg", "column": "district"}]}, "avg needs an integer or number column; 'district' is string"),
        ({"select": [{"fn": "max", "column": "active"}]}, "max needs an integer, number or date column"),
        ({"select": [{"fn": "count", "column": "height"}]}, "unknown column 'height'"),
        ({"select": [{"fn": "count"}, {"fn": "count"}]}, "same aggregate twice"),
        ({"select": [{"fn": "count"}] * 17}, "at most 16"),
        ({"select": [{"fn": "count"}], "group_by": "district"}, "list of column names"),
        ({"select": [{"fn": "count"}], "group_by": ["district", "district"]}, "twice"),
        ({"select": [{"fn": "count"}], "where": [{"column": "age", "op": "~", "value": 1}]}, "unknown operator"),
        ({"select": [{"fn": "count"}], "where": [{"column": "age", "op": ">", "value": "18"}]}, "finite number"),
        ({"select": [{"fn": "count"}], "where": [{"column": "active", "op": "<", "value": True}]}, "boolean column"),
        ({"select": [{"fn": "count"}], "where": [{"column": "registered", "op": ">", "value": "2020-13-01"}]}, "YYYY-MM-DD"),
        ({"select": [{"fn": "count"}], "where": [{"column": "age", "op": "in", "value": 18}]}, "list of 1..100"),
        ({"select": [{"fn": "count"}], "where": [{"column": "age", "op": "==", "value": None}]}, "may not be null"),
        ({"select": [{"fn": "count"}], "where": [{"column": "age", "op": "=="}]}, 'exactly "column", "op" and "value"'),
    ],
)
def test_malformed_queries_are_refused_with_a_clear_message(query: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_query(query, SCHEMA)


_NAMES = st.sampled_from(["age", "income", "district", "registered", "active", "name", "citizen_id", "nope"])
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | _NAMES,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6) | _NAMES, children, max_size=4),
    max_leaves=20,
)
_ITEM = st.fixed_dictionaries(
    {},
    optional={
        "fn": st.sampled_from(["count", "sum", "avg", "min", "max", "x"]) | _JSON,
        "column": _NAMES | _JSON,
        "op": st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in", "like"]) | _JSON,
        "value": _JSON,
    },
)
_QUERY = st.fixed_dictionaries(
    {},
    optional={
        "select": st.lists(_ITEM, max_size=4) | _JSON,
        "group_by": st.lists(_NAMES | _JSON, max_size=3) | _JSON,
        "where": st.lists(_ITEM, max_size=4) | _JSON,
        "other": _JSON,
    },
)


@given(_QUERY | _JSON)
def test_parse_query_raises_only_chainshare_errors_on_random_json(obj: object) -> None:
    try:
        query = parse_query(obj, SCHEMA)
    except ChainshareError:
        return
    # Whatever parses runs without crashing and refuses or answers with aggregates only.
    try:
        result = run_query(query, [{c: v for c, v in row.items() if c not in ("citizen_id", "name")} for row in DATA[:60]], SCHEMA)
    except ChainshareError:
        return
    assert compute_result_hash(result) == keccak256(result.to_canonical_json())


@given(st.text(max_size=200) | st.binary(max_size=200))
def test_parse_query_survives_random_text(text: str | bytes) -> None:
    try:
        parse_query(text, SCHEMA)
    except ChainshareError:
        pass
