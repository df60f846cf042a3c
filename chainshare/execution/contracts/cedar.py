"""Cedar access policies: the schema, policy validation and deterministic evaluation (cedarpy).

This module is the only place that talks to cedarpy (pinned in pyproject.toml: the Cedar engine is
part of the consensus rules, a version bump is a network upgrade).

Names (fixed, so policies carry over between deployments; see contracts/policies/README.md):

- principal ``Agency::"<agency name>"`` with attributes ``role`` (String, from Membership) and
  ``jurisdiction`` (String, Membership attribute, "" when unset);
- resource ``Dataset::"<dataset id in decimal>"`` with attribute ``owner`` (an ``Agency``);
- actions ``Action::"read"``, ``Action::"read_identified"``, ``Action::"compute"``, ``Action::"compute_joint"``;
- context ``purpose`` (String, as requested) and ``time`` (Long, block timestamp in SECONDS).

``SCHEMA`` below is the consensus copy of the schema; contracts/policies/schema.cedarschema.json is
generated from it (``write_schema_file``) and a test keeps them equal.

Policy ids. A policy *text* is a set of Cedar statements; the text installed for a dataset or by
Governance has a set id (``ds<dataset>-p<revision>``, or the consortium policy id) and statement k
(0-based, source order) of it is reported as ``<set id>#<k>``. Cedar's own messages name statement k
of a single text ``policy<k>``.

Safety. cedarpy's parser and validator recurse on the syntax tree (about 10 KB of native stack per
bracket level) and a deep enough policy crashes the process with a segmentation fault, which on a
chain would stop every validator at once (newer Cedar releases bound expression depth themselves;
the pinned one does not). So before Cedar sees a text, ``check_policy_text`` bounds its size
(16 KiB), bracket nesting (32) and operators per statement (512) with a lexer that accepts only
what Cedar's own token rules accept, and every Cedar call runs on one worker thread with a 64 MiB
stack, whatever thread the caller is on. Determinism: inputs are built from chain state only (block time, never
the wall clock), entities are serialised with sorted keys, and reasons and errors (sets inside Cedar)
are sorted before they leave this module.
"""

from __future__ import annotations

import functools
import json
import os
import queue
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import cedarpy
import orjson

from chainshare.errors import ChainshareError

ACTION_READ = "read"
ACTION_READ_IDENTIFIED = "read_identified"
ACTION_COMPUTE = "compute"
ACTION_COMPUTE_JOINT = "compute_joint"  # a joint (multi-owner) secure aggregation: execution.contracts.joint
ACTIONS = (ACTION_READ, ACTION_READ_IDENTIFIED, ACTION_COMPUTE, ACTION_COMPUTE_JOINT)
AGENCY_TYPE = "Agency"
DATASET_TYPE = "Dataset"

MAX_POLICY_BYTES = 16 * 1024
MAX_NESTING = 32
MAX_OPERATORS = 512  # per statement: a chain of n binary operators is a tree n levels deep
MAX_MESSAGE = 2000  # Cedar's messages quote types, which can be long: revert reasons stay short

# Gas. Cedar work is priced for the cold path (gas must not depend on what a node has cached):
# validation lexes, parses and type-checks the text; a cold evaluation parses every policy text
# involved twice (statement count, then the joined set). Calibrated against the runtime's own
# rate, a Notary anchor (44,816 gas in 50-95 us: ~450-900 gas/us on the 2-core dev machine), at
# ~200 gas/us of Cedar work measured under the same (4x overloaded) conditions, i.e. several
# hundred gas/us on an idle machine: a block full of policy work takes no more than a few times
# as long to execute as a block full of storage writes.
G_CEDAR_VALIDATE = 100_000
G_CEDAR_VALIDATE_BYTE = 400
G_CEDAR_EVALUATE = 60_000
G_CEDAR_EVALUATE_BYTE = 200

_CONTEXT: dict[str, Any] = {"type": "Record", "attributes": {"purpose": {"type": "String"}, "time": {"type": "Long"}}}
SCHEMA: dict[str, Any] = {
    "": {
        "entityTypes": {
            AGENCY_TYPE: {"shape": {"type": "Record", "attributes": {
                "role": {"type": "String"}, "jurisdiction": {"type": "String"}}}},
            DATASET_TYPE: {"shape": {"type": "Record", "attributes": {
                "owner": {"type": "Entity", "name": AGENCY_TYPE}}}},
        },
        "actions": {a: {"appliesTo": {"principalTypes": [AGENCY_TYPE], "resourceTypes": [DATASET_TYPE],
                                      "context": _CONTEXT}} for a in ACTIONS},
    }
}
SCHEMA_FILE = Path("contracts") / "policies" / "schema.cedarschema.json"


class InvalidPolicy(ChainshareError, ValueError):
    """A policy text was refused: it does not parse, does not validate against the schema, or is
    outside the bounds above. The message is Cedar's where Cedar produced it."""


@dataclass(frozen=True)
class AgencyFacts:
    """What Cedar knows of an agency: ``Agency::"<name>"`` with ``role`` and ``jurisdiction``."""

    name: str
    role: str
    jurisdiction: str


@dataclass(frozen=True)
class AccessQuery:
    principal: AgencyFacts
    owner: AgencyFacts
    dataset_id: int
    action: str
    purpose: str
    time: int  # block timestamp, seconds


@dataclass(frozen=True)
class AccessDecision:
    allowed: bool
    policy_ids: tuple[str, ...]  # the determining policies (Cedar's reasons), sorted
    errors: tuple[str, ...]  # evaluation errors (a policy that errors is skipped by Cedar), sorted


@dataclass(frozen=True)
class PolicyShape:
    """What the lexer found in a policy text: one effect ("permit"/"forbid") per statement."""

    effects: tuple[str, ...]
    max_nesting: int
    max_operators: int


def render_schema() -> str:
    """The text of contracts/policies/schema.cedarschema.json."""
    return json.dumps(SCHEMA, indent=2, sort_keys=True) + "\n"


def write_schema_file(root: Path | None = None) -> Path:
    """Write contracts/policies/schema.cedarschema.json under ``root`` (default: this checkout)."""
    target = (root or Path(__file__).resolve().parents[3]) / SCHEMA_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_schema())
    return target


# -- the lexer guard ----------------------------------------------------------------------------

# Cedar's tokens (cedar-policy-core grammar.lalrpop, `match` block), as a strict subset: a
# comment ends at \n or \r, a string is "(\\.|[^"\\])*" where '.' is not \n, whitespace is ASCII
# only. Anything else is refused before Cedar sees it, so a comment or string can never hide from
# this lexer a bracket that Cedar's parser would see.
_TOKEN = re.compile(r"""
    [ \t\n\r\x0b\x0c]*
    (?:
      (?P<comment>//[^\n\r]*)
    | (?P<string>"(?:\\.|[^"\\])*")
    | (?P<word>\??[_a-zA-Z][_a-zA-Z0-9]*)
    | (?P<number>[0-9]+)
    | (?P<op>==|!=|<=|>=|&&|\|\||[<>+\-*/%!.=])
    | (?P<open>[(\[{])
    | (?P<close>[)\]}])
    | (?P<semi>;)
    | (?P<at>@)
    | (?P<punct>::|[,:])
    | (?P<bad>[\s\S])
    | $
    )
""", re.VERBOSE)
_KEYWORD_OPERATORS = frozenset({"if", "then", "else", "has", "like", "is", "in"})


def scan_policy_text(text: str) -> PolicyShape:
    """Tokenise ``text`` as Cedar does and measure it (statements, bracket nesting, operators per
    statement); raises InvalidPolicy on a character or string Cedar would not lex. Never calls Cedar."""
    effects: list[str] = []
    depth = max_depth = ops = max_ops = 0
    expect_effect, annotation_key = True, False
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup
        if kind == "word":
            word = m.group(kind)
            if annotation_key:
                annotation_key = False
            elif expect_effect:
                effects.append(word)
                expect_effect = False
            elif word in _KEYWORD_OPERATORS:
                ops += 1
        elif kind == "op":
            ops += 1
        elif kind == "open":
            depth += 1
            max_depth = max(max_depth, depth)
        elif kind == "close":
            depth = max(depth - 1, 0)
        elif kind == "semi" and depth == 0:  # a ';' inside brackets is an error to Cedar: keep counting
            max_ops, ops, expect_effect = max(max_ops, ops), 0, True
        elif kind == "at":
            annotation_key = True
        elif kind == "bad":
            where = m.start(kind)
            what = "unterminated or invalid string literal" if text[where] == '"' else f"character {text[where]!r}"
            raise InvalidPolicy(f"policy text has an invalid {what} at offset {where}")
    return PolicyShape(tuple(effects), max_depth, max(max_ops, ops))


# -- the Cedar worker thread ---------------------------------------------------------------------

CEDAR_STACK_BYTES = 64 * 1024 * 1024
_T = TypeVar("_T")


class _CedarThread:
    """One daemon thread with a 64 MiB stack that runs calls in order. A call is handed over with
    a queue and returned with a lock (profiling: a ThreadPoolExecutor's Future and Condition
    doubled the cost of the hop, which every access decision pays)."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...], list[Any], threading.Lock]] = \
            queue.SimpleQueue()
        previous = threading.stack_size(CEDAR_STACK_BYTES)
        try:
            self._thread = threading.Thread(target=self._serve, name="cedar", daemon=True)
            self._thread.start()
        finally:
            threading.stack_size(previous)

    def _serve(self) -> None:
        while True:
            fn, args, box, done = self._calls.get()
            try:
                box.append((True, fn(*args)))
            except BaseException as exc:  # handed to the caller, who raises it
                box.append((False, exc))
            done.release()

    def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        if threading.get_ident() == self._thread.ident:
            return fn(*args)
        done = threading.Lock()
        done.acquire()
        box: list[tuple[bool, Any]] = []
        self._calls.put((fn, args, box, done))
        done.acquire()
        ok, value = box[0]
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]


_worker_lock = threading.Lock()
_worker: _CedarThread | None = None


def _run_in_worker(fn: Callable[..., _T], *args: Any) -> _T:
    """Run ``fn`` on the Cedar thread (a 64 MiB stack, whatever thread the caller is on)."""
    global _worker
    worker = _worker
    if worker is None:
        with _worker_lock:
            if _worker is None:
                _worker = _CedarThread()
            worker = _worker
    return worker.run(fn, *args)


def run_on_cedar_thread(fn: Callable[..., _T], *args: Any) -> _T:
    """Run ``fn`` (say, the execution of a whole block) on the Cedar thread, so that the access
    decisions inside it are evaluated there directly instead of each paying a thread hop."""
    return _run_in_worker(fn, *args)


def _forget_worker() -> None:
    """In a forked child the worker thread does not exist: start a new one on first use."""
    global _worker, _worker_lock
    _worker, _worker_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_worker)


@functools.cache
def _schema() -> cedarpy.Schema:
    return cedarpy.Schema.from_json_str(json.dumps(SCHEMA, sort_keys=True))


# -- validation ----------------------------------------------------------------------------------

def compute_validation_gas(text: str) -> int:
    return G_CEDAR_VALIDATE + G_CEDAR_VALIDATE_BYTE * len(text.encode())


def compute_evaluation_gas(texts: Sequence[str]) -> int:
    return G_CEDAR_EVALUATE + G_CEDAR_EVALUATE_BYTE * sum(len(t.encode()) for t in texts)


def check_policy_text(text: str, *, forbid_only: bool = False, allow_empty: bool = True) -> PolicyShape:
    """Accept ``text`` as a policy set, or raise InvalidPolicy with the reason (Cedar's message for
    parse and schema errors). ``forbid_only``: every statement must be a ``forbid``."""
    size = len(text.encode())
    if size > MAX_POLICY_BYTES:
        raise InvalidPolicy(f"policy text is {size} bytes; at most {MAX_POLICY_BYTES} are allowed")
    shape = scan_policy_text(text)
    if shape.max_nesting > MAX_NESTING:
        raise InvalidPolicy(f"policy nests brackets {shape.max_nesting} deep; at most {MAX_NESTING} levels are allowed")
    if shape.max_operators > MAX_OPERATORS:
        raise InvalidPolicy(f"a policy statement has {shape.max_operators} operators; at most {MAX_OPERATORS} "
                            "are allowed (split it into several statements)")
    problem = _run_in_worker(_cedar_check, text, len(shape.effects))
    if problem:
        raise InvalidPolicy(problem if len(problem) <= MAX_MESSAGE else problem[:MAX_MESSAGE - 3] + "...")
    if not shape.effects and not allow_empty:
        raise InvalidPolicy("policy text contains no statement")
    if forbid_only:
        for k, effect in enumerate(shape.effects):
            if effect != "forbid":
                raise InvalidPolicy(f"statement {k} is a {effect}: consortium-wide policies may only forbid "
                                    "(permits belong to the dataset owners' policies)")
    return shape


def _cedar_check(text: str, statements: int) -> str | None:
    """Cedar's parse and schema check of ``text`` (on the worker thread); the problem or None."""
    try:
        policies = cedarpy.PolicySet.from_str(text)
    except ValueError as exc:
        return f"policy does not parse: {exc}"
    if policies.templates():
        return "policy templates (?principal, ?resource) are not supported: name the entities"
    if len(policies) != statements:
        return "policy text could not be split into statements (check for stray ';')"
    try:
        result = cedarpy.validate_policies(text, _schema())
    except (ValueError, RuntimeError, TypeError) as exc:
        return f"policy could not be validated: {exc}"
    if not result.validation_passed:
        return "policy does not validate against the schema: " + "; ".join(str(e) for e in result.errors)
    return None


# -- evaluation ----------------------------------------------------------------------------------

def build_entities(query: AccessQuery) -> str:
    """The Cedar entities of a query as canonical JSON: both agencies and the dataset."""
    return _entities_json(query.principal, query.owner, query.dataset_id)


def _entities_json(principal: AgencyFacts, owner: AgencyFacts, dataset_id: int) -> str:
    agencies = {principal.name: principal, owner.name: owner}
    entities = [{"uid": {"type": AGENCY_TYPE, "id": a.name}, "attrs": {"role": a.role, "jurisdiction": a.jurisdiction},
                 "parents": []} for _, a in sorted(agencies.items())]
    entities.append({"uid": {"type": DATASET_TYPE, "id": str(dataset_id)},
                     "attrs": {"owner": {"__entity": {"type": AGENCY_TYPE, "id": owner.name}}}, "parents": []})
    return json.dumps(entities, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _context_json(purpose: str, time: int) -> str:
    """The request context as the JSON text cedarpy would make of the dict (orjson: same values,
    a fraction of the cost; json for what orjson refuses, e.g. integers beyond 64 bits)."""
    try:
        return orjson.dumps({"purpose": purpose, "time": time}).decode()
    except orjson.JSONEncodeError:
        return json.dumps({"purpose": purpose, "time": time})


def evaluate_access(query: AccessQuery, policy_sets: Sequence[tuple[str, str]]) -> AccessDecision:
    """Cedar's decision on ``query`` under every (set id, text) in ``policy_sets`` (each accepted by
    ``check_policy_text``). Default deny; any ``forbid`` that applies wins. Deterministic."""
    if query.action not in ACTIONS:
        raise InvalidPolicy(f"unknown action {query.action!r}: use one of {', '.join(ACTIONS)}")
    request = {
        "principal": {"type": AGENCY_TYPE, "id": query.principal.name},
        "action": {"type": "Action", "id": query.action},
        "resource": {"type": DATASET_TYPE, "id": str(query.dataset_id)},
        "context": _context_json(query.purpose, query.time),
    }
    return _run_in_worker(_evaluate, request, (query.principal, query.owner, query.dataset_id), tuple(policy_sets))


# Cedar names a statement `policy<N>` with ASCII digits; \d would also take other scripts' digits (int() reads
# "`policy٣`" as statement 3). Cedar's evaluation errors quote only those ids, integers and "quoted" strings, so
# no decision recorded on chain has such text: this changes no execution result.
_POSITIONAL_ID = re.compile(r"`policy([0-9]+)`")


def _evaluate(request: dict[str, Any], entities: tuple[AgencyFacts, AgencyFacts, int],
              policy_sets: tuple[tuple[str, str], ...]) -> AccessDecision:
    try:
        policies, ids = _compile(policy_sets)
    except ValueError as exc:  # cannot happen for accepted texts; deny rather than fail the transaction
        return AccessDecision(False, (), (f"policies could not be compiled: {exc}",))
    try:
        result = cedarpy.is_authorized(request, policies, _parse_entities(*entities), _schema())
    except (ValueError, RuntimeError, TypeError) as exc:  # deterministic in its inputs: deny, never raise
        return AccessDecision(False, (), (f"policy evaluation failed: {exc}",))

    def name(positional: str) -> str:
        k = int(positional[len("policy"):]) if positional.startswith("policy") else -1
        return ids[k] if 0 <= k < len(ids) else positional

    reasons = tuple(sorted(map(name, result.diagnostics.reasons)))
    found = result.diagnostics.errors
    errors = tuple(sorted(_POSITIONAL_ID.sub(lambda m: f"`{name('policy' + m.group(1))}`", e)
                          for e in found)) if found else ()
    return AccessDecision(result.allowed, reasons, errors)


@functools.lru_cache(maxsize=1024)
def _parse_entities(principal: AgencyFacts, owner: AgencyFacts, dataset_id: int) -> cedarpy.Entities:
    """The entities of a query (``build_entities``) parsed and checked against the schema, as Cedar
    would parse them on every call. Keyed by the facts they are built from (frozen values), so a
    cached handle is exactly what parsing their canonical JSON gives (profiling: parsing was ~40%
    of an evaluation, and building the JSON ~10% of what was left)."""
    return cedarpy.Entities.from_json_str(_entities_json(principal, owner, dataset_id), _schema())


@functools.lru_cache(maxsize=1024)
def _count_statements(text: str) -> int:
    return len(cedarpy.PolicySet.from_str(text))


@functools.lru_cache(maxsize=256)
def _compile(policy_sets: tuple[tuple[str, str], ...]) -> tuple[cedarpy.PolicySet, tuple[str, ...]]:
    """One PolicySet of all texts joined by newlines (which end any trailing comment), and the id
    of each of its positional statements ``policy0, policy1, ...``. Pure, so caching it cannot
    change a decision. (``PolicySet.with_added_str`` would parse each text once, but it merges
    identical statements, which would shift the positions.)"""
    ids = [f"{set_id}#{k}" for set_id, text in policy_sets for k in range(_count_statements(text))]
    policies = cedarpy.PolicySet.from_str("\n".join(text for _, text in policy_sets))
    if len(policies) != len(ids):
        raise ValueError(f"{len(policies)} statements parsed, {len(ids)} expected")
    return policies, tuple(ids)
