"""Keyed pseudonyms for personal columns, and the row transform applied to a ``read`` delivery.

A pseudonym is HMAC-SHA256 under a key that only the owner's node can compute:
``derive_pseudonym_key(owner_secret, owner, grantee, dataset_id)`` (HKDF-SHA256) from the owner
node's own random pseudonym secret (``vault.load_or_create_pseudonym_secret``: it lives sealed in
the owner's vault and never leaves it). So:

- the owner's node applies the pseudonymization BEFORE a ``read`` delivery is encrypted; the key
  never travels, and the grantee's node holds nothing that recomputes (or brute-forces) the
  pseudonyms it receives, however small the identifier space;
- two grantees of the same dataset, and one grantee of two datasets, receive unrelated pseudonyms
  for the same person (the key is per (owner, grantee, dataset)); the same grantee gets the same
  pseudonyms from every version of one dataset, so it can follow updates;
- linking a person across agencies or datasets is not a side effect of ``read``: it needs the raw
  identifiers (``read_identified``, a separately granted and recorded action).

A ``read`` delivery carries personal columns as pseudonyms; ``read_identified`` carries them raw.
Fail closed: under ``read`` a column the schema does not declare (a JSON key or CSV header the
owner never classified, or a CSV field beyond the header) is pseudonymized as if it were personal.
"""

from __future__ import annotations

import csv
import io
import json
import re
from binascii import hexlify
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from chainshare import codec
from chainshare.crypto.envelope import new_keccak256
from chainshare.errors import InvalidInput
from chainshare.sharing.schema import (
    FORMAT_CSV,
    KIND_PERSONAL,
    MAX_LINE_BYTES,
    READ_BLOCK,
    Schema,
    canonical_json,
    check_format,
    iter_csv_rows,
    iter_file_blocks,
    iter_lines,
    loads_json_line,
    open_dataset,
    read_csv,
)

ACTION_READ = "read"
ACTION_READ_IDENTIFIED = "read_identified"
DELIVERY_ACTIONS = (ACTION_READ, ACTION_READ_IDENTIFIED)

PSEUDONYM_PREFIX = "ps_"
PSEUDONYM_BYTES = 16
_PREFIX_BYTES = PSEUDONYM_PREFIX.encode("ascii")
MIN_KEY_LEN = 32
PSEUDONYM_KEY_LEN = 32
# Domain separation; v2: keys per (owner, grantee, dataset) (v1 used one consortium-wide key).
_DOMAIN = b"chainshare/pseudonym/v2\x00"
_KDF_SALT = b"chainshare/pseudonym-key/v2"
_CACHE_LIMIT = 16384
_PSEUDONYM_RE = re.compile(r"ps_[0-9a-f]{32}")
_OUTPUT_BLOCK = 256 * 1024


def check_pseudonym_key(key: object) -> bytes:
    if not isinstance(key, (bytes, bytearray)) or len(key) < MIN_KEY_LEN:
        raise InvalidInput(f"a pseudonym key (or the owner's pseudonym secret) must be at least {MIN_KEY_LEN} "
                           "random bytes")
    return bytes(key)


def derive_pseudonym_key(owner_secret: bytes, owner: str, grantee: str, dataset_id: int) -> bytes:
    """The key of the pseudonyms that ``grantee`` receives from dataset ``dataset_id`` of agency
    ``owner``: HKDF-SHA256 of the owner node's secret, bound to the three. Without the secret, keys
    of different (grantee, dataset) pairs are independent, and none reveals the secret."""
    if not isinstance(owner, str) or not isinstance(grantee, str) or not owner or not grantee:
        raise InvalidInput("a pseudonym key is derived for a named owner agency and grantee agency")
    if isinstance(dataset_id, bool) or not isinstance(dataset_id, int) or dataset_id < 1:
        raise InvalidInput("a pseudonym key is derived for a dataset id >= 1")
    info = codec.encode(["chainshare/pseudonym-key/v2", owner, grantee, dataset_id])
    return HKDF(algorithm=hashes.SHA256(), length=PSEUDONYM_KEY_LEN, salt=_KDF_SALT,
                info=info).derive(check_pseudonym_key(owner_secret))


def pseudonymize(value: str, pseudonym_key: bytes) -> str:
    """``ps_`` + 32 hex digits (the first 128 bits of HMAC-SHA256 of the UTF-8 value): equal for
    equal values under the same key, unlinkable to the value without the key. The value is used
    exactly as given: normalise identifiers (case, spaces) before calling if the domain needs it."""
    if not isinstance(value, str):
        raise InvalidInput(f"a pseudonymized value must be a string, not {type(value).__name__}")
    return Pseudonymizer(pseudonym_key).text(value)


def is_pseudonym(value: object) -> bool:
    return isinstance(value, str) and _PSEUDONYM_RE.fullmatch(value) is not None


class Pseudonymizer:
    """``pseudonymize`` for any cell value, keyed once, with a small bounded cache (identifiers
    repeat across rows)."""

    def __init__(self, pseudonym_key: bytes) -> None:
        # The key and the domain prefix are absorbed once; each value costs one copy + update.
        self._mac = hmac.HMAC(check_pseudonym_key(pseudonym_key), hashes.SHA256())
        self._mac.update(_DOMAIN)
        self._cache: dict[str, str] = {}
        self._bytes_cache: dict[bytes, bytes] = {}

    def text(self, value: str) -> str:
        cached = self._cache.get(value)
        if cached is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            mac = self._mac.copy()
            mac.update(value.encode("utf-8", "surrogatepass"))
            cached = self._cache[value] = PSEUDONYM_PREFIX + mac.finalize()[:PSEUDONYM_BYTES].hex()
        return cached

    def column(self, values: Iterable[bytes]) -> list[bytes]:
        """``text`` of each UTF-8 value, as UTF-8; empty values stay empty. One loop per column
        (a repeated value costs one dict lookup; each new one, one MAC copy, update and finalize)."""
        cache = self._bytes_cache
        get = cache.get
        copy = self._mac.copy
        out: list[bytes] = []
        append = out.append
        for value in values:
            pseudonym = get(value)
            if pseudonym is None:
                if not value:
                    append(value)
                    continue
                mac = copy()
                mac.update(value)
                pseudonym = _PREFIX_BYTES + hexlify(mac.finalize()[:PSEUDONYM_BYTES])
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                cache[value] = pseudonym
            append(pseudonym)
        return out

    def value(self, value: object) -> object:
        """None and "" stay as they are (a missing value identifies nobody); numbers and booleans
        are pseudonymized as their JSON text, so JSON 42 and CSV "42" give the same pseudonym."""
        if value is None or value == "":
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, bool):
            return self.text("true" if value else "false")
        if isinstance(value, (int, float)):
            return self.text(repr(value))
        return self.text(canonical_json(value).decode("utf-8"))


def check_action(action: str) -> str:
    if action not in DELIVERY_ACTIONS:
        raise InvalidInput(
            f"unknown delivery action {action!r}: use 'read' (personal columns pseudonymized) "
            "or 'read_identified' (raw)"
        )
    return action


def transform_rows(
    rows: Iterable[Mapping[str, Any]], schema: Schema, action: str, pseudonym_key: bytes | None
) -> Iterator[dict[str, Any]]:
    """Each row as delivered under ``action``: personal (and undeclared) columns pseudonymized for
    ``read``, everything raw for ``read_identified``."""
    check_action(action)
    if action == ACTION_READ_IDENTIFIED:
        for row in rows:
            yield dict(row)
        return
    pseudonymizer = Pseudonymizer(_need_key(pseudonym_key))
    for row in rows:
        yield _hide(row, _plain_columns(schema), pseudonymizer)


def _plain_columns(schema: Schema) -> frozenset[str]:
    """The columns delivered as they are under ``read``: declared, and not personal."""
    return frozenset(c.name for c in schema.columns if c.kind != KIND_PERSONAL)


def _hide(row: Mapping[str, Any], plain: frozenset[str], pseudonymizer: Pseudonymizer) -> dict[str, Any]:
    value = pseudonymizer.value
    return {k: v if k in plain else value(v) for k, v in row.items()}


def _need_key(key: bytes | None) -> bytes:
    if key is None:
        raise InvalidInput("a 'read' delivery needs the pseudonym key of its (owner, grantee, dataset) to "
                           "pseudonymize personal columns (derive_pseudonym_key)")
    return check_pseudonym_key(key)


def transform_stream(
    src: BinaryIO, fmt: str, schema: Schema, action: str, pseudonym_key: bytes | None
) -> Iterator[bytes]:
    """The dataset read from ``src`` as delivered under ``action``, as a stream of byte blocks.
    ``read_identified`` passes the bytes through unchanged; ``read`` rewrites only what it must
    (CSV rows when a header column is personal or undeclared; JSON lines holding such a key) and
    passes everything else through byte for byte."""
    fmt = check_format(fmt)
    check_action(action)
    if action == ACTION_READ_IDENTIFIED:
        yield from iter_file_blocks(src)
        return
    pseudonymizer = Pseudonymizer(_need_key(pseudonym_key))
    if fmt == FORMAT_CSV:
        yield from _transform_csv(src, schema, pseudonymizer)
    else:
        yield from _transform_jsonl(src, schema, pseudonymizer)


def _transform_csv(src: BinaryIO, schema: Schema, pseudonymizer: Pseudonymizer) -> Iterator[bytes]:
    header, header_bytes, _rows = read_csv(src)
    hidden = [i for i, name in enumerate(header) if schema.is_personal(name)]
    if not hidden:
        # Nothing to hide in any named column: the original bytes are the delivery.
        yield header_bytes
        yield from iter_file_blocks(src)
        return
    terminator = "\r\n" if header_bytes.endswith(b"\r\n") else "\n"
    out = io.StringIO()
    csv.writer(out, lineterminator=terminator).writerow(header)
    yield out.getvalue().encode("utf-8")
    # read_csv's reader stopped right after the header: the body is read from src from here on.
    line = header_bytes.count(b"\n") + 1
    while terminator == "\n":
        block = src.read(READ_BLOCK)
        if not block:
            return
        if not block.endswith(b"\n"):
            block += _finish_line(src, len(block) - 1 - block.rfind(b"\n"))
        if _SLOW_CSV_BYTES.search(block) is not None or not _is_utf8(block):
            # Quotes, CR or NUL (or bad UTF-8: the csv path names its line): parse the rest properly.
            yield from _transform_csv_rows(_chain_lines(block, src), line, len(header), hidden, pseudonymizer,
                                           terminator)
            return
        yield _pseudonymize_plain_block(block, len(header), hidden, pseudonymizer)
        line += block.count(b"\n")
    yield from _transform_csv_rows(_chain_lines(b"", src), line, len(header), hidden, pseudonymizer, terminator)


_SLOW_CSV_BYTES = re.compile(rb'["\r\x00]')


def _is_utf8(block: bytes) -> bool:
    try:
        block.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _finish_line(src: BinaryIO, started: int) -> bytes:
    """The rest of a line of which ``started`` bytes were already read (bounded like iter_lines)."""
    rest = src.readline(MAX_LINE_BYTES + 1)
    if started + len(rest) > MAX_LINE_BYTES:
        raise InvalidInput(f"dataset has a line longer than {MAX_LINE_BYTES} bytes")
    return rest


def _chain_lines(block: bytes, src: BinaryIO) -> Iterator[bytes]:
    yield from block.splitlines(keepends=True)
    while line := src.readline(MAX_LINE_BYTES + 1):
        if len(line) > MAX_LINE_BYTES:
            raise InvalidInput(f"dataset has a line longer than {MAX_LINE_BYTES} bytes")
        yield line


def _pseudonymize_plain_block(block: bytes, width: int, hidden: list[int], pseudonymizer: Pseudonymizer) -> bytes:
    """A block of whole CSV lines with no quote, CR or NUL (so every field is the bytes between
    commas, exactly as the csv module would read and write it), personal fields replaced, blank
    lines dropped. Column-wise: each personal column is pseudonymized in one pass; a row is split
    only as far as its last personal field."""
    lines = [line for line in block.split(b"\n") if line]
    column = pseudonymizer.column
    commas = width - 1
    if not all(line.count(b",") == commas for line in lines):
        return _pseudonymize_ragged_lines(lines, width, hidden, pseudonymizer)
    last = hidden[-1]
    rows = [line.split(b",", last + 1) for line in lines]
    for i in hidden:
        for row, value in zip(rows, column([row[i] for row in rows]), strict=True):
            row[i] = value
    return b"\n".join(map(b",".join, rows)) + b"\n"


def _pseudonymize_ragged_lines(lines: list[bytes], width: int, hidden: list[int],
                               pseudonymizer: Pseudonymizer) -> bytes:
    """As ``_pseudonymize_plain_block`` for rows of any length: fields beyond the header are
    undeclared, so they are hidden too."""
    column = pseudonymizer.column
    rows = [line.split(b",") for line in lines]
    for row in rows:
        for i in hidden:
            if i < len(row):
                row[i] = column((row[i],))[0]
        if len(row) > width:
            row[width:] = column(row[width:])
    return b"\n".join(map(b",".join, rows)) + b"\n"


def _transform_csv_rows(lines: Iterator[bytes], first_line: int, width: int, hidden: list[int],
                        pseudonymizer: Pseudonymizer, terminator: str) -> Iterator[bytes]:
    text = pseudonymizer.text
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=terminator)
    for _line, row in iter_csv_rows(lines, first_line):
        for i in hidden:
            if i < len(row) and row[i]:
                row[i] = text(row[i])
        if len(row) > width:  # fields beyond the header are undeclared: hide them
            row[width:] = [text(v) if v else v for v in row[width:]]
        writer.writerow(row)
        if out.tell() >= _OUTPUT_BLOCK:
            yield out.getvalue().encode("utf-8")
            out.seek(0)
            out.truncate()
    if out.tell():
        yield out.getvalue().encode("utf-8")


def _dumps_line(obj: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError:  # integers beyond 64 bits
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def _transform_jsonl(src: BinaryIO, schema: Schema, pseudonymizer: Pseudonymizer) -> Iterator[bytes]:
    plain = _plain_columns(schema)
    batch: list[bytes] = []
    size = 0
    for number, line in enumerate(iter_lines(src), start=1):
        if line.strip():
            try:
                obj = loads_json_line(line)
            except (ValueError, RecursionError):
                raise InvalidInput(f"JSON Lines line {number} is not valid JSON") from None
            if not isinstance(obj, dict):
                raise InvalidInput(f"JSON Lines line {number} is not a JSON object")
            if not obj.keys() <= plain:
                line = _dumps_line(_hide(obj, plain, pseudonymizer))
        batch.append(line)
        size += len(line)
        if size >= _OUTPUT_BLOCK:
            yield b"".join(batch)
            batch.clear()
            size = 0
    if batch:
        yield b"".join(batch)


def transform_file(
    src_path: Path | str,
    fmt: str,
    schema: Schema,
    action: str,
    pseudonym_key: bytes | None,
    dst: BinaryIO,
) -> tuple[int, bytes]:
    """Write the dataset at ``src_path`` as delivered under ``action`` to ``dst``; returns the
    number of bytes written and their Keccak-256."""
    hasher = new_keccak256()
    total = 0
    with open_dataset(src_path) as src:
        for block in transform_stream(src, fmt, schema, action, pseudonym_key):
            hasher.update(block)
            total += len(block)
            dst.write(block)
    return total, hasher.digest()
