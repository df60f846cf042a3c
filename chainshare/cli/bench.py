"""``chainshare bench ...``: benchmarks that print one JSON object (and save it under bench-results/)."""

from __future__ import annotations

from pathlib import Path

import click

group = click.Group("bench", help="Benchmarks: each prints one JSON object and saves it under bench-results/.")


@group.command("ingest")
@click.option("--nodes", type=click.IntRange(1, 16), default=1, show_default=True)
@click.option("--txs", type=click.IntRange(1, 1_000_000), default=10_000, show_default=True)
@click.option("--clients", type=click.IntRange(1, 256), default=32, show_default=True)
@click.option("--receipt-batch", type=click.IntRange(1, 1000), default=500, show_default=True)
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the devnet here (default: a temporary directory, removed afterwards).")
@click.option("--measure-restart", is_flag=True, help="Also SIGKILL the node afterwards and time its restart.")
def ingest(nodes: int, txs: int, clients: int, receipt_batch: int, directory: Path | None,
           measure_restart: bool) -> None:
    """Pre-signed Notary.anchor transactions from one account over concurrent JSON-RPC clients."""
    import json

    from chainshare.bench import run_ingest, write_result

    result = run_ingest(nodes, txs, clients, receipt_batch, directory, measure_restart)
    result["saved_to"] = str(write_result(result))
    click.echo(json.dumps(result))
