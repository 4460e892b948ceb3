"""skns-ctl against a running service and against none."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers import metrics_port, metrics_table, wait_for
from skns.ctl import _value


def ctl(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "skns.ctl", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd,
    )


def test_status_shows_every_child_and_json(start_service, tmp_path):
    svc = start_service(metrics=metrics_table(tmp_path, intervals=[0.5, 1.0]))
    res = svc.ctl("status")
    assert res.returncode == 0, res.stderr
    assert "running" in res.stdout
    for c in svc.children():
        assert c["name"] in res.stdout
        assert str(c["pid"]) in res.stdout
    assert "kernel drops" in res.stdout
    data = json.loads(svc.ctl("status", "--json").stdout)
    assert data["service"]["pid"] == svc.pid
    assert {c["name"] for c in data["children"]} == {"udp-worker 0", "udp-worker 1"}
    child = data["children"][0]
    for key in ("pid", "cpus", "rss", "uptime", "restarts"):
        assert child[key] is not None, key


def test_status_cpu_percent_is_sampled_by_the_supervisor(start_service, tmp_path):
    svc = start_service(metrics=metrics_table(tmp_path, workers=1))
    port = metrics_port(svc)
    done = threading.Event()

    def keep_busy() -> None:  # the worker, across every sampling interval until the end
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            deadline = time.monotonic() + 60
            while not done.is_set() and time.monotonic() < deadline:
                for _ in range(200):
                    tx.sendto(b"not json", ("127.0.0.1", port))
                time.sleep(0.001)

    sender = threading.Thread(target=keep_busy)
    sender.start()
    try:
        # Sampled every 2 s: the first sample may span the idle start, the next one not.
        wait_for(
            lambda: [c["cpu_percent"] for c in svc.children()],
            10,
            "a CPU sample over a busy interval",
            until=lambda cpu: cpu and None not in cpu and cpu[0] > 1.0,
        )
        (row,) = [
            line
            for line in svc.ctl("status").stdout.splitlines()
            if line.startswith("udp-worker 0 ")
        ]
    finally:
        done.set()
        sender.join()
    cpu_percent = row.split()[4]  # CHILD is two words: "udp-worker 0"
    assert float(cpu_percent) > 1.0


@pytest.mark.parametrize("command", ["status", "restart"])
def test_when_not_running_exits_3(tmp_path, command):
    (tmp_path / "c.toml").write_text(f'[service]\ncontrol_socket = "{tmp_path}/none.sock"\n')
    res = ctl("--config", str(tmp_path / "c.toml"), command)
    assert res.returncode == 3
    assert "not running" in res.stderr


def test_reload_reopen_and_tail(start_service, tmp_path):
    svc = start_service(metrics=metrics_table(tmp_path, intervals=[0.5, 1.0]))
    assert svc.ctl("reopen").returncode == 0
    res = svc.ctl("reload")
    assert res.returncode == 0 and "reload" in res.stdout
    output = tmp_path / "metrics.jsonl"
    wait_for(lambda: output.exists() and len(output.read_bytes().splitlines()) >= 3, 10, "3 lines")
    tail = svc.ctl("tail", "-n", "3")
    assert tail.returncode == 0
    rows = tail.stdout.splitlines()
    assert rows[0].split() == ["WINDOW", "END", "TYPE", "COUNT", "A1_SUM", "A2_MAX", "A3_MIN"]
    assert len(rows) == 4
    assert "reloading" in svc.log()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[metrics\n", "not valid TOML"),
        ("[metric]\n", "metric: unknown table"),
        ("[metrics]\nwindw = 3\n", "metrics.windw: unknown key"),
        ("[metrics]\nworkers = 'two'\n", "metrics.workers: expected an integer"),
        ("[metrics]\nwindow = 0\n", "metrics.window: must be > 0"),
        ("[metrics]\nlisten = 'nowhere'\n", "metrics.listen"),
    ],
)
def test_check_config_names_the_key_and_the_reason(tmp_path, text, words):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    res = ctl("check-config", str(path))
    assert res.returncode == 2
    assert words in res.stderr
    assert str(path) in res.stderr


def test_check_config_accepts_the_shipped_config():
    res = ctl("check-config", str(Path(__file__).resolve().parent.parent / "config.toml"))
    assert res.returncode == 0, res.stderr
    assert "ok" in res.stdout


def test_check_config_missing_file(tmp_path):
    res = ctl("check-config", str(tmp_path / "nope.toml"))
    assert res.returncode == 2 and "no such file" in res.stderr


def test_remake_executor_stream_outside_cluster_mode_names_the_key(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("[cluster]\nnats = []\n")
    res = ctl("--config", str(path), "remake-executor-stream")
    assert res.returncode == 2
    assert res.stderr == f"skns-ctl: {path}: cluster.nats: empty: not in cluster mode\n"


def test_sim_relay_is_reachable_from_skns_ctl():
    res = ctl("sim", "relay", "--help")
    assert res.returncode == 0
    assert "--count" in res.stdout and "--window" in res.stdout


def test_bench_rejects_an_unknown_subsystem():
    res = ctl("bench", "nothing")
    assert res.returncode == 2 and "invalid choice" in res.stderr


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text.replace("[metrics]", "[metrics]\nwindw = 3", 1),  # an unknown key
        lambda text: text + "\n[metrics\n",  # not TOML at all
    ],
)
def test_status_works_while_the_config_file_is_broken(start_service, tmp_path, damage):
    svc = start_service(metrics=metrics_table(tmp_path))
    svc.config_path.write_text(damage(svc.config_path.read_text()))
    res = svc.ctl("status")
    assert res.returncode == 0, res.stderr
    assert "running" in res.stdout
    assert "the config is broken" in res.stderr and str(svc.config_path) in res.stderr
    assert svc.ctl("check-config").returncode == 2


def test_check_config_names_an_encoding_a_directory_and_a_handler_without_a_traceback(tmp_path):
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(b'[relay]\nname = "caf\xe9"\n')
    typo = tmp_path / "typo.toml"
    typo.write_text('[executor]\nhandler = "skns.executor.handlers:slep"\n')
    for path, words in (
        (latin1, "not UTF-8: byte 0xe9 on line 2"),
        (tmp_path, "is a directory"),
        (typo, "executor.handler: handler 'skns.executor.handlers:slep'"),
    ):
        res = ctl("check-config", str(path))
        assert res.returncode == 2, res.stderr
        assert words in res.stderr and str(path) in res.stderr
        assert "Traceback" not in res.stderr


def test_stats_lists_render_as_words_not_python_reprs() -> None:
    assert _value([]) == "none"
    assert _value(["first id 7 arrived late: pass --first-id 0", "3 ids skipped"]) == (
        "[first id 7 arrived late: pass --first-id 0; 3 ids skipped]"
    )
    assert _value([1, 2.5, None]) == "[1; 2.5; -]"
