from pathlib import Path

import pytest

from skns import config
from skns.errors import ConfigError
from skns.executor.settings import ExecutorSettings


def test_defaults_match_the_design() -> None:
    s = ExecutorSettings()
    assert (str(s.listen), s.shards, s.handler, s.duration) == (
        "127.0.0.1:9126",
        0,
        "skns.executor.handlers:sleep",
        1.0,
    )
    assert s.journal and s.fsync
    assert s.shard_count(8) == 8
    assert ExecutorSettings(shards=3).shard_count(8) == 3


def test_config_toml_executor_table_is_the_defaults() -> None:
    root = Path(__file__).resolve().parents[2]
    loaded = config.load(root / "config.toml").executor
    assert loaded == ExecutorSettings()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("shards", -1),
        ("handler", "no_colon"),
        ("handler", "mod:"),
        ("duration", -0.5),
        ("threads", 0),
        ("retries", -1),
        ("retry_backoff_max", 0.01),
        ("compact_bytes", 10),
        ("max_backlog", 0),
        ("max_unacked", 0),
        ("max_frame_bytes", 100),
        ("max_batch", 0),
        ("max_connections", 0),
        ("max_connections", 60_001),
        ("fsync_interval", -1.0),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"executor.{key}"):
        config.parse({"executor": {key: value}}, tmp_path / "c.toml")
