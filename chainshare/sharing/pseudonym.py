"""Keyed pseudonyms for personal columns, and the row transform applied to a ``read`` delivery.

A pseudonym is ``ps_`` + the 128-bit AES-256-CMAC (NIST SP 800-38B) of the value's UTF-8 bytes,
under a MAC key that only the owner's node can compute: HMAC-SHA256 of the v3 domain string under
the pseudonym key ``derive_pseudonym_key(owner_secret, owner, grantee, dataset_id)`` (HKDF-SHA256)
of the owner node's own random pseudonym secret (``vault.load_or_create_pseudonym_secret``: it lives
sealed in the owner's vault and never leaves it). So:

- the owner's node applies the pseudonymization BEFORE a ``read`` delivery is encrypted; the key
  never travels, and the grantee's node holds nothing that recomputes (or brute-forces) the
  pseudonyms it receives, however small the identifier space;
- two grantees of the same dataset, and one grantee of two datasets, receive unrelated pseudonyms
  for the same person (the key is per (owner, grantee, dataset)); the same grantee gets the same
  pseudonyms from every version of one dataset, so it can follow updates;
- linking a person across agencies or datasets is not a side effect of ``read``: it needs the raw
  identifiers (``read_identified``, a separately granted and recorded action).

Why CMAC (v3) instead of HMAC-SHA256 (v2): both are PRFs under a 256-bit secret key with 128-bit
output, so without the key a pseudonym says nothing about its value; CMAC's bound is the birthday
bound of AES's 128-bit block (an advantage of the order of 2^-40 after 2^44 blocks), far beyond
any dataset. What CMAC adds is speed: a CSV block's personal column is MACed with one AES-ECB call
per 16-byte block position (``Pseudonymizer.fields``: numpy gathers, pads and XORs the column;
the cipher runs in OpenSSL), instead of a Python-level HMAC per value.

A ``read`` delivery carries personal columns as pseudonyms; ``read_identified`` carries them raw.
Fail closed: under ``read`` a column the schema does not declare (a JSON key or CSV header the
owner never classified, or a CSV field beyond the header) is pseudonymized as if it were personal.
"""

from __future__ import annotations

import csv
import hmac as std_hmac
import io
import json
import re
from binascii import hexlify
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import orjson
from cryptography.hazmat.primitives import cmac, hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from numpy.typing import NDArray

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
_PSEUDONYM_LEN = len(_PREFIX_BYTES) + 2 * PSEUDONYM_BYTES
MIN_KEY_LEN = 32
PSEUDONYM_KEY_LEN = 32
# Domain separation of the MAC key; v3: AES-256-CMAC (v2: HMAC-SHA256 over this prefix and the
# value; v1 used one consortium-wide key). The key derivation per (owner, grantee, dataset) is v2.
_DOMAIN = b"chainshare/pseudonym/v3\x00"
_KDF_SALT = b"chainshare/pseudonym-key/v2"
_CACHE_LIMIT = 16384
_PSEUDONYM_RE = re.compile(r"ps_[0-9a-f]{32}")
_OUTPUT_BLOCK = 256 * 1024
_AES_BLOCK = 16
# Longer values are MACed one by one (the batch pads every value of a length class to its blocks).
_BATCH_MAX_BYTES = 256
_NEWLINE = ord("\n")
_COMMA = ord(",")
_CR = ord("\r")

U8 = NDArray[np.uint8]
Index = NDArray[np.int64]


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
    """``ps_`` + 32 hex digits (AES-256-CMAC of the UTF-8 value under the MAC key of
    ``pseudonym_key``): equal for equal values under the same key, unlinkable to the value without
    the key. The value is used exactly as given: normalise identifiers (case, spaces) before calling
    if the domain needs it."""
    if not isinstance(value, str):
        raise InvalidInput(f"a pseudonymized value must be a string, not {type(value).__name__}")
    return Pseudonymizer(pseudonym_key).text(value)


def is_pseudonym(value: object) -> bool:
    return isinstance(value, str) and _PSEUDONYM_RE.fullmatch(value) is not None


def _double(block: int) -> int:
    """Doubling in GF(2^128) (SP 800-38B subkey generation)."""
    block <<= 1
    return (block ^ 0x87) & ((1 << 128) - 1) if block >> 128 else block


class Pseudonymizer:
    """``pseudonymize`` for any cell value, keyed once: one value at a time (``text``, ``value``;
    a small bounded cache, since identifiers repeat across rows), or a whole column of a block at
    once (``fields``, ``column``). Both give the same pseudonym for the same bytes."""

    def __init__(self, pseudonym_key: bytes) -> None:
        mac_key = std_hmac.digest(check_pseudonym_key(pseudonym_key), _DOMAIN, "sha256")
        self._cmac = cmac.CMAC(algorithms.AES(mac_key))
        # ECB is the raw block cipher here: the CMAC chaining and padding are done on whole columns.
        self._ecb = Cipher(algorithms.AES(mac_key), modes.ECB()).encryptor()
        k1 = _double(int.from_bytes(self._ecb.update(bytes(_AES_BLOCK)), "big"))
        self._subkeys = np.frombuffer(k1.to_bytes(16, "big") + _double(k1).to_bytes(16, "big"),
                                      np.uint8).reshape(2, _AES_BLOCK)
        self._cache: dict[str, str] = {}

    def _tag(self, data: bytes) -> bytes:
        mac = self._cmac.copy()
        mac.update(data)
        return mac.finalize()

    def text(self, value: str) -> str:
        cached = self._cache.get(value)
        if cached is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            cached = self._cache[value] = PSEUDONYM_PREFIX + self._tag(value.encode("utf-8", "surrogatepass")).hex()
        return cached

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

    def fields(self, data: U8, starts: Index, lengths: Index) -> U8:
        """The pseudonyms (``ps_`` + hex, ASCII, one row of 35 bytes each) of the values
        ``data[s:s + n]`` for each (s, n) of ``starts`` and ``lengths`` (n >= 1). Values of up to
        ``_BATCH_MAX_BYTES`` are MACed a length class at a time: one AES-ECB call per block position."""
        count = len(starts)
        blocks = np.maximum((lengths + (_AES_BLOCK - 1)) // _AES_BLOCK, 1)
        blocks[lengths > _BATCH_MAX_BYTES] = 0  # MACed one by one below
        classes = np.flatnonzero(np.bincount(blocks)).tolist()
        padded = np.concatenate((data, np.zeros(_BATCH_MAX_BYTES, np.uint8)))
        if len(classes) == 1 and classes[0]:  # one class (as identifiers of one format are)
            tags = self._cmac_class(padded, starts, lengths, int(blocks[0]))
        else:
            tags = np.empty((count, _AES_BLOCK), np.uint8)
            for nblocks in classes:
                rows = np.flatnonzero(blocks == nblocks)
                if nblocks:
                    tags[rows] = self._cmac_class(padded, starts[rows], lengths[rows], nblocks)
                    continue
                for i in rows.tolist():
                    start = int(starts[i])
                    tags[i] = np.frombuffer(self._tag(data[start:start + int(lengths[i])].tobytes()), np.uint8)
        hex_digits = np.frombuffer(hexlify(tags.tobytes()), np.uint8).reshape(count, 2 * PSEUDONYM_BYTES)
        out = np.empty((count, _PSEUDONYM_LEN), np.uint8)
        out[:, :len(_PREFIX_BYTES)] = np.frombuffer(_PREFIX_BYTES, np.uint8)
        out[:, len(_PREFIX_BYTES):] = hex_digits
        return out

    def _cmac_class(self, padded: U8, starts: Index, lengths: Index, nblocks: int) -> U8:
        """CMAC of values that all span ``nblocks`` AES blocks (``padded``: the data and at least
        ``nblocks`` * 16 zero bytes after it)."""
        width = nblocks * _AES_BLOCK
        message = np.lib.stride_tricks.sliding_window_view(padded, width)[starts]  # a copy, a row per value
        shortest, longest = int(lengths.min()), int(lengths.max())
        if shortest == longest:  # one length: plain slices
            message[:, shortest:] = 0
            if shortest < width:
                message[:, shortest] = 0x80
        else:
            message[np.arange(width) >= lengths[:, None]] = 0
            partial = np.flatnonzero(lengths < width)
            message[partial, lengths[partial]] = 0x80
        # The last block: padded with 10* and XOR K2, or (complete) XOR K1.
        if longest < width:
            message[:, width - _AES_BLOCK:] ^= self._subkeys[1]
        elif shortest == width:
            message[:, width - _AES_BLOCK:] ^= self._subkeys[0]
        else:
            message[:, width - _AES_BLOCK:] ^= self._subkeys[(lengths < width).astype(np.intp)]
        state = message[:, :_AES_BLOCK]
        for k in range(nblocks):
            if k:
                state = state ^ message[:, k * _AES_BLOCK:(k + 1) * _AES_BLOCK]
            state = np.frombuffer(self._ecb.update(state.tobytes()), np.uint8).reshape(-1, _AES_BLOCK)
        return state

    def column(self, values: Sequence[bytes]) -> list[bytes]:
        """The pseudonym of each UTF-8 value, as UTF-8; empty values stay empty."""
        present = [i for i, v in enumerate(values) if v]
        out = list(values)
        if present:
            lengths = np.array([len(values[i]) for i in present], np.int64)
            starts = np.cumsum(lengths) - lengths
            blob = self.fields(np.frombuffer(b"".join(values[i] for i in present), np.uint8), starts,
                               lengths).tobytes()
            for k, i in enumerate(present):
                out[i] = blob[k * _PSEUDONYM_LEN:(k + 1) * _PSEUDONYM_LEN]
        return out


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
    crlf = terminator == "\r\n"
    while True:
        block = src.read(READ_BLOCK)
        if not block:
            return
        if not block.endswith(b"\n"):
            block += _finish_line(src, len(block) - 1 - block.rfind(b"\n"))
        rewritten = None if _needs_csv_module(block, crlf) else _pseudonymize_plain_block(
            block, len(header), hidden, pseudonymizer, crlf)
        if rewritten is None:
            # Quotes, a CR not ending a line, NUL, bad UTF-8 (the csv path names its line), or rows
            # the block path does not write as the csv module would: parse the rest properly.
            yield from _transform_csv_rows(_chain_lines(block, src), line, len(header), hidden, pseudonymizer,
                                           terminator)
            return
        yield rewritten
        line += block.count(b"\n")


def _needs_csv_module(block: bytes, crlf: bool) -> bool:
    """True unless every field of ``block`` is the UTF-8 bytes between commas (no quote or NUL;
    a CR only in the CRLF that ends a line, and only when the header's line ends so)."""
    if b'"' in block or b"\x00" in block:
        return True
    if crlf:
        if block.count(b"\r") != block.count(b"\r\n"):
            return True
    elif b"\r" in block:
        return True
    if block.isascii():
        return False
    try:
        block.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


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


def _pseudonymize_plain_block(block: bytes, width: int, hidden: list[int], pseudonymizer: Pseudonymizer,
                              crlf: bool = False) -> bytes | None:
    """A block of whole CSV lines with no quote or NUL and CR only in line ends (so every field is
    the bytes between commas, exactly as the csv module would read and write it), personal fields
    replaced, blank lines dropped; None when the csv module must write it (CRLF lines that are
    blank, ragged or end in a bare LF). Vectorised when every row has the header's width: the field
    bounds come from the positions of commas and line ends, each personal column is MACed in one
    batch (``Pseudonymizer.fields``), and the output is the input with those fields swapped in."""
    end = b"\r\n" if crlf else b"\n"
    if not block.endswith(end):
        if block.endswith(b"\n"):  # a bare LF in a CRLF file: the csv module writes CRLF
            return None
        block += end
    data = np.frombuffer(block, np.uint8)
    newlines = np.flatnonzero(data == _NEWLINE)
    line_starts = np.concatenate((np.zeros(1, np.int64), newlines[:-1] + 1))
    line_ends = newlines - 1 if crlf else newlines
    if crlf and (data[line_ends] != _CR).any():
        return None
    commas = np.flatnonzero(data == _COMMA)
    rows = len(line_ends)
    ragged = bool((line_ends == line_starts).any()) or len(commas) != rows * (width - 1)
    if not ragged:
        grid = commas.reshape(rows, width - 1)
        # Commas are sorted and as many as rows x (width - 1): each row has its share iff the
        # share lies inside the row.
        ragged = width > 1 and bool((grid[:, 0] < line_starts).any() or (grid[:, -1] > line_ends).any())
    if ragged:
        return None if crlf else _pseudonymize_ragged_lines(block, width, hidden, pseudonymizer)
    starts = np.stack([line_starts if i == 0 else grid[:, i - 1] + 1 for i in hidden], axis=1).ravel()
    ends = np.stack([line_ends if i == width - 1 else grid[:, i] for i in hidden], axis=1).ravel()
    present = ends > starts  # an empty field stays empty
    starts, ends = starts[present], ends[present]
    if not len(starts):
        return block
    return _swap_fields(data, starts, ends, pseudonymizer.fields(data, starts, ends - starts))


def _swap_fields(data: U8, starts: Index, ends: Index, pseudonyms: U8) -> bytes:
    """``data`` with each field [start, end) (sorted, disjoint, not adjacent) replaced by its
    pseudonym (one row of ``pseudonyms`` each)."""
    count = len(starts)
    # The input is kept segment 0, field 0, kept segment 1, ..., field n-1, kept segment n; the
    # output the same with each field's bytes replaced: two masks, each one np.repeat.
    lengths = np.empty(2 * count + 1, np.int64)
    lengths[0] = starts[0]
    lengths[2:-1:2] = starts[1:] - ends[:-1]
    lengths[-1] = len(data) - ends[-1]
    lengths[1::2] = ends - starts
    is_field = np.zeros(2 * count + 1, np.bool_)
    is_field[1::2] = True
    kept = np.repeat(~is_field, lengths)
    lengths[1::2] = _PSEUDONYM_LEN
    is_pseudonym = np.repeat(is_field, lengths)
    out = np.empty(len(is_pseudonym), np.uint8)
    out[is_pseudonym] = pseudonyms.ravel()
    out[~is_pseudonym] = data[kept]
    return out.tobytes()


def _pseudonymize_ragged_lines(block: bytes, width: int, hidden: list[int], pseudonymizer: Pseudonymizer) -> bytes:
    """As ``_pseudonymize_plain_block`` for rows of any length (fields beyond the header are
    undeclared, so they are hidden too) and blank lines (dropped)."""
    rows = [line.split(b",") for line in block.split(b"\n") if line]
    places = [(row, i) for row in rows for i in range(len(row)) if i >= width or i in hidden]
    for (row, i), pseudonym in zip(places, pseudonymizer.column([row[i] for row, i in places]), strict=True):
        row[i] = pseudonym
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
