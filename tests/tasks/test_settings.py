"""The [tasks] table."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from skns import config
from skns.errors import ConfigError


def tasks(tmp_path: Path, **table: object) -> config.TasksSettings:
    return config.parse({"tasks": table}, tmp_path / "c.toml").tasks


def test_defaults_are_the_original_task(tmp_path: Path) -> None:
    s = tasks(tmp_path)
    assert (s.soft_max, s.soft_limit, s.hard_limit, s.result_ttl) == (1000, 10.0, 60.0, 3600.0)
    assert s.workers("soft") == s.workers("hard") == len(os.sched_getaffinity(0))
    assert (s.limit("soft"), s.limit("hard")) == (10.0, 60.0)
    assert (s.prefetch("soft"), s.prefetch("hard")) == (4, 1)


def test_the_shipped_config_matches_the_defaults() -> None:
    shipped = config.load(Path(__file__).parents[2] / "config.toml").tasks
    assert shipped == config.parse({}, Path("c.toml")).tasks


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("soft_limit", 0),
        ("hard_limit", -1.0),
        ("result_ttl", 0),
        ("soft_workers", -1),
        ("hard_workers", 1000),
        ("soft_prefetch", 0),
        ("max_number", 2**64),
        ("max_number", -1),
        ("max_queued", 0),
        ("store_max_bytes", 0),
        ("max_request_bytes", 10),
        ("max_connections", 0),
        ("max_connections", 60_001),
        ("journal_compact_bytes", 0),
        ("listen", "nowhere"),
        ("soft_max", "1000"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, key: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        tasks(tmp_path, **{key: value})
    assert info.value.key == f"tasks.{key}"
