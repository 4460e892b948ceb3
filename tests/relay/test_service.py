"""The relay as a supervised child: its spec, a forked child, and the whole service."""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path
from typing import Any

import orjson
import pytest

from helpers import wait_for
from skns import config
from skns.child import enter
from skns.relay.service import children
from skns.shm import SlotTable


def settings_for(tmp_path: Path, **relay: Any) -> config.Settings:
    service = {"state_dir": str(tmp_path), "control_socket": str(tmp_path / "run" / "c.sock")}
    return config.parse({"service": service, "relay": relay}, tmp_path / "config.toml")


def test_no_child_when_disabled(tmp_path: Path) -> None:
    assert children(settings_for(tmp_path)) == []


def test_one_relay_child_when_enabled(tmp_path: Path) -> None:
    (spec,) = children(settings_for(tmp_path, enabled=True))
    assert (spec.subsystem, spec.role, spec.index, spec.name) == ("relay", "relay", 0, "relay 0")


def test_forked_child_relays_publishes_stats_and_stops_on_sigterm(tmp_path, start_sim) -> None:
    sim = start_sim("--count", "3000", "--window", "30", "--late", "0.01", "--delay-ms", "0.5")
    settings = settings_for(
        tmp_path,
        enabled=True,
        source=sim.source,
        sink=sim.sink("{name}"),
        name="forked",
        first_id=0,
    )
    (spec,) = children(settings)
    table = SlotTable(1)
    slot = table.slots[0]
    child = multiprocessing.get_context("fork").Process(
        target=lambda: os._exit(enter(spec, settings, slot))
    )
    child.start()
    try:

        def published() -> dict[str, Any] | None:
            blob = slot.read()
            return orjson.loads(blob) if blob else None

        wait_for(lambda: (published() or {}).get("sent") == 3000, what="3000 sent")
        stats = published()
        assert stats is not None
        assert stats["received"] == 3000 and stats["buffered"] == 0
        assert stats["hold"]["count"] == 3000 and stats["hold"]["p50_us"] > 0
        assert stats["source_connects"] >= 1 and stats["sink_connects"] >= 1
        assert slot.heartbeat_ns() > 0
        os.kill(child.pid, signal.SIGTERM)
        child.join(10)
        assert child.exitcode == 0
        # The simulator reports once the relay has closed its sink connection (it waits up
        # to 2 s for that): so after the stop.
        status, report = sim.report()
        assert status == 0 and report["complete"] and report["name"] == "forked"
    finally:
        if child.is_alive():
            child.kill()
            child.join()
        table.close()


def test_through_the_supervisor_status_shows_the_relay(start_service, start_sim) -> None:
    sim = start_sim("--count", "2000", "--window", "20")
    svc = start_service(
        relay={"source": sim.source, "sink": sim.sink("{name}"), "name": "svc", "first_id": 0}
    )

    def relay_stats() -> dict[str, Any]:
        (row,) = svc.children("relay")
        return row["stats"] or {}

    wait_for(lambda: relay_stats().get("sent") == 2000, what="2000 sent")
    shown = svc.ctl("status")
    assert shown.returncode == 0
    assert "relay 0" in shown.stdout and "sent 2000" in shown.stdout
    # The simulator reports once the relay has closed its sink connection (it waits up to
    # 2 s for that): so after the stop.
    assert svc.stop() == 0
    status, report = sim.report()
    assert status == 0 and report["complete"] and report["name"] == "svc"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("first_id", "first"),
        ("gap_timeout_ms", -1),
        ("buffer_limit", 0),
        ("buffer_limit_bytes", 0),
        ("source", "http://x/raw-messages"),
        ("reconnect_backoff_max_ms", 1),
    ],
)
def test_bad_settings_name_the_key(tmp_path: Path, key: str, value: Any) -> None:
    with pytest.raises(config.ConfigError, match=f"relay.{key}"):
        settings_for(tmp_path, **{key: value})


def test_sink_url_carries_the_name(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, name="abc")
    assert settings.relay.sink_url == "ws://127.0.0.1:9130/ordered-messages/abc"
