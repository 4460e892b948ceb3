"""The sd_notify protocol, received on a real unix datagram socket bound by the test."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest

from helpers import metrics_port, metrics_table


class NotifySocket(threading.Thread):
    """Collects (time, fields) of every notification sent to $NOTIFY_SOCKET."""

    def __init__(self, path) -> None:
        super().__init__(daemon=True)
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self.halt = threading.Event()
        self.start()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def with_key(self, key: str) -> list[tuple[float, dict[str, str]]]:
        return [(t, m) for t, m in self.messages if key in m]

    def wait(self, key: str, value: str | None = None, timeout: float = 15.0, after: float = 0.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, m in self.with_key(key):
                if t >= after and (value is None or m[key] == value):
                    return t, m
            time.sleep(0.02)
        raise AssertionError(f"no {key}={value} notification; got {self.messages}")

    def close(self) -> None:
        self.halt.set()
        self.join()
        self.sock.close()


@pytest.fixture
def notify(tmp_path):
    n = NotifySocket(tmp_path / "notify.sock")
    yield n
    n.close()


def test_ready_status_watchdog_reload_stopping(start_service, notify, tmp_path):
    env = {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"}
    svc = start_service(env=env, wait=False, metrics=metrics_table(tmp_path))
    _, ready = notify.wait("READY", "1")
    # READY is sent only once every child is up, and says so.
    assert ready["STATUS"].startswith("2/2 children up")
    assert all(c["up"] for c in svc.status()["children"])

    # Watchdog every WATCHDOG_USEC / 2 = 0.2 s while the loop runs.
    start = time.monotonic()
    time.sleep(2.0)
    pings = [t for t, _ in notify.with_key("WATCHDOG") if start <= t < start + 2.0]
    assert 7 <= len(pings) <= 13, len(pings)

    # A blocked supervisor loop sends none; pings resume when it runs again.
    os.kill(svc.pid, signal.SIGSTOP)
    stopped = time.monotonic()
    time.sleep(1.2)
    os.kill(svc.pid, signal.SIGCONT)
    resumed = time.monotonic()
    assert not [t for t, _ in notify.with_key("WATCHDOG") if stopped + 0.05 < t < resumed - 0.05]
    notify.wait("WATCHDOG", "1", after=resumed)

    # STATUS follows the figures.
    port = metrics_port(svc)
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(
        b'{"A1":1,"A2":1,"A3":1}', ("127.0.0.1", port)
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if any("1 accepted" in m["STATUS"] for _, m in notify.with_key("STATUS")):
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"STATUS never showed the datagram: {notify.with_key('STATUS')}")

    # RELOADING=1 then READY=1 around a reload.
    hup = time.monotonic()
    os.kill(svc.pid, signal.SIGHUP)
    t_reloading, m = notify.wait("RELOADING", "1", after=hup)
    assert "MONOTONIC_USEC" in m
    t_ready, _ = notify.wait("READY", "1", after=t_reloading)
    assert t_ready >= t_reloading

    # STOPPING=1 on SIGTERM.
    term = time.monotonic()
    assert svc.stop() == 0
    notify.wait("STOPPING", "1", after=term)


def test_without_notify_socket_nothing_is_sent(start_service, notify, tmp_path):
    svc = start_service(metrics=metrics_table(tmp_path))
    time.sleep(0.5)
    svc.stop()
    assert notify.messages == []
