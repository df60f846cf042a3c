"""Dataset schemas and compute-to-data: differentially private aggregate queries, the minimum-group
rule on noisy counts, and the budget and rate decisions."""

from __future__ import annotations

import io
import json
import math
import random
import re
import statistics
from collections import defaultdict
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chainshare.crypto.hashing import keccak256
from chainshare.errors import ChainshareError, InvalidInput, Unauthorized
from chainshare.sharing.compute import (
    DELTA,
    ComputeAllowance,
    QueryRateLimited,
    QueryRefused,
    compute_noise_plan,
    compute_query_hash,
    compute_result_hash,
    decide_query_admission,
    parse_query,
    run_query,
    run_query_on_stream,
    sample_discrete_laplace,
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


def _exact(_scale: Fraction) -> int:
    """No noise: lets a test check the measurements the noise is added to (never used by nodes)."""
    return 0


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_grouped_count_sum_avg_are_the_clamped_measurements_plus_noise(datasets: dict[str, Path], fmt: str) -> None:
    query = {
        "select": [
            {"fn": "count"},
            {"fn": "avg", "column": "age", "bounds": [0, 120]},
            {"fn": "sum", "column": "age", "bounds": [0, 60]},  # ages above 60 count as 60
            {"fn": "sum", "column": "income", "bounds": [0, 10000]},
        ],
        "group_by": ["district"],
        "where": [
            {"column": "age", "op": ">=", "value": 18},
            {"column": "district", "op": "in", "value": list(DISTRICTS)},
        ],
    }
    parsed = parse_query(query, SCHEMA)
    with datasets[fmt].open("rb") as src:
        result = run_query_on_stream(parsed, src, fmt, SCHEMA, noise=_exact)
    expected = _expected(DATA, lambda r: r["age"] >= 18 and r["district"] in DISTRICTS)
    assert result.columns == ("district", "count", "avg(age)", "sum(age)", "sum(income)")
    assert [g[0] for g in result.groups] == sorted(expected)
    for group in result.groups:
        rows = expected[group[0]]
        ages = [r["age"] for r in rows]
        assert group[1:] == (len(rows), round(sum(ages) / len(ages), 2), sum(min(a, 60) for a in ages),
                             pytest.approx(sum(r["income"] for r in rows), abs=0.01 * len(rows)))
    privacy = result.to_json()["privacy"]
    # five measurements (rows, sum(age) twice with two bounds, values(age), sum(income)) share epsilon 1
    assert privacy["noise_scale"] == {"rows": 5.0, "sum(age in [0, 120])": 600.0, "values(age)": 5.0,
                                      "sum(age in [0, 60])": 300.0, "sum(income in [0, 10000])": 50000.0}
    assert privacy["release_threshold"] == 1 + math.ceil(5 * math.log(1e6)) and privacy["delta"] == 1e-6
    assert result.to_json()["epsilon"] == 1.0


def test_every_released_number_is_noisy() -> None:
    schema = validate_schema({"columns": [{"name": "g", "kind": "string"}, {"name": "x", "kind": "integer"}]})
    rows = [{"g": "a", "x": 1000 + i} for i in range(200)]
    query = parse_query({"select": [{"fn": "count"}, {"fn": "sum", "column": "x", "bounds": [0, 2000]}]}, schema)
    answers = {run_query(query, rows, schema).groups[0] for _ in range(20)}
    assert len(answers) > 10  # fresh CSPRNG noise each time: nothing repeats, nothing is exact
    assert all(abs(count - 200) < 60 and abs(total - sum(r["x"] for r in rows)) < 60 * 4000
               for count, total in answers)  # scale 2 and 4000: 30 scales is beyond any plausible draw


def test_the_differencing_attack_no_longer_yields_a_persons_value() -> None:
    # The attack: sum(income) over a district, then the same without the one 77-year-old.
    schema = validate_schema({"columns": [{"name": "district", "kind": "string"}, {"name": "age", "kind": "integer"},
                                          {"name": "income", "kind": "integer"}], "min_group": 5})
    rows = [{"district": "north", "age": 30 + i, "income": 48_000} for i in range(10)]
    rows.append({"district": "north", "age": 77, "income": 250_000})
    base = {"select": [{"fn": "sum", "column": "income", "bounds": [0, 300_000]}],
            "where": [{"column": "district", "op": "==", "value": "north"}]}
    without = {**base, "where": base["where"] + [{"column": "age", "op": "!=", "value": 77}]}
    with_exact = [run_query(parse_query(q, schema), rows, schema, noise=_exact).groups[0][0] for q in (base, without)]
    assert with_exact[0] - with_exact[1] == 250_000  # what the attack measures, before the noise
    differences = []
    for _ in range(30):
        try:  # with epsilon 1 the noisy count of 10 rows sometimes falls below 5: refused, also no value
            differences.append(run_query(parse_query(base, schema), rows, schema).groups[0][0]
                               - run_query(parse_query(without, schema), rows, schema).groups[0][0])
        except QueryRefused:
            continue
    assert len(differences) >= 15 and 250_000 not in differences
    spread = statistics.pstdev(differences)
    assert spread > 100_000  # noise of scale 2 x 300000 per answer: the difference says little about 250000


def test_min_and_max_are_not_offered() -> None:
    for fn in ("min", "max"):
        with pytest.raises(InvalidInput, match=f"{fn} is not offered: it would return one person's exact value"):
            parse_query({"select": [{"fn": fn, "column": "age"}]}, SCHEMA)


def test_csv_and_jsonl_give_the_same_result_hash(datasets: dict[str, Path]) -> None:
    query = parse_query({"select": [{"fn": "count"}, {"fn": "avg", "column": "income", "bounds": [0, 9000]}],
                         "where": [{"column": "active", "op": "==", "value": True}]}, SCHEMA)
    results = []
    for fmt in ("csv", "jsonl"):
        with datasets[fmt].open("rb") as src:
            results.append(run_query_on_stream(query, src, fmt, SCHEMA, noise=_exact))
    assert results[0] == results[1]
    assert compute_result_hash(results[0]) == keccak256(results[0].to_canonical_json())
    assert results[0].groups[0][0] == sum(1 for r in DATA if r["active"])


def test_query_hash_is_canonical() -> None:
    a = parse_query({"select": [{"fn": "count"}], "group_by": ["district"]}, SCHEMA)
    b = parse_query('{"group_by": ["district"], "where": [], "select": [{"column": null, "fn": "count"}], '
                    '"epsilon": 1}', SCHEMA)
    assert compute_query_hash(a) == compute_query_hash(b)
    assert compute_query_hash(a) != compute_query_hash(parse_query({"select": [{"fn": "count"}]}, SCHEMA))
    assert compute_query_hash(a) != compute_query_hash(
        parse_query({"select": [{"fn": "count"}], "group_by": ["district"], "epsilon": 0.5}, SCHEMA))


def test_a_group_below_the_release_threshold_is_suppressed_not_reported(datasets: dict[str, Path]) -> None:
    # Every district has ~100 rows, "island" has one: it is left out (refusing the whole query would
    # reveal that a small group exists, which noise no longer hides).
    for noise in (_exact, sample_discrete_laplace):
        parsed = parse_query({"select": [{"fn": "count"}], "group_by": ["district"], "epsilon": 2}, SCHEMA)
        with datasets["csv"].open("rb") as src:
            result = run_query_on_stream(parsed, src, "csv", SCHEMA, noise=noise)
        assert [g[0] for g in result.groups] == sorted(DISTRICTS)
    threshold = compute_noise_plan(parsed, SCHEMA).release_threshold
    assert threshold == 1 + math.ceil(0.5 * math.log(1 / DELTA))  # a lone row shows with probability <= DELTA


def test_a_filter_on_a_unique_value_is_refused_and_charged(datasets: dict[str, Path]) -> None:
    unique_income = DATA[17]["income"]
    query = parse_query({"select": [{"fn": "avg", "column": "age", "bounds": [0, 100]}], "epsilon": 0.5,
                         "where": [{"column": "income", "op": "==", "value": unique_income}]}, SCHEMA)
    with pytest.raises(QueryRefused, match="fewer than min_group=5 rows match its filters") as info:
        run_query(query, DATA, SCHEMA, noise=_exact)
    assert (info.value.reason, info.value.epsilon_micro) == ("min_group", 500_000)  # decided on noise: charged
    assert isinstance(info.value, Unauthorized)
    nothing = parse_query({"select": [{"fn": "count"}], "where": [{"column": "age", "op": ">", "value": 1000}]}, SCHEMA)
    with pytest.raises(QueryRefused):
        run_query(nothing, DATA, SCHEMA, noise=_exact)  # no row at all is one noisy group of 0 rows


def test_the_minimum_comes_from_the_dataset_schema(datasets: dict[str, Path]) -> None:
    query = {"select": [{"fn": "count"}], "epsilon": 10,
             "where": [{"column": "district", "op": "==", "value": "north"}]}
    assert run_query(parse_query(query, SCHEMA), DATA, SCHEMA, noise=_exact).groups == ((100,),)
    strict = with_min_group(SCHEMA, 200)
    with pytest.raises(QueryRefused, match="min_group=200"):
        run_query(parse_query(query, strict), DATA, strict, noise=_exact)
    grouped = parse_query({"select": [{"fn": "count"}], "group_by": ["district"], "epsilon": 10}, strict)
    with pytest.raises(QueryRefused, match="no group reaches 200 rows"):
        run_query(grouped, DATA, strict, noise=_exact)


def test_an_average_over_too_few_non_empty_values_is_left_empty() -> None:
    schema = validate_schema({"columns": [{"name": "g", "kind": "string"}, {"name": "x", "kind": "integer"}]})
    rows = [{"g": "a", "x": 5 if i < 2 else None} for i in range(10)]
    query = parse_query({"select": [{"fn": "count"}, {"fn": "avg", "column": "x", "bounds": [0, 10]}]}, schema)
    assert run_query(query, rows, schema, noise=_exact).groups == ((10, None),)


def test_the_noise_plan_splits_epsilon_and_follows_the_bounds() -> None:
    query = parse_query({"select": [{"fn": "count"}, {"fn": "sum", "column": "income", "bounds": [-2500.5, 10]}],
                         "epsilon": 0.5}, SCHEMA)
    plan = compute_noise_plan(query, SCHEMA)
    assert [m.label for m in plan.measurements] == ["rows", "sum(income in [-2500.5, 10])"]
    income = plan.measurements[1]
    assert income.unit == Fraction(1, 1000) and income.sensitivity == 2_500_500  # number: counted in 1e-3
    assert plan.scales == (Fraction(4), Fraction(4 * 2_500_500))
    assert plan.release_threshold == 5 and plan.delta == 0  # no group_by: the one group is public
    tiny = parse_query({"select": [{"fn": "sum", "column": "income", "bounds": [0, 5e-324]}]}, SCHEMA)
    assert compute_noise_plan(tiny, SCHEMA).measurements[1].unit == Fraction(1, 10**12)
    assert run_query(tiny, DATA, SCHEMA, noise=_exact).groups == ((0.0,),)


def test_discrete_laplace_noise_has_the_documented_distribution() -> None:
    scale = Fraction(2)
    draws = [sample_discrete_laplace(scale) for _ in range(20_000)]
    p = math.exp(-1 / 2)
    assert abs(statistics.fmean(draws)) < 0.15
    assert statistics.pvariance(draws) == pytest.approx(2 * p / (1 - p) ** 2, rel=0.1)
    assert draws.count(0) / len(draws) == pytest.approx((1 - p) / (1 + p), abs=0.02)
    assert all(isinstance(d, int) for d in draws)
    with pytest.raises(ValueError):
        sample_discrete_laplace(Fraction(0))


def test_admission_refuses_over_the_rate_then_over_the_budget() -> None:
    allowance = ComputeAllowance(budget_micro=3_000_000, spent_micro=2_500_000, queries_per_hour=4,
                                 used_this_hour=3, window_ends_at=1_767_225_600)
    assert decide_query_admission(7, allowance, 500_000) is None
    refused = decide_query_admission(7, allowance, 500_001)
    assert isinstance(refused, QueryRefused) and refused.reason == "budget_exhausted"
    assert refused.message.startswith("privacy budget exhausted: the grantee has spent epsilon 2.5 of 3 on this "
                                      "dataset and the query asks for 0.500001; ask with an epsilon of at most 0.5")
    limited = decide_query_admission(7, replace(allowance, used_this_hour=4), 1)
    assert isinstance(limited, QueryRateLimited) and limited.reason == "rate_limit" and limited.http_status == 429
    assert limited.message == ("rate limit: grant 7 may run 4 queries per hour and has run them; retry after "
                               "2026-01-01T00:00:00+00:00")


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
        ({"select": [{"fn": "sum", "column": "age"}]}, '{"bounds": [lower, upper]} is required'),
        ({"select": [{"fn": "sum", "column": "age", "bounds": [10, 1]}]}, "need lower <= upper"),
        ({"select": [{"fn": "avg", "column": "age", "bounds": [0, 1.5]}]}, "its bounds must be integers"),
        ({"select": [{"fn": "avg", "column": "income", "bounds": [0, 1e16]}]}, "finite numbers within"),
        ({"select": [{"fn": "count", "bounds": [0, 1]}]}, "count takes no bounds"),
        ({"select": [{"fn": "count"}], "epsilon": 0}, 'query "epsilon" must be a number in 0.01..10.0'),
        ({"select": [{"fn": "count"}], "epsilon": 11}, 'query "epsilon" must be a number'),
        ({"select": [{"fn": "count"}], "epsilon": "1"}, 'query "epsilon" must be a number'),
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
    with pytest.raises(InvalidInput, match=re.escape(message)):
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
        "bounds": st.lists(st.integers(-10**16, 10**16) | st.floats(), min_size=2, max_size=2) | _JSON,
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
        "epsilon": st.floats(0, 20) | _JSON,
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
