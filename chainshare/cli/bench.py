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
@click.option("--rate", type=click.FloatRange(1, 100_000), default=None,
              help="Offer transactions at this rate (tx/s) instead of as fast as possible: latency at a load.")
@click.option("--kill-one", is_flag=True, help="SIGKILL one validator before the load (needs --nodes >= 4).")
def ingest(nodes: int, txs: int, clients: int, receipt_batch: int, directory: Path | None,
           measure_restart: bool, rate: float | None, kill_one: bool) -> None:
    """Pre-signed Notary.anchor transactions from one account over concurrent JSON-RPC clients."""
    import json

    from chainshare.bench import run_ingest, write_result

    if kill_one and nodes < 4:
        raise click.UsageError("--kill-one needs --nodes 4 or more (one crashed validator of 3f+1)")
    result = run_ingest(nodes, txs, clients, receipt_batch, directory, measure_restart, rate, kill_one)
    result["saved_to"] = str(write_result(result))
    click.echo(json.dumps(result))


@group.command("sharing")
@click.option("--decisions", type=click.IntRange(0, 1_000_000), default=2000, show_default=True,
              help="Access requests sent to the devnet (0: skip).")
@click.option("--nodes", type=click.IntRange(1, 16), default=4, show_default=True,
              help="Validators of the devnet that finalizes the access decisions.")
@click.option("--clients", type=click.IntRange(1, 256), default=32, show_default=True)
@click.option("--cedar-iterations", type=click.IntRange(1, 1_000_000), default=2000, show_default=True)
@click.option("--dataset-mb", type=click.IntRange(0, 100_000), default=100, show_default=True,
              help="Size of the dataset delivered between two nodes (0: skip).")
@click.option("--action", "actions", type=click.Choice(["read_identified", "read"]), multiple=True,
              help="Delivery actions to measure (default: both).")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Work here (default: a temporary directory, removed afterwards).")
def sharing(decisions: int, nodes: int, clients: int, cedar_iterations: int, dataset_mb: int,
            actions: tuple[str, ...], directory: Path | None) -> None:
    """Access decisions finalized per second, Cedar time per decision, delivery throughput between two nodes."""
    import json

    from chainshare.bench import write_result
    from chainshare.bench_sharing import run_sharing

    result = run_sharing(decisions=decisions, clients=clients, cedar_iterations=cedar_iterations,
                         dataset_mb=dataset_mb, actions=list(actions or ("read_identified", "read")),
                         directory=directory, nodes=nodes)
    result["saved_to"] = str(write_result(result))
    click.echo(json.dumps(result))


@group.command("sim")
@click.option("--seeds", type=click.IntRange(1, 1_000_000), default=10_000, show_default=True)
@click.option("--validators", "n", type=click.IntRange(4, 31), default=4, show_default=True)
@click.option("--reconfigure", is_flag=True,
              help="One validator-set change per seed (replace, reorder, add or remove at a seeded height).")
def sim(seeds: int, n: int, reconfigure: bool) -> None:
    """Run the deterministic consensus simulator over many seeded schedules (delays, drops,
    partitions, crashes, a byzantine validator, optionally a validator-set change); prints
    violations (must be 0) and finality rounds."""
    import json

    from chainshare.bench import write_result
    from chainshare.consensus.sim import run_sim_bench

    result = run_sim_bench(seeds, n, reconfigure=reconfigure)
    result["saved_to"] = str(write_result(result))
    click.echo(json.dumps(result))
    if result.get("violations") or result.get("liveness_failures"):
        raise click.exceptions.Exit(1)


@group.command("explorer")
@click.option("--txs", type=click.IntRange(1, 10_000_000), default=20_000, show_default=True)
@click.option("--db", required=True, help="Database URL (sqlite:///FILE or postgresql+psycopg://...); use a fresh one.")
@click.option("--clients", type=click.IntRange(1, 256), default=8, show_default=True)
@click.option("--requests", type=click.IntRange(1, 100_000), default=200, show_default=True,
              help="Requests per endpoint.")
def explorer(txs: int, db: str, clients: int, requests: int) -> None:
    """Build a certified chain of TXS signed transactions offline, index it, then load 2 API replicas."""
    import json

    from chainshare.bench import write_result
    from chainshare.explorer.bench import run_explorer_bench

    result = run_explorer_bench(txs, db, clients, requests)
    result["saved_to"] = str(write_result(result))
    click.echo(json.dumps(result))
