import sys
import time
from pathlib import Path

import pytest

from skns import config
from skns.errors import ConfigError
from skns.executor.probe import probe_handler
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


def test_the_fleet_view_is_off_by_default_and_its_grace_defaults_to_two_windows():
    s = config.parse({"metrics": {"window": 2, "intervals": [2]}}, Path("x"))
    assert s.metrics.fleet_path is None and s.metrics.grace == 4.0
    s = config.parse({"metrics": {"fleet_output": "f.jsonl", "fleet_grace": 1}}, Path("x"))
    assert s.metrics.fleet_path == Path("f.jsonl").absolute() and s.metrics.grace == 1.0


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
        ({"metrics": {"fleet_grace": -1}}, "metrics.fleet_grace", "must be >= 0"),
        ({"metrics": {"fleet_output": 3}}, "metrics.fleet_output", "expected"),
        ({"metrics": {"listen": "h:70000"}}, "metrics.listen", "out of range"),
        ({"service": {"log_level": "loud"}}, "service.log_level", "must be one of"),
        ({"service": {"control_timeout": 0}}, "service.control_timeout", "must be > 0"),
        ({"tasks": {"max_connections": 0}}, "tasks.max_connections", "within 1..60000"),
        ({"executor": {"max_connections": 70000}}, "executor.max_connections", "within 1..60000"),
        ({"metrics": 3}, "metrics", "must be a table"),
        (
            {"metrics": {"window": 10, "intervals": [60]}},
            "metrics.intervals",
            "must include the base window (10)",
        ),
        (
            {"tasks": {"listen": "127.0.0.1:9126"}},
            "tasks.listen",
            "tcp port 9126 is also in executor.listen",
        ),
        (
            {"messenger": {"listen": ["0.0.0.0:9200", "127.0.0.1:9200"]}},
            "messenger.listen",
            "tcp port 9200 is twice in messenger.listen",
        ),
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


def test_ports_conflict_only_within_a_protocol_and_among_enabled_subsystems():
    udp_and_tcp = {"metrics": {"listen": "127.0.0.1:9300"}, "tasks": {"listen": "127.0.0.1:9300"}}
    config.parse(udp_and_tcp, Path("x"))
    off = {"executor": {"enabled": False}, "tasks": {"listen": "127.0.0.1:9126"}}
    config.parse(off, Path("x"))
    other_host = {"tasks": {"listen": "127.0.0.2:9126"}}
    config.parse(other_host, Path("x"))
    ephemeral = {"executor": {"listen": "127.0.0.1:0"}, "tasks": {"listen": "127.0.0.1:0"}}
    config.parse(ephemeral, Path("x"))


@pytest.mark.parametrize(
    ("handler", "words"),
    [
        ("skns.executor.handlers:slep", "skns.executor.handlers has no slep"),
        ("skns.executor.nosuch:sleep", "cannot import skns.executor.nosuch"),
        ("skns.executor.handlers:RECORD_FILE", "is not callable"),
    ],
)
def test_a_handler_that_cannot_be_loaded_is_refused(tmp_path, handler, words):
    path = tmp_path / "c.toml"
    path.write_text(f'[executor]\nhandler = "{handler}"\n')
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert err.value.key == "executor.handler"
    assert words in str(err.value)
    assert "skns.executor.nosuch" not in sys.modules  # asked in another process
    config.load(path, deep=False)  # a command that only needs a path does not ask


def test_a_handler_whose_import_crashes_or_hangs_is_refused(tmp_path, monkeypatch):
    (tmp_path / "crashing.py").write_text("raise RuntimeError('boom at import')\n")
    (tmp_path / "hanging.py").write_text("import time\ntime.sleep(60)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "RuntimeError: boom at import" in probe_handler("crashing:f")
    started = time.monotonic()
    assert "took more than 0.5s" in probe_handler("hanging:f", timeout=0.5)
    assert time.monotonic() - started < 5


def test_unreadable_files_name_the_reason(tmp_path):
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(b'[relay]\nname = "caf\xe9"\n')
    with pytest.raises(ConfigError, match=r"not UTF-8: byte 0xe9 on line 2 \(offset 19\)"):
        config.load(latin1)
    with pytest.raises(ConfigError, match="is a directory"):
        config.load(tmp_path)
