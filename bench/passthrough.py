"""A plain pyfuse3 passthrough: the fixed reference the shadowfs data path is measured against.

Every open is direct_io and every read and write is an inline os.pread/os.pwrite on the trio
thread; nothing is cached, threaded or tuned (the FUSE readahead is left at the kernel's
default). It is what a few dozen lines of pyfuse3 reach on this machine, so keep it plain:
docs/benchmarks.md quotes this file verbatim.

`--writeback` (the write-ceiling diagnostic only) opens without direct_io, with keep_cache,
and turns on the kernel's writeback cache as shadowfs does; the calls stay the same.

    python -m bench.passthrough SOURCE_DIR MOUNTPOINT [--writeback]  # foreground; SIGTERM unmounts
"""

from __future__ import annotations

import argparse
import errno
import itertools
import os
import signal
from collections.abc import Callable
from typing import TypeVar

import pyfuse3
import trio

T = TypeVar("T")


def _os(call: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Run one os call, turning its OSError into the FUSEError the kernel expects."""
    try:
        return call(*args, **kwargs)
    except OSError as exc:
        raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None


class Passthrough(pyfuse3.Operations):
    """Mirrors one source directory tree; inode numbers are our own, keyed by path."""

    def __init__(self, source: str, writeback: bool = False) -> None:
        super().__init__()
        self._paths: dict[int, str] = {pyfuse3.ROOT_INODE: source}
        self._inodes: dict[str, int] = {source: pyfuse3.ROOT_INODE}
        self._next_inode = itertools.count(pyfuse3.ROOT_INODE + 1)
        self._open: dict[int, int] = {}  # fh -> inode: an open file outlives its name
        self.enable_writeback_cache = writeback  # read by pyfuse3.init

    def _path(self, inode: int) -> str:
        if inode not in self._paths:  # unlinked: the kernel may still ask about it
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._paths[inode]

    def _child(self, parent: int, name: bytes) -> str:
        return os.path.join(self._path(parent), os.fsdecode(name))

    def _inode(self, path: str) -> int:
        if path not in self._inodes:
            self._inodes[path] = next(self._next_inode)
            self._paths[self._inodes[path]] = path
        return self._inodes[path]

    def _attr(self, inode: int, fh: int | None = None) -> pyfuse3.EntryAttributes:
        if fh is None:  # any open file of the inode, else its name
            fh = next((fd for fd, ino in self._open.items() if ino == inode), None)
        st = _os(os.lstat, self._path(inode)) if fh is None else _os(os.fstat, fh)
        attr = pyfuse3.EntryAttributes()
        for field in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_rdev", "st_size"):
            setattr(attr, field, getattr(st, field))
        attr.st_ino = inode
        attr.st_blksize, attr.st_blocks = st.st_blksize, st.st_blocks
        attr.st_atime_ns, attr.st_mtime_ns, attr.st_ctime_ns = (
            st.st_atime_ns,
            st.st_mtime_ns,
            st.st_ctime_ns,
        )
        return attr

    async def lookup(self, parent_inode, name, ctx=None):
        path = self._child(parent_inode, name)
        _os(os.lstat, path)  # a name that does not exist gets no inode
        return self._attr(self._inode(path))

    async def getattr(self, inode, ctx=None):
        return self._attr(inode)

    async def setattr(self, inode, attr, fields, fh, ctx):
        # Through the open file when the kernel names one (its name may be gone), else the name.
        target = self._path(inode) if fh is None else fh
        if fields.update_size:
            _os(os.truncate, target, attr.st_size)
        if fields.update_mode:
            _os(os.chmod, target, attr.st_mode)
        if fields.update_atime or fields.update_mtime:
            now = self._attr(inode, fh)
            atime = attr.st_atime_ns if fields.update_atime else now.st_atime_ns
            mtime = attr.st_mtime_ns if fields.update_mtime else now.st_mtime_ns
            _os(os.utime, target, ns=(atime, mtime))
        return self._attr(inode, fh)

    def _opened(self, path: str, flags: int, mode: int = 0o644) -> pyfuse3.FileInfo:
        # O_DIRECT is dropped: os.pread's buffers are not aligned for it.
        flags &= ~os.O_DIRECT
        writeback = self.enable_writeback_cache
        if writeback:  # the kernel then reads around partial pages and does O_APPEND itself
            flags = (flags & ~(os.O_ACCMODE | os.O_APPEND)) | os.O_RDWR
        fd = _os(os.open, path, flags, mode)
        self._open[fd] = self._inode(path)
        return pyfuse3.FileInfo(fh=fd, direct_io=not writeback, keep_cache=True)

    async def create(self, parent_inode, name, mode, flags, ctx):
        info = self._opened(self._child(parent_inode, name), flags | os.O_CREAT, mode)
        return info, self._attr(self._open[info.fh], info.fh)

    async def open(self, inode, flags, ctx):
        return self._opened(self._path(inode), flags & ~os.O_CREAT)

    async def read(self, fh, off, size):
        return _os(os.pread, fh, size, off)

    async def write(self, fh, off, buf):
        return _os(os.pwrite, fh, buf, off)

    async def fsync(self, fh, datasync):
        _os(os.fdatasync if datasync else os.fsync, fh)

    async def release(self, fh):
        del self._open[fh]
        os.close(fh)

    async def unlink(self, parent_inode, name, ctx):
        path = self._child(parent_inode, name)
        _os(os.unlink, path)
        self._paths.pop(self._inodes.pop(path, 0), None)

    async def opendir(self, inode, ctx):
        return inode

    async def readdir(self, fh, start_id, token):
        names = sorted(_os(os.listdir, self._path(fh)))
        for index, name in enumerate(names[start_id:], start_id + 1):
            attr = self._attr(self._inode(os.path.join(self._path(fh), name)))
            if not pyfuse3.readdir_reply(token, os.fsencode(name), attr, index):
                break

    async def statfs(self, ctx):
        st, out = _os(os.statvfs, self._paths[pyfuse3.ROOT_INODE]), pyfuse3.StatvfsData()
        for field in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail"):
            setattr(out, field, getattr(st, field))
        out.f_files, out.f_ffree, out.f_favail = st.f_files, st.f_ffree, st.f_favail
        out.f_namemax = st.f_namemax
        return out


async def _serve() -> None:
    """Serve until unmounted, or until SIGTERM/SIGINT ends the FUSE loop cleanly."""
    async with trio.open_nursery() as nursery:

        async def stop_on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    pyfuse3.terminate()
                    return

        nursery.start_soon(stop_on_signal)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


def run(operations: pyfuse3.Operations, mountpoint: str, fsname: str, subtype: str) -> None:
    """Mount *operations* at *mountpoint* in the foreground; always unmount on the way out."""
    options = set(pyfuse3.default_options) | {f"fsname={fsname}", f"subtype={subtype}"}
    pyfuse3.init(operations, mountpoint, options)
    try:
        trio.run(_serve)
    finally:
        pyfuse3.close(unmount=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("mountpoint")
    parser.add_argument("--writeback", action="store_true", help="page cache + writeback cache")
    args = parser.parse_args()
    operations = Passthrough(os.path.realpath(args.source), args.writeback)
    run(operations, args.mountpoint, args.source, "passthrough")


if __name__ == "__main__":
    main()
