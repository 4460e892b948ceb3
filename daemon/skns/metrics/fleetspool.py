"""The spool between the supervisor and the fleet publisher: one file per closed base window.

The supervisor (no event loop, never blocked on the network) writes each base line
it closes to ``state_dir/fleet-spool/<window>.json``, atomically; the ``fleet``
child publishes the files in window order and removes each once JetStream has
acknowledged it. A file left by a crash or a NATS outage is published after the
restart: its message id makes JetStream store it once.
"""

from __future__ import annotations

from pathlib import Path

from ..files import write_atomic

DIRNAME = "fleet-spool"


def spool_dir(state_dir: Path) -> Path:
    return state_dir / DIRNAME


def put(directory: Path, window: int, line: str) -> None:
    """Spool one base line (raises OSError: the caller counts and logs it)."""
    write_atomic(directory / f"{window:020d}.json", line.encode())


def pending(directory: Path) -> list[Path]:
    """The spooled windows, oldest first."""
    try:
        names = sorted(p for p in directory.iterdir() if p.suffix == ".json")
    except OSError:  # none yet, or something in its way (the supervisor logs that)
        return []
    return names
