"""How fast the backing disk hands over a file's extent copies, read directly, without FUSE.

shadowfs keeps an inode's copies on a device in one container file, each copy at its extent's
offset (tiers/local_device.py). This module reads the data file's container straight from the
device directory, cold, 1 MiB at a time, and the native data file the same way; no daemon is
involved, so the container's figure bounds what any FUSE daemon that reads it can reach. It
is the check that the container really is laid out and read ahead like a native file: with
one file per copy (shadowfs's format 1), the same read was a thousand separate files per GiB.
"""

from __future__ import annotations

import time
from pathlib import Path

from tiers.local_device import container_relpath

MiB = 1 << 20


def container_path(device: Path, ino: int) -> Path:
    """The container holding inode *ino*'s first TiB on the device rooted at *device*."""
    return device / container_relpath(ino)


def read_file(path: Path) -> float:
    """Bytes per second reading *path* whole, 1 MiB at a time, with the kernel's readahead."""
    started = time.perf_counter()
    total = read_through(path)
    return total / (time.perf_counter() - started)


def read_through(path: Path, limit: int | None = None) -> int:
    """Read *path* 1 MiB at a time, to its end or past *limit* bytes; the bytes read."""
    total = 0
    buffer = bytearray(MiB)
    with open(path, "rb", buffering=0) as file:
        while (limit is None or total < limit) and (got := file.readinto(buffer)):
            total += got
    return total
