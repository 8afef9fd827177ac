"""cluster.config: the YAML file, env overrides, and deploy/canopy.example.yaml kept complete."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cluster.config import CanopyConfig, ConfigError, config_keys, load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "canopy.example.yaml"


def _flat(raw: dict, prefix: str = "") -> list[str]:
    out: list[str] = []
    for key, value in raw.items():
        out += _flat(value, f"{prefix}{key}.") if isinstance(value, dict) else [prefix + key]
    return out


def test_example_documents_exactly_the_known_keys() -> None:
    documented = _flat(yaml.safe_load(EXAMPLE.read_text()))
    assert sorted(documented) == sorted(config_keys())


def test_example_values_are_the_defaults_except_the_service_uris() -> None:
    example = load_config(EXAMPLE, env={})
    example.check()
    defaults = CanopyConfig()
    assert example.meta.startswith("etcd://") and example.object_store.startswith("s3://")
    example.meta, example.object_store = defaults.meta, defaults.object_store
    assert example == defaults


def test_file_values_and_env_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("meta: etcd://h:1/p\nproxy:\n  port: 1000\nwal:\n  max_bytes: 4096\n")
    env = {
        "CANOPY_PROXY__PORT": "2000",
        "CANOPY_CHANNELS": "8",
        "CANOPY_WAL__MAX_INTERVAL": "0.05",
        "CANOPY_STREAMING__SESSION_TTL": "3",
        "CANOPY_SERVICES_PID_DIR": "/tmp/x",  # another tool's variable: ignored
    }
    cfg = load_config(path, env=env)
    assert cfg.meta == "etcd://h:1/p"
    assert cfg.proxy.port == 2000 and cfg.channels == 8
    assert cfg.wal.max_bytes == 4096 and cfg.wal.max_interval == 0.05
    assert cfg.streaming.session_ttl == 3.0


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("proxy:\n  prot: 1\n", {}, "unknown config key 'proxy.prot'"),
        ("nope: 1\n", {}, "unknown config key 'nope'"),
        ("proxy: 5\n", {}, "proxy is a section"),
        ("channels: many\n", {}, "channels needs a int value"),
        ("channels: true\n", {}, "channels needs a int value"),
        ("- a\n", {}, "top level must be a mapping"),
        ("meta: [\n", {}, "not valid YAML"),
        ("", {"CANOPY_PROXY__PROT": "1"}, "unknown config override CANOPY_PROXY__PROT"),
        ("", {"CANOPY_PROXY__PORT": "x"}, "proxy.port (from CANOPY_PROXY__PORT) needs a int"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, env: dict, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(path, env=env)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.yaml", env={})


def test_check_names_what_is_missing() -> None:
    cfg = load_config(None, env={})
    with pytest.raises(ConfigError, match=r"meta is not set.*CANOPY_META"):
        cfg.check()
    cfg.meta = "etcd://127.0.0.1:2379/x"
    cfg.check(needs_objects=False)
    with pytest.raises(ConfigError, match="object_store is not set"):
        cfg.check()
    cfg.object_store = "s3://b/p"
    cfg.proxy.port = 70000
    with pytest.raises(ConfigError, match=r"proxy\.port must be a TCP port"):
        cfg.check()


def test_compacted_segments_must_outlive_the_readers_refresh() -> None:
    env = {"CANOPY_META": "etcd://127.0.0.1:2379/x", "CANOPY_OBJECT_STORE": "s3://b/p"}
    cfg = load_config(None, env={**env, "CANOPY_DATANODE__COMPACTION_DROP_DELAY": "2"})
    with pytest.raises(ConfigError, match=r"compaction_drop_delay must be at least 3 s"):
        cfg.check()
    cfg = load_config(
        None,
        env={
            **env,
            "CANOPY_DATANODE__COMPACTION_DROP_DELAY": "2",
            "CANOPY_DATANODE__COMPACTION": "false",
        },
    )
    cfg.check()  # no compaction: no constraint
