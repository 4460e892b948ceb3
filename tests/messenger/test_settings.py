"""The [messenger] table."""

from __future__ import annotations

from pathlib import Path

import pytest

from skns import config
from skns.errors import ConfigError
from skns.settings import HostPort

ROOT = Path(__file__).resolve().parents[2]


def parse(table: dict[str, object], tmp_path: Path) -> config.Settings:
    return config.parse({"messenger": table}, tmp_path / "c.toml")


def test_defaults(tmp_path: Path) -> None:
    m = parse({}, tmp_path).messenger
    assert m.listen == (HostPort("127.0.0.1", 9127), HostPort("127.0.0.1", 9128))
    assert m.dsn == "" and m.batching is True


def test_shipped_config_matches_the_defaults(tmp_path: Path) -> None:
    shipped = config.load(ROOT / "config.toml").messenger
    assert shipped == parse({}, tmp_path).messenger


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"listen": []}, "messenger.listen"),
        ({"listen": ["127.0.0.1:1", "127.0.0.1:1"]}, "messenger.listen"),
        ({"listen": "127.0.0.1:1"}, "messenger.listen"),
        ({"sender_max": 0}, "messenger.sender_max"),
        ({"text_max": 0}, "messenger.text_max"),
        ({"batch_max": 0}, "messenger.batch_max"),
        ({"batch_delay_ms": -1}, "messenger.batch_delay_ms"),
        ({"pool_size": 0}, "messenger.pool_size"),
        ({"db_timeout": 0}, "messenger.db_timeout"),
        ({"reconnect_timeout": -1}, "messenger.reconnect_timeout"),
        ({"batching": "yes"}, "messenger.batching"),
        ({"dsn": 5}, "messenger.dsn"),
        ({"unknown": 1}, "messenger.unknown"),
    ],
)
def test_bad_values_name_the_key(table: dict[str, object], key: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse(table, tmp_path)
    assert info.value.key == key
