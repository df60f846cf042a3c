"""Keyed pseudonyms and the read / read_identified transform of CSV and JSON Lines datasets."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import random
import re
from pathlib import Path

import pytest

from chainshare.crypto.hashing import keccak256
from chainshare.errors import InvalidInput
from chainshare.sharing.pseudonym import (
    Pseudonymizer,
    derive_pseudonym_key,
    is_pseudonym,
    pseudonymize,
    transform_file,
    transform_rows,
)
from chainshare.sharing.schema import validate_schema

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
PSEUDONYM_RE = re.compile(r"ps_[0-9a-f]{32}")

SCHEMA = validate_schema(
    {
        "columns": [
            {"name": "citizen_id", "kind": "personal"},
            {"name": "name", "kind": "personal"},
            {"name": "district", "kind": "string"},
            {"name": "age", "kind": "integer"},
        ],
        "min_group": 5,
    }
)

CSV_TEXT = (
    "citizen_id,name,district,age\r\n"
    '110101,"Li, Wei",north,34\r\n'
    '110102,"Zhang\nSan",south,51\r\n'
    "110101,Li Wei,north,34\r\n"
    ",,east,\r\n"
)


def test_pseudonyms_are_stable_and_well_formed() -> None:
    first = pseudonymize("110101", KEY)
    assert PSEUDONYM_RE.fullmatch(first) and is_pseudonym(first)
    assert pseudonymize("110101", KEY) == first
    assert pseudonymize("110101", bytes(KEY)) == first == Pseudonymizer(KEY).text("110101")


def _reference_pseudonym(value: bytes, key: bytes = KEY) -> bytes:
    """An independent reference (the standard library's HMAC, pycryptodome's CMAC), so other
    implementations can match it: AES-256-CMAC under HMAC-SHA256(key, the v3 domain)."""
    from Crypto.Cipher import AES
    from Crypto.Hash import CMAC

    mac_key = hmac.new(key, b"chainshare/pseudonym/v3\x00", hashlib.sha256).digest()
    return b"ps_" + CMAC.new(mac_key, value, ciphermod=AES).hexdigest().encode()


def test_pseudonym_is_aes_cmac_under_a_mac_key_derived_from_the_pseudonym_key() -> None:
    assert pseudonymize("张三", KEY) == _reference_pseudonym("张三".encode()).decode()
    v2 = hmac.new(KEY, b"chainshare/pseudonym/v2\x00" + "张三".encode(), hashlib.sha256).digest()
    assert pseudonymize("张三", KEY) != "ps_" + v2[:16].hex()  # the construction changed: so did the domain


def test_a_column_batch_gives_each_value_its_own_pseudonym() -> None:
    # Every length class of the batch (1..16 AES blocks, partial and full last blocks), values longer
    # than the batch takes (MACed one by one), empty values (kept empty) and repeats, in one column.
    rng = random.Random(7)
    values = [bytes(rng.randrange(256) for _ in range(n)) for n in [*range(0, 300), 15, 16, 17, 256, 257, 1000]]
    values += values[:40]
    p = Pseudonymizer(KEY)
    assert p.column(values) == [_reference_pseudonym(v) if v else b"" for v in values]
    assert p.column([b"110101"]) == [p.text("110101").encode()]
    long_only = [v * 300 for v in (b"a", b"b", b"a")]  # no value the batch takes
    assert p.column(long_only) == [_reference_pseudonym(v) for v in long_only]


def test_pseudonym_keys_are_hkdf_of_the_owner_secret_per_owner_grantee_and_dataset() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    from chainshare import codec

    secret = b"s" * 32
    reference = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"chainshare/pseudonym-key/v2",
                     info=codec.encode(["chainshare/pseudonym-key/v2", "agency1", "agency2", 7])).derive(secret)
    assert derive_pseudonym_key(secret, "agency1", "agency2", 7) == reference
    keys = {derive_pseudonym_key(secret, "agency1", grantee, ds) for grantee in ("agency2", "agency3")
            for ds in (7, 8)}
    keys.add(derive_pseudonym_key(b"t" * 32, "agency1", "agency2", 7))  # another owner's secret
    assert len(keys) == 5
    assert secret not in keys and all(len(k) == 32 for k in keys)
    # Two grantees of the same dataset get unrelated pseudonyms for the same person.
    two = [pseudonymize("110101", derive_pseudonym_key(secret, "agency1", g, 7)) for g in ("agency2", "agency3")]
    assert two[0] != two[1]


@pytest.mark.parametrize("args", [(b"short", "a", "b", 1), (b"s" * 32, "", "b", 1), (b"s" * 32, "a", "", 1),
                                  (b"s" * 32, "a", "b", 0), (b"s" * 32, "a", "b", True)])
def test_a_pseudonym_key_needs_a_secret_two_agencies_and_a_dataset(args: tuple[object, ...]) -> None:
    with pytest.raises(InvalidInput):
        derive_pseudonym_key(*args)  # type: ignore[arg-type]


def test_pseudonyms_are_distinct_per_value_and_per_key() -> None:
    values = [f"{i:06d}" for i in range(2000)]
    assert len({pseudonymize(v, KEY) for v in values}) == len(values)
    assert pseudonymize("110101", KEY) != pseudonymize("110101", OTHER_KEY)
    assert "110101" not in pseudonymize("110101", KEY)


def test_pseudonym_key_must_be_long_enough() -> None:
    with pytest.raises(InvalidInput, match="at least 32"):
        pseudonymize("x", b"short")
    with pytest.raises(InvalidInput):
        pseudonymize(110101, KEY)  # type: ignore[arg-type]


def test_numbers_and_their_text_share_a_pseudonym_and_missing_values_stay_missing() -> None:
    p = Pseudonymizer(KEY)
    assert p.value(110101) == p.value("110101") == pseudonymize("110101", KEY)
    assert p.value(None) is None and p.value("") == ""
    assert p.value(True) == pseudonymize("true", KEY)


def test_transform_rows_hides_personal_and_undeclared_columns_for_read_only() -> None:
    rows = [{"citizen_id": "110101", "name": "Li", "district": "north", "age": 34, "secret": "x"}]
    read = next(transform_rows(rows, SCHEMA, "read", KEY))
    assert read["citizen_id"] == pseudonymize("110101", KEY)
    assert read["name"] == pseudonymize("Li", KEY)
    assert read["secret"] == pseudonymize("x", KEY)  # never classified: fail closed
    assert (read["district"], read["age"]) == ("north", 34)
    assert next(transform_rows(rows, SCHEMA, "read_identified", None)) == rows[0]


def test_unknown_action_or_missing_key_is_refused() -> None:
    with pytest.raises(InvalidInput, match="unknown delivery action"):
        list(transform_rows([], SCHEMA, "compute", KEY))
    with pytest.raises(InvalidInput, match="pseudonym key"):
        list(transform_rows([{}], SCHEMA, "read", None))


def _transform(tmp_path: Path, text: str, fmt: str, action: str, schema: object = SCHEMA) -> bytes:
    src = tmp_path / f"data.{fmt}"
    src.write_bytes(text.encode("utf-8"))
    out = io.BytesIO()
    size, digest = transform_file(src, fmt, validate_schema(schema), action, KEY, out)
    assert (size, digest) == (len(out.getvalue()), keccak256(out.getvalue()))
    return out.getvalue()


def test_csv_read_pseudonymizes_personal_columns_and_keeps_the_rest(tmp_path: Path) -> None:
    out = _transform(tmp_path, CSV_TEXT, "csv", "read")
    rows = list(csv.reader(io.StringIO(out.decode("utf-8"), newline="")))
    assert rows[0] == ["citizen_id", "name", "district", "age"]
    assert rows[1] == [pseudonymize("110101", KEY), pseudonymize("Li, Wei", KEY), "north", "34"]
    assert rows[2] == [pseudonymize("110102", KEY), pseudonymize("Zhang\nSan", KEY), "south", "51"]
    assert rows[3][0] == rows[1][0]  # same person, same pseudonym
    assert rows[4] == ["", "", "east", ""]
    assert b"110101" not in out and b"Li, Wei" not in out
    assert out.endswith(b"\r\n")  # the original line ending is kept


def test_csv_read_identified_and_non_personal_read_pass_bytes_through(tmp_path: Path) -> None:
    assert _transform(tmp_path, CSV_TEXT, "csv", "read_identified") == CSV_TEXT.encode()
    plain = {"columns": [{"name": n, "kind": "string"} for n in ("citizen_id", "name", "district", "age")]}
    assert _transform(tmp_path, CSV_TEXT, "csv", "read", plain) == CSV_TEXT.encode()


def test_csv_columns_missing_from_the_schema_and_extra_fields_are_hidden(tmp_path: Path) -> None:
    schema = {"columns": [{"name": "district", "kind": "string"}]}
    out = _transform(tmp_path, "district,ssn\nnorth,123-45\nsouth,999,extra\n", "csv", "read", schema)
    rows = list(csv.reader(io.StringIO(out.decode(), newline="")))
    assert rows[1] == ["north", pseudonymize("123-45", KEY)]
    assert rows[2] == ["south", pseudonymize("999", KEY), pseudonymize("extra", KEY)]


def test_jsonl_read_rewrites_only_lines_with_personal_keys(tmp_path: Path) -> None:
    lines = [
        '{"citizen_id": "110101", "name": "Li", "district": "north", "age": 34}',
        '{"district": "south",   "age": 51}',
        '{"citizen_id": 110102, "district": "east", "big": 123456789012345678901234567890}',
        "",
    ]
    out = _transform(tmp_path, "\n".join(lines) + "\n", "jsonl", "read").decode().split("\n")
    first = json.loads(out[0])
    assert first == {
        "citizen_id": pseudonymize("110101", KEY),
        "name": pseudonymize("Li", KEY),
        "district": "north",
        "age": 34,
    }
    assert out[1] == lines[1]  # nothing personal: byte for byte
    third = json.loads(out[2])
    assert third["citizen_id"] == pseudonymize("110102", KEY)
    assert third["big"] == pseudonymize("123456789012345678901234567890", KEY)  # undeclared key
    assert _transform(tmp_path, "\n".join(lines) + "\n", "jsonl", "read_identified").decode().split("\n") == [
        *lines,
        "",
    ]


def test_malformed_jsonl_is_refused_with_its_line_number(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="line 2 is not valid JSON"):
        _transform(tmp_path, '{"age": 1}\n{oops\n', "jsonl", "read")
    with pytest.raises(InvalidInput, match="line 1 is not a JSON object"):
        _transform(tmp_path, "[1, 2]\n", "jsonl", "read")
    with pytest.raises(InvalidInput, match="not valid JSON"):
        _transform(tmp_path, '{"age": NaN}\n', "jsonl", "read")


def _reference_csv_read(text: str, schema: object) -> bytes:
    """What a ``read`` delivery of a CSV must be, computed row by row with the csv module."""
    rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    header = rows[0]
    valid = validate_schema(schema)
    hidden = [i for i, name in enumerate(header) if valid.is_personal(name)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n" if text.split("\n", 1)[0].endswith("\r") else "\n")
    writer.writerow(header)
    for row in rows[1:]:
        if not row:
            continue
        row = [pseudonymize(v, KEY) if v and (i in hidden or i >= len(header)) else v for i, v in enumerate(row)]
        writer.writerow(row)
    return out.getvalue().encode("utf-8")


TWO_PERSONAL = {"columns": [{"name": "district", "kind": "string"}, {"name": "citizen_id", "kind": "personal"},
                            {"name": "age", "kind": "integer"}, {"name": "name", "kind": "personal"}]}


@pytest.mark.parametrize("body", [
    # plain rows (the block path), repeated and empty identifiers, blank lines, no final newline
    "".join(f"north,CN{i % 700:05d},{i % 90},N{i % 13}\n" for i in range(3000)) + "\nsouth,,7,\n\nwest,CN1,8,x",
    # ragged rows: fewer fields, and fields beyond the header (undeclared, so hidden)
    "north,CN1\nsouth,CN2,3,Li,extra,more\n,,,\n",
    # a quoted field far into the file: the rest is read by the csv module, same result
    "".join(f"east,ID{i},{i},x\n" for i in range(2000)) + 'west,"CN, 9",4,"Li\nWei"\nnorth,CN3,5,y\n',
    # non-ASCII identifiers
    "north,张三,34,王五\nsouth,Zoë,51,José\n",
    # identifiers of every length class of the column batch, and beyond it
    "".join(f"d{n % 3},{'C' * n},{n},{'张' * (n % 120)}\n" for n in range(1, 300)),
    # one column wide rows around empty and non-empty personal fields
    "".join(f"north,{'' if i % 3 else i},{i},\n" for i in range(50)),
])
def test_csv_read_block_path_matches_the_row_by_row_reference(tmp_path: Path, body: str) -> None:
    for text in ("district,citizen_id,age,name\n" + body,
                 "district,citizen_id,age,name\r\n" + body.replace("\n", "\r\n")):
        assert _transform(tmp_path, text, "csv", "read", TWO_PERSONAL) == _reference_csv_read(text, TWO_PERSONAL)


def test_csv_read_of_a_single_personal_column_matches_the_reference(tmp_path: Path) -> None:
    schema = {"columns": [{"name": "citizen_id", "kind": "personal"}]}
    for body in ("".join(f"CN{i}\n" for i in range(100)), "CN1\n\nCN2\nCN1"):
        text = "citizen_id\n" + body
        assert _transform(tmp_path, text, "csv", "read", schema) == _reference_csv_read(text, schema)


def test_csv_read_of_crlf_lines_keeps_them_and_matches_the_reference(tmp_path: Path) -> None:
    # CRLF rows take the block path; a bare LF, a blank line or a ragged row among them hands the
    # rest to the csv module, which writes every row with the header's CRLF.
    rows = "".join(f"north,CN{i},{i},N{i}\r\n" for i in range(3000))
    for body in (rows, rows + "south,CN1,2,x\nwest,CN2,3,y\r\n", rows + "\r\neast,CN3,4,z\r\n",
                 rows + "east,CN4\r\n", rows + "east,CN5,5,z"):
        text = "district,citizen_id,age,name\r\n" + body
        out = _transform(tmp_path, text, "csv", "read", TWO_PERSONAL)
        assert out == _reference_csv_read(text, TWO_PERSONAL)
        assert out.count(b"\r\n") == out.count(b"\n")


def test_csv_read_crossing_read_blocks_matches_the_reference(tmp_path: Path) -> None:
    # > 1 MiB (schema.READ_BLOCK): block boundaries fall inside lines, which are completed first.
    body = "".join(f"d{i % 4},CN{i:09d},{i % 90},{'n' * (i % 17)}\n" for i in range(60_000))
    text = "district,citizen_id,age,name\n" + body
    assert len(text) > 1 << 20
    assert _transform(tmp_path, text, "csv", "read", TWO_PERSONAL) == _reference_csv_read(text, TWO_PERSONAL)


def test_csv_read_refuses_bad_utf8_and_bad_quoting_with_their_line_numbers(tmp_path: Path) -> None:
    src = tmp_path / "bad.csv"
    out = io.BytesIO()
    src.write_bytes(b"district,citizen_id,age,name\nnorth,CN1,3,x\nsouth,CN\xff2,4,y\n")
    with pytest.raises(InvalidInput, match="CSV line 3 is not valid UTF-8"):
        transform_file(src, "csv", validate_schema(TWO_PERSONAL), "read", KEY, out)
    src.write_bytes(b'district,citizen_id,age,name\nnorth,CN1,3,x\nsouth,"CN2"x,4,y\n')
    with pytest.raises(InvalidInput, match="CSV line 3 is malformed"):
        transform_file(src, "csv", validate_schema(TWO_PERSONAL), "read", KEY, out)
