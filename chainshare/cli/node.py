"""``chainshare node run``: run a node from its TOML configuration until SIGINT/SIGTERM."""

from __future__ import annotations

from pathlib import Path

import click

from chainshare.config import load_config

group = click.Group("node", help="Run a node.")


@group.command("run")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Node configuration (TOML); CHAINSHARE_<SECTION>_<KEY> variables override it.")
@click.option("--data-dir", help="Override [node] data_dir.")
@click.option("--port", type=click.IntRange(1, 65535), help="Override [api] port.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), help="Override [node] log_level.")
def run(config_path: Path, data_dir: str | None, port: int | None, log_level: str | None) -> None:
    """Run a node: ledger, block production and API on one port (stops cleanly on Ctrl-C)."""
    from chainshare.logs import configure_logging
    from chainshare.node import serve_node

    cfg = load_config(config_path, {"node": {"data_dir": data_dir, "log_level": log_level}, "api": {"port": port}})
    configure_logging(cfg.node.log_level)
    import uvloop

    uvloop.run(serve_node(cfg))
