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
@click.option("--max-pending", type=click.IntRange(0, 1_000_000), default=0, show_default=True,
              help="Closed loop only: clients wait while this many sent transactions have no receipt (0: no "
                   "bound). Under the node's busy_min_pending floor (2,000) the load never draws \"busy, retry\".")
def ingest(nodes: int, txs: int, clients: int, receipt_batch: int, directory: Path | None,
           measure_restart: bool, rate: float | None, kill_one: bool, max_pending: int) -> None:
    """Pre-signed Notary.anchor transactions (one account per node) over concurrent JSON-RPC clients."""
    import json

    from chainshare.bench import run_ingest, write_result

    if kill_one and nodes < 4:
        raise click.UsageError("--kill-one needs --nodes 4 or more (one crashed validator of 3f+1)")
    if max_pending and rate is not None:
        raise click.UsageError("--max-pending bounds the closed loop; with --rate the load is an open loop")
    result = run_ingest(nodes, txs, clients, receipt_batch, directory, measure_restart, rate, kill_one,
                        max_pending or None)
    result["saved_to"] = str(write_result(result))
    click.echo(json.dumps(result))


@group.command("longchain")
@click.option("--txs", type=click.IntRange(1, 10_000_000), default=100_000, show_default=True)
@click.option("--checkpoint", type=click.IntRange(1, 10_000_000), default=100_000, show_default=True,
              help="Report RSS, disk and rates every this many transactions.")
@click.option("--chunk", type=click.IntRange(100, 1_000_000), default=10_000, show_default=True,
              help="Transactions signed and sent at a time (the load client's memory).")
@click.option("--clients", type=click.IntRange(1, 256), default=32, show_default=True)
@click.option("--receipt-batch", type=click.IntRange(1, 1000), default=500, show_default=True)
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the devnet here (default: a temporary directory, removed afterwards).")
def longchain(txs: int, checkpoint: int, chunk: int, clients: int, receipt_batch: int,
              directory: Path | None) -> None:
    """Grow one node to --txs transactions: RSS at checkpoints, disk per transaction, restart after
    SIGKILL, and chain verify blocks/s and tx/s."""
    import json

    from chainshare.bench import write_result
    from chainshare.bench_longchain import run_longchain

    result = run_longchain(txs, checkpoint, chunk, clients, receipt_batch, directory)
    result["saved_to"] = str(write_result(result))
    click.echo(json.dumps(result))


@group.command("sharing")
@click.option("--decisions", type=click.IntRange(0, 1_000_000), default=2000, show_default=True,
              help="Access requests sent to the devnet (0: skip).")
@click.option("--nodes", type=click.IntRange(1, 16), default=4, show_default=True,
              help="Validators of the devnet that finalizes the access decisions.")
@click.option("--clients", type=click.IntRange(1, 256), default=32, show_default=True)
@click.option("--max-pending", type=click.IntRange(0, 1_000_000), default=1500, show_default=True,
              help="Closed loop: senders wait while this many requests have no receipt (0: no bound). The default "
                   "stays under the node's busy_min_pending floor (2,000), so the load keeps blocks full without "
                   "a backlog for \"busy, retry\" to refuse.")
@click.option("--cedar-iterations", type=click.IntRange(1, 1_000_000), default=2000, show_default=True)
@click.option("--dataset-mb", type=click.IntRange(0, 100_000), default=100, show_default=True,
              help="Size of the dataset delivered between two nodes (0: skip).")
@click.option("--action", "actions", type=click.Choice(["read_identified", "read"]), multiple=True,
              help="Delivery actions to measure (default: both).")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Work here (default: a temporary directory, removed afterwards).")
def sharing(decisions: int, nodes: int, clients: int, max_pending: int, cedar_iterations: int, dataset_mb: int,
            actions: tuple[str, ...], directory: Path | None) -> None:
    """Access decisions finalized per second, Cedar time per decision, delivery throughput between two nodes."""
    import json

    from chainshare.bench import write_result
    from chainshare.bench_sharing import run_sharing

    result = run_sharing(decisions=decisions, clients=clients, cedar_iterations=cedar_iterations,
                         dataset_mb=dataset_mb, actions=list(actions or ("read_identified", "read")),
                         directory=directory, nodes=nodes, max_pending=max_pending or None)
    result["saved_to"] = str(write_result(result))
    click.echo(json.dumps(result))


@group.command("abuse")
@click.option("--nodes", type=click.IntRange(1, 16), default=4, show_default=True)
@click.option("--duration", type=click.FloatRange(2, 3600), default=30, show_default=True,
              help="Seconds of each phase (baseline, then under attack).")
@click.option("--attackers", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Concurrent loops sending the heaviest batches.")
@click.option("--logs", type=click.IntRange(1, 1_000_000), default=12_000, show_default=True,
              help="Notary.anchor transactions (one log each) on the chain before the phases.")
@click.option("--no-rate-limit", is_flag=True,
              help="Start the nodes without the per-client rate limit: work budgets and worker threads only "
                   "(as against an attacker with many addresses).")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the devnet here (default: a temporary directory, removed afterwards).")
def abuse(nodes: int, duration: float, attackers: int, logs: int, no_rate_limit: bool,
          directory: Path | None) -> None:
    """/healthz and finality latency (p50/p99) while clients send the heaviest accepted JSON-RPC batches
    in a loop, against a baseline without them in the same run."""
    import json

    from chainshare.bench import write_result
    from chainshare.bench_abuse import run_abuse

    result = run_abuse(nodes, duration, attackers, logs, not no_rate_limit, directory)
    result["saved_to"] = str(write_result(result))
    click.echo(json.dumps(result))


@group.command("credit")
@click.option("--records", type=click.IntRange(1, 10_000_000), default=5000, show_default=True)
@click.option("--subjects", type=click.IntRange(1, 1_000_000), default=500, show_default=True)
@click.option("--nodes", type=click.IntRange(1, 16), default=4, show_default=True)
@click.option("--clients", type=click.IntRange(1, 256), default=32, show_default=True)
@click.option("--queries", type=click.IntRange(1, 100_000), default=200, show_default=True)
@click.option("--watch-samples", type=click.IntRange(0, 1000), default=10, show_default=True)
@click.option("--per-tx", type=click.IntRange(1, 200), default=200, show_default=True,
              help="Records per transaction at most (publishBatch; 1 = one publish per transaction); a batch "
                   "also stays under a tenth of a block's gas and the 128 KiB transaction limit.")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path))
def credit(records: int, subjects: int, nodes: int, clients: int, queries: int, watch_samples: int, per_tx: int,
           directory: Path | None) -> None:
    """Credit records finalized per second from every agency as issuer, node CPU per record, finality latency,
    RSS, ledger bytes per record, subject query latency (node REST), watch delivery after finality."""
    import json

    from chainshare.bench import write_result
    from chainshare.bench_credit import run_credit

    result = run_credit(records=records, subjects=subjects, nodes=nodes, clients=clients, queries=queries,
                        watch_samples=watch_samples, directory=directory, per_tx=per_tx)
    result["saved_to"] = str(write_result(result))
    click.echo(json.dumps(result))


@group.command("sim")
@click.option("--seeds", type=click.IntRange(1, 1_000_000), default=10_000, show_default=True)
@click.option("--validators", "n", type=click.IntRange(4, 31), default=4, show_default=True)
@click.option("--reconfigure", is_flag=True,
              help="One validator-set change per seed (replace, reorder, add or remove at a seeded height).")
@click.option("--twins", "twins_seeds", type=click.IntRange(0, 1_000_000), default=0, show_default=True,
              help="Also run this many random Twins schedules (f byzantine validators as doubled honest cores).")
def sim(seeds: int, n: int, reconfigure: bool, twins_seeds: int) -> None:
    """Run the deterministic consensus simulator over many seeded schedules (delays, drops,
    partitions, crashes, a byzantine validator, optionally a validator-set change), the scripted
    attack schedules, and optionally random Twins schedules; prints violations (must be 0) and
    finality rounds."""
    import json

    from chainshare.bench import write_result
    from chainshare.consensus.adversary import run_adversary_bench
    from chainshare.consensus.sim import run_sim_bench

    result = run_sim_bench(seeds, n, reconfigure=reconfigure)
    result["adversary"] = adversary = run_adversary_bench(twins_seeds, n)
    if adversary["attack_violations"] or adversary["twins_violations"]:
        result["violations"] += adversary["attack_violations"] + adversary["twins_violations"]  # type: ignore[operator]
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
@click.option("--credit-records", type=click.IntRange(1, 10_000_000), default=None,
              help="Instead: a chain of this many credit records (publishBatch), then the credit API's latency.")
@click.option("--credit-subjects", type=click.IntRange(1, 10_000_000), default=None,
              help="Subjects the credit records are spread over (default: records / 10).")
@click.option("--api-only", is_flag=True,
              help="Only load 2 API replicas over --db, a database an earlier run indexed (with --credit-records N: "
                   "the credit API over an earlier --credit-records N run's database).")
def explorer(txs: int, db: str, clients: int, requests: int, credit_records: int | None,
             credit_subjects: int | None, api_only: bool) -> None:
    """Build a certified chain of TXS signed transactions offline (or of --credit-records credit records),
    index it, then load 2 API replicas."""
    import json

    from chainshare.bench import write_result

    if api_only:
        if click.get_current_context().get_parameter_source("txs") is not click.core.ParameterSource.DEFAULT:
            raise click.UsageError("--api-only loads the chain an earlier run indexed into --db: --txs would build "
                                   "nothing (leave it out)")
        from chainshare.explorer.bench import run_explorer_api_bench
        from chainshare.explorer.credit_bench import count_indexed_credit, run_credit_api_bench
        from chainshare.explorer.db.engine import create_db_engine, has_schema

        if not has_schema(create_db_engine(db, readonly=True)):
            raise click.UsageError(f"--api-only: {db} holds no indexed chain (run `bench explorer --txs N` first)")
        if credit_records is not None:
            held = count_indexed_credit(db)[0]
            if held != credit_records:
                raise click.UsageError(f"--api-only --credit-records {credit_records}: {db} holds {held} indexed "
                                       "credit records")
            result = run_credit_api_bench(db, clients, requests)
        else:
            result = run_explorer_api_bench(db, clients, requests)
        result["saved_to"] = str(write_result(result))
        click.echo(json.dumps(result))
        return
    if credit_records is not None:
        from chainshare.explorer.credit_bench import run_credit_bench

        subjects = credit_subjects or max(1, credit_records // 10)
        result = run_credit_bench(credit_records, min(subjects, credit_records), db, clients, requests)
        result["saved_to"] = str(write_result(result))
        click.echo(json.dumps(result))
        return
    from chainshare.explorer.bench import run_explorer_bench

    result = run_explorer_bench(txs, db, clients, requests)
    result["saved_to"] = str(write_result(result))
    click.echo(json.dumps(result))


@group.command("credential")
@click.option("--registry-size", type=click.IntRange(2, 100_000), default=1000, show_default=True)
@click.option("--proofs", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--predicates", type=click.IntRange(1, 3), default=2, show_default=True)
def credential(registry_size: int, proofs: int, predicates: int) -> None:
    """Zero-knowledge credit credentials (AnonCreds): proof bytes, prove/verify CPU and wall ms, setup."""
    import json

    from chainshare.bench import write_result
    from chainshare.bench_credential import run_credential_bench

    result = run_credential_bench(registry_size, proofs, predicates)
    result["saved_to"] = str(write_result(result))
    click.echo(json.dumps(result))


@group.command("credential-revocation")
@click.option("--samples", type=click.IntRange(1, 100), default=5, show_default=True)
def credential_revocation(samples: int) -> None:
    """Automatic revocation (credit credential revoke --changed --follow): record final -> revocation final."""
    import json

    from chainshare.bench import write_result
    from chainshare.bench_credential import run_revocation_bench

    result = run_revocation_bench(samples)
    result["saved_to"] = str(write_result(result))
    click.echo(json.dumps(result))


@group.command("joint")
@click.option("--agencies", type=click.IntRange(2, 16), default=3, show_default=True)
@click.option("--rows", type=click.IntRange(1, 100_000_000), default=1_000_000, show_default=True,
              help="Rows per agency.")
def joint(agencies: int, rows: int) -> None:
    """Secure aggregation (count + sum + mean) over AGENCIES x ROWS rows: time and bytes exchanged."""
    import json

    from chainshare.bench import write_result
    from chainshare.privacy.bench import run_joint_bench

    result = run_joint_bench(agencies, rows)
    result["saved_to"] = str(write_result(result))
    click.echo(json.dumps(result))
