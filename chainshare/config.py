"""The one config loader: TOML file, then CHAINSHARE_<SECTION>_<KEY> environment overrides,
then CLI overrides; validated at start with one clear message per problem."""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from chainshare.decimal_text import parse_ascii_decimal
from chainshare.errors import ConfigError
from chainshare.ledger.txs import MAX_TX_BYTES


@dataclass(frozen=True)
class NodeSection:
    name: str = "node"
    data_dir: str = "./data"
    genesis: str = "./genesis.json"
    dev_mode: bool = False
    log_level: str = "info"


@dataclass(frozen=True)
class ValidatorSection:
    key_file: str = ""
    password_file: str = ""


@dataclass(frozen=True)
class ApiSection:
    host: str = "127.0.0.1"
    port: int = 8545
    # Websocket JSON-RPC on the same port (ws://host:port/): eth_subscribe and every HTTP method.
    ws_max_connections: int = 256          # 0: no websocket endpoint
    ws_max_subscriptions: int = 64         # per connection
    ws_max_frame_bytes: int = 1_048_576    # a larger incoming message closes the connection (1009)
    ws_send_queue_bytes: int = 8_388_608   # per connection; a subscriber that lets it overflow is cut off
    max_body_bytes: int = 1_048_576
    max_batch: int = 1_000
    # Work budgets (README "API limits"): over one, a request gets JSON-RPC -32005 / HTTP 413.
    max_request_blocks: int = 10_000    # blocks one eth_getLogs / eth_feeHistory / REST read may load
    max_batch_blocks: int = 10_000      # blocks all requests of one JSON-RPC batch may load together
    max_request_logs: int = 10_000      # logs one eth_getLogs may return
    max_batch_logs: int = 10_000        # logs one batch may return
    max_response_bytes: int = 16_777_216  # bytes of one JSON-RPC response (single or batch)
    max_batch_call_gas: int = 120_000_000  # gas the eth_call/eth_estimateGas of one batch may burn
    # API work runs on `workers` threads, off the consensus loop; at most `max_queued` bodies wait.
    workers: int = 2
    max_queued: int = 128
    # CPU milliseconds per second all clients' batches and range reads may use together (0 = no cap):
    # the share of a core the API may take from consensus under any load.
    max_cpu_ms_per_s: int = 500
    # Per client (remote address): a token bucket of API CPU time (0 = no rate limit) and a cap
    # on requests in flight; over them: HTTP 429 with JSON-RPC -32005 and Retry-After.
    rate_limit_cpu_ms: int = 1_000      # CPU milliseconds per second a client may use on average
    rate_limit_burst_ms: int = 5_000    # ... and at once
    max_inflight_per_client: int = 16
    # Reverse proxies whose X-Forwarded-For names the client (e.g. "127.0.0.1"); empty: none.
    trusted_proxies: tuple[str, ...] = ()


@dataclass(frozen=True)
class BlockSection:
    block_time_ms: int = 200
    # Produce an empty block when none was produced for this long (0 = never): a heartbeat
    # that lets followers and explorers see the chain is alive.
    empty_block_interval_ms: int = 0


@dataclass(frozen=True)
class MempoolSection:
    """Bounds of the pending pool (see ``chainshare/mempool.py``): what one account can make every
    validator hold, and the share kept free for system records (deliveries, computations, evidence)."""

    max_per_sender: int = 16_384
    max_total: int = 100_000
    max_nonce_gap: int = 1024                      # a queued nonce is at most this - 1 past the next executable one
    max_sender_bytes: int = 8 * 1024 * 1024        # raw bytes pending per sender
    max_total_bytes: int = 128 * 1024 * 1024       # raw bytes pending in total
    queued_ttl_s: int = 300                        # a transaction still behind a nonce gap after this is dropped
    reserved_percent: int = 10                     # of max_total and max_total_bytes, for system records only
    # Back-pressure: a client's transaction is refused (-32005 / HTTP 429, "busy, retry") while more
    # executable transactions wait than the node finalizes in busy_backlog_ms at its measured rate
    # (and at least busy_min_pending wait), so admitted ones do not queue for long.
    busy_backlog_ms: int = 1_000
    busy_min_pending: int = 2_000


@dataclass(frozen=True)
class P2PSection:
    """Node-to-node network (mutual TLS 1.3 with certificates of the consortium CA)."""

    listen_host: str = "127.0.0.1"
    listen_port: int = 0  # 0: no P2P listener (single-validator network)
    # Peers to dial, each "node-name@host:port".
    peers: tuple[str, ...] = ()
    ca_cert: str = ""       # consortium CA certificate (PEM)
    node_cert: str = ""     # this node's certificate from `chainshare ca issue-node`
    node_key: str = ""      # its private key (PEM; encrypted unless dev_mode)
    max_frame_bytes: int = 4 * 1024 * 1024


@dataclass(frozen=True)
class SharingSection:
    """Off-chain data plane: the encrypted vault (which also holds the owner-only pseudonym secret)."""

    vault_dir: str = ""             # empty: this node holds no datasets
    # V3 keystore of an account of this node's agency: the owner node signs recordDelivery /
    # recordComputation with it (password: [validator] password_file / $CHAINSHARE_PASSWORD).
    account_keystore: str = ""


@dataclass(frozen=True)
class NodeConfig:
    node: NodeSection = field(default_factory=NodeSection)
    validator: ValidatorSection = field(default_factory=ValidatorSection)
    api: ApiSection = field(default_factory=ApiSection)
    block: BlockSection = field(default_factory=BlockSection)
    mempool: MempoolSection = field(default_factory=MempoolSection)
    p2p: P2PSection = field(default_factory=P2PSection)
    sharing: SharingSection = field(default_factory=SharingSection)
    base_dir: Path = Path(".")

    def path(self, value: str) -> Path:
        """Resolve a path from the config relative to the config file's directory."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()


_SECTIONS = {f.name: f.type for f in fields(NodeConfig) if f.name != "base_dir"}
_SECTION_TYPES: dict[str, type] = {
    "node": NodeSection, "validator": ValidatorSection, "api": ApiSection,
    "block": BlockSection, "mempool": MempoolSection, "p2p": P2PSection, "sharing": SharingSection,
}


def _coerce(section: str, key: str, value: Any, typ: type, from_env: bool) -> Any:
    where = f"[{section}] {key}"
    if from_env:
        if typ is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        if typ is int:
            try:  # as TOML would take it (sign, underscores), but int() alone also reads "٣" as 3
                number = int(value) if value.isascii() else None
            except ValueError:
                number = None
            if number is None:
                raise ConfigError(f"{where}: expected an integer, got {value!r}")
            return number
        if typ is tuple:
            return tuple(x.strip() for x in value.split(",") if x.strip())
        return value
    if typ is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if typ is int and (not isinstance(value, int) or isinstance(value, bool)):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if typ is str and not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if typ is tuple:
        if not isinstance(value, list | tuple) or not all(isinstance(x, str) for x in value):
            raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
        return tuple(value)
    return value


# Settings that no longer exist, with what to do instead (an old config gets this, not "unknown").
_REMOVED = {
    ("sharing", "pseudonym_key_file"): "a consortium-wide pseudonym key let every grantee reverse the pseudonyms "
    "it received; pseudonyms are now keyed per owner, grantee and dataset from a secret that the owner's "
    "vault creates and keeps (vault_dir/pseudonym.secret). Remove the setting and delete the shared key file",
}


def _build_section(name: str, values: dict[str, Any], env: dict[str, str]) -> Any:
    cls = _SECTION_TYPES[name]
    known = {f.name: f for f in fields(cls)}
    for key in list(values) + [k for (s, k) in _REMOVED if s == name and f"CHAINSHARE_{name}_{k}".upper() in env]:
        if (name, key) in _REMOVED:
            raise ConfigError(f"[{name}] {key} is no longer supported: {_REMOVED[(name, key)]}")
        if key not in known:
            raise ConfigError(f"[{name}] {key}: unknown setting (known: {', '.join(sorted(known))})")
    kwargs: dict[str, Any] = {}
    for key, f in known.items():
        type_name = f.type if isinstance(f.type, str) else f.type.__name__
        typ = {"str": str, "int": int, "bool": bool, "tuple[str, ...]": tuple}[type_name]
        if key in values:
            kwargs[key] = _coerce(name, key, values[key], typ, False)
        env_key = f"CHAINSHARE_{name.upper()}_{key.upper()}"
        if env_key in env:
            kwargs[key] = _coerce(name, key, env[env_key], typ, True)
    return cls(**kwargs)


def read_json_file(path: Path, what: str) -> Any:
    """The parsed JSON document at ``path``; a missing or unparsable file is a ConfigError that
    names ``what`` it should have been (the one JSON file reader of chainshare)."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} {path} does not exist") from exc
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{what} {path} is not readable JSON: {exc}") from exc


def load_config(path: Path | None, overrides: dict[str, dict[str, Any]] | None = None,
                env: dict[str, str] | None = None) -> NodeConfig:
    """Load and validate a node configuration."""
    env = dict(os.environ) if env is None else env
    raw: dict[str, Any] = {}
    base = Path(".").resolve()
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
        base = path.resolve().parent
    for section in raw:
        if section not in _SECTION_TYPES:
            raise ConfigError(f"[{section}]: unknown section (known: {', '.join(_SECTION_TYPES)})")
        if not isinstance(raw[section], dict):
            raise ConfigError(f"[{section}] must be a table")
    merged = {name: dict(raw.get(name, {})) for name in _SECTION_TYPES}
    for name, values in (overrides or {}).items():
        merged[name].update({k: v for k, v in values.items() if v is not None})
    sections = {name: _build_section(name, merged[name], env) for name in _SECTION_TYPES}
    cfg = NodeConfig(base_dir=base, **sections)
    validate_config(cfg)
    return cfg


def validate_config(cfg: NodeConfig) -> None:
    problems = []
    if not 0 < cfg.api.port < 65536:
        problems.append(f"[api] port {cfg.api.port} must be 1..65535")
    if not 0 <= cfg.api.ws_max_connections <= 1024:
        problems.append("[api] ws_max_connections must be 0..1024 (0: no websocket endpoint)")
    if not 1 <= cfg.api.ws_max_subscriptions <= 10_000:
        problems.append("[api] ws_max_subscriptions must be 1..10000")
    if not 1024 <= cfg.api.ws_max_frame_bytes <= 64 * 1024 * 1024:
        problems.append("[api] ws_max_frame_bytes must be between 1 KiB and 64 MiB")
    if not 64 * 1024 <= cfg.api.ws_send_queue_bytes <= 1024 * 1024 * 1024:
        problems.append("[api] ws_send_queue_bytes must be between 64 KiB and 1 GiB")
    if not 1024 <= cfg.api.max_body_bytes <= 64 * 1024 * 1024:
        problems.append("[api] max_body_bytes must be between 1 KiB and 64 MiB")
    if not 1 <= cfg.api.max_batch <= 10_000:
        problems.append("[api] max_batch must be 1..10000")
    problems.extend(_api_limit_problems(cfg.api))
    if not 10 <= cfg.block.block_time_ms <= 60_000:
        problems.append("[block] block_time_ms must be 10..60000")
    if not (cfg.block.empty_block_interval_ms == 0 or cfg.block.block_time_ms <= cfg.block.empty_block_interval_ms <= 3_600_000):
        problems.append("[block] empty_block_interval_ms must be 0 (never) or between block_time_ms and 3600000")
    if cfg.mempool.max_per_sender < 1 or cfg.mempool.max_total < cfg.mempool.max_per_sender:
        problems.append("[mempool] need 1 <= max_per_sender <= max_total")
    if not 1 <= cfg.mempool.max_nonce_gap <= cfg.mempool.max_per_sender:
        problems.append("[mempool] max_nonce_gap must be between 1 and max_per_sender")
    if not MAX_TX_BYTES <= cfg.mempool.max_sender_bytes <= cfg.mempool.max_total_bytes:
        problems.append(f"[mempool] need {MAX_TX_BYTES} (one transaction of the largest size) <= max_sender_bytes "
                        "<= max_total_bytes")
    if not 1 <= cfg.mempool.queued_ttl_s <= 86_400:
        problems.append("[mempool] queued_ttl_s must be 1..86400 seconds")
    if not 0 <= cfg.mempool.reserved_percent <= 50:
        problems.append("[mempool] reserved_percent must be 0..50")
    if not 10 <= cfg.mempool.busy_backlog_ms <= 600_000:
        problems.append("[mempool] busy_backlog_ms must be 10..600000 milliseconds")
    if not 1 <= cfg.mempool.busy_min_pending <= cfg.mempool.max_total:
        problems.append("[mempool] busy_min_pending must be between 1 and max_total")
    if not cfg.validator.key_file:
        problems.append("[validator] key_file is required (an EIP-2335 keystore made by `chainshare ca issue-node`)")
    if not 0 <= cfg.p2p.listen_port < 65536:
        problems.append(f"[p2p] listen_port {cfg.p2p.listen_port} must be 0..65535")
    for peer in cfg.p2p.peers:
        name, _, addr = peer.partition("@")
        host, _, port = addr.rpartition(":")
        port_number = parse_ascii_decimal(port, max_digits=5)
        if not name or not host or port_number is None or not 0 < port_number < 65536:
            problems.append(f"[p2p] peer {peer!r} must look like node-name@host:port")
    if cfg.p2p.listen_port and not (cfg.p2p.ca_cert and cfg.p2p.node_cert and cfg.p2p.node_key):
        problems.append("[p2p] ca_cert, node_cert and node_key are required when listen_port is set")
    if not 1024 <= cfg.p2p.max_frame_bytes <= 64 * 1024 * 1024:
        problems.append("[p2p] max_frame_bytes must be between 1 KiB and 64 MiB")
    if cfg.node.log_level not in ("debug", "info", "warning", "error"):
        problems.append("[node] log_level must be debug, info, warning or error")
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))


def _api_limit_problems(api: ApiSection) -> list[str]:
    """One message per API budget or rate-limit setting out of range (README "API limits")."""
    import ipaddress

    problems = []
    if not 1 <= api.max_request_blocks <= api.max_batch_blocks <= 10_000_000:
        problems.append("[api] need 1 <= max_request_blocks <= max_batch_blocks <= 10000000")
    if not 1 <= api.max_request_logs <= api.max_batch_logs <= 10_000_000:
        problems.append("[api] need 1 <= max_request_logs <= max_batch_logs <= 10000000")
    if not 65_536 <= api.max_response_bytes <= 1024 * 1024 * 1024:
        problems.append("[api] max_response_bytes must be between 64 KiB and 1 GiB")
    if not 1_000_000 <= api.max_batch_call_gas <= 10**12:
        problems.append("[api] max_batch_call_gas must be between 1000000 and 10^12")
    if not 1 <= api.workers <= 64:
        problems.append("[api] workers must be 1..64")
    if not api.workers <= api.max_queued <= 100_000:
        problems.append("[api] max_queued must be between workers and 100000")
    if not 0 <= api.max_cpu_ms_per_s <= 1000 * api.workers:
        problems.append("[api] max_cpu_ms_per_s must be 0 (no cap) .. 1000 x workers")
    if not 0 <= api.rate_limit_cpu_ms <= 1000 * api.workers:
        problems.append("[api] rate_limit_cpu_ms must be 0 (off) .. 1000 x workers")
    if api.rate_limit_cpu_ms and not api.rate_limit_cpu_ms <= api.rate_limit_burst_ms <= 3_600_000:
        problems.append("[api] rate_limit_burst_ms must be between rate_limit_cpu_ms and 3600000")
    if not 1 <= api.max_inflight_per_client <= 10_000:
        problems.append("[api] max_inflight_per_client must be 1..10000")
    for proxy in api.trusted_proxies:
        try:
            ipaddress.ip_address(proxy)
        except ValueError:
            problems.append(f"[api] trusted_proxies: {proxy!r} is not an IP address")
    return problems


def with_overrides(cfg: NodeConfig, **sections: dict[str, Any]) -> NodeConfig:
    return replace(cfg, **{k: replace(getattr(cfg, k), **v) for k, v in sections.items()})
