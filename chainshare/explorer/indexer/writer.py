"""The one writer of the explorer database: a batch of verified blocks, its derived rows and the
checkpoint, in ONE transaction.

A batch either commits whole (blocks, transactions, logs, derived tables, checkpoint) or not at
all, and it only applies on top of the checkpoint it was computed from (compare-and-set), so an
indexer killed at any moment restarts from the checkpoint and writes exactly what an
uninterrupted run writes. Derived tables are updated from the batch's events, never by scanning.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Table, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from chainshare import codec
from chainshare.consensus.epochs import prove_sets_from
from chainshare.crypto.ca import describe_certificate
from chainshare.errors import ChainshareError, ConsensusError, CryptoError, DecodeError
from chainshare.execution.contracts.membership import ValidatorSet, compute_validator_set_hash
from chainshare.execution.genesis import Genesis
from chainshare.explorer.db import schema as s
from chainshare.explorer.indexer import joint
from chainshare.explorer.indexer.credit import compute_credit_event_rows, compute_credit_record_rows
from chainshare.explorer.indexer.decode import decode_call, dumps
from chainshare.explorer.indexer.rows import BlockRows
from chainshare.ledger.types import Block, Header


class CheckpointMoved(ChainshareError):
    """Another writer advanced the index: only one indexer may write a database."""


def _insert(conn: Connection, table: Table) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def upsert_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    stmt = _insert(conn, table)
    keys = [c.name for c in table.primary_key.columns]
    stmt = stmt.on_conflict_do_update(index_elements=keys,
                                      set_={c: stmt.excluded[c] for c in rows[0] if c not in keys})
    conn.execute(stmt, list(rows))


def add_counts(conn: Connection, table: Table, rows: Sequence[dict[str, Any]], counters: Sequence[str]) -> None:
    """Insert rows, or add their counters to the existing rows with the same key."""
    if not rows:
        return
    stmt = _insert(conn, table)
    keys = [c.name for c in table.primary_key.columns]
    stmt = stmt.on_conflict_do_update(index_elements=keys,
                                      set_={c: table.c[c] + stmt.excluded[c] for c in counters})
    conn.execute(stmt, list(rows))


def insert_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Plain INSERT of many rows through the driver's executemany: the values are already the
    driver's types (int, bytes, str, bool, None), so SQLAlchemy's per-value processing is skipped
    (it was a third of the indexing time)."""
    if not rows:
        return
    cols = list(rows[0])
    q = conn.dialect.identifier_preparer
    if conn.dialect.name == "postgresql":  # COPY: one stream instead of a statement per row
        dbapi = conn.connection.driver_connection
        assert dbapi is not None
        with dbapi.cursor() as cur, cur.copy(f"COPY {q.format_table(table)} "
                                             f"({', '.join(q.quote(c) for c in cols)}) FROM STDIN") as cp:
            for r in rows:
                cp.write_row(tuple(r[c] for c in cols))
        return
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    sql = (f"INSERT INTO {q.format_table(table)} ({', '.join(q.quote(c) for c in cols)}) "
           f"VALUES ({', '.join([mark] * len(cols))})")
    conn.exec_driver_sql(sql, [tuple(r[c] for c in cols) for r in rows])


def get_checkpoint(conn: Connection) -> tuple[int, bytes] | None:
    row = conn.execute(select(s.progress.c.height, s.progress.c.block_hash).where(s.progress.c.id == 1)).first()
    return (int(row[0]), bytes(row[1])) if row else None


def get_meta(conn: Connection) -> dict[str, str]:
    return {k: v for k, v in conn.execute(select(s.meta.c.key, s.meta.c.value))}


def store_validator_set(conn: Connection, vs: ValidatorSet) -> None:
    upsert_rows(conn, s.validator_sets, [
        {"epoch": vs.epoch, "position": i, "activation_height": vs.activation_height, "name": v["name"],
         "agency": v["agency"], "address": v["address"], "bls_public_key": v["bls_public_key"],
         "bls_pop": v["bls_pop"]}
        for i, v in enumerate(vs.validators)])


def compute_certificate_row(agency: str, height: int, pem: bytes) -> dict[str, Any] | None:
    """The ``agency_certificates`` row of the certificate ``agency`` was admitted with at ``height``
    (None if it does not parse: the chain accepted it, the explorer then shows no certificate)."""
    try:
        c = describe_certificate(pem)
    except CryptoError:
        return None
    return {"agency": agency, "height": height, "fingerprint_sha256": c.fingerprint_sha256, "subject": c.subject,
            "issuer": c.issuer, "serial": c.serial, "not_before_ms": int(c.not_before.timestamp() * 1000),
            "not_after_ms": int(c.not_after.timestamp() * 1000), "pem": pem.decode("ascii", "replace")}


def _admitted_certificate(ents: _Entities, call: tuple[str | None, str | None, dict[str, Any] | None] | None,
                          name: str) -> bytes | None:
    """The certificate of the ``Membership.addAgency(name, ...)`` call that the transaction ``call``
    ran: the call of the proposal it executed, or one call of that proposal's ``executeBatch``."""
    if call is None or call[:2] != ("Governance", "execute") or call[2] is None:
        return None
    p = ents.get(s.proposals, call[2].get("id"))
    if p is None or not p["call"]:
        return None
    calls: list[dict[str, Any]] = [json.loads(p["call"])]
    if (calls[0].get("contract"), calls[0].get("method")) == ("Governance", "executeBatch"):
        batch = calls[0].get("args") or {}
        calls = []
        for target, data in zip(batch.get("targets", ()), batch.get("calls", ()), strict=False):
            contract, method, decoded = decode_call(bytes.fromhex(target[2:]), bytes.fromhex(data[2:]))
            calls.append({"contract": contract, "method": method, "args": decoded})
    for c in calls:
        args = c.get("args") or {}
        if (c.get("contract"), c.get("method"), args.get("name")) == ("Membership", "addAgency", name):
            return bytes.fromhex(str(args.get("certificate", "0x"))[2:])
    return None


def backfill_validator_pops(conn: Connection, sets: Sequence[ValidatorSet]) -> int:
    """Fill ``bls_pop`` of the stored sets indexed before migration 0004 from ``sets`` (as a node serves
    them), only where the complete set hashes to the ``validator_set_hash`` of the indexed header that
    commits to it (the one before its activation height). Returns the number of epochs filled."""
    pending = {int(e) for (e,) in conn.execute(select(s.validator_sets.c.epoch).where(
        s.validator_sets.c.bls_pop.is_(None)).distinct())}
    filled = 0
    for vs in sets:
        if vs.epoch not in pending:
            continue
        raw = conn.execute(select(s.blocks.c.header).where(
            s.blocks.c.height == max(vs.activation_height - 1, 0))).scalar()
        if raw is None:
            continue
        if Header.from_list(codec.decode(bytes(raw))).validator_set_hash == compute_validator_set_hash(vs.validators):
            store_validator_set(conn, vs)
            filled += 1
    return filled


def store_epoch_changes(conn: Connection, raws: Sequence[bytes], chain_id: int) -> int:
    """Store the epoch-change proofs of ``raws`` (a node's, from epoch 1 on) that are not stored yet, once
    all of them verify from the indexed genesis set by the node's rules (``prove_sets_from``) and each
    proves the set indexed for its epoch, if any. ConsensusError (nothing stored) otherwise. Returns how
    many were stored."""
    stored = conn.execute(select(func.count()).select_from(s.epoch_changes)).scalar_one()
    if len(raws) <= stored:
        return 0
    members: dict[int, list[dict[str, Any]]] = defaultdict(list)
    activation: dict[int, int] = {}
    for r in conn.execute(select(s.validator_sets).order_by(s.validator_sets.c.epoch, s.validator_sets.c.position)):
        members[r.epoch].append({"name": r.name, "agency": r.agency, "address": bytes(r.address),
                                 "bls_public_key": bytes(r.bls_public_key),
                                 "bls_pop": bytes(r.bls_pop) if r.bls_pop is not None else b""})
        activation[r.epoch] = int(r.activation_height)
    try:
        proven = prove_sets_from(ValidatorSet(0, activation[0], tuple(members[0])), raws, chain_id)
    except DecodeError as exc:
        raise ConsensusError(f"an epoch-change proof is undecodable: {exc.message}") from exc
    for vs in proven:
        if vs.epoch in members and compute_validator_set_hash(vs.validators) != \
                compute_validator_set_hash(members[vs.epoch]):
            raise ConsensusError(f"the epoch-change proofs prove another set {vs.epoch} than the one indexed")
    conn.execute(insert(s.epoch_changes), [{"epoch": i + 1, "proof": raws[i]} for i in range(stored, len(raws))])
    return len(raws) - stored


def record_gap(conn: Connection, first: int, last: int, reason: str, source: str | None, now_ms: int) -> None:
    """Record that blocks ``first..last`` are known and not indexed (merged with overlapping ranges)."""
    g = s.index_gaps
    overlapping = conn.execute(select(g.c.first_height, g.c.last_height).where(
        g.c.first_height <= last + 1, g.c.last_height >= first - 1)).all()
    lo = min([first, *(int(r[0]) for r in overlapping)])
    hi = max([last, *(int(r[1]) for r in overlapping)])
    conn.execute(g.delete().where(g.c.first_height <= last + 1, g.c.last_height >= first - 1))
    conn.execute(g.insert(), [{"first_height": lo, "last_height": hi, "reason": reason[:2000], "source": source,
                              "recorded_ms": now_ms}])


def trim_gaps(conn: Connection, indexed: int) -> None:
    """Forget the recorded gaps (or the parts of them) at or below the indexed height ``indexed``."""
    g = s.index_gaps
    conn.execute(g.delete().where(g.c.last_height <= indexed))
    for row in conn.execute(select(g).where(g.c.first_height <= indexed)).mappings().all():
        conn.execute(g.delete().where(g.c.first_height == row["first_height"]))
        conn.execute(g.insert(), [dict(row, first_height=indexed + 1)])


def initialize_index(conn: Connection, genesis: Genesis, block0: Block, genesis_set: ValidatorSet) -> None:
    """Record the network (chain id, genesis hash), block 0, the genesis agencies and validator set."""
    upsert_rows(conn, s.meta, [{"key": "chain_id", "value": str(genesis.chain_id)},
                               {"key": "genesis_hash", "value": "0x" + block0.hash.hex()}])
    h = block0.header
    conn.execute(s.blocks.insert(), [{
        "height": 0, "hash": block0.hash, "parent_hash": h.parent_hash, "timestamp_ms": h.timestamp_ms,
        "round": 0, "proposer": h.proposer, "tx_count": 0, "gas_used": 0, "epoch": 0, "tx_root": h.tx_root,
        "receipts_root": h.receipts_root, "state_root": h.state_root, "header": h.encode(), "qc": None,
        "qc_signers": None, "size_bytes": len(block0.encode()), "tx_leaf_hashes": b"", "receipt_leaf_hashes": b""}])
    conn.execute(s.agencies.insert(), [{"name": a.name, "role": a.role, "active": True, "added_height": 0,
                                        "revoked_height": None, "tx_count": 0, "last_height": None}
                                       for a in genesis.agencies])
    accounts = [{"address": acc, "agency": a.name} for a in genesis.agencies for acc in a.accounts]
    if accounts:
        conn.execute(s.agency_accounts.insert(), accounts)
    store_validator_set(conn, genesis_set)
    certs = [compute_certificate_row(a.name, 0, a.certificate) for a in genesis.agencies]
    upsert_rows(conn, s.agency_certificates, [c for c in certs if c is not None])
    upsert_rows(conn, s.meta, [{"key": "ca_certificate", "value": genesis.ca_certificate.decode("ascii", "replace")}])
    conn.execute(s.progress.insert(), [{"id": 1, "height": 0, "block_hash": block0.hash}])


class _Entities:
    """Rows of keyed tables touched by a batch: read once, changed in memory, written once."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.rows: dict[str, dict[Any, dict[str, Any] | None]] = defaultdict(dict)
        self.dirty: dict[str, set[Any]] = defaultdict(set)

    def get(self, table: Table, key: Any) -> dict[str, Any] | None:
        cache = self.rows[table.name]
        if key not in cache:
            pk = list(table.primary_key.columns)[0]
            row = self.conn.execute(select(table).where(pk == key)).mappings().first()
            cache[key] = dict(row) if row else None
        return cache[key]

    def put(self, table: Table, key: Any, row: dict[str, Any]) -> None:
        self.rows[table.name][key] = row
        self.dirty[table.name].add(key)

    def touch(self, table: Table, key: Any) -> None:
        self.dirty[table.name].add(key)

    def flush(self, tables: Sequence[Table]) -> None:
        for t in tables:
            rows = [r for k in sorted(self.dirty[t.name]) if (r := self.rows[t.name][k]) is not None]
            upsert_rows(self.conn, t, rows)


def _day(ts_ms: int) -> int:
    return ts_ms // 86_400_000


class IndexWriter:
    """Writes batches of verified blocks; keeps the account -> agency map it needs in memory."""

    def __init__(self, conn: Connection) -> None:
        self.accounts = {bytes(a): g for a, g in conn.execute(select(s.agency_accounts.c.address,
                                                                     s.agency_accounts.c.agency))}
        self.known_epochs = {int(e) for (e,) in conn.execute(select(s.validator_sets.c.epoch).distinct())}

    def apply_batch(self, conn: Connection, expected: tuple[int, bytes], batch: Sequence[tuple[BlockRows, ValidatorSet]],
                    new_head_hash: bytes) -> None:
        """Write ``batch`` (consecutive heights after checkpoint ``expected``) and move the checkpoint."""
        if not batch:
            return
        accounts = dict(self.accounts)
        ents = _Entities(conn)
        stored = set(self.known_epochs)
        for _, vs in batch:
            if vs.epoch not in stored:
                store_validator_set(conn, vs)
                stored.add(vs.epoch)
        blocks, txs, logs, addr = [], [], [], []
        stats: dict[str, dict[int, list[int]]] = {k: defaultdict(lambda: [0, 0]) for k in s.STATS_TABLES}
        daily: dict[tuple[str, int], int] = defaultdict(int)
        inserts: dict[str, list[dict[str, Any]]] = defaultdict(list)
        pending_policy: dict[int, str] = {}
        for rows, _vs in batch:
            blocks.append(rows.block)
            for name, (_, width) in s.STATS_TABLES.items():
                b = stats[name][rows.timestamp_ms // 1000 // width * width]
                b[0] += len(rows.txs)
                b[1] += 1
            events_by_tx: dict[int, list[Any]] = defaultdict(list)
            for ev in rows.events:
                events_by_tx[ev.tx_seq].append(ev)
            for tx in rows.txs:
                agency = accounts.get(tx["sender"])
                tx["agency"] = agency
                if agency is not None:
                    a = ents.get(s.agencies, agency)
                    if a is not None:
                        a["tx_count"] += 1
                        a["last_height"] = rows.height
                        ents.touch(s.agencies, agency)
                    daily[(agency, _day(rows.timestamp_ms))] += 1
                for ev in events_by_tx.get(tx["seq"], ()):
                    self._on_event(ents, inserts, accounts, pending_policy, rows, tx, ev,
                                   rows.calls.get(tx["seq"]))
            txs.extend(rows.txs)
            logs.extend(rows.logs)
            addr.extend(rows.address_txs)
        first = batch[0][0].height
        last = batch[-1][0].height
        if first != expected[0] + 1:
            raise CheckpointMoved(f"batch starts at {first}, checkpoint is {expected[0]}")
        res = conn.execute(update(s.progress).where(s.progress.c.id == 1, s.progress.c.height == expected[0],
                                                    s.progress.c.block_hash == expected[1])
                           .values(height=last, block_hash=new_head_hash))
        if res.rowcount != 1:
            raise CheckpointMoved("the checkpoint moved under this indexer: is another indexer writing this database?")
        trim_gaps(conn, last)
        insert_rows(conn, s.blocks, blocks)
        insert_rows(conn, s.txs, txs)
        insert_rows(conn, s.address_txs, _dedupe(addr))
        insert_rows(conn, s.logs, logs)
        for tname, rows_ in inserts.items():
            insert_rows(conn, s.metadata.tables[tname], rows_)
        credit_events = [r for rows, _ in batch for r in compute_credit_event_rows(rows)]
        insert_rows(conn, s.credit_events, credit_events)
        upsert_rows(conn, s.credit_records, compute_credit_record_rows(conn, credit_events))
        ents.flush([s.agencies, s.datasets, s.grants, s.proposals, *joint.TABLES])
        upsert_rows(conn, s.agency_accounts, [{"address": k, "agency": v} for k, v in accounts.items()
                                              if self.accounts.get(k) != v])
        add_counts(conn, s.agency_daily, [{"agency": a, "day": d, "txs": n} for (a, d), n in sorted(daily.items())],
                   ["txs"])
        for name, (table, _) in s.STATS_TABLES.items():
            add_counts(conn, table, [{"bucket": b, "txs": v[0], "blocks": v[1]} for b, v in sorted(stats[name].items())],
                       ["txs", "blocks"])

    def on_committed(self, conn: Connection) -> None:
        """Refresh the in-memory maps after a commit (or after a rollback: re-read them)."""
        self.__init__(conn)  # type: ignore[misc]

    def _on_event(self, ents: _Entities, inserts: dict[str, list[dict[str, Any]]], accounts: dict[bytes, str],
                  pending_policy: dict[int, str], rows: BlockRows, tx: dict[str, Any], ev: Any,
                  call: tuple[str | None, str | None, dict[str, Any] | None] | None) -> None:
        a = ev.args
        if a is None or ev.contract is None:
            return
        h, ts = rows.height, rows.timestamp_ms
        key = (ev.contract, ev.event)
        if key == ("Membership", "AgencyAdded"):
            old = ents.get(s.agencies, a["name"])
            ents.put(s.agencies, a["name"], {"name": a["name"], "role": a["role"], "active": True, "added_height": h,
                                             "revoked_height": None,
                                             "tx_count": old["tx_count"] if old else 0,
                                             "last_height": old["last_height"] if old else None})
            for acc in a["accounts"]:
                accounts[bytes.fromhex(acc[2:])] = a["name"]
            pem = _admitted_certificate(ents, call, a["name"])
            row = compute_certificate_row(a["name"], h, pem) if pem else None
            if row is not None:
                inserts["agency_certificates"].append(row)
        elif key == ("Membership", "AgencyRevoked"):
            ag = ents.get(s.agencies, a["name"])
            if ag is not None:
                ag.update(active=False, revoked_height=h)
                ents.touch(s.agencies, a["name"])
        elif key == ("Governance", "ProposalCreated"):
            decoded = None
            if call is not None and call[1] == "propose" and call[2] is not None:
                target = bytes.fromhex(call[2]["target"][2:])
                c, m, args = decode_call(target, bytes.fromhex(call[2]["data"][2:]))
                decoded = dumps({"contract": c, "method": m, "args": args})
            ents.put(s.proposals, a["id"], {
                "id": a["id"], "proposer": bytes.fromhex(a["proposer"][2:]), "target": bytes.fromhex(a["target"][2:]),
                "description": a["description"], "call": decoded, "created_height": h, "tx_hash": ev.tx_hash,
                "yes": 0, "no": 0, "executed_height": None})
        elif key == ("Governance", "Voted"):
            inserts["votes"].append({"seq": ev.seq, "proposal_id": a["id"], "voter": bytes.fromhex(a["voter"][2:]),
                                     "agency": a["agency"], "support": bool(a["support"]), "height": h})
            p = ents.get(s.proposals, a["id"])
            if p is not None:
                p["yes" if a["support"] else "no"] += 1
                ents.touch(s.proposals, a["id"])
        elif key == ("Governance", "ProposalExecuted"):
            p = ents.get(s.proposals, a["id"])
            if p is not None:
                p["executed_height"] = h
                ents.touch(s.proposals, a["id"])
        elif key == ("Notary", "Anchored"):
            inserts["anchors"].append({"seq": ev.seq, "digest": bytes.fromhex(a["digest"][2:]),
                                       "by": bytes.fromhex(a["by"][2:]), "height": h})
        elif key == ("Evidence", "EquivocationRecorded"):
            inserts["evidence"].append({
                "seq": ev.seq, "epoch": a["epoch"], "view": a["view"], "validator": a["validator"],
                "agency": a["agency"], "kind": a["kind"], "evidence_hash": bytes.fromhex(a["evidenceHash"][2:]),
                "reporter": bytes.fromhex(a["reporter"][2:]), "height": h, "tx_hash": ev.tx_hash})
        elif ev.contract == "Datasets":
            self._on_dataset_event(ents, inserts, pending_policy, ev, h, ts)
        elif ev.contract == "AccessControl" and "datasetId" in a:
            self._on_access_event(ents, inserts, ev, h, ts)
        elif ev.contract == joint.CONTRACT:
            joint.apply_joint_event(ents, inserts, ev, h, ts)

    def _history(self, inserts: dict[str, list[dict[str, Any]]], ev: Any, dataset_id: int, agency: str | None,
                 h: int, ts: int, **extra: Any) -> None:
        inserts["dataset_history"].append({
            "seq": ev.seq, "dataset_id": dataset_id, "kind": ev.event, "agency": agency, "ref_id": extra.get("ref_id"),
            "allowed": extra.get("allowed"), "policy_ids": extra.get("policy_ids"), "reasons": extra.get("reasons"),
            "details": dumps(ev.args), "height": h, "timestamp_ms": ts, "tx_hash": ev.tx_hash})

    def _on_dataset_event(self, ents: _Entities, inserts: dict[str, list[dict[str, Any]]],
                          pending_policy: dict[int, str], ev: Any, h: int, ts: int) -> None:
        a = ev.args
        did = int(a["id"])
        d = ents.get(s.datasets, did)
        if ev.event == "DatasetRegistered":
            d = {"id": did, "owner": a["owner"], "title": a["title"], "content_hash": bytes.fromhex(a["contentHash"][2:]),
                 "size_bytes": a["sizeBytes"], "version": 1, "policy_id": pending_policy.pop(did, None),
                 "retired": False, "registered_height": h, "last_height": h, "requests": 0, "grants": 0}
            ents.put(s.datasets, did, d)
        elif d is None:
            if ev.event == "DatasetPolicySet":
                pending_policy[did] = a["policyId"]  # emitted before DatasetRegistered by register()
            self._history(inserts, ev, did, None, h, ts)
            return
        elif ev.event == "DatasetVersionAdded":
            d.update(version=a["version"], content_hash=bytes.fromhex(a["contentHash"][2:]), size_bytes=a["sizeBytes"])
        elif ev.event == "DatasetPolicySet":
            d["policy_id"] = a["policyId"]
        elif ev.event == "DatasetRetired":
            d["retired"] = True
        d["last_height"] = h
        ents.touch(s.datasets, did)
        self._history(inserts, ev, did, d["owner"], h, ts)

    def _on_access_event(self, ents: _Entities, inserts: dict[str, list[dict[str, Any]]], ev: Any, h: int,
                         ts: int) -> None:
        a = ev.args
        did = int(a["datasetId"])
        d = ents.get(s.datasets, did)
        agency = a.get("requester") or a.get("grantee") or a.get("by")
        ref = a.get("requestId", a.get("grantId"))
        extra: dict[str, Any] = {"ref_id": ref}
        if ev.event == "AccessRequested" and d is not None:
            d["requests"] += 1
        elif ev.event == "AccessDecided":
            extra.update(allowed=bool(a["allowed"]), policy_ids=json.dumps(a["policyIds"]),
                         reasons=json.dumps(a["errors"]))
        elif ev.event == "GrantIssued":
            if d is not None:
                d["grants"] += 1
            ents.put(s.grants, a["grantId"], {
                "id": a["grantId"], "dataset_id": did, "grantee": a["grantee"], "action": a["action"],
                "purpose": a["purpose"], "expires_at": a["expiresAt"], "issued_height": h, "revoked_height": None,
                "deliveries": 0, "computations": 0})
        elif ev.event in ("GrantRevoked", "DeliveryRecorded", "ComputationRecorded"):
            g = ents.get(s.grants, a["grantId"])
            if g is not None:
                if ev.event == "GrantRevoked":
                    g["revoked_height"] = h
                else:
                    g["deliveries" if ev.event == "DeliveryRecorded" else "computations"] += 1
                ents.touch(s.grants, a["grantId"])
        if d is not None:
            d["last_height"] = h
            ents.touch(s.datasets, did)
        self._history(inserts, ev, did, agency, h, ts, **extra)


def _dedupe(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[tuple[bytes, int]] = set()
    out = []
    for r in rows:
        k = (r["address"], r["seq"])
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out
