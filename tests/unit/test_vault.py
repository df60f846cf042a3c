"""The encrypted vault and both ends of a delivery: at-rest encryption under a key the node key
protects, tamper detection, pseudonymized delivery, 0600 files, and flat memory on large files."""

from __future__ import annotations

import csv
import io
import os
import stat
import time
import tracemalloc
from pathlib import Path

import pytest

from chainshare.crypto.ca import NodeIdentity, init_ca, issue_node
from chainshare.crypto.envelope import HEADER_LEN, TAG_LEN
from chainshare.crypto.hashing import keccak256
from chainshare.errors import CryptoError, InvalidInput, NotFound
from chainshare.sharing.compute import parse_query, run_query_on_stream
from chainshare.sharing.pseudonym import pseudonymize
from chainshare.sharing.schema import compute_content_hash, validate_schema
from chainshare.sharing.vault import (
    Delivery,
    Vault,
    VaultEntry,
    compute_delivery_context,
    load_or_create_pseudonym_secret,
    load_or_create_vault_key,
    receive_delivery,
    reseal_vault_key,
)

PSEUDONYM_KEY = b"a derived pseudonym key 32 bytes"
SCHEMA = validate_schema(
    {
        "columns": [
            {"name": "citizen_id", "kind": "personal"},
            {"name": "district", "kind": "string"},
            {"name": "age", "kind": "integer"},
        ],
        "min_group": 5,
    }
)
MB = 1024 * 1024


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, NodeIdentity]:
    root = tmp_path_factory.mktemp("pki")
    init_ca(root / "ca", password=None)
    return {
        name: issue_node(root / "ca", None, f"Agency {name}", name, root / name, key_password=None)
        for name in ("owner", "requester", "other")
    }


def _key(node: NodeIdentity) -> bytes:
    return (Path(node.directory) / "node.key").read_bytes()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "people.csv"
    lines = ["citizen_id,district,age"] + [f"ID{i:05d},{('north', 'south')[i % 2]},{20 + i % 50}" for i in range(500)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture()
def vault(tmp_path: Path, pki: dict[str, NodeIdentity]) -> Vault:
    return Vault.open(tmp_path / "vault", _key(pki["owner"]))


def _deliver(
    vault: Vault, entry: VaultEntry, action: str, pki: dict[str, NodeIdentity], dst: Path, context: bytes = b"grant:1"
) -> tuple[Delivery, tuple[int, bytes]]:
    delivery = vault.export_for(
        entry, SCHEMA, action, pki["requester"].cert_pem, context, pseudonym_key=PSEUDONYM_KEY
    )
    received = receive_delivery(delivery, delivery.wrapped_key, _key(pki["requester"]), context, dst)
    return delivery, received


# --------------------------------------------------------------------------- at rest


def test_put_encrypts_at_rest_with_private_permissions(vault: Vault, dataset: Path) -> None:
    entry = vault.put(dataset, "csv")
    plaintext = dataset.read_bytes()
    assert entry.content_hash == keccak256(plaintext) == compute_content_hash(dataset)
    assert entry.size == len(plaintext) and entry.fmt == "csv"
    stored = entry.path.read_bytes()
    assert b"ID00001" not in stored and stored[:4] == b"CSAE"
    assert _mode(vault.directory) == 0o700 and _mode(entry.path.parent) == 0o700
    for path in vault.directory.rglob("*"):
        if path.is_file():
            assert _mode(path) == 0o600, path
    assert {p.name for p in entry.path.parent.iterdir()} == {
        f"{entry.dataset_key_id}.enc",
        f"{entry.dataset_key_id}.json",
    }


def test_an_existing_vault_directory_is_made_private(tmp_path: Path, pki: dict[str, NodeIdentity]) -> None:
    directory = tmp_path / "shared"
    directory.mkdir(mode=0o755)
    Vault.open(directory, _key(pki["owner"]))
    assert _mode(directory) == 0o700 and _mode(directory / "vault.key") == 0o600


def test_entries_are_found_by_id_and_content_hash_and_survive_reopening(
    vault: Vault, dataset: Path, pki: dict[str, NodeIdentity]
) -> None:
    entry = vault.put(dataset, "csv")
    assert vault.put(dataset, "csv") == entry  # same bytes, same entry
    assert vault.get(entry.dataset_key_id) == entry
    assert vault.find(entry.content_hash) == vault.find(entry.content_hash_hex) == entry
    reopened = Vault.open(vault.directory, _key(pki["owner"]))
    assert reopened.entries() == [entry]
    with reopened.open_plaintext(entry) as reader:
        assert reader.read() == dataset.read_bytes()
    with pytest.raises(NotFound):
        vault.find(b"\x00" * 32)
    with pytest.raises(InvalidInput):
        vault.get("../../etc/passwd")


def test_vault_key_is_protected_by_the_node_key(vault: Vault, pki: dict[str, NodeIdentity], tmp_path: Path) -> None:
    with pytest.raises(CryptoError, match="sealed to another node key"):
        Vault.open(vault.directory, _key(pki["other"]))
    secret = load_or_create_pseudonym_secret(vault.directory, _key(pki["owner"]))
    assert len(secret) == 32 and secret not in (vault.directory / "pseudonym.secret").read_bytes()
    assert load_or_create_pseudonym_secret(vault.directory, _key(pki["owner"])) == secret  # stable
    assert oct((vault.directory / "pseudonym.secret").stat().st_mode & 0o777) == "0o600"
    with pytest.raises(CryptoError, match="pseudonym secret .* sealed to another node key"):
        load_or_create_pseudonym_secret(vault.directory, _key(pki["other"]))
    # Rotation: re-seal to a new node key; the datasets stay readable, the pseudonyms stay the same.
    reseal_vault_key(vault.directory, _key(pki["owner"]), pki["other"].cert_pem)
    assert load_or_create_vault_key(vault.directory, _key(pki["other"]))
    assert load_or_create_pseudonym_secret(vault.directory, _key(pki["other"])) == secret
    with pytest.raises(CryptoError):
        Vault.open(vault.directory, _key(pki["owner"]))


def test_plaintext_reader_streams_lines(vault: Vault, dataset: Path) -> None:
    entry = vault.put(dataset, "csv")
    with vault.open_plaintext(entry) as reader:
        assert reader.readline() == b"citizen_id,district,age\n"
        assert reader.read(8) == b"ID00000,"


def test_altered_ciphertext_at_rest_is_detected(vault: Vault, dataset: Path) -> None:
    entry = vault.put(dataset, "csv")
    blob = bytearray(entry.path.read_bytes())
    blob[HEADER_LEN + 100] ^= 0x01
    entry.path.write_bytes(bytes(blob))
    with pytest.raises(CryptoError, match="failed authentication"), vault.open_plaintext(entry) as reader:
        reader.read()


def test_altered_metadata_is_detected(vault: Vault, dataset: Path) -> None:
    entry = vault.put(dataset, "csv")
    meta = entry.path.with_suffix(".json")
    meta.write_text(meta.read_text().replace(f'"size": {entry.size}', f'"size": {entry.size - 1}'))
    forged = vault.get(entry.dataset_key_id)
    with pytest.raises(CryptoError, match="metadata was altered"), vault.open_plaintext(forged):
        pass


def test_ciphertexts_swapped_between_entries_are_detected(vault: Vault, dataset: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.csv"
    other.write_text("citizen_id,district,age\nX,north,1\n")
    a, b = vault.put(dataset, "csv"), vault.put(other, "csv")
    blob_a, blob_b = a.path.read_bytes(), b.path.read_bytes()
    a.path.write_bytes(blob_b)
    b.path.write_bytes(blob_a)
    for entry in (a, b):
        with pytest.raises(CryptoError), vault.open_plaintext(entry) as reader:
            reader.read()


def test_compute_runs_over_the_vault_plaintext(vault: Vault, dataset: Path) -> None:
    entry = vault.put(dataset, "csv")
    query = parse_query({"select": [{"fn": "count"}, {"fn": "avg", "column": "age", "bounds": [0, 120]}],
                         "group_by": ["district"]}, SCHEMA)
    with vault.open_plaintext(entry) as reader:  # without noise, to see the exact counts it is added to
        result = run_query_on_stream(query, reader, entry.fmt, SCHEMA, noise=lambda _scale: 0)
    assert [g[:2] for g in result.groups] == [("north", 250), ("south", 250)]


# --------------------------------------------------------------------------- delivery


def test_read_identified_delivery_is_the_dataset_byte_for_byte(
    vault: Vault, dataset: Path, pki: dict[str, NodeIdentity], tmp_path: Path
) -> None:
    entry = vault.put(dataset, "csv")
    dst = tmp_path / "received.csv"
    delivery, (size, digest) = _deliver(vault, entry, "read_identified", pki, dst)
    assert dst.read_bytes() == dataset.read_bytes()
    assert (size, digest) == (entry.size, entry.content_hash)
    assert (delivery.plaintext_size, delivery.content_hash) == (size, digest)
    assert delivery.ciphertext_size == HEADER_LEN + size + TAG_LEN  # one short final chunk
    assert _mode(dst) == 0o600


def test_read_delivery_pseudonymizes_personal_columns(
    vault: Vault, dataset: Path, pki: dict[str, NodeIdentity], tmp_path: Path
) -> None:
    entry = vault.put(dataset, "csv")
    dst = tmp_path / "received.csv"
    delivery, (size, digest) = _deliver(vault, entry, "read", pki, dst)
    rows = list(csv.reader(io.StringIO(dst.read_text())))
    assert rows[0] == ["citizen_id", "district", "age"]
    assert rows[1] == [pseudonymize("ID00000", PSEUDONYM_KEY), "north", "20"]
    assert b"ID00000" not in dst.read_bytes()
    assert digest == keccak256(dst.read_bytes()) == delivery.content_hash != entry.content_hash
    assert size == delivery.plaintext_size


def test_read_delivery_needs_the_pseudonym_key(vault: Vault, dataset: Path, pki: dict[str, NodeIdentity]) -> None:
    entry = vault.put(dataset, "csv")
    with pytest.raises(InvalidInput, match="pseudonym key"):
        list(vault.export_for(entry, SCHEMA, "read", pki["requester"].cert_pem, b"ctx"))


def test_delivery_arrives_through_any_framing(
    vault: Vault, dataset: Path, pki: dict[str, NodeIdentity], tmp_path: Path
) -> None:
    entry = vault.put(dataset, "csv")
    delivery = vault.export_for(entry, SCHEMA, "read_identified", pki["requester"].cert_pem, b"ctx", chunk_size=1024)
    blob = b"".join(delivery)
    frames = [blob[i : i + 7] for i in range(0, len(blob), 7)]
    dst = tmp_path / "out.csv"
    assert receive_delivery(frames, delivery.wrapped_key, _key(pki["requester"]), b"ctx", dst)[1] == entry.content_hash


def _no_output(directory: Path) -> bool:
    return not any(p.name.startswith((".out", "out")) for p in directory.iterdir())


def test_a_delivery_for_another_node_or_grant_does_not_open(
    vault: Vault, dataset: Path, pki: dict[str, NodeIdentity], tmp_path: Path
) -> None:
    entry = vault.put(dataset, "csv")
    context = compute_delivery_context(7, entry.content_hash, "read_identified")
    delivery = vault.export_for(entry, SCHEMA, "read_identified", pki["requester"].cert_pem, context)
    blob = list(delivery)
    with pytest.raises(CryptoError):
        receive_delivery(blob, delivery.wrapped_key, _key(pki["other"]), context, tmp_path / "out")
    other_context = compute_delivery_context(8, entry.content_hash, "read_identified")
    with pytest.raises(CryptoError):
        receive_delivery(blob, delivery.wrapped_key, _key(pki["requester"]), other_context, tmp_path / "out")
    assert _no_output(tmp_path)


def test_a_delivery_altered_in_transit_leaves_no_file(
    vault: Vault, dataset: Path, pki: dict[str, NodeIdentity], tmp_path: Path
) -> None:
    entry = vault.put(dataset, "csv")
    delivery = vault.export_for(entry, SCHEMA, "read_identified", pki["requester"].cert_pem, b"ctx", chunk_size=1024)
    blob = bytearray(b"".join(delivery))
    blob[-5] ^= 0x01  # in the final chunk, after several good chunks were written
    with pytest.raises(CryptoError):
        receive_delivery([bytes(blob)], delivery.wrapped_key, _key(pki["requester"]), b"ctx", tmp_path / "out")
    with pytest.raises(CryptoError):  # truncated
        receive_delivery([bytes(blob[:2000])], delivery.wrapped_key, _key(pki["requester"]), b"ctx", tmp_path / "out")
    assert _no_output(tmp_path)


def test_a_content_hash_that_differs_from_the_chain_leaves_no_file(
    vault: Vault, dataset: Path, pki: dict[str, NodeIdentity], tmp_path: Path
) -> None:
    entry = vault.put(dataset, "csv")
    delivery = vault.export_for(entry, SCHEMA, "read_identified", pki["requester"].cert_pem, b"ctx")
    with pytest.raises(CryptoError, match="differs from the expected"):
        receive_delivery(
            delivery, delivery.wrapped_key, _key(pki["requester"]), b"ctx", tmp_path / "out", expected_hash=b"\x01" * 32
        )
    assert _no_output(tmp_path)


def test_a_delivery_streams_once_and_reports_its_hash_only_when_done(
    vault: Vault, dataset: Path, pki: dict[str, NodeIdentity]
) -> None:
    entry = vault.put(dataset, "csv")
    with vault.export_for(entry, SCHEMA, "read", pki["requester"].cert_pem, b"c", pseudonym_key=PSEUDONYM_KEY) as delivery:
        stream = iter(delivery)
        next(stream)
        with pytest.raises(InvalidInput, match="only after"):
            _ = delivery.content_hash
        with pytest.raises(InvalidInput, match="only once"):
            iter(delivery)


# --------------------------------------------------------------------------- large files


def _write_random_file(path: Path, size: int) -> None:
    block = os.urandom(MB)
    with path.open("wb") as file:
        for _ in range(size // MB):
            file.write(block)


def test_large_dataset_streams_with_flat_memory(tmp_path: Path, pki: dict[str, NodeIdentity]) -> None:
    vault = Vault.open(tmp_path / "vault", _key(pki["owner"]))
    schema = validate_schema({"columns": [{"name": "x", "kind": "string"}]})
    requester_key = _key(pki["requester"])

    def run(source: Path) -> dict[str, float]:
        timings: dict[str, float] = {}
        start = time.perf_counter()
        entry = vault.put(source, "jsonl")
        timings["encrypt (put)"] = time.perf_counter() - start
        start = time.perf_counter()
        with vault.open_plaintext(entry) as reader:
            while reader.read(MB):
                pass
        timings["decrypt (read)"] = time.perf_counter() - start
        start = time.perf_counter()
        delivery = vault.export_for(entry, schema, "read_identified", pki["requester"].cert_pem, b"grant")
        dst = tmp_path / "received.jsonl"
        _size, digest = receive_delivery(delivery, delivery.wrapped_key, requester_key, b"grant", dst)
        timings["deliver (export + receive, one process)"] = time.perf_counter() - start
        assert digest == entry.content_hash
        vault.remove(entry)
        dst.unlink()
        return timings

    def peak_of(source: Path) -> int:
        tracemalloc.start()
        try:
            run(source)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = tmp_path / "small.jsonl", tmp_path / "large.jsonl"
    _write_random_file(small, 5 * MB)
    _write_random_file(large, 50 * MB)
    timings = run(large)
    small_peak, large_peak = peak_of(small), peak_of(large)
    report = ", ".join(f"{name} {50 / seconds:.0f} MB/s" for name, seconds in timings.items())
    print(f"\n50 MB: {report}; tracemalloc peak {large_peak / MB:.1f} MB (5 MB file: {small_peak / MB:.1f} MB)")
    # Flat: at most a few 1 MiB chunks in flight (the caller's, and two queued per helper thread),
    # however large the file; the 5 MB figure is printed for comparison.
    assert large_peak < 12 * MB


def test_a_sealed_record_reads_back_only_under_its_name_and_detects_tampering(vault: Vault, tmp_path: Path,
                                                                              pki: dict[str, NodeIdentity]) -> None:
    secret = b'{"vector": [2047991], "salt": "0x11"}'
    vault.seal_record("joint-7", secret)
    path = vault.directory / "records" / "joint-7.sealed"
    assert secret not in path.read_bytes() and path.stat().st_mode & 0o777 == 0o600
    assert vault.open_record("joint-7") == secret
    with pytest.raises(NotFound):
        vault.open_record("joint-8")
    with pytest.raises(InvalidInput, match="record name"):
        vault.open_record("../vault")
    (vault.directory / "records" / "joint-8.sealed").write_bytes(path.read_bytes())  # moved under another name
    with pytest.raises(CryptoError):
        vault.open_record("joint-8")
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1
    path.write_bytes(bytes(blob))
    with pytest.raises(CryptoError):
        vault.open_record("joint-7")
