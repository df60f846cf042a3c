"""``chainshare chain verify``: re-check a chain from genesis, offline or over the API."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from chainshare.cli.common import emit, json_option
from chainshare.errors import ConsensusError, InvalidInput

group = click.Group("chain", help="Inspect and verify a chain.")


@group.command("verify")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Data directory of a STOPPED node (LevelDB allows one process at a time).")
@click.option("--node", "node_url", help="Verify over a running node's API instead, e.g. http://127.0.0.1:8545.")
@json_option
def verify(data_dir: Path | None, node_url: str | None, as_json: bool) -> None:
    """Re-check every block from genesis: hashes, Merkle roots, proposer signatures, QCs, and state
    roots by re-executing every transaction, and prove the head final (a 2-chain, or the finality
    proof the source keeps). Exit 0 if all verifies and the head is proven final, 1 at the first
    fault, 3 if every block verifies but the head is only certified, not proven final."""
    from chainshare.verify import ApiSource, StoreSource, verify_chain

    if (data_dir is None) == (node_url is None):
        raise InvalidInput("give exactly one of --data-dir DIR or --node URL")

    def progress(h: int, head: int) -> None:
        if not as_json and sys.stderr.isatty() and (h % 500 == 0 or h == head):
            click.echo(f"\rverified {h}/{head} blocks", err=True, nl=h == head)

    try:
        if data_dir is not None:
            from chainshare.ledger.chain import ChainStore
            from chainshare.ledger.store import LevelDBStore

            if not (data_dir / "CURRENT").exists():
                raise InvalidInput(f"{data_dir} is not a chainshare data directory (no LevelDB there)")
            store = LevelDBStore(data_dir, create=False)
            try:
                report = verify_chain(StoreSource(ChainStore(store)), progress)
            finally:
                store.close()
        else:
            from chainshare.client import NodeClient

            with NodeClient(str(node_url)) as client:
                report = verify_chain(ApiSource(client), progress)
    except ConsensusError as exc:
        emit({"ok": False, "error": exc.message}, as_json, f"chain verification FAILED: {exc.message}")
        raise click.exceptions.Exit(1) from None
    head = report.blocks - 1
    if not report.head_final:
        emit(report.to_json(), as_json,
             f"chain verified, but NOT proven final past block {report.finalized_height}: blocks "
             f"{report.finalized_height + 1}..{head} are certified by QCs, and no 2-chain or finality proof shows "
             "they cannot be abandoned (the source may serve a certified tail that was never finalized)")
        raise click.exceptions.Exit(3)
    emit(report.to_json(), as_json,
         f"chain verified: {report.blocks} blocks, {report.transactions} transactions, head {report.head_hash} "
         f"final ({report.finality}); protocol versions "
         + ", ".join(f"v{v} at {a}..{b}" for v, a, b in report.protocol_versions))
