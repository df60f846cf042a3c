"""``chainshare node run|backup|restore``: run a node from its TOML configuration until SIGINT/SIGTERM, take a
consistent backup of a running node, rebuild a data directory from one."""

from __future__ import annotations

import time
from pathlib import Path

import click

from chainshare.cli.common import emit, json_option
from chainshare.config import load_config
from chainshare.errors import ConfigError, ConsensusError, InvalidInput, StorageError

group = click.Group("node", help="Run, back up and restore a node.")


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


_KEY_SETTINGS = (("validator", "key_file"), ("p2p", "node_key"), ("p2p", "node_cert"), ("p2p", "ca_cert"),
                 ("sharing", "account_keystore"))


@group.command("backup")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Backup file to write (gzip tar; written whole or not at all).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="The node's configuration: its API port, name and (with --include-keys) key files.")
@click.option("--node", "node_url", help="The node's API on this machine (default: from --config, else "
              "http://127.0.0.1:8545). The node answers loopback clients only.")
@click.option("--include-keys", is_flag=True, help="Also store the node's keystores and certificates (encrypted "
              "as they are on disk; password files never). Keep such a backup as secret as the keys.")
@click.option("--timeout", type=click.FloatRange(1, 86_400), default=3600, show_default=True,
              help="Seconds the whole snapshot may take.")
@json_option
def backup(out: Path, config_path: Path | None, node_url: str | None, include_keys: bool, timeout: float,
           as_json: bool) -> None:
    """Back up a RUNNING node: a consistent snapshot of its ledger (one LevelDB snapshot, with the head's
    finality proof), streamed by the node while it keeps working; keys only with --include-keys."""
    import httpx

    from chainshare.ops.backup import write_backup_file

    cfg = load_config(config_path) if config_path is not None else None
    if include_keys and cfg is None:
        raise InvalidInput("--include-keys needs --config (the key files are read from the node's configuration)")
    url = (node_url or (f"http://127.0.0.1:{cfg.api.port}" if cfg is not None else "http://127.0.0.1:8545"))
    key_files: dict[str, Path] = {}
    if include_keys and cfg is not None:
        for section, key in _KEY_SETTINGS:
            value = getattr(getattr(cfg, section), key)
            if value:
                path = cfg.path(value)
                if not path.is_file():
                    raise ConfigError(f"[{section}] {key} {path} does not exist")
                key_files[f"{section}.{key}{''.join(path.suffixes)}"] = path
    started = time.monotonic()
    try:
        with httpx.Client(timeout=httpx.Timeout(60, read=timeout)) as client, \
                client.stream("GET", url.rstrip("/") + "/admin/backup") as resp:
            if resp.status_code != 200:
                resp.read()
                try:
                    message = resp.json()["error"]["message"]
                except (ValueError, KeyError, TypeError):
                    message = resp.text[:300]
                raise InvalidInput(f"the node refused the backup (HTTP {resp.status_code}): {message}")
            manifest = write_backup_file(out, resp.iter_bytes(), cfg.node.name if cfg is not None else "",
                                         key_files)
    except httpx.HTTPError as exc:
        raise StorageError(f"backup from {url} failed: {exc} (nothing was written to {out})") from exc
    result = {**manifest.to_json(), "file": str(out), "bytes": out.stat().st_size,
              "seconds": round(time.monotonic() - started, 2)}
    emit(result, as_json, f"backup of block {manifest.header.head_height} ({manifest.records} records, "
                          f"{'with' if manifest.header.has_finality_proof else 'no'} finality proof"
                          f"{', with keys' if manifest.keys else ''}) written to {out} in {result['seconds']} s")


@group.command("restore")
@click.option("--in", "in_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Backup file made by `chainshare node backup`.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="The node's configuration: restore into its [node] data_dir, for its genesis.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Restore into this directory instead (must not exist, or be empty).")
@click.option("--keys-to", type=click.Path(file_okay=False, path_type=Path),
              help="Write the backup's keys (if it has any) into this directory (files must not exist yet).")
@click.option("--no-verify", is_flag=True, help="Skip re-verifying the restored chain from genesis.")
@json_option
def restore(in_path: Path, config_path: Path | None, data_dir: Path | None, keys_to: Path | None,
            no_verify: bool, as_json: bool) -> None:
    """Rebuild a STOPPED node's data directory from a backup, then verify it from genesis (as `chain verify`
    does); start the node on it and it catches up from its peers. Exit 3 if the restored head is not proven
    final."""
    from chainshare.execution.genesis import compute_genesis_block, load_genesis
    from chainshare.ops.backup import restore_backup

    if (config_path is None) == (data_dir is None):
        raise InvalidInput("give exactly one of --config FILE or --data-dir DIR")
    expect = None
    if config_path is not None:
        cfg = load_config(config_path)
        data_dir = cfg.path(cfg.node.data_dir)
        genesis = load_genesis(cfg.path(cfg.node.genesis))
        expect = (genesis.chain_id, compute_genesis_block(genesis)[0].hash)
    assert data_dir is not None
    started = time.monotonic()
    restored = restore_backup(in_path, data_dir, keys_dir=keys_to, expect_chain=expect)
    h = restored.manifest.header
    result: dict[str, object] = {"data_dir": str(data_dir), "head_height": h.head_height, "head_hash": h.head_hash,
                                 "chain_id": h.chain_id, "records": restored.manifest.records,
                                 "keys_written": [str(p) for p in restored.keys_written],
                                 "restore_seconds": round(time.monotonic() - started, 2)}
    final = True
    if not no_verify:
        from chainshare.ledger.chain import ChainStore
        from chainshare.ledger.store import LevelDBStore
        from chainshare.verify import StoreSource, verify_chain

        store = LevelDBStore(data_dir, create=False)
        try:
            report = verify_chain(StoreSource(ChainStore(store)))
        except ConsensusError as exc:
            raise StorageError(f"the restored chain does not verify: {exc.message} (the backup is damaged; "
                               f"delete {data_dir} and use another backup or re-sync)") from exc
        finally:
            store.close()
        final = report.head_final
        result["verify"] = report.to_json()
    emit(result, as_json, f"restored block {h.head_height} ({h.head_hash}) into {data_dir}"
                          f"{'' if no_verify else ', verified from genesis'}"
                          f"{'' if final else ' (head NOT proven final)'}; start the node to catch up")
    if not final:
        raise click.exceptions.Exit(3)
