"""One node, read over its public HTTP API only: JSON-RPC for the head, REST for raw blocks,
the genesis document and the validator sets."""

from __future__ import annotations

from typing import Any

import httpx

from chainshare import codec
from chainshare.errors import ChainshareError, DecodeError
from chainshare.execution.contracts.membership import ValidatorSet
from chainshare.explorer.indexer.verify import FetchedBlock
from chainshare.ledger.types import Block, QuorumCertificate, Receipt

MAX_RESPONSE = 64 * 1024 * 1024  # a raw block of 2,000 txs and receipts is far below this


class SourceError(ChainshareError, ConnectionError):
    """A node did not answer, or answered something that does not parse."""


def _unhex(v: Any, what: str) -> bytes:
    if not isinstance(v, str) or not v.startswith("0x"):
        raise SourceError(f"{what} is not 0x-hex")
    try:
        return bytes.fromhex(v[2:])
    except ValueError as exc:
        raise SourceError(f"{what} is not 0x-hex") from exc


def parse_validator_sets(body: Any) -> list[ValidatorSet]:
    """The sets of a node's ``GET /api/v1/validators`` (untrusted: checked against header hashes)."""
    try:
        out = []
        for e in body["epochs"]:
            vals = tuple({"name": str(v["name"]), "agency": str(v["agency"]),
                          "address": _unhex(v["address"], "address"),
                          "bls_public_key": _unhex(v["bls_public_key"], "bls key"),
                          "bls_pop": _unhex(v["bls_pop"], "bls pop")} for v in e["items"])
            out.append(ValidatorSet(int(e["epoch"]), int(e["activation_height"]), vals))
    except (KeyError, TypeError, ValueError) as exc:
        raise SourceError(f"validator sets do not parse: {exc}") from exc
    if not out or out[0].activation_height != 0:
        raise SourceError("validator sets do not start with the genesis set")
    return out


def parse_raw_block(body: Any) -> FetchedBlock:
    try:
        block = Block.decode(_unhex(body["block"], "block"))
        qc = QuorumCertificate.from_list(codec.decode(_unhex(body["qc"], "qc"))) if body.get("qc") else None
        receipts = codec.decode(_unhex(body["receipts"], "receipts"))
        if not isinstance(receipts, list):
            raise DecodeError("receipts must be an array")
        return FetchedBlock(block, qc, tuple(Receipt.from_list(r) for r in receipts))
    except (KeyError, TypeError, DecodeError) as exc:
        raise SourceError(f"raw block does not decode: {exc}") from exc


class NodeSource:
    """A node's public API (thread-safe: httpx.Client may be shared across threads)."""

    def __init__(self, url: str, timeout: float = 20.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(timeout=timeout, limits=httpx.Limits(max_connections=16))

    def close(self) -> None:
        self._http.close()

    def _get(self, path: str) -> Any:
        try:
            r = self._http.get(self.url + "/api/v1" + path)
        except httpx.HTTPError as exc:
            raise SourceError(f"{self.url}: {type(exc).__name__}: {exc}") from exc
        if r.status_code != 200 or len(r.content) > MAX_RESPONSE:
            raise SourceError(f"{self.url}{path}: HTTP {r.status_code}")
        try:
            return r.json()
        except ValueError as exc:
            raise SourceError(f"{self.url}{path}: not JSON") from exc

    def get_head(self) -> int:
        """The node's finalized head height."""
        try:
            r = self._http.post(self.url + "/", json={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber",
                                                      "params": []})
            return int(r.json()["result"], 16)
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise SourceError(f"{self.url}: eth_blockNumber failed: {exc}") from exc

    def get_genesis_document(self) -> Any:
        return self._get("/genesis")

    def get_validator_sets(self) -> list[ValidatorSet]:
        return parse_validator_sets(self._get("/validators"))

    def get_epoch_changes(self) -> list[bytes]:
        """The node's epoch-change proofs, from epoch 1 on (untrusted: verified from genesis before use)."""
        body = self._get("/epoch-changes")
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise SourceError(f"{self.url}/api/v1/epoch-changes: no list of items")
        return [_unhex(x, "epoch-change proof") for x in items]

    def get_block(self, height: int) -> FetchedBlock:
        fetched = parse_raw_block(self._get(f"/blocks/{height}/raw"))
        if fetched.block.height != height:
            raise SourceError(f"{self.url}: asked for block {height}, got block {fetched.block.height}")
        return fetched
