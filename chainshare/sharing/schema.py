"""Dataset schemas, dataset readers and content hashes.

A schema is ``{"columns": [{"name": ..., "kind": ...}, ...], "min_group": 5}`` where a kind is one
of ``string | integer | number | boolean | date | personal``. ``personal`` columns hold personal
identifiers: they are delivered as keyed pseudonyms under ``read`` and never enter a compute query.
A schema is what the owner declares; ``infer_schema`` only proposes one (it never marks a column
personal: that is the owner's decision, see ``mark_personal``).

Datasets are CSV (UTF-8, a header row, RFC 4180 quoting) or JSON Lines (one object per line).
Everything here streams: no function reads a whole dataset into memory.
"""

from __future__ import annotations

import codecs
import csv
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from chainshare.crypto.envelope import new_keccak256
from chainshare.errors import InvalidInput

FORMAT_CSV = "csv"
FORMAT_JSONL = "jsonl"
FORMATS = (FORMAT_CSV, FORMAT_JSONL)

KIND_STRING = "string"
KIND_INTEGER = "integer"
KIND_NUMBER = "number"
KIND_BOOLEAN = "boolean"
KIND_DATE = "date"
KIND_PERSONAL = "personal"
KINDS = (KIND_STRING, KIND_INTEGER, KIND_NUMBER, KIND_BOOLEAN, KIND_DATE, KIND_PERSONAL)
NUMERIC_KINDS = frozenset({KIND_INTEGER, KIND_NUMBER})

DEFAULT_MIN_GROUP = 5
MIN_MIN_GROUP = 2
MAX_MIN_GROUP = 1_000_000
MAX_COLUMNS = 1024
MAX_COLUMN_NAME_LEN = 128
DEFAULT_SAMPLE_ROWS = 1000
MAX_SCHEMA_FILE_BYTES = 1 << 20
MAX_NUMBER_TEXT_LEN = 64
READ_BLOCK = 1 << 20
MAX_LINE_BYTES = 16 << 20

Value = str | int | float | bool | None

_INTEGER_RE = re.compile(r"[+-]?[0-9]+")
_LONG_DIGITS_RE = re.compile(rb"[0-9]{19}")
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_BOOLEANS = {"true": True, "false": False}
# Inference prefers the narrowest kind that every sampled value parses as.
_INFERENCE_ORDER = (KIND_BOOLEAN, KIND_INTEGER, KIND_NUMBER, KIND_DATE, KIND_STRING)


@dataclass(frozen=True)
class Column:
    name: str
    kind: str


@dataclass(frozen=True)
class Schema:
    """A validated dataset schema (build it with ``validate_schema``, ``infer_schema`` or ``load_schema``)."""

    columns: tuple[Column, ...]
    min_group: int = DEFAULT_MIN_GROUP

    @cached_property
    def _by_name(self) -> dict[str, Column]:
        return {column.name: column for column in self.columns}

    def get_column(self, name: str) -> Column | None:
        return self._by_name.get(name) if isinstance(name, str) else None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    @property
    def personal_columns(self) -> frozenset[str]:
        return frozenset(c.name for c in self.columns if c.kind == KIND_PERSONAL)

    def is_personal(self, name: str) -> bool:
        """True for a personal column and for any name the schema does not declare (fail closed)."""
        column = self.get_column(name)
        return column is None or column.kind == KIND_PERSONAL

    def to_json(self) -> dict[str, Any]:
        return {
            "columns": [{"name": c.name, "kind": c.kind} for c in self.columns],
            "min_group": self.min_group,
        }

    def to_canonical_json(self) -> bytes:
        """Canonical JSON (sorted keys, no spaces): the bytes to hash or put on chain."""
        return canonical_json(self.to_json())


def canonical_json(value: object) -> bytes:
    """Canonical JSON text of ``value``: sorted keys, no whitespace, UTF-8, no NaN/Infinity."""
    try:
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"value is not canonical JSON: {exc}") from exc


def check_format(fmt: str) -> str:
    """``fmt`` normalised to ``csv`` or ``jsonl``; InvalidInput for anything else."""
    if not isinstance(fmt, str):
        raise InvalidInput("dataset format must be a string: 'csv' or 'jsonl'")
    normalised = fmt.strip().lower()
    if normalised in ("ndjson", "json-lines", "jsonlines"):
        normalised = FORMAT_JSONL
    if normalised not in FORMATS:
        raise InvalidInput(f"unsupported dataset format {fmt!r}: use 'csv' or 'jsonl' (JSON Lines)")
    return normalised


# --------------------------------------------------------------------------- schemas


def validate_schema(obj: object) -> Schema:
    """A ``Schema`` from its JSON form, or InvalidInput naming the first problem."""
    if isinstance(obj, Schema):
        return obj
    if not isinstance(obj, Mapping):
        raise InvalidInput('schema must be a JSON object {"columns": [...], "min_group": 5}')
    unknown = set(obj) - {"columns", "min_group"}
    if unknown:
        raise InvalidInput(f"schema has unknown keys {sorted(map(str, unknown))}: allowed are columns, min_group")
    columns = obj.get("columns")
    if not isinstance(columns, list) or not columns:
        raise InvalidInput("schema 'columns' must be a non-empty list of {\"name\", \"kind\"} objects")
    if len(columns) > MAX_COLUMNS:
        raise InvalidInput(f"schema has {len(columns)} columns; at most {MAX_COLUMNS} are allowed")
    parsed: list[Column] = []
    seen: set[str] = set()
    for index, item in enumerate(columns):
        if not isinstance(item, Mapping) or set(item) != {"name", "kind"}:
            raise InvalidInput(f'schema column #{index} must be an object with exactly "name" and "kind"')
        name, kind = item["name"], item["kind"]
        check_column_name(name)
        if kind not in KINDS:
            raise InvalidInput(f"column {name!r} has unknown kind {kind!r}: use one of {', '.join(KINDS)}")
        if name in seen:
            raise InvalidInput(f"column {name!r} appears twice in the schema")
        seen.add(name)
        parsed.append(Column(name=name, kind=kind))
    min_group = obj.get("min_group", DEFAULT_MIN_GROUP)
    if isinstance(min_group, bool) or not isinstance(min_group, int):
        raise InvalidInput("schema 'min_group' must be an integer")
    check_min_group(min_group)
    return Schema(columns=tuple(parsed), min_group=min_group)


def check_min_group(min_group: int) -> None:
    if not MIN_MIN_GROUP <= min_group <= MAX_MIN_GROUP:
        raise InvalidInput(
            f"min_group {min_group} is out of range: use {MIN_MIN_GROUP}..{MAX_MIN_GROUP} "
            f"(the smallest group a compute query may report; default {DEFAULT_MIN_GROUP})"
        )


def check_column_name(name: object) -> None:
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_COLUMN_NAME_LEN:
        raise InvalidInput(f"column name must be a string of 1..{MAX_COLUMN_NAME_LEN} characters")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        raise InvalidInput(f"column name {name!r} contains control characters")


def load_schema(path: Path | str) -> Schema:
    """The schema stored as JSON at ``path``."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            data = file.read(MAX_SCHEMA_FILE_BYTES + 1)
    except OSError as exc:
        raise InvalidInput(f"cannot read schema file {path}: {exc.strerror}") from exc
    if len(data) > MAX_SCHEMA_FILE_BYTES:
        raise InvalidInput(f"schema file {path} exceeds {MAX_SCHEMA_FILE_BYTES} bytes")
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"schema file {path} is not valid JSON: {exc}") from exc
    return validate_schema(obj)


def mark_personal(schema: Schema, names: Iterable[str]) -> Schema:
    """``schema`` with the named columns declared ``personal``."""
    wanted = set(names)
    missing = wanted - set(schema.names)
    if missing:
        raise InvalidInput(f"cannot mark unknown columns personal: {sorted(missing)} (columns: {list(schema.names)})")
    columns = tuple(Column(c.name, KIND_PERSONAL) if c.name in wanted else c for c in schema.columns)
    return Schema(columns=columns, min_group=schema.min_group)


def with_min_group(schema: Schema, min_group: int) -> Schema:
    """``schema`` with another minimum group size (``--min-group``)."""
    if isinstance(min_group, bool) or not isinstance(min_group, int):
        raise InvalidInput("min_group must be an integer")
    check_min_group(min_group)
    return Schema(columns=schema.columns, min_group=min_group)


def infer_schema(
    path: Path | str,
    fmt: str,
    *,
    sample_rows: int = DEFAULT_SAMPLE_ROWS,
    min_group: int = DEFAULT_MIN_GROUP,
) -> Schema:
    """A proposed schema for the dataset at ``path``: column names from the CSV header (or the
    keys of the first ``sample_rows`` JSON objects), kinds from the values of those rows. No column
    is marked personal."""
    fmt = check_format(fmt)
    if isinstance(sample_rows, bool) or not isinstance(sample_rows, int) or sample_rows < 1:
        raise InvalidInput("sample_rows must be a positive integer")
    check_min_group(min_group)
    candidates: dict[str, set[str]] = {}
    with open_dataset(path) as src:
        if fmt == FORMAT_CSV:
            header, rows = _csv_rows(src)
            for name in header:
                candidates[name] = set(_INFERENCE_ORDER)
            for count, (_line, row) in enumerate(rows):
                if count >= sample_rows:
                    break
                for name, text in zip(header, row, strict=False):
                    if text != "":
                        candidates[name] &= _text_kinds(text)
        else:
            for count, (_line, obj) in enumerate(_jsonl_objects(src)):
                if count >= sample_rows:
                    break
                for name, value in obj.items():
                    if name not in candidates:
                        check_column_name(name)
                        candidates[name] = set(_INFERENCE_ORDER)
                    if value is not None:
                        candidates[name] &= _json_kinds(value)
    if not candidates:
        raise InvalidInput(f"cannot infer a schema: {path} has no columns (empty file?)")
    if len(candidates) > MAX_COLUMNS:
        raise InvalidInput(f"dataset has {len(candidates)} columns; at most {MAX_COLUMNS} are allowed")
    columns = tuple(
        Column(name, next(k for k in _INFERENCE_ORDER if k in kinds or k == KIND_STRING))
        for name, kinds in candidates.items()
    )
    return Schema(columns=columns, min_group=min_group)


def _text_kinds(text: str) -> set[str]:
    kinds = {KIND_STRING}
    for kind in (KIND_BOOLEAN, KIND_INTEGER, KIND_NUMBER, KIND_DATE):
        try:
            parse_value(kind, text)
        except InvalidInput:
            continue
        kinds.add(kind)
    return kinds


def _json_kinds(value: object) -> set[str]:
    if isinstance(value, bool):
        return {KIND_BOOLEAN, KIND_STRING}
    if isinstance(value, int):
        return {KIND_INTEGER, KIND_NUMBER, KIND_STRING}
    if isinstance(value, float):
        return {KIND_NUMBER, KIND_STRING}
    if isinstance(value, str) and _DATE_RE.fullmatch(value):
        try:
            date.fromisoformat(value)
            return {KIND_DATE, KIND_STRING}
        except ValueError:
            pass
    return {KIND_STRING}


# --------------------------------------------------------------------------- values


def parse_value(kind: str, raw: object) -> Value:
    """``raw`` (CSV text or a JSON value) as a value of ``kind``: int, float, bool, ISO date
    string, or string; ``None`` for a missing value; InvalidInput if it is not of that kind."""
    if raw is None:
        return None
    if isinstance(raw, str) and raw == "" and kind != KIND_STRING:
        return None
    if kind == KIND_STRING or kind == KIND_PERSONAL:
        return raw if isinstance(raw, str) else _json_text(raw)
    if kind == KIND_INTEGER:
        if isinstance(raw, bool):
            raise InvalidInput("a boolean is not an integer")
        if isinstance(raw, int):
            return raw
        if isinstance(raw, float) and math.isfinite(raw) and raw.is_integer():
            return int(raw)
        if isinstance(raw, str) and len(raw) <= MAX_NUMBER_TEXT_LEN and _INTEGER_RE.fullmatch(raw.strip()):
            return int(raw)
        raise InvalidInput(f"{_show(raw)} is not an integer")
    if kind == KIND_NUMBER:
        if isinstance(raw, bool):
            raise InvalidInput("a boolean is not a number")
        if isinstance(raw, int):
            return raw
        if isinstance(raw, float):
            number = raw
        elif isinstance(raw, str) and len(raw) <= MAX_NUMBER_TEXT_LEN:
            try:
                number = float(raw)
            except ValueError:
                raise InvalidInput(f"{_show(raw)} is not a number") from None
        else:
            raise InvalidInput(f"{_show(raw)} is not a number")
        if not math.isfinite(number):
            raise InvalidInput(f"{_show(raw)} is not a finite number")
        return number
    if kind == KIND_BOOLEAN:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in _BOOLEANS:
            return _BOOLEANS[raw.strip().lower()]
        raise InvalidInput(f"{_show(raw)} is not a boolean (true or false)")
    if kind == KIND_DATE:
        if isinstance(raw, str) and _DATE_RE.fullmatch(raw):
            try:
                date.fromisoformat(raw)
            except ValueError:
                raise InvalidInput(f"{_show(raw)} is not a valid date") from None
            return raw
        raise InvalidInput(f"{_show(raw)} is not a date (YYYY-MM-DD)")
    raise InvalidInput(f"unknown column kind {kind!r}")


def _json_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return canonical_json(value).decode("utf-8")


def _show(raw: object) -> str:
    text = repr(raw)
    return text if len(text) <= 40 else text[:37] + "..."


# --------------------------------------------------------------------------- readers


class open_dataset:
    """``open(path, 'rb')`` with an InvalidInput that names the file when it cannot be read."""

    def __init__(self, path: Path | str) -> None:
        self._path = Path(path)
        self._file: BinaryIO | None = None

    def __enter__(self) -> BinaryIO:
        try:
            self._file = self._path.open("rb")
        except OSError as exc:
            raise InvalidInput(f"cannot read dataset {self._path}: {exc.strerror}") from exc
        return self._file

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()


def iter_lines(src: BinaryIO) -> Iterator[bytes]:
    """Lines of ``src`` split at b"\\n" (kept), a leading UTF-8 BOM removed; a line longer than
    ``MAX_LINE_BYTES`` raises InvalidInput, so memory stays bounded whatever the input."""
    first = True
    while True:
        line = src.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_LINE_BYTES:
            raise InvalidInput(f"dataset has a line longer than {MAX_LINE_BYTES} bytes")
        if first:
            first = False
            if line.startswith(codecs.BOM_UTF8):
                line = line[len(codecs.BOM_UTF8) :]
        yield line


def read_csv(src: BinaryIO) -> tuple[list[str], bytes, Iterator[tuple[int, list[str]]]]:
    """The CSV read from ``src``: its header (checked: names valid and distinct), the header's raw
    bytes, and an iterator of (line number, fields) for the non-blank rows that follow."""
    recorded: list[bytes] | None = []

    def text_lines() -> Iterator[str]:
        # iter_lines and the decoding in one generator: this runs once per line of the dataset.
        readline = src.readline
        first = True
        while True:
            line = readline(MAX_LINE_BYTES + 1)
            if not line:
                return
            if len(line) > MAX_LINE_BYTES:
                raise InvalidInput(f"dataset has a line longer than {MAX_LINE_BYTES} bytes")
            if first:
                first = False
                if line.startswith(codecs.BOM_UTF8):
                    line = line[len(codecs.BOM_UTF8) :]
            if recorded is not None:
                recorded.append(line)
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(f"CSV line {reader.line_num + 1} is not valid UTF-8 text") from None
            yield text

    reader = csv.reader(text_lines(), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise InvalidInput(f"CSV header is malformed: {exc}") from None
    header_bytes = b"".join(recorded or [])
    recorded = None
    if not header:
        raise InvalidInput("CSV dataset has no header row (the first line must name the columns)")
    seen: set[str] = set()
    for name in header:
        check_column_name(name)
        if name in seen:
            raise InvalidInput(f"CSV header names column {name!r} twice")
        seen.add(name)

    def rows() -> Iterator[tuple[int, list[str]]]:
        try:
            for row in reader:
                if row:
                    yield reader.line_num, row
        except csv.Error as exc:
            raise InvalidInput(f"CSV line {reader.line_num} is malformed: {exc}") from None

    return header, header_bytes, rows()


def iter_csv_rows(lines: Iterable[bytes], first_line: int) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of the non-blank CSV rows in ``lines`` (whole lines of bytes, the
    first being line ``first_line`` of the file); InvalidInput names the line of bad UTF-8 or CSV."""

    def text_lines() -> Iterator[str]:
        for line in lines:
            try:
                yield line.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(f"CSV line {first_line + reader.line_num} is not valid UTF-8 text") from None

    reader = csv.reader(text_lines(), strict=True)
    try:
        for row in reader:
            if row:
                yield first_line - 1 + reader.line_num, row
    except csv.Error as exc:
        raise InvalidInput(f"CSV line {first_line - 1 + reader.line_num} is malformed: {exc}") from None


def _csv_rows(src: BinaryIO) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    header, _raw, rows = read_csv(src)
    return header, rows


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads_json_line(line: bytes | str) -> Any:
    """One JSON value, exactly: orjson (fast), but Python's json when the line holds a run of 19+
    digits, because orjson silently turns integers beyond 64 bits into floats. NaN and Infinity
    are refused. Raises ValueError or RecursionError."""
    data = line.encode("utf-8") if isinstance(line, str) else line
    if _LONG_DIGITS_RE.search(data):
        return json.loads(data, parse_constant=_reject_constant)
    return orjson.loads(data)


def _jsonl_objects(src: BinaryIO) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(iter_lines(src), start=1):
        if not line.strip():
            continue
        try:
            obj = loads_json_line(line)
        except (ValueError, RecursionError):
            raise InvalidInput(f"JSON Lines line {number} is not valid JSON") from None
        if not isinstance(obj, dict):
            raise InvalidInput(f"JSON Lines line {number} is not a JSON object")
        yield number, obj


def iter_records(
    src: BinaryIO, fmt: str, schema: Schema, columns: Sequence[str] | None = None
) -> Iterator[dict[str, Value]]:
    """Typed rows of the dataset read from ``src``, restricted to ``columns`` (default: every
    non-personal column). A value that does not fit its column's kind raises InvalidInput naming
    the line; a column missing from a row reads as None."""
    fmt = check_format(fmt)
    wanted = list(columns) if columns is not None else [c.name for c in schema.columns if c.kind != KIND_PERSONAL]
    kinds: dict[str, str] = {}
    for name in wanted:
        column = schema.get_column(name)
        if column is None:
            raise InvalidInput(f"column {name!r} is not in the dataset schema")
        kinds[name] = column.kind
    if fmt == FORMAT_CSV:
        header, rows = _csv_rows(src)
        index = {name: i for i, name in enumerate(header)}
        missing = [name for name in wanted if name not in index]
        if missing:
            raise InvalidInput(f"CSV header lacks schema columns {missing}")
        plan = [(name, kinds[name], index[name]) for name in wanted]
        width = len(header)
        for line, row in rows:
            if len(row) != width:
                raise InvalidInput(f"CSV line {line} has {len(row)} fields; the header has {width}")
            try:
                yield {name: parse_value(kind, row[i]) for name, kind, i in plan}
            except InvalidInput as exc:
                raise InvalidInput(f"CSV line {line}: {exc.message}") from None
    else:
        for line, obj in _jsonl_objects(src):
            try:
                yield {name: parse_value(kinds[name], obj.get(name)) for name in wanted}
            except InvalidInput as exc:
                raise InvalidInput(f"JSON Lines line {line}: {exc.message}") from None


# --------------------------------------------------------------------------- content hash


def hash_stream(src: BinaryIO) -> tuple[int, bytes]:
    """(number of bytes, Keccak-256) of everything readable from ``src``, read in 1 MiB blocks."""
    hasher = new_keccak256()
    total = 0
    while True:
        block = src.read(READ_BLOCK)
        if not block:
            return total, hasher.digest()
        hasher.update(block)
        total += len(block)


def compute_content_hash(path: Path | str) -> bytes:
    """Keccak-256 of the raw bytes of the dataset file at ``path`` (its on-chain content hash)."""
    with open_dataset(path) as src:
        return hash_stream(src)[1]


def iter_file_blocks(src: BinaryIO, block_size: int = READ_BLOCK) -> Iterator[bytes]:
    """``src`` as consecutive blocks of at most ``block_size`` bytes."""
    while True:
        block = src.read(block_size)
        if not block:
            return
        yield block


__all__ = [
    "Column",
    "FORMATS",
    "KINDS",
    "Schema",
    "Value",
    "canonical_json",
    "check_format",
    "compute_content_hash",
    "hash_stream",
    "infer_schema",
    "iter_csv_rows",
    "iter_records",
    "load_schema",
    "mark_personal",
    "parse_value",
    "validate_schema",
    "with_min_group",
]
