"""A fixed chain of Datasets and AccessControl transactions (allowed, denied and reverted requests,
freezes, limits, deliveries, computations, revocation, retirement) must execute to the same headers
and receipts forever: the digest below was taken with the code before the execution speedups
(events compiled per EventSpec, memoised record decoding, MuHash's special-form reduction). A change
of it is a consensus change: re-executing old blocks would no longer match."""

from __future__ import annotations

import hashlib

from chainkit import CHAIN_ID, PLACEHOLDER_PEM, Account, Ledger, account, sign_call, validator

from chainshare.execution.contracts import ACCESS_CONTROL, DATASETS
from chainshare.execution.genesis import ChainParams, Genesis, GenesisAgency
from chainshare.execution.runtime import encode_call
from chainshare.sharing.records import ACCESS_CONTRACT as AC
from chainshare.sharing.records import DATASETS_CONTRACT as DS

EXPECTED_DIGEST = "e1ceae45f366faa755b0a736e336191e9013c8604efa2f7e43577ae4c1387be8"
EXPECTED_ROOT = "21fa7ce0d291ac7c682573add46771d160c9afbb92697217bc8ea290eaa05804"
SCHEMA = '{"columns":[{"name":"id","kind":"personal"},{"name":"age","kind":"integer"}]}'
P1 = ('permit (principal, action in [Action::"read", Action::"compute"], resource) '
      'when { principal.jurisdiction == resource.owner.jurisdiction };')
P2 = ('permit (principal, action, resource) when { context.purpose like "stat*" };\n'
      'forbid (principal, action == Action::"read_identified", resource) unless { principal == resource.owner };')
P3 = 'permit (principal, action, resource) when { principal.role == "statistics" && context.time > 0 };'


def test_a_fixed_access_chain_executes_to_the_same_headers_and_receipts() -> None:
    a, b, c = account("a"), account("b"), account("c")
    genesis = Genesis(CHAIN_ID, 1_750_000_000_000, PLACEHOLDER_PEM, (
        GenesisAgency("Health", "health", (a.address,), PLACEHOLDER_PEM, "CN-31"),
        GenesisAgency("Stats", "statistics", (b.address,), PLACEHOLDER_PEM, "CN-31"),
        GenesisAgency("Customs", "customs", (c.address,), PLACEHOLDER_PEM, "CN-44")),
        (validator("v1", "Health").genesis_entry(),), ChainParams())
    ledger = Ledger(genesis)
    nonces: dict[bytes, int] = {}

    def tx(acct: Account, to: bytes, data: bytes) -> bytes:
        n = nonces.get(acct.address, 0)
        nonces[acct.address] = n + 1
        return sign_call(acct, to, data, n, gas=2_000_000)

    blocks = [[tx(a, DATASETS, encode_call(DS, "register", "d1", b"\x11" * 32, SCHEMA, 100, P1)),
               tx(a, DATASETS, encode_call(DS, "register", "d2 ünïcode", b"\x22" * 32, SCHEMA, 2**40, P2)),
               tx(b, DATASETS, encode_call(DS, "register", "d3", b"\x33" * 32, SCHEMA, 0, P3))]]
    requests = []
    for i in range(60):
        purpose = (f"statistics q{i}", "audit", "x" * (1 + i % 7), "", f"stat ☃ {i}")[i % 5]
        action = ("read", "compute", "read_identified", "compute_joint", "bogus")[i % 5]
        requests.append(tx((a, b, c)[i % 3], ACCESS_CONTROL,  # dataset 4 does not exist
                           encode_call(AC, "request", 1 + i % 4, action, purpose, (0, 3600, 366 * 86400)[i % 3])))
    blocks += [requests[:30], requests[30:]]
    blocks.append([tx(a, ACCESS_CONTROL, encode_call(AC, "freezeDataset", 1, "incident")),
                   tx(b, ACCESS_CONTROL, encode_call(AC, "request", 1, "read", "statistics", 0)),
                   tx(c, ACCESS_CONTROL, encode_call(AC, "freezeDataset", 1, "not mine")),
                   tx(a, ACCESS_CONTROL, encode_call(AC, "unfreezeDataset", 1)),
                   tx(a, ACCESS_CONTROL, encode_call(AC, "setComputeLimits", 1, 5_000_000, 3)),
                   tx(b, ACCESS_CONTROL, encode_call(AC, "request", 1, "compute", "statistics", 0)),
                   tx(a, DATASETS, encode_call(DS, "setPolicy", 2, P3)),
                   tx(b, ACCESS_CONTROL, encode_call(AC, "request", 2, "read", "statistics", 0))])
    blocks.append([tx(a, ACCESS_CONTROL, encode_call(AC, "recordComputation", g, b"\x01" * 32, b"\x02" * 32, 1_000_000))
                   for g in range(1, 12)] +
                  [tx(a, ACCESS_CONTROL, encode_call(AC, "recordDelivery", g, b"\x11" * 32, b"\x44" * 32, 1234))
                   for g in range(1, 12)] +
                  [tx(b, ACCESS_CONTROL, encode_call(AC, "revokeGrant", 2)),
                   tx(a, DATASETS, encode_call(DS, "retire", 1)),
                   tx(b, ACCESS_CONTROL, encode_call(AC, "request", 1, "read", "statistics", 0))])
    digest = hashlib.sha256()
    outcomes = []
    for raws in blocks:
        executed = ledger.execute(raws)
        digest.update(executed.block.header.encode())
        for r in executed.receipts:
            digest.update(r.encode())
            outcomes.append((r.status, len(r.logs)))
    assert outcomes.count((1, 3)) == 11 and outcomes.count((1, 2)) == 14  # allowed and denied decisions
    assert ledger.parent_header.state_root.hex() == EXPECTED_ROOT
    assert digest.hexdigest() == EXPECTED_DIGEST
