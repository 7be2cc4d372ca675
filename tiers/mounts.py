"""The kernel's mount table (/proc/self/mountinfo), decoded.

mountinfo escapes space, tab, newline and backslash in paths as octal (\\040 ...); comparing
raw fields against a path with a space in it silently finds nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

_OCTAL = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class MountEntry:
    mount_point: str
    major_minor: str
    fs_type: str


def _unescape(field: str) -> str:
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def mount_entries() -> Iterator[MountEntry]:
    # Paths are bytes to the kernel; a mount point that is not UTF-8 must not break us.
    with open("/proc/self/mountinfo", errors="surrogateescape") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            yield MountEntry(_unescape(fields[4]), fields[2], right.split()[0])


def find_mount(mount_point: str) -> MountEntry | None:
    """The last (topmost) mount exactly at ``mount_point``."""
    found = None
    for entry in mount_entries():
        if entry.mount_point == mount_point:
            found = entry
    return found
