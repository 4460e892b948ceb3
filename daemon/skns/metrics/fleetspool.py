"""The spool between the supervisor and the fleet publisher: one file per closed base window.

The supervisor (no event loop, never blocked on the network) writes each base line
it closes to ``state_dir/fleet-spool/<window>.json``, atomically; the ``fleet``
child publishes the files in window order and removes each once JetStream has
acknowledged it. A file left by a crash or a NATS outage is published after the
restart: its message id makes JetStream store it once.

The spool is bounded by :data:`KEEP`: the fleet stream keeps partials, and remembers
their message ids, that long, so an older window could be neither merged nor stored
exactly once. While NATS stays away longer, the oldest windows leave the spool
(counted in status); the host's own output is not touched.
"""

from __future__ import annotations

from pathlib import Path

from ..files import write_atomic

DIRNAME = "fleet-spool"
# Seconds the fleet stream keeps a partial and its message id (its max age and duplicate
# window): the most a spooled window is worth keeping.
KEEP = 3600.0


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


def prune(directory: Path, newest: int, keep: int) -> int:
    """Remove the windows older than the ``keep`` newest up to ``newest``; how many went."""
    gone = 0
    for path in pending(directory):
        try:
            window = int(path.stem)
        except ValueError:
            continue  # not a name we write: leave it to the publisher, which logs it
        if window > newest - keep:
            break  # oldest first: the rest are newer
        try:
            path.unlink()
        except FileNotFoundError:
            continue  # published meanwhile
        except OSError:
            break  # the caller's next put says what is wrong with the directory
        gone += 1
    return gone
