"""``chainshare explorer ...``: the explorer's indexer and query API, and a devnet launcher."""

from __future__ import annotations

import signal
from pathlib import Path

import click

from chainshare.cli.common import emit, json_option

GRACEFUL_SHUTDOWN_S = 10
group = click.Group("explorer", help="Index a network into SQL and serve the explorer API.")

_db = click.option("--db", "db", required=True, help="Database URL: sqlite:///FILE (or a path) or "
                   "postgresql+psycopg://USER@HOST/DB.")


@group.command("index")
@click.option("--node", "nodes", required=True, help="Node URL(s), comma-separated: the indexer fails over in order.")
@_db
@click.option("--follow", type=click.Choice(["ws", "poll"]), default="ws", show_default=True,
              help="How to learn of new heads: polling, or eth_subscribe newHeads over websocket (polls when down).")
@click.option("--poll-interval", type=click.FloatRange(0.05, 60), default=0.5, show_default=True)
@click.option("--batch-blocks", type=click.IntRange(1, 5000), default=200, show_default=True)
@click.option("--genesis-hash", default=None, help="Refuse any network but the one with this genesis block hash.")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None, help="Serve Prometheus /metrics here.")
@click.option("--until", type=click.IntRange(0, 2**40), default=None, help="Exit once this height is indexed.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info")
def index(nodes: str, db: str, follow: str, poll_interval: float, batch_blocks: int, genesis_hash: str | None,
          metrics_port: int | None, until: int | None, log_level: str) -> None:
    """Follow finalized blocks, verify each, store them (foreground; Ctrl-C stops; restarts resume)."""
    from chainshare.explorer.db.engine import create_db_engine
    from chainshare.explorer.indexer.service import Indexer, IndexerConfig, ProgressPrinter
    from chainshare.logs import configure_logging

    configure_logging(log_level)
    urls = tuple(u.strip() for u in nodes.split(",") if u.strip())
    for u in urls:
        if not u.startswith(("http://", "https://")):
            raise click.BadParameter(f"{u!r} must start with http:// or https://", param_hint="--node")
    ix = Indexer(create_db_engine(db), IndexerConfig(urls=urls, batch_blocks=batch_blocks,
                                                     poll_interval=poll_interval, follow=follow,
                                                     genesis_hash=genesis_hash, until=until),
                 progress=ProgressPrinter())
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr="127.0.0.1", registry=ix.metrics.registry)

    def _stop(signum: int, _frame: object) -> None:
        ix.stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    ix.run()


@group.command("serve")
@_db
@click.option("--read-db", default=None, help="A read replica of --db to run queries on.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8600, show_default=True)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="warning")
@click.option("--node", "node_url", default=None, help="A node's URL: lets /credentials/verify check pasted proofs.")
def serve(db: str, read_db: str | None, host: str, port: int, log_level: str, node_url: str | None) -> None:
    """Serve the explorer API (stateless, read-only: run as many as needed)."""
    import uvicorn

    from chainshare.explorer.api.app import create_explorer_app
    from chainshare.explorer.db.engine import create_db_engine, redact_db_url
    from chainshare.logs import configure_logging

    configure_logging(log_level)
    app = create_explorer_app(create_db_engine(db, readonly=True),
                              create_db_engine(read_db, readonly=True) if read_db else None, redact_db_url(db))
    from chainshare.explorer.web.credentials import mount_credential_pages

    mount_credential_pages(app, node_url)
    # SIGTERM: stop accepting, finish the requests in flight (at most GRACEFUL_SHUTDOWN_S), then exit.
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False,
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)


@group.command("balance")
@click.option("--upstream", "upstreams", required=True, help="API replica URLs, comma-separated.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8600, show_default=True)
@click.option("--cooldown", type=click.FloatRange(0.1, 600), default=2.0, show_default=True,
              help="Seconds a replica that refused a connection is skipped.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="warning")
def balance(upstreams: str, host: str, port: int, cooldown: float, log_level: str) -> None:
    """Balance requests over api replicas; a GET a draining or stopped replica fails is retried on another."""
    import uvicorn

    from chainshare.logs import configure_logging
    from chainshare.ops.balancer import BalancerConfig, create_balancer_app

    configure_logging(log_level)
    config = BalancerConfig(tuple(u.strip() for u in upstreams.split(",") if u.strip()), cooldown_s=cooldown)
    uvicorn.run(create_balancer_app(config), host=host, port=port, log_level=log_level, access_log=False,
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)


@group.command("restart")
@click.option("--devnet", "directory", type=click.Path(file_okay=False, path_type=Path), required=True)
@json_option
def restart(directory: Path, as_json: bool) -> None:
    """Rolling restart of the devnet explorer's api replicas (one at a time, each drained first)."""
    from chainshare.explorer.launcher import restart_replicas

    out = restart_replicas(directory)
    emit(out, as_json, "restarted " + ", ".join(f"{k} (away {v} s)" for k, v in out["away_seconds"].items()))


@group.command("up")
@click.option("--devnet", "directory", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--db", default=None, help="Database URL (default: SQLite file DIR/explorer/explorer.db).")
@click.option("--port", type=click.IntRange(1024, 65000), default=None, help="Port of the first api replica.")
@click.option("--replicas", type=click.IntRange(1, 16), default=1, show_default=True)
@click.option("--follow", type=click.Choice(["ws", "poll"]), default="ws", show_default=True)
@json_option
def up(directory: Path, db: str | None, port: int | None, replicas: int, follow: str, as_json: bool) -> None:
    """Start an indexer and N api replicas for a devnet; returns once the index has caught up."""
    from chainshare.explorer.launcher import EXPLORER_FILE, start_explorer

    out = start_explorer(directory, db, port, replicas, follow)
    emit(out, as_json, "explorer is up: " + "  ".join(u + "/api/v1/status" for u in out["urls"])
         + f"\n  database {out['db']}\n  description {directory / EXPLORER_FILE}")


@group.command("down")
@click.option("--devnet", "directory", type=click.Path(file_okay=False, path_type=Path), required=True)
@json_option
def down(directory: Path, as_json: bool) -> None:
    """Stop the devnet's explorer processes (the database is kept)."""
    from chainshare.explorer.launcher import stop_explorer

    emit(stop_explorer(directory), as_json)
