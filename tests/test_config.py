from pathlib import Path

import pytest

from skns import config
from skns.errors import ConfigError
from skns.settings import HostPort

ROOT = Path(__file__).resolve().parent.parent


def test_the_shipped_config_is_valid_and_matches_the_defaults():
    shipped = config.load(ROOT / "config.toml")
    defaults = config.parse({}, ROOT / "config.toml")
    assert shipped.as_dict() == defaults.as_dict()


def test_values_are_typed():
    s = config.parse(
        {"metrics": {"listen": "[::1]:9000", "window": 2, "intervals": [2, 4]}}, Path("x")
    )
    assert s.metrics.listen == HostPort("::1", 9000)
    assert s.metrics.window == 2.0
    assert s.metrics.intervals == (2.0, 4.0)
    assert s.service.state_dir.is_absolute()


@pytest.mark.parametrize(
    ("data", "key", "words"),
    [
        ({"nope": {}}, "nope", "unknown table"),
        ({"metrics": {"windw": 10}}, "metrics.windw", "unknown key"),
        ({"metrics": {"window": "10"}}, "metrics.window", "expected a number"),
        ({"metrics": {"workers": True}}, "metrics.workers", "expected an integer"),
        ({"metrics": {"workers": -1}}, "metrics.workers", "must be >= 0"),
        ({"metrics": {"intervals": [10, 25]}}, "metrics.intervals", "not a positive multiple"),
        ({"metrics": {"listen": "localhost"}}, "metrics.listen", "not host:port"),
        ({"metrics": {"listen": "h:70000"}}, "metrics.listen", "out of range"),
        ({"service": {"log_level": "loud"}}, "service.log_level", "must be one of"),
        ({"metrics": 3}, "metrics", "must be a table"),
    ],
)
def test_errors_name_the_file_and_the_key(data, key, words):
    with pytest.raises(ConfigError) as err:
        config.parse(data, Path("/etc/skns/config.toml"))
    assert err.value.key == key
    assert words in str(err.value)
    assert str(err.value).startswith("/etc/skns/config.toml: ")


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        config.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[metrics\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(bad)
