"""A small real filesystem to fill up (a tmpfs mount: needs root)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


class TinyFs:
    """A tmpfs of a few KiB, and a filler file that takes up its free space."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / ".filler"

    def fill(self) -> None:
        """Take every free byte (the next write anywhere on it fails with ENOSPC)."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (65536, 4096, 256, 16, 1):
                while True:
                    try:
                        os.write(fd, b"\0" * size)
                    except OSError:
                        break
        finally:
            os.close(fd)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Callable[[int], TinyFs]]:
    """``tiny_fs(size_bytes)`` mounts a tmpfs of that size under tmp_path."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted: list[Path] = []

    def mount(size: int) -> TinyFs:
        path = tmp_path / f"fs{len(mounted)}"
        path.mkdir()
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True
        )
        mounted.append(path)
        return TinyFs(path)

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)
