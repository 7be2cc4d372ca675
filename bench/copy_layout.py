"""How fast the backing disk hands over a file's extent copies, read directly, without FUSE.

shadowfs keeps each extent copy in its own file (tiers/local_device.py), so a sequential read
of a volume is, to the disk below, a read of 1,024 separate 1 MiB files per GiB, wherever the
filesystem put them, while a native read is one file that ext4 laid out in long runs and reads
ahead in 8 MiB steps. This module reads the copy files straight from the device directory,
cold, in index order, with a helper thread asking for each file `window` files ahead
(POSIX_FADV_WILLNEED, as shadowfs's own read-ahead does), and reads the native data file the
same way, 1 MiB at a time. No daemon is involved: the copy figure bounds what any FUSE
daemon that reads these copies can reach, whatever it does on its event loop.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from tiers.device import ExtentKey
from tiers.local_device import copy_relpath

MiB = 1 << 20


def copy_paths(device: Path, ino: int, size: int, extent_size: int) -> list[Path]:
    """The copy files of inode *ino*'s first *size* bytes, in index order."""
    return [device / copy_relpath(ExtentKey(ino, index)) for index in range(size // extent_size)]


def read_files(paths: Sequence[Path], window: int = 128) -> float:
    """Bytes per second reading *paths* whole, in order, with read-ahead *window* files ahead."""
    asked = threading.Semaphore(0)
    consumed = threading.Semaphore(window)

    def ask_ahead() -> None:
        for path in paths:
            consumed.acquire()  # at most `window` files asked for and not yet read
            try:
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
                finally:
                    os.close(fd)
            except OSError:
                pass  # a hint: the reader meets the error itself
            finally:
                asked.release()

    helper = threading.Thread(target=ask_ahead, daemon=True)
    started = time.perf_counter()
    helper.start()
    total = 0
    buffer = bytearray(MiB)
    for path in paths:
        asked.acquire()
        with open(path, "rb", buffering=0) as file:
            while got := file.readinto(buffer):
                total += got
        consumed.release()
    helper.join()
    return total / (time.perf_counter() - started)


def read_file(path: Path) -> float:
    """Bytes per second reading *path* whole, 1 MiB at a time, with the kernel's readahead."""
    started = time.perf_counter()
    total = 0
    buffer = bytearray(MiB)
    with open(path, "rb", buffering=0) as file:
        while got := file.readinto(buffer):
            total += got
    return total / (time.perf_counter() - started)
