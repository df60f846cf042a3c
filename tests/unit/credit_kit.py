"""A certified in-memory chain (chainkit.Chain) with three agencies and the CreditRegistry configured through
Governance, driven by signed transactions whose call data web3 encodes from contracts/CreditRegistry.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import eth_abi
from chainkit import CHAIN_ID, Account, Chain, account, make_genesis, revert_reason, sign_call, validator
from hexbytes import HexBytes
from web3 import Web3

from chainshare.credit.events import ChainSource, decode_credit_log
from chainshare.execution.contracts import GOVERNANCE
from chainshare.execution.contracts.addresses import CREDIT_REGISTRY
from chainshare.execution.genesis import ChainParams
from chainshare.execution.runtime import BlockEnv
from chainshare.ledger.state import StateView
from chainshare.ledger.types import STATUS_FAILURE, STATUS_SUCCESS, Receipt

ROOT = Path(__file__).resolve().parents[2]
W3 = Web3()


def contract(name: str) -> Any:
    artifact = json.loads((ROOT / "contracts" / f"{name}.json").read_text())
    return W3.eth.contract(address=artifact["address"], abi=artifact["abi"])


CR, GOV = contract("CreditRegistry"), contract("Governance")
ISSUER_A, ISSUER_B, OUTSIDER = "Market Regulation", "Tax Bureau", "Outsider Agency"
ORG = "91110000600037341L"  # a valid USCC (check character L)
T0 = 1_750_000_000
DAY = 86400
RULE = {"name": "demo", "base": 1000, "min": 0, "max": 2000,
        "weights": {"penalty": {"1": -10, "3": -100, "5": -300}, "red_list": {"1": 50, "2": 80}},
        "decay_days": {"penalty": 100}, "caps": {"red_list": 100}}


def encode(c: Any, fn: str, *args: Any) -> bytes:
    return bytes(HexBytes(c.encode_abi(fn, args=list(args))))


class CreditKit:
    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {n: account(n) for n in (ISSUER_A, ISSUER_B, OUTSIDER)}
        genesis = make_genesis([(n, [a.address]) for n, a in self.accounts.items()], [validator("v1", ISSUER_A)],
                               timestamp_ms=T0 * 1000, params=ChainParams(voting_period_blocks=50))
        self.chain = Chain(genesis, validator("v1", ISSUER_A))
        self.nonces: dict[bytes, int] = {}
        self.source = ChainSource(self.chain.chain)

    @property
    def now(self) -> int:
        return self.chain.chain.get_head().header.timestamp_ms // 1000

    def send(self, who: str, data: bytes, *, to: bytes = CREDIT_REGISTRY, at: int | None = None,
             gas: int = 3_000_000) -> Receipt:
        acct = self.accounts[who]
        nonce = self.nonces.get(acct.address, 0)
        self.nonces[acct.address] = nonce + 1
        raw = sign_call(acct, to, data, nonce, gas=gas)
        executed = self.chain.produce([raw], timestamp_ms=None if at is None else at * 1000)
        return executed.receipts[0]

    def call(self, who: str, fn: str, *args: Any, at: int | None = None) -> Receipt:
        return self.send(who, encode(CR, fn, *args), at=at)

    def govern(self, fn: str, *args: Any) -> Receipt:
        """Pass CreditRegistry.fn(*args) through Governance: proposed by A, voted by A and B, executed."""
        inner = encode(CR, fn, *args)
        created = ok(self.send(ISSUER_A, encode(GOV, "propose", CR.address, inner, f"credit {fn}"), to=GOVERNANCE))
        pid = int.from_bytes(created.output[:32], "big")
        ok(self.send(ISSUER_A, encode(GOV, "vote", pid, True), to=GOVERNANCE))
        ok(self.send(ISSUER_B, encode(GOV, "vote", pid, True), to=GOVERNANCE))
        return self.send(ISSUER_A, encode(GOV, "execute", pid), to=GOVERNANCE)

    def view(self, fn: str, *args: Any) -> tuple[Any, ...]:
        h = self.chain.chain.get_head().header
        env = BlockEnv(CHAIN_ID, h.height + 1, h.timestamp_ms, h.proposer, h.gas_limit)
        success, out, _ = self.chain.runtime.call(StateView(self.chain.chain.state), bytes(20), CREDIT_REGISTRY,
                                                  encode(CR, fn, *args), env, 10_000_000)
        assert success, revert_reason(out)
        types = [o["type"] for o in next(x for x in CR.abi if x.get("name") == fn)["outputs"]]
        return tuple(eth_abi.decode(types, out))

    def upgrade_protocol(self, version: int) -> None:
        """Governance (A and B) schedules protocol ``version`` 5 blocks on; empty blocks up to it."""
        from chainshare.execution.forks import get_runtime_at

        height = self.chain.chain.head_height
        inner = encode(GOV, "upgrade", version, height + 5)
        created = ok(self.send(ISSUER_A, encode(GOV, "propose", GOV.address, inner, f"v{version}"), to=GOVERNANCE))
        pid = int.from_bytes(created.output[:32], "big")
        for who in (ISSUER_A, ISSUER_B):
            ok(self.send(who, encode(GOV, "vote", pid, True), to=GOVERNANCE))
        ok(self.send(ISSUER_A, encode(GOV, "execute", pid), to=GOVERNANCE))
        while self.chain.chain.head_height < height + 4:
            self.chain.produce([])
        assert get_runtime_at(self.chain.chain.state, self.chain.chain.head_height + 1).version == version

    def configure(self) -> None:
        ok(self.govern("setCategory", "penalty", "Administrative penalty", True))
        ok(self.govern("setCategory", "red_list", "Red list (commendation)", True))
        ok(self.govern("setIssuer", "penalty", ISSUER_A, True))
        ok(self.govern("setIssuer", "penalty", ISSUER_B, True))
        ok(self.govern("setIssuer", "red_list", ISSUER_B, True))
        ok(self.govern("setObjectionDeadline", 20 * DAY))

    def publish(self, who: str = ISSUER_A, subject: str = ORG, category: str = "penalty", *, polarity: int = 2,
                severity: int = 3, summary: str = "Fined for false advertising", summary_hash: bytes = bytes(32),
                decision: int | None = None, effective: int | None = None, dmin: int = 90 * DAY,
                dmax: int = 3 * 365 * DAY, evidence: bytes = b"\xee" * 32, at: int | None = None) -> Receipt:
        decision = self.now if decision is None else decision
        effective = decision if effective is None else effective
        return self.call(who, "publish", subject, category, polarity, severity, "SAMR-2025-001",
                         "Market Regulation Bureau", "Advertising Law art. 55", summary, summary_hash, decision,
                         effective, dmin, dmax, evidence, at=at)

    def correct(self, record_id: int, who: str = ISSUER_A, *, severity: int = 1, summary: str = "Corrected fine",
                at: int | None = None) -> Receipt:
        r = self.view("getRecord", record_id)
        return self.call(who, "correct", record_id, 2, severity, "SAMR-2025-001-C", "Market Regulation Bureau",
                         "Advertising Law art. 55", summary, bytes(32), r[10], r[10], 90 * DAY, 3 * 365 * DAY,
                         b"\xef" * 32, "objection accepted: amount corrected", at=at)


def ok(receipt: Receipt) -> Receipt:
    assert receipt.status == STATUS_SUCCESS, revert_reason(receipt.output)
    return receipt


def reverted(receipt: Receipt) -> str:
    assert receipt.status == STATUS_FAILURE, "expected a revert"
    assert receipt.logs == ()
    return revert_reason(receipt.output)


def events(receipt: Receipt) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for lg in receipt.logs:
        decoded = decode_credit_log(lg)
        if decoded is not None:
            out.append(decoded)
    return out


def record_id_of(receipt: Receipt) -> int:
    return int.from_bytes(ok(receipt).output[:32], "big")
