"""``chainshare devnet ...``: a local network on 127.0.0.1 for development and demos."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import click

from chainshare.cli.common import emit, json_option
from chainshare.devnet import DEVNET_FILE, create_devnet, devnet_status, start_devnet, stop_devnet
from chainshare.errors import InvalidInput

group = click.Group("devnet", help="Run a local development network (dev keys, loopback only).")

_dir = click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), required=True,
                    help="Directory holding the network (created if missing).")


def _summary(info: dict[str, object]) -> str:
    lines = ["chainshare devnet is up", ""]
    for n in info["nodes"]:  # type: ignore[attr-defined]
        lines.append(f"  {n['name']} ({n['agency']}): JSON-RPC {n['rpc']}  REST {n['api']}  pid {n['pid']}")
    lines += ["", "  dev accounts (DEVELOPMENT ONLY, plain-text keys):"]
    for a in info["accounts"]:  # type: ignore[attr-defined]
        lines.append(f"    {a['agency']}: {a['address']}  key {a['private_key']}")
    lines += ["", "  system contracts:"]
    for name, addr in info["contracts"].items():  # type: ignore[attr-defined]
        lines.append(f"    {name}: {addr}")
    return "\n".join(lines)


@group.command("up")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Directory holding the network (created if missing).")
@click.option("--compose", "compose_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Instead of starting processes, write the keys, genesis, configs and secrets of the 4-validator "
                   "container network of docker/compose.yml into this directory (docker/network next to it).")
@click.option("--nodes", type=click.IntRange(1, 16), default=1, show_default=True, help="Number of validators.")
@click.option("--base-port", type=click.IntRange(1024, 65000), default=8545, show_default=True,
              help="API port of node1: node i serves on base-port + i - 1 and, with several nodes, "
                   "talks to its peers on base-port + nodes + i - 1.")
@click.option("--chain-id", type=click.IntRange(1, 2**53 - 1), default=1337, show_default=True)
@click.option("--block-time-ms", type=click.IntRange(10, 60_000), default=200, show_default=True)
@click.option("--foreground", is_flag=True, help="Stay in the foreground; Ctrl-C stops the network.")
@click.option("--explorer", "with_explorer", is_flag=True,
              help="Also start the explorer (indexer + API on SQLite in DIR/explorer) and print its URL.")
@json_option
def up(directory: Path | None, compose_dir: Path | None, nodes: int, base_port: int, chain_id: int,
       block_time_ms: int, foreground: bool, with_explorer: bool, as_json: bool) -> None:
    """Create (first time) and start the network; returns once every node produces blocks.

    On an existing DIR it starts again, on its data, every node that is not running. With --compose DIR
    it only writes a container network for `docker compose` (docker/compose.yml)."""
    if compose_dir is not None:
        from chainshare.ops.compose import create_compose_network

        if directory is not None:
            raise InvalidInput("give either --dir (local processes) or --compose (containers), not both")
        written = create_compose_network(compose_dir, chain_id)
        emit(written, as_json, f"container network written to {compose_dir} (genesis {written['genesis_hash']}); "
                               "next:\n  " + "\n  ".join(written["next"]))
        return
    if directory is None:
        raise InvalidInput("--dir DIR is required (or --compose DIR for a container network)")
    if not (directory / DEVNET_FILE).exists():
        create_devnet(directory, nodes, base_port, chain_id, block_time_ms)
    info = start_devnet(directory)
    summary = _summary(info) + f"\n\n  network description: {directory / DEVNET_FILE}"
    if with_explorer:
        from chainshare.explorer.launcher import start_explorer

        info = {**info, "explorer": start_explorer(directory)}
        summary += f"\n\n  explorer: {info['explorer']['urls'][0]}/  (JSON API: /api/v1, docs: /api/v1/docs)"
    emit(info, as_json, summary)
    if not foreground:
        return
    stop = {"now": False}

    def _on_signal(signum: int, _frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    click.echo("\nrunning in the foreground: press Ctrl-C to stop the network", err=True)
    while not stop["now"]:
        time.sleep(0.2)
    click.echo("stopping ...", err=True)
    if with_explorer:
        from chainshare.explorer.launcher import stop_explorer

        stop_explorer(directory)
    stop_devnet(directory)
    click.echo("devnet stopped (its data stays in " + str(directory) + ")", err=True)


@group.command("down")
@_dir
@json_option
def down(directory: Path, as_json: bool) -> None:
    """Stop every node of the network, and its explorer if one runs (SIGTERM, SIGKILL after 15 s). Data is kept."""
    from chainshare.explorer.launcher import read_explorer, stop_explorer

    out: dict[str, object] = {}
    if read_explorer(directory) is not None:
        out["explorer"] = stop_explorer(directory)
    emit({"nodes": stop_devnet(directory), **out}, as_json)


@group.command("status")
@_dir
@json_option
def status(directory: Path, as_json: bool) -> None:
    """Show each node: running, pid, head height, mempool size."""
    emit({"nodes": devnet_status(directory)}, as_json)
