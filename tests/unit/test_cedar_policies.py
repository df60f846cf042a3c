"""Cedar access policies: the published schema and examples, validation with Cedar's messages, the
guard that keeps hostile policies from crashing the Cedar parser, and deterministic decisions."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import cedarpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chainshare.execution.contracts import cedar, datasets
from chainshare.execution.contracts.cedar import AccessQuery, AgencyFacts, InvalidPolicy, check_policy_text
from chainshare.execution.runtime import Revert

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "contracts" / "policies"
EXAMPLES = sorted((POLICIES / "examples").glob("*.cedar"))
HEALTH = AgencyFacts("Health Bureau", "health", "CN-31")
STATS = AgencyFacts("Statistics Office", "statistics", "CN-31")
CUSTOMS = AgencyFacts("Customs Agency", "customs", "CN-44")
T = 1_750_000_000


def example(name: str) -> str:
    return (POLICIES / "examples" / f"{name}.cedar").read_text()


def decide(text: str | list[tuple[str, str]], principal: AgencyFacts = STATS, action: str = "read",
           purpose: str = "statistics", time: int = T, owner: AgencyFacts = HEALTH) -> cedar.AccessDecision:
    sets = [("ds7-p1", text)] if isinstance(text, str) else text
    return cedar.evaluate_access(AccessQuery(principal, owner, 7, action, purpose, time), sets)


# -- schema and examples -----------------------------------------------------------------------------

def test_schema_file_is_the_consensus_schema() -> None:
    published = (POLICIES / "schema.cedarschema.json").read_text()
    assert published == cedar.render_schema(), "stale: run python -c 'from chainshare.execution.contracts.cedar " \
        "import write_schema_file; write_schema_file()'"
    rendered = str(cedarpy.Schema.from_json_str(published))
    for name in ("entity Agency", "jurisdiction: __cedar::String", "role: __cedar::String", "owner: Agency",
                 'action "read"', 'action "read_identified"', 'action "compute"', "time: __cedar::Long",
                 "purpose: __cedar::String"):
        assert name in rendered


def test_there_are_dataset_and_consortium_examples() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {"same_jurisdiction_read", "health_compute_only", "forbid_identified_outside_jurisdiction",
            "sharing_window", "owner_full_access"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_validates_against_the_schema(path: Path) -> None:
    text = path.read_text()
    result = cedarpy.validate_policies(text, (POLICIES / "schema.cedarschema.json").read_text())
    assert result.validation_passed, [str(e) for e in result.errors]
    shape = check_policy_text(text, forbid_only=path.stem.startswith("forbid_"))
    assert shape.effects


def test_same_jurisdiction_read_example() -> None:
    text = example("same_jurisdiction_read")
    assert decide(text) == cedar.AccessDecision(True, ("ds7-p1#0",), ())
    assert not decide(text, CUSTOMS).allowed
    assert not decide(text, action="read_identified").allowed
    nowhere = AgencyFacts("Nowhere", "x", "")
    assert not decide(text, nowhere, owner=AgencyFacts("Elsewhere", "x", "")).allowed


def test_health_compute_only_example() -> None:
    text = example("health_compute_only")
    assert decide(text, HEALTH, "compute", "public-health-statistics: flu 2025", owner=STATS).allowed
    assert not decide(text, HEALTH, "compute", "marketing", owner=STATS).allowed
    assert not decide(text, HEALTH, "read", "public-health-statistics", owner=STATS).allowed
    assert not decide(text, STATS, "compute", "public-health-statistics").allowed


def test_sharing_window_example_uses_the_block_time_it_is_given() -> None:
    text = example("sharing_window")
    start, end = 1_735_689_600, 1_767_225_600
    assert [decide(text, time=t).allowed for t in (start - 1, start, end - 1, end)] == [False, True, True, False]


def test_consortium_forbid_example_wins_over_a_permit() -> None:
    sets = [("ds7-p1", "permit (principal, action, resource);"),
            ("no-identified-abroad", example("forbid_identified_outside_jurisdiction"))]
    assert decide(sets, CUSTOMS, "read_identified") == cedar.AccessDecision(False, ("no-identified-abroad#0",), ())
    assert decide(sets, STATS, "read_identified") == cedar.AccessDecision(True, ("ds7-p1#0",), ())
    assert decide(sets, CUSTOMS, "read").allowed


def test_owner_full_access_example() -> None:
    text = example("owner_full_access")
    assert decide(text, HEALTH, "read_identified").allowed
    assert not decide(text, STATS, "read").allowed


# -- validation --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "message"), [
    ("permit (principal, action, resource) when {", "policy does not parse: unexpected end of input"),
    ('permit (principal, action, resource) when { principal.age > 3 };',
     "policy does not validate against the schema: [policy0] for policy `policy0`, attribute `age` on entity type "
     "`Agency` not found"),
    ('permit (principal, action, resource) when { context.time == "noon" };',
     "policy does not validate against the schema: [policy0] the types Long and String are not compatible"),
    ('permit (principal == User::"alice", action, resource);', "unrecognized entity type `User`"),
    ("permit (principal == ?principal, action, resource);", "policy templates (?principal, ?resource) are not"),
    ('permit (principal, action, resource) when { context.purpose == "open };', "unterminated or invalid string"),
    ('permit (principal, action, resource) when { context.purpose == "a\\\n" };', "invalid string literal at offset"),
    ("permit\u00a0(principal, action, resource);", "invalid character '\\xa0' at offset 6"),
    ("permit (principal, action, resource);" + " " * cedar.MAX_POLICY_BYTES, "at most 16384 are allowed"),
])
def test_invalid_policies_are_refused_with_cedars_message(text: str, message: str) -> None:
    with pytest.raises(InvalidPolicy) as info:
        check_policy_text(text)
    assert message in info.value.message


def test_consortium_policies_must_only_forbid() -> None:
    text = example("forbid_identified_outside_jurisdiction") + "\npermit (principal, action, resource);"
    with pytest.raises(InvalidPolicy, match="statement 1 is a permit: consortium-wide policies may only forbid"):
        check_policy_text(text, forbid_only=True)
    with pytest.raises(InvalidPolicy, match="no statement"):
        check_policy_text("// nothing here\n", forbid_only=True, allow_empty=False)
    assert check_policy_text("").effects == ()  # a dataset may deny everything


def test_annotations_and_comments_do_not_confuse_statement_effects() -> None:
    text = ('// permit everything? no.\n@id("permit") @note("a;b") forbid (principal, action, resource) '
            'when { context.purpose == "permit;" };\nforbid (principal, action, resource) unless { true };')
    assert check_policy_text(text, forbid_only=True).effects == ("forbid", "forbid")


def test_deeply_nested_policy_is_refused_before_cedar_parses_it() -> None:
    # Cedar's parser needs ~10 KB of stack per bracket level: 5000 levels would crash the process.
    for body in ("(" * 5000 + "true" + ")" * 5000, "[" * 5000 + "1" + "]" * 5000 + " == [1]",
                 "// a comment ends at a carriage return too\r" + "(" * 5000 + "true" + ")" * 5000,
                 '"' + ")" * 5000 + '" == "x" && ' + "(" * 5000 + "true" + ")" * 5000):
        with pytest.raises(InvalidPolicy, match="nests brackets"):
            check_policy_text("permit (principal, action, resource) when { " + body + " };")
    # Brackets inside strings and comments are not nesting.
    text = ('permit (principal, action, resource) when { context.purpose != "' + "(" * 100 + '" };\n'
            "// " + "[" * 100 + "\n")
    assert check_policy_text(text).max_nesting == 1


def test_operator_chains_are_bounded_per_statement() -> None:
    chain = " + ".join(["1"] * (cedar.MAX_OPERATORS + 1))
    with pytest.raises(InvalidPolicy, match="operators; at most 512"):
        check_policy_text(f"permit (principal, action, resource) when {{ {chain} > 0 }};")
    two = " + ".join(["1"] * 300)
    text = f"permit (principal, action, resource) when {{ {two} > 0 }};\n" * 2
    assert check_policy_text(text).max_operators == 300


def test_the_largest_accepted_policy_is_evaluated_safely_from_a_small_stack_thread() -> None:
    # Run in a child process: a stack overflow inside Cedar would be a segfault, not an exception.
    code = textwrap.dedent("""
        import threading
        from chainshare.execution.contracts import cedar
        chain = "&&".join(["true"] * 500)
        body = "(" * 31 + chain + ")" * 31
        text = "permit (principal, action, resource) when { " + body + " };"
        def run():
            cedar.check_policy_text(text)
            a = cedar.AgencyFacts("A", "r", "j")
            print(cedar.evaluate_access(cedar.AccessQuery(a, a, 1, "read", "p", 1), [("s", text)]).allowed)
        threading.stack_size(256 * 1024)
        t = threading.Thread(target=run)
        t.start()
        t.join()
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet='permitforbidwhenunlessprincipalactionresource()[]{}"\\;&|!=<>+-*.@ \n/:,0123456789',
               max_size=300))
def test_any_text_is_accepted_or_refused_cleanly(text: str) -> None:
    try:
        check_policy_text(text)
    except InvalidPolicy as exc:
        assert exc.message


# -- evaluation --------------------------------------------------------------------------------------

def test_statement_ids_name_the_policy_set_and_position() -> None:
    sets = [("ds7-p3", 'permit (principal, action == Action::"compute", resource);\n'
                       "permit (principal, action, resource) when { principal.role == \"statistics\" };\n"
                       "permit (principal, action, resource) when { context.time * 9223372036854775807 > 0 };"),
            ("zz", 'forbid (principal, action, resource) when { context.purpose == "spam" };'),
            ("aa", "forbid (principal, action, resource) when { context.time < 0 };")]
    d = decide(sets, action="compute")
    assert d.allowed and d.policy_ids == ("ds7-p3#0", "ds7-p3#1")
    assert d.errors == ("error while evaluating policy `ds7-p3#2`: integer overflow while attempting to multiply "
                        f"the values `{T}` and `9223372036854775807`",)
    assert decide(sets, purpose="spam") == cedar.AccessDecision(False, ("zz#0",), d.errors)


def test_only_ascii_digits_name_a_statement_in_cedars_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cedar writes statement ids `policy<N>` in ASCII; text that only looks like one with another script's
    digits ("٠" is 0 to int()) is left as Cedar wrote it, not renamed to statement 0's id."""
    from types import SimpleNamespace

    sets = [("ds7-p1", "permit (principal, action, resource) when { principal.role == \"statistics\" };"),
            ("ds7-p2", "permit (principal, action, resource) when { principal.role == \"health\" };")]
    errors = ["error while evaluating policy `policy1`: the values `policy٠` and `policy1٠` are unexpected"]
    monkeypatch.setattr(cedar.cedarpy, "is_authorized", lambda *_: SimpleNamespace(
        allowed=False, diagnostics=SimpleNamespace(reasons=[], errors=errors)))
    assert decide(sets).errors == (
        "error while evaluating policy `ds7-p2#0`: the values `policy٠` and `policy1٠` are unexpected",)


def test_identical_statements_keep_their_own_ids() -> None:
    permit = "permit (principal, action, resource);"
    d = decide([("ds7-p1", permit + "\n" + permit), ("ds7-p2", ""), ("x", permit + " // trailing comment")])
    assert d.policy_ids == ("ds7-p1#0", "ds7-p1#1", "x#0")


def test_no_policy_means_deny() -> None:
    assert decide("") == cedar.AccessDecision(False, (), ())


def test_entities_are_canonical_and_hold_each_agency_once() -> None:
    q = AccessQuery(HEALTH, HEALTH, 7, "read", "p", T)
    assert json.loads(cedar.build_entities(q)) == [
        {"attrs": {"jurisdiction": "CN-31", "role": "health"}, "parents": [],
         "uid": {"id": "Health Bureau", "type": "Agency"}},
        {"attrs": {"owner": {"__entity": {"id": "Health Bureau", "type": "Agency"}}}, "parents": [],
         "uid": {"id": "7", "type": "Dataset"}},
    ]
    odd = AgencyFacts('Agency "quoted"\nname', "r", "j")
    assert decide('permit (principal, action, resource) when { principal.role == "r" };', odd).allowed


def test_decisions_do_not_depend_on_the_process_or_the_cache() -> None:
    code = textwrap.dedent("""
        from chainshare.execution.contracts import cedar
        a, b = cedar.AgencyFacts("A", "r", "j"), cedar.AgencyFacts("B", "s", "j")
        sets = [("s", "\\n".join(f"permit (principal, action, resource) when {{ context.time > {i} }};"
                                 for i in range(40)))]
        print(cedar.evaluate_access(cedar.AccessQuery(a, b, 1, "read", "p", 100), sets))
    """)
    outputs = set()
    for seed in ("1", "2", "3"):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                              env={"PYTHONHASHSEED": seed, "PATH": ""})
        assert done.returncode == 0, done.stderr
        outputs.add(done.stdout)
    assert len(outputs) == 1
    assert "policy_ids=('s#0', 's#1', 's#10', 's#11'," in outputs.pop()



def test_a_changed_agency_is_decided_on_its_new_attributes_not_a_cached_parse() -> None:
    by_role = 'permit (principal, action, resource) when { principal.role == "statistics" };'
    by_place = 'permit (principal, action, resource) when { principal.jurisdiction == resource.owner.jurisdiction };'
    assert decide(by_role).allowed and decide(by_place).allowed
    assert not decide(by_role, AgencyFacts(STATS.name, "customs", STATS.jurisdiction)).allowed
    assert not decide(by_place, owner=AgencyFacts(HEALTH.name, HEALTH.role, "CN-44")).allowed
    assert decide(by_role).allowed and decide(by_place).allowed


def test_an_error_on_the_cedar_thread_reaches_the_caller_and_the_thread_carries_on() -> None:
    with pytest.raises(ValueError, match="invalid literal"):
        cedar._run_in_worker(int, "not a number")
    assert cedar._run_in_worker(int, "7") == 7
    assert decide("permit (principal, action, resource);").allowed


# -- dataset schemas ---------------------------------------------------------------------------------

def test_dataset_schema_rules_agree_with_the_data_plane() -> None:
    from chainshare.sharing import schema as sharing
    valid = [
        {"columns": [{"name": "id", "kind": "personal"}, {"name": "age", "kind": "integer"}], "min_group": 10},
        {"columns": [{"kind": k, "name": k} for k in datasets.KINDS]},
        {"columns": [{"name": "名前", "kind": "string"}], "min_group": 2},
    ]
    for obj in valid:
        assert datasets.canonicalize_schema(json.dumps(obj)) == sharing.validate_schema(obj).to_canonical_json().decode()
    invalid = [{"columns": []}, {"columns": [{"name": "a", "kind": "x"}]}, {"columns": [{"name": "", "kind": "date"}]},
               {"columns": [{"name": "a\n", "kind": "date"}]}, {"columns": [{"name": "a", "kind": "date"}] * 2},
               {"columns": [{"name": "a", "kind": "date"}], "min_group": 1}, {"columns": [], "extra": 1}]
    for obj in invalid:
        with pytest.raises(Revert):
            datasets.canonicalize_schema(json.dumps(obj))
        with pytest.raises(ValueError):
            sharing.validate_schema(obj)
