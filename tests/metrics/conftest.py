"""Loop-mounted filesystems to fill up (need root); ``tiny_fs`` is in tests/conftest.py."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


class LoopFs:
    """An ext4 on a loop device whose backing file lives on a tmpfs smaller than it: once
    the tmpfs is full, the device fails writes back to ext4, which fsync(2) reports (the
    write(2) itself went to the page cache and succeeded)."""

    def __init__(self, path: Path, backing: Path) -> None:
        self.path = path
        self.backing = backing

    def grow_backing(self, size: int) -> None:
        """Give the device room again (a tmpfs can be resized in place)."""
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.backing)], check=True)


@pytest.fixture
def loop_fs(tmp_path: Path) -> Iterator[Callable[[int], LoopFs]]:
    """``loop_fs(backing_bytes)``: a 16 MiB ext4 whose device holds only backing_bytes."""
    if os.geteuid() != 0:
        pytest.skip("loop devices need root")
    for tool in ("losetup", "mkfs.ext4"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    backing, mnt = tmp_path / "backing", tmp_path / "ext4"
    backing.mkdir()
    mnt.mkdir()
    undo: list[list[str]] = []

    def make(size: int) -> LoopFs:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(backing)], check=True
        )
        undo.append(["umount", "-l", str(backing)])
        image = backing / "image"
        image.touch()
        os.truncate(image, 16 << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-O", "^has_journal", str(image)], check=True)
        losetup = subprocess.run(
            ["losetup", "-f", "--show", str(image)], capture_output=True, text=True
        )
        if losetup.returncode != 0:
            pytest.skip(f"no loop device here: {losetup.stderr.strip()}")
        device = losetup.stdout.strip()
        undo.append(["losetup", "-d", device])
        subprocess.run(["mount", "-o", "errors=continue", device, str(mnt)], check=True)
        undo.append(["umount", "-l", str(mnt)])
        return LoopFs(mnt, backing)

    yield make
    for command in reversed(undo):
        subprocess.run(command, check=False, capture_output=True)
