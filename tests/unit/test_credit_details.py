"""A person record's details as the reader checks them against the chain: the row of the latest version
stored whose summary hashes to the on-chain summary hash, and nothing else."""

from __future__ import annotations

import pytest

from chainshare.credit.details import (
    DETAILS_SCHEMA,
    DetailsMismatch,
    check_details,
    details_title,
    encode_details,
    find_details_dataset,
)
from chainshare.crypto.hashing import keccak256
from chainshare.errors import InvalidInput, NotFound

HANDLE = "P-" + "ab" * 32


def _record(version: int, summary: str) -> dict[str, object]:
    return {"id": 7, "version": version, "summaryHash": "0x" + keccak256(summary.encode()).hex()}


def test_details_match_the_on_chain_hash_of_the_current_version() -> None:
    content = encode_details(7, 1, HANDLE, "Fined") + encode_details(7, 2, HANDLE, "Fine annulled")
    got = check_details(content, _record(2, "Fine annulled"))
    assert (got["summary"], got["version"], got["details_version"]) == ("Fine annulled", 2, 2)
    # A correction that kept the summary stored no new row: version 1's row still matches.
    assert check_details(encode_details(7, 1, HANDLE, "Fined"), _record(3, "Fined"))["details_version"] == 1
    assert DETAILS_SCHEMA.personal_columns == frozenset({"subject"})


@pytest.mark.parametrize("content, why", [
    (encode_details(7, 1, HANDLE, "Something else"), "hashes to"),
    (encode_details(8, 1, HANDLE, "Fined"), "no row for record 7"),
    (encode_details(7, 2, HANDLE, "Fined"), "no row for record 7"),  # a version the chain does not have yet
    (b"{not json\n", "not JSONL"),
    (b'{"record": 7, "version": 1, "summary": 5}\n', "hashes to None"),
])
def test_details_that_do_not_match_the_chain_are_refused(content: bytes, why: str) -> None:
    with pytest.raises(DetailsMismatch, match=why):
        check_details(content, _record(1, "Fined"))


def test_the_details_dataset_is_the_issuers_own() -> None:
    mine = {"id": 3, "owner": "agency1", "title": details_title(7), "retired": False}
    shadow = {"id": 2, "owner": "agency9", "title": details_title(7), "retired": False}
    assert find_details_dataset([shadow, mine], "agency1", 7) is mine
    with pytest.raises(NotFound):
        find_details_dataset([shadow], "agency1", 7)
    with pytest.raises(InvalidInput):
        encode_details(7, 1, HANDLE, "")
