"""The config loader: TOML, then CHAINSHARE_<SECTION>_<KEY> environment, then CLI overrides; every
problem is a ConfigError that names the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from chainshare.config import NodeConfig, load_config, with_overrides
from chainshare.errors import ConfigError

BASE = '[validator]\nkey_file = "keys/validator.json"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None, **overrides: dict[str, object]) -> NodeConfig:
    return load_config(write(tmp_path, BASE + text), overrides or None, env=env or {})


def test_defaults_fill_everything_not_given(tmp_path: Path) -> None:
    cfg = load(tmp_path, "")
    assert (cfg.api.host, cfg.api.port, cfg.block.block_time_ms, cfg.mempool.max_total) == \
        ("127.0.0.1", 8545, 200, 100_000)
    assert cfg.validator.key_file == "keys/validator.json"


def test_mempool_bounds_have_defaults_and_env_overrides(tmp_path: Path) -> None:
    m = load(tmp_path, "").mempool
    assert (m.max_nonce_gap, m.max_sender_bytes, m.max_total_bytes, m.queued_ttl_s, m.reserved_percent) == \
        (1024, 8 * 1024 * 1024, 128 * 1024 * 1024, 300, 10)
    m = load(tmp_path, "[mempool]\nmax_nonce_gap = 16\n", env={"CHAINSHARE_MEMPOOL_QUEUED_TTL_S": "30"}).mempool
    assert (m.max_nonce_gap, m.queued_ttl_s) == (16, 30)


def test_values_from_the_file_are_used(tmp_path: Path) -> None:
    cfg = load(tmp_path, '[api]\nport = 9000\nhost = "0.0.0.0"\n[node]\ndev_mode = true\nname = "n1"\n')
    assert (cfg.api.port, cfg.api.host, cfg.node.dev_mode, cfg.node.name) == (9000, "0.0.0.0", True, "n1")


def test_paths_resolve_relative_to_the_config_file(tmp_path: Path) -> None:
    cfg = load(tmp_path, '[node]\ndata_dir = "data"\n')
    assert cfg.path(cfg.node.data_dir) == (tmp_path / "data").resolve()
    assert cfg.path("/abs/x") == Path("/abs/x")


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    cfg = load(tmp_path, "[api]\nport = 9000\n", env={"CHAINSHARE_API_PORT": "9100", "CHAINSHARE_NODE_DEV_MODE": "yes",
                                                       "CHAINSHARE_NODE_NAME": "from-env"})
    assert (cfg.api.port, cfg.node.dev_mode, cfg.node.name) == (9100, True, "from-env")


def test_cli_overrides_the_file_and_environment_overrides_the_cli(tmp_path: Path) -> None:
    cfg = load(tmp_path, "[api]\nport = 9000\n", api={"port": 9200, "host": None})
    assert cfg.api.port == 9200 and cfg.api.host == "127.0.0.1"  # None means "not given"
    cfg = load(tmp_path, "", env={"CHAINSHARE_API_PORT": "9300"}, api={"port": 9200})
    assert cfg.api.port == 9300


def test_process_environment_is_read_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAINSHARE_API_PORT", "9400")
    assert load_config(write(tmp_path, BASE)).api.port == 9400


def test_no_file_means_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(None, env={"CHAINSHARE_VALIDATOR_KEY_FILE": "k.json"})
    assert cfg.validator.key_file == "k.json" and cfg.api.port == 8545


def test_unknown_section_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[apii\]: unknown section \(known: node, validator, api"):
        load(tmp_path, "[apii]\nport = 1\n")


def test_unknown_key_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[api\] prot: unknown setting \(known: host, max_batch"):
        load(tmp_path, "[api]\nprot = 1\n")


def test_section_that_is_not_a_table_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[api\] must be a table"):
        load_config(write(tmp_path, "api = 3\n" + BASE), env={})


@pytest.mark.parametrize("text,match", [
    ('[api]\nport = "8545"\n', r"\[api\] port: expected an integer, got '8545'"),
    ("[api]\nport = true\n", r"\[api\] port: expected an integer, got True"),
    ("[api]\nport = 1.5\n", r"\[api\] port: expected an integer"),
    ('[node]\ndev_mode = "yes"\n', r"\[node\] dev_mode: expected true/false"),
    ("[node]\nname = 5\n", r"\[node\] name: expected a string, got 5"),
])
def test_wrong_types_name_the_setting(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load(tmp_path, text)


@pytest.mark.parametrize("env,match", [
    ({"CHAINSHARE_API_PORT": "eighty"}, r"\[api\] port: expected an integer, got 'eighty'"),
    ({"CHAINSHARE_NODE_DEV_MODE": "maybe"}, r"\[node\] dev_mode: expected true/false, got 'maybe'"),
    ({"CHAINSHARE_API_PORT": "٨٥٤٥"}, r"\[api\] port: expected an integer, got '٨٥٤٥'"),  # int() reads it as 8545
])
def test_bad_environment_values_name_the_setting(tmp_path: Path, env: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load(tmp_path, "", env=env)


@pytest.mark.parametrize("text,match", [
    ("[api]\nport = 0\n", r"\[api\] port 0 must be 1..65535"),
    ("[api]\nport = 65536\n", r"\[api\] port 65536 must be 1..65535"),
    ("[api]\nmax_body_bytes = 10\n", r"\[api\] max_body_bytes"),
    ("[api]\nmax_batch = 0\n", r"\[api\] max_batch"),
    ("[block]\nblock_time_ms = 5\n", r"\[block\] block_time_ms"),
    ("[block]\nempty_block_interval_ms = 100\n", r"\[block\] empty_block_interval_ms"),
    ("[mempool]\nmax_per_sender = 10\nmax_total = 5\n", r"\[mempool\] need 1 <= max_per_sender <= max_total"),
    ("[mempool]\nmax_per_sender = 0\n", r"\[mempool\]"),
    ("[mempool]\nmax_nonce_gap = 0\n", r"\[mempool\] max_nonce_gap must be between 1 and max_per_sender"),
    ("[mempool]\nmax_sender_bytes = 1000\n", r"\[mempool\] need 131072 \(one transaction of the largest size\)"),
    ("[mempool]\nmax_sender_bytes = 2000000\nmax_total_bytes = 1000000\n", r"<= max_sender_bytes <= max_total_bytes"),
    ("[mempool]\nqueued_ttl_s = 0\n", r"\[mempool\] queued_ttl_s must be 1..86400"),
    ("[mempool]\nreserved_percent = 60\n", r"\[mempool\] reserved_percent must be 0..50"),
    ('[node]\nlog_level = "loud"\n', r"\[node\] log_level"),
    ('[p2p]\npeers = ["n2@127.0.0.1:http"]\n', r"\[p2p\] peer 'n2@127.0.0.1:http' must look like node-name@host:port"),
    ('[p2p]\npeers = ["n2@127.0.0.1:²"]\n', r"\[p2p\] peer 'n2@127.0.0.1:²' must look like"),  # "²".isdigit()
    ('[p2p]\npeers = ["n2@127.0.0.1:٩٠٠٠"]\n', r"\[p2p\] peer 'n2@127.0.0.1:٩٠٠٠' must look like"),  # int(): 9000
])
def test_invalid_values_name_the_setting(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load(tmp_path, text)


def test_env_override_is_validated_too(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[api\] port 70000 must be 1..65535"):
        load(tmp_path, "", env={"CHAINSHARE_API_PORT": "70000"})


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "[api]\nport = 0\nmax_batch = 0\n"), env={})
    message = info.value.message
    assert "[api] port" in message and "[api] max_batch" in message and "[validator] key_file is required" in message


def test_missing_file_and_bad_toml_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml", env={})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[api\nport = 1"), env={})


def test_missing_validator_key_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="key_file is required.*chainshare ca issue-node"):
        load_config(write(tmp_path, ""), env={})


def test_with_overrides_replaces_only_the_given_fields(tmp_path: Path) -> None:
    cfg = load(tmp_path, "[api]\nport = 9000\n")
    changed = with_overrides(cfg, api={"host": "0.0.0.0"})
    assert (changed.api.host, changed.api.port) == ("0.0.0.0", 9000) and cfg.api.host == "127.0.0.1"


def test_example_configuration_in_the_repository_is_valid() -> None:
    root = Path(__file__).resolve().parents[2]
    examples = sorted((root / "node_config").glob("*.toml"))
    assert examples, "node_config/ holds no example configuration"
    for path in examples:
        load_config(path, env={})
