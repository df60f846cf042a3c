"""The nesting bound on JSON text that contracts parse (protocol version 4 on).

CPython's JSON scanner counts each level of nesting against the interpreter's recursion limit, so
whether ``json.loads`` of a deeply nested text raises ``RecursionError`` depends on how deep the stack
already is: a node that builds a block and one that re-executes it a few frames deeper would disagree
on the receipt. From version 4 a contract measures the nesting first, with one linear scan that never
recurses, and reverts above ``JSON_DEPTH_CAP`` levels; ``json.loads`` then stays hundreds of frames
below the limit, whatever the caller's depth.
"""

from __future__ import annotations

import json
import re
from typing import Any

# The deepest JSON a contract takes, in arrays and objects: 32. What the chain stores nests at most 4 or 5
# levels: a dataset schema {"columns": [{"name", "kind"}]} is 3, a scoring rule {"weights": {category:
# {severity: points}}} is 3, an AnonCreds credential definition {"value": {"primary": {"r": {attr: ...}}}} or
# revocation registry definition {"value": {"publicKeys": {"accumKey": {...}}}} is 4, a status list 2.
# 32 leaves six times that for a later format, and keeps json.loads (one C level per JSON level) over 900
# frames away from Python's default recursion limit of 1,000 at any stack depth execution reaches.
JSON_DEPTH_CAP = 32

# What can change the nesting or hide a bracket: brackets, and the quotes and backslashes of strings.
_STRUCTURAL = re.compile(r'[\[\]{}"\\]')


def is_json_nested_deeper_than(text: str, cap: int) -> bool:
    """Whether ``text`` opens more than ``cap`` arrays/objects inside one another, counting ``[`` and ``{``
    outside strings (escapes honoured). Never recurses; never below the nesting ``json.loads`` reaches before
    it stops, valid or not (a stray closer does not lower the count below zero)."""
    if text.count("[") + text.count("{") <= cap:
        return False  # exact: the depth never exceeds the number of openers (and this is C-speed)
    depth = 0
    in_string = False
    escaped_at = -1  # the index of the character a backslash in a string escapes
    for m in _STRUCTURAL.finditer(text):
        i, ch = m.start(), m.group()
        if in_string:
            if i == escaped_at:
                continue
            if ch == "\\":
                escaped_at = i + 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > cap:
                return True
        elif ch in "]}":
            depth = max(depth - 1, 0)
    return False


def load_contract_json(text: str, what: str, depth_cap: int | None, **options: Any) -> Any:
    """``json.loads(text, **options)`` as a contract of a protocol version parses caller text, or ValueError:
    ``"{what} nests arrays and objects deeper than N levels"`` (with ``depth_cap``, version 4 on: checked
    before parsing, whatever the stack depth) or ``"{what} is not valid JSON: ..."``. Without a cap (versions
    1-3) a RecursionError counts as invalid JSON, as those versions had it, although it depends on the stack
    depth; under a cap json.loads stays far below the limit, and a RecursionError is this node's failure
    (it stops the block)."""
    if depth_cap is not None and is_json_nested_deeper_than(text, depth_cap):
        raise ValueError(f"{what} nests arrays and objects deeper than {depth_cap} levels")
    errors = (ValueError, RecursionError) if depth_cap is None else (ValueError,)
    try:
        return json.loads(text, **options)
    except errors as exc:
        raise ValueError(f"{what} is not valid JSON: {exc}") from exc
