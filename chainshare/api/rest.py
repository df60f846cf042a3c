"""REST API under /api/v1 (FastAPI, OpenAPI at /api/v1/openapi.json).

Reads are of finalized data only. Every error is a JSON body ``{"error": {"type", "message"}}``
with the status from the one error mapping (documented in OpenAPI); malformed parameters are 400, never 500.
Reads that load blocks run on the API worker threads (off the consensus loop) under a work
budget; one over it is 413, a client over its rate limit 429 with Retry-After.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import Body, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from chainshare.api.credit import create_credit_router
from chainshare.api.errors import ERROR_RESPONSES, http_error, install_request_error_handlers
from chainshare.api.joint import create_joint_router
from chainshare.api.jsonrpc import JsonRpc, parse_data
from chainshare.api.limits import ApiWorkers, WorkBudget
from chainshare.api.sharing import create_sharing_router
from chainshare.api.views import hx, view_block, view_bundle_receipt, view_qc, view_transaction
from chainshare.errors import ChainshareError, InvalidInput, NotFound, RateLimited
from chainshare.execution.contracts.membership import (
    get_agency,
    get_agency_names,
    get_validator_set_at,
    get_validator_sets,
    select_validator_set,
)
from chainshare.ledger.finality import decode_finality_proof
from chainshare.ledger.merkle import compute_inclusion_proof
from chainshare.ledger.txs import decode_transaction
from chainshare.logs import log_event
from chainshare.node import Node

log = logging.getLogger("chainshare.api")
HEX_ID = r"^(latest|earliest|[0-9]{1,19}|0x[0-9a-fA-F]{64})$"


class RawTransaction(BaseModel):
    raw: str = Field(..., description="0x-prefixed signed Ethereum transaction", max_length=2 * 128 * 1024 + 2)


def create_rest_app(node: Node, rpc: JsonRpc, workers: ApiWorkers) -> FastAPI:
    app = FastAPI(
        title="chainshare node API", version="1", openapi_url="/openapi.json", docs_url="/docs", redoc_url=None,
        description="Blocks, transactions, receipts, Merkle proofs, agencies, contract events and node status "
                    "of a chainshare node. All reads are of finalized data.",
        responses=ERROR_RESPONSES,
    )

    @app.exception_handler(ChainshareError)
    async def _chainshare_error(request: Request, exc: ChainshareError) -> JSONResponse:
        status, body = http_error(exc)
        # Every refusal is logged (kind, path, message: never request bodies or data).
        log_event(log, logging.INFO, "request refused", path=request.url.path, status=status,
                  kind=type(exc).__name__, reason=exc.message[:300])
        headers = None
        if isinstance(exc, RateLimited) and isinstance(exc.data, dict):
            headers = {"Retry-After": str(max(1, int(float(exc.data.get("retryAfter", 1)) + 0.999)))}
        return JSONResponse(body, status_code=status, headers=headers)

    install_request_error_handlers(app)

    def _block_height(block_id: str) -> int:
        chain = node.chain
        if block_id == "latest":
            return chain.head_height
        if block_id == "earliest":
            return 0
        if block_id.startswith("0x"):
            return chain.get_height_by_hash(parse_data(block_id, "block hash", 32))
        h = int(block_id)
        if h > chain.head_height:
            raise NotFound(f"no block at height {h} (head is {chain.head_height})")
        return h

    def _block_json(h: int, full: bool, budget: WorkBudget | None = None) -> dict[str, Any]:
        (budget or WorkBudget(rpc.limits)).charge_blocks(1, "this read")
        block = node.chain.get_block(h)
        out = view_block(block, node.chain_id, full)
        out["qc"] = view_qc(node.chain.get_qc(h))
        out["justify"] = view_qc(block.justify)
        out["proposerSignature"] = hx(block.signature)
        return out

    @app.get("/status", summary="Node status")
    async def status() -> dict[str, Any]:
        head = node.chain.get_head()
        return {"name": node.cfg.node.name, "chain_id": node.chain_id, "client": node.client_version,
                "head": {"height": head.height, "hash": hx(head.hash), "timestamp_ms": head.header.timestamp_ms},
                "finalized_height": head.height, "genesis_hash": hx(node.chain.get_block(0).hash),
                "mempool": len(node.mempool),
                "validators": len(get_validator_set_at(node.state, head.height + 1).validators),
                "stats": node.stats}

    @app.get("/blocks", summary="Blocks, newest first (keyset pagination by height)")
    async def list_blocks(before: Annotated[int | None, Query(ge=0)] = None,
                    limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict[str, Any]:
        top = node.chain.head_height if before is None else min(before - 1, node.chain.head_height)
        heights = list(range(top, max(top - limit, -1), -1))
        budget = WorkBudget(rpc.limits)
        items = await workers.run(lambda: [_block_json(h, False, budget) for h in heights])
        return {"items": items, "next_before": heights[-1] if heights and heights[-1] > 0 else None}

    @app.get("/blocks/{block_id}", summary="One block by height, hash, 'latest' or 'earliest', with its QC")
    async def get_block(block_id: Annotated[str, Path(pattern=HEX_ID)], full: bool = False) -> dict[str, Any]:
        return await workers.run(lambda: _block_json(_block_height(block_id), full))

    @app.get("/transactions/{tx_hash}", summary="A transaction (pending or included)")
    async def get_transaction(tx_hash: Annotated[str, Path(pattern=r"^0x[0-9a-fA-F]{64}$")]) -> dict[str, Any]:
        result = await workers.run(rpc.eth_get_transaction_by_hash, [tx_hash], WorkBudget(rpc.limits))
        if result is None:
            raise NotFound(f"no transaction {tx_hash}")
        return result

    @app.get("/transactions/{tx_hash}/receipt", summary="The receipt of an included transaction")
    async def get_receipt(tx_hash: Annotated[str, Path(pattern=r"^0x[0-9a-fA-F]{64}$")]) -> dict[str, Any]:
        result = await workers.run(rpc.eth_get_transaction_receipt, [tx_hash], WorkBudget(rpc.limits))
        if result is None:
            raise NotFound(f"no receipt for {tx_hash} (unknown or not yet included)")
        return result

    @app.get("/transactions/{tx_hash}/proof",
             summary="Merkle inclusion proofs of a transaction and its receipt against the block header")
    async def get_proof(tx_hash: Annotated[str, Path(pattern=r"^0x[0-9a-fA-F]{64}$")]) -> dict[str, Any]:
        return await workers.run(_proof, tx_hash)

    def _proof(tx_hash: str) -> dict[str, Any]:
        th = parse_data(tx_hash, "tx hash", 32)
        loc = node.chain.get_tx_location(th)
        if loc is None:
            raise NotFound(f"no included transaction {tx_hash}")
        block = node.chain.get_block(loc.height)
        receipts = node.chain.get_receipts(loc.height)
        return {
            "block_height": loc.height,
            "block_hash": hx(block.hash),
            "header": {"encoded": hx(block.header.encode()), "tx_root": hx(block.header.tx_root),
                       "receipts_root": hx(block.header.receipts_root)},
            "transaction": {"leaf": hx(block.transactions[loc.index]),
                            "proof": compute_inclusion_proof(list(block.transactions), loc.index).to_json()},
            "receipt": {"leaf": hx(receipts[loc.index].encode()),
                        "proof": compute_inclusion_proof([r.encode() for r in receipts], loc.index).to_json()},
            "qc": view_qc(node.chain.get_qc(loc.height)),
        }

    @app.post("/transactions", status_code=202, summary="Submit a signed raw transaction")
    async def submit(tx: Annotated[RawTransaction, Body()]) -> dict[str, Any]:
        raw = parse_data(tx.raw, "raw")
        return {"hash": hx(node.submit_raw_transaction(raw))}

    @app.get("/blocks/{block_id}/transactions", summary="Transactions of a block with their receipts")
    async def block_transactions(block_id: Annotated[str, Path(pattern=HEX_ID)]) -> dict[str, Any]:
        return await workers.run(_block_transactions, block_id)

    def _block_transactions(block_id: str) -> dict[str, Any]:
        """Each transaction as eth_getTransactionByHash shows it, with its receipt as eth_getTransactionReceipt
        shows it."""
        h = _block_height(block_id)
        bundle = node.chain.get_bundle(h)
        block = bundle.block
        return {"height": h, "items": [
            {"transaction": view_transaction(decode_transaction(raw, node.chain_id, bundle.tx_hashes[i]), block, i),
             "receipt": view_bundle_receipt(bundle, i)}
            for i, raw in enumerate(block.transactions)]}

    @app.get("/genesis", summary="The genesis document this node was started from")
    async def genesis() -> Any:
        import json

        return json.loads(node.chain.get_genesis_document())

    @app.get("/blocks/{block_id}/raw", summary="Canonical encodings of a block, its QC and receipts (for verifiers)")
    async def block_raw(block_id: Annotated[str, Path(pattern=HEX_ID)]) -> dict[str, Any]:
        return await workers.run(_block_raw, block_id)

    def _block_raw(block_id: str) -> dict[str, Any]:
        from chainshare import codec

        h = _block_height(block_id)
        qc = node.chain.get_qc(h)
        return {"height": h, "block": hx(node.chain.get_block(h).encode()), "qc": hx(qc.encode()) if qc else None,
                "receipts": hx(codec.encode_trusted([r.to_list() for r in node.chain.get_receipts(h)]))}

    @app.get("/finality", summary="The proof that the head is final (for verifiers: `chain verify --node`)")
    async def finality() -> dict[str, Any]:
        """``height`` is the block ``proof`` proves final (a 2-chain: ledger/finality.py), read together
        with it; a single-validator chain keeps no proof (its blocks are final by their 1-of-1 QC)."""
        head = node.chain.head_height
        raw = node.chain.get_finality_proof()
        if raw is None:
            return {"height": head, "proof": None}
        return {"height": decode_finality_proof(raw).proven_height, "proof": hx(raw)}

    @app.get("/agencies", summary="Member agencies")
    async def agencies() -> dict[str, Any]:
        return {"items": [_agency_json(get_agency(node.state, n)) for n in get_agency_names(node.state)]}

    @app.get("/agencies/{name}", summary="One agency")
    async def agency(name: Annotated[str, Path(max_length=64)]) -> dict[str, Any]:
        a = get_agency(node.state, name)
        if a is None:
            raise NotFound(f"no agency named {name!r}")
        return _agency_json(a)

    @app.get("/validators", summary="The validator set that certifies the next block, and every scheduled or "
             "past set (epochs, activation heights)")
    async def validators() -> dict[str, Any]:
        def items(vs: Any) -> list[dict[str, Any]]:
            return [{"index": i, "name": v["name"], "agency": v["agency"], "address": hx(v["address"]),
                     "bls_public_key": hx(v["bls_public_key"]), "bls_pop": hx(v["bls_pop"])}
                    for i, v in enumerate(vs.validators)]

        sets = get_validator_sets(node.state)
        current = select_validator_set(sets, node.chain.head_height + 1)
        return {"epoch": current.epoch, "activation_height": current.activation_height, "items": items(current),
                "epochs": [{"epoch": vs.epoch, "activation_height": vs.activation_height, "items": items(vs)}
                           for vs in sets]}

    @app.get("/epoch-changes", summary="The epoch-change proofs this node keeps, from epoch 1 on (each proves, "
             "with the signatures of the set before it, the set that followed: docs/consensus.md)")
    async def epoch_changes() -> dict[str, Any]:
        return {"items": [hx(raw) for raw in node.chain.get_epoch_change_proofs()]}

    @app.get("/contracts", summary="System contracts: names, addresses, ABIs")
    async def contracts() -> dict[str, Any]:
        return {c.NAME: {"address": hx(c.ADDRESS), "abi": c.to_abi()} for c in node.runtime.contracts.values()}

    @app.get("/events", summary="Contract events (Ethereum logs), filtered")
    async def events(address: Annotated[str | None, Query(pattern=r"^0x[0-9a-fA-F]{40}$")] = None,
               topic0: Annotated[str | None, Query(pattern=r"^0x[0-9a-fA-F]{64}$")] = None,
               topic1: Annotated[str | None, Query(pattern=r"^0x[0-9a-fA-F]{64}$")] = None,
               from_block: Annotated[int, Query(ge=0)] = 0,
               to_block: Annotated[int | None, Query(ge=0)] = None,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
        if to_block is not None and to_block < from_block:
            raise InvalidInput("to_block is below from_block")
        flt: dict[str, Any] = {"fromBlock": hex(from_block),
                               "toBlock": hex(to_block) if to_block is not None else "latest",
                               "topics": [topic0, topic1] if topic1 else ([topic0] if topic0 else [])}
        if address:
            flt["address"] = address
        logs = await workers.run(rpc.get_logs, flt, WorkBudget(rpc.limits), limit + 1, "GET /events")
        return {"items": logs[:limit], "truncated": len(logs) > limit}

    app.include_router(create_sharing_router(node))  # datasets, grants, audit, vault, fetch, query
    app.include_router(create_credit_router(node, workers))  # credit records, scores, provenance, events
    app.include_router(create_joint_router(node))  # joint secure aggregation across agencies
    return app


def _agency_json(a: dict[str, Any] | None) -> dict[str, Any]:
    assert a is not None
    return {"name": a["name"], "role": a["role"], "accounts": [hx(x) for x in a["accounts"]],
            "active": a["active"], "certificate": a["certificate"].decode(errors="replace"),
            "added_height": a["added_height"]}
