"""A null FUSE filesystem: the transport's ceiling on this machine.

Reads return zeros, writes are discarded, every file has the same fixed large size, and
create, unlink and readdir work well enough for fio. Every open is direct_io, as in the
passthrough, so every byte an application moves crosses /dev/fuse and the figures measure
the kernel transport plus pyfuse3's per-request cost with no storage behind it.

`--page-cache` opens without direct_io and with keep_cache (safe: the content never changes),
for probing how the kernel shapes buffered requests (readahead size, max_read). `--writeback`
is page-cache mode plus the kernel's writeback cache, as shadowfs runs: writes land in the
mount's page cache and reach the daemon as the kernel writes them back. `--stats FILE`
records the size of every read and write request; SIGUSR1 writes the histogram to FILE and
starts a new one, so a runner can attribute request sizes to one fio job.

    python -m bench.nullfs MOUNTPOINT [--page-cache | --writeback] [--stats FILE]
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import stat
import time
from collections import Counter
from dataclasses import dataclass, field

import pyfuse3

from bench.passthrough import run

FILE_SIZE = 1 << 40  # 1 TiB: larger than any job's file, so fio never lays a file out
_ZEROS = bytes(4 << 20)  # served as a memoryview slice: no allocation per read


@dataclass
class RequestStats:
    """Histogram of request sizes per operation since the last dump."""

    reads: Counter[int] = field(default_factory=Counter)
    writes: Counter[int] = field(default_factory=Counter)
    fsyncs: int = 0
    dumps: int = 0

    def dump(self, path: str) -> None:
        """Write the histogram atomically (the runner polls `dumps`), then start afresh."""
        self.dumps += 1
        record = {
            "pid": os.getpid(),
            "dumps": self.dumps,
            "time": time.time(),
            "reads": {str(size): n for size, n in sorted(self.reads.items())},
            "writes": {str(size): n for size, n in sorted(self.writes.items())},
            "fsyncs": self.fsyncs,
        }
        with open(path + ".tmp", "w") as out:
            json.dump(record, out)
        os.replace(path + ".tmp", path)
        self.reads.clear()
        self.writes.clear()
        self.fsyncs = 0


class NullFS(pyfuse3.Operations):
    """One flat directory of names; the data behind every name is FILE_SIZE zeros."""

    def __init__(
        self, page_cache: bool = False, stats: RequestStats | None = None, writeback: bool = False
    ) -> None:
        super().__init__()
        self.enable_writeback_cache = writeback  # read by pyfuse3.init
        page_cache = page_cache or writeback
        self._names: dict[bytes, int] = {}
        self._next_inode = pyfuse3.ROOT_INODE + 1
        self._page_cache = page_cache
        self._stats = stats
        self._born_ns = time.time_ns()

    def _attr(self, inode: int) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = inode
        if inode == pyfuse3.ROOT_INODE:
            attr.st_mode, attr.st_nlink = stat.S_IFDIR | 0o755, 2
        else:
            attr.st_mode, attr.st_nlink, attr.st_size = stat.S_IFREG | 0o644, 1, FILE_SIZE
            attr.st_blocks = FILE_SIZE // 512
        attr.st_blksize = 4096
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = self._born_ns
        return attr

    def _file_info(self, inode: int) -> pyfuse3.FileInfo:
        return pyfuse3.FileInfo(
            fh=inode, direct_io=not self._page_cache, keep_cache=self._page_cache
        )

    async def lookup(self, parent_inode, name, ctx=None):
        if parent_inode != pyfuse3.ROOT_INODE or name not in self._names:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(self._names[name])

    async def getattr(self, inode, ctx=None):
        return self._attr(inode)

    async def setattr(self, inode, attr, fields, fh, ctx):
        return self._attr(inode)  # the size is fixed; truncation is accepted and ignored

    async def create(self, parent_inode, name, mode, flags, ctx):
        if name not in self._names:
            self._names[name] = self._next_inode
            self._next_inode += 1
        inode = self._names[name]
        return self._file_info(inode), self._attr(inode)

    async def open(self, inode, flags, ctx):
        return self._file_info(inode)

    async def read(self, fh, off, size):
        if self._stats is not None:
            self._stats.reads[size] += 1
        size = max(0, min(size, FILE_SIZE - off))
        return memoryview(_ZEROS)[:size] if size <= len(_ZEROS) else bytes(size)

    async def write(self, fh, off, buf):
        if self._stats is not None:
            self._stats.writes[len(buf)] += 1
        return len(buf)

    async def fsync(self, fh, datasync):
        if self._stats is not None:
            self._stats.fsyncs += 1

    async def release(self, fh):
        pass

    async def unlink(self, parent_inode, name, ctx):
        if self._names.pop(name, None) is None:
            raise pyfuse3.FUSEError(errno.ENOENT)

    async def opendir(self, inode, ctx):
        return inode

    async def readdir(self, fh, start_id, token):
        # Inode numbers only grow, so they are stable readdir offsets.
        for name, inode in sorted(self._names.items(), key=lambda item: item[1]):
            if inode > start_id and not pyfuse3.readdir_reply(
                token, name, self._attr(inode), inode
            ):
                break

    async def statfs(self, ctx):
        out = pyfuse3.StatvfsData()
        out.f_bsize = out.f_frsize = 4096
        out.f_blocks = out.f_bfree = out.f_bavail = 1 << 30  # 4 TiB, all free
        out.f_files = out.f_ffree = out.f_favail = 1 << 20
        out.f_namemax = 255
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mountpoint")
    parser.add_argument("--page-cache", action="store_true", help="buffered, keep_cache opens")
    parser.add_argument("--writeback", action="store_true", help="page cache + writeback cache")
    parser.add_argument("--stats", metavar="FILE", help="request-size histogram, on SIGUSR1")
    args = parser.parse_args()
    stats = RequestStats() if args.stats else None
    operations = NullFS(page_cache=args.page_cache, stats=stats, writeback=args.writeback)
    if stats is not None:
        # A plain Python handler runs between two bytecodes of the trio thread, so the dump
        # sees the counters in a consistent enough state without touching the FUSE loop.
        signal.signal(signal.SIGUSR1, lambda _signum, _frame: stats.dump(args.stats))
    try:
        run(operations, args.mountpoint, "nullfs", "nullfs")
    finally:
        if stats is not None:
            stats.dump(args.stats)


if __name__ == "__main__":
    main()
