"""skns under a real systemd: one container booted for every test of this directory.

This directory has no ``__init__.py`` on purpose: as a package it would be imported as
``systemd`` and shadow systemd-python (``from systemd import daemon``) in the test process.
Its modules are imported by their own names (``nspawn``, ``unitctl``), so keep those unique.

Fixtures:
- ``machine``: the booted container (skips, with the reason, where one cannot boot).
- ``unit``: skns installed in it (``make install``, again if a test uninstalled it), its venv
  the one ``staged_install`` built on the host: a venv build in here would repeat it.
- ``running``: the unit active with the test config (1 s windows, a 5 s interval).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from nspawn import CannotBoot, Container, skip_reason
from unitctl import REPORT, Unit


@pytest.fixture(scope="package")
def machine() -> Iterator[Container]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    box = Container(f"skns-test-{os.getpid()}")
    try:
        box.boot()
    except CannotBoot as exc:
        box.close()
        pytest.skip(f"systemd-nspawn cannot boot here: {exc}")
    except BaseException:
        box.close()  # no overlay left mounted, no container left running
        raise
    REPORT.append(f"container booted to 'running' in {box.boot_seconds:.1f}s")
    try:
        yield box
    finally:
        box.close()


@pytest.fixture
def unit(machine: Container, staged_install: Path) -> Unit:
    skns = Unit(machine)
    if not skns.installed():
        skns.unpack(staged_install)
        skns.make("install")
    return skns


@pytest.fixture
def running(unit: Unit) -> Unit:
    unit.ensure_running()
    return unit


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Uninstall runs after every other test of this directory: a test after it would have
    to install again (10-40 s). The rest of the suite keeps its order."""
    here = Path(__file__).parent
    slots = [i for i, item in enumerate(items) if item.path.parent == here]
    mine = [items[i] for i in slots]
    mine.sort(key=lambda item: item.name.startswith("test_uninstall"))  # stable
    for i, item in zip(slots, mine, strict=True):
        items[i] = item


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT:
        terminalreporter.section("skns under systemd")
        for line in REPORT:
            terminalreporter.write_line(line)
