"""How large the page-cache folios holding a file are: the reason FUSE hot reads trail ext4's.

A hot sequential read never reaches a FUSE daemon: the kernel copies from the FUSE mount's
page cache, as it copies from ext4's for a native read. The copy costs the same per byte; the
work per folio differs with folio size. On this kernel (6.18) the FUSE page cache holds single
4 KiB pages (every page of a 1 GiB file read through shadowfs or the null fs is its own folio),
while ext4 caches a file it reads ahead in large folios (21.6 pages on average for a 1 GiB
file read with dd) but one a buffered writer just wrote in single pages, as the harness's data
file is. The harness records the average folio size of each target's data file next to the
hot-read figures, so that a hot-read ratio can be read knowing which case it is.

Measured by mapping the file read-only, touching each page (which maps the cached folio; the
caller has read the file first, so nothing is read from a disk) and reading the page frames'
flags: /proc/self/pagemap gives each page's frame, /proc/kpageflags whether that frame is the
head or a tail of a compound (large) folio. Both need root for real frame numbers.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

PAGE = mmap.PAGESIZE
PRESENT = 1 << 63
PFN_MASK = (1 << 55) - 1
KPF_COMPOUND_TAIL = 1 << 16


@dataclass(frozen=True)
class Folios:
    """Pages of the file seen, and how many folios held them."""

    pages: int
    folios: int

    @property
    def average_pages(self) -> float:
        return self.pages / self.folios if self.folios else 0.0

    def describe(self) -> str:
        return f"{self.average_pages:.1f} pages per folio ({self.pages:,} pages)"


def measure(path: Path, limit: int = 256 << 20) -> Folios | None:
    """The folios behind the first *limit* bytes of *path*; None where the kernel hides them."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = min(os.fstat(fd).st_size, limit) // PAGE * PAGE
        if not size:
            return None
        with mmap.mmap(fd, size, prot=mmap.PROT_READ) as mapping:
            view = memoryview(mapping)
            try:
                for offset in range(0, size, PAGE):
                    view[offset]  # maps the page (already cached by the caller's read)
                start = _address_of(path, size)
                if start is None:
                    return None
                return _count(start, size // PAGE)
            finally:
                view.release()
    except PermissionError:
        return None
    finally:
        os.close(fd)


def _address_of(path: Path, size: int) -> int | None:
    """Where this process mapped *path*: /proc/self/maps, the mapping at least *size* long."""
    name = os.path.realpath(path)
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == name:
            low, high = (int(x, 16) for x in fields[0].split("-"))
            if high - low >= size:
                return low
    return None


def _count(start: int, pages: int) -> Folios | None:
    with open("/proc/self/pagemap", "rb", buffering=0) as pagemap:
        entries = os.pread(pagemap.fileno(), pages * 8, start // PAGE * 8)
    frames = [e & PFN_MASK for (e,) in struct.iter_unpack("Q", entries) if e & PRESENT]
    if not frames or not any(frames):
        return None  # not root: the kernel reports every frame as 0
    folios = 0
    with open("/proc/kpageflags", "rb", buffering=0) as kpageflags:
        for frame in frames:
            (flags,) = struct.unpack("Q", os.pread(kpageflags.fileno(), 8, frame * 8))
            if not flags & KPF_COMPOUND_TAIL:
                folios += 1  # a head, or a page of its own
    return Folios(len(frames), folios)
