"""The FUSE operations: a thin pyfuse3.Operations that looks up, calls the data path, replies.

Every collaborator comes in through ``__init__`` (nothing global), so tests drive this class
in-process without /dev/fuse. ``FsError`` raised below is turned into ``pyfuse3.FUSEError``
here, once, by ``_translated``; any other exception is a bug: it is logged with its traceback
and answered with EIO so that nothing a client sends can crash the daemon.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import pyfuse3

from shadowfs.datapath import DataPath
from shadowfs.errors import FsError
from shadowfs.namespace import Inode, Namespace, now_ns

log = logging.getLogger(__name__)

_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])
# Asked of every write: one global, not two module attribute lookups and an or.
_SYNC_FLAGS = os.O_SYNC | os.O_DSYNC


def _translated(fn: _F) -> _F:
    name = fn.__name__
    counted = not name.startswith("_")  # a private continuation: its caller counted the request

    @functools.wraps(fn)
    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if counted:
            counts = self._counts
            counts[name] = counts.get(name, 0) + 1
        try:
            return await fn(self, *args, **kwargs)
        except FsError as exc:
            raise pyfuse3.FUSEError(exc.errno) from None
        except pyfuse3.FUSEError:
            raise
        except Exception:
            log.exception("internal error in %s", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return cast(_F, wrapper)


@dataclass
class Timeouts:
    attr: float = 3600.0
    entry: float = 3600.0


@dataclass
class Handle:
    inode: Inode
    flags: int


class ShadowOperations(pyfuse3.Operations):
    supports_dot_lookup = True
    enable_writeback_cache = True

    def __init__(
        self,
        namespace: Namespace,
        data: DataPath,
        timeouts: Timeouts | None = None,
        xattrs: bool = True,
    ) -> None:
        super().__init__()
        self.ns = namespace
        self.data = data
        self.timeouts = timeouts or Timeouts()
        self._handles: dict[int, Handle] = {}
        self._counts: dict[str, int] = {}  # per FUSE operation, for status
        # Reads and writes are counted in plain ints: a dict update was a measurable share of
        # a request that the page cache answers.
        self.reads = 0
        self.writes = 0
        self._next_fh = 1
        self.xattrs = xattrs

    @property
    def request_counts(self) -> dict[str, int]:
        """Requests served per FUSE operation since mount, for status."""
        counts = dict(self._counts)
        for name, n in (("read", self.reads), ("write", self.writes)):
            if n:
                counts[name] = n
        return counts

    # ------------------------------------------------------------ helpers

    def _attrs(self, inode: Inode) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = pyfuse3.InodeT(inode.ino)
        entry.generation = 0
        entry.entry_timeout = self.timeouts.entry
        entry.attr_timeout = self.timeouts.attr
        entry.st_mode = pyfuse3.ModeT(inode.mode)
        entry.st_nlink = inode.nlink
        entry.st_uid = inode.uid
        entry.st_gid = inode.gid
        entry.st_rdev = inode.rdev
        entry.st_size = inode.size
        entry.st_blksize = 4096
        entry.st_blocks = (inode.allocated + 511) // 512
        entry.st_atime_ns = inode.atime_ns
        entry.st_mtime_ns = inode.mtime_ns
        entry.st_ctime_ns = inode.ctime_ns
        return entry

    def _entry(self, inode: Inode) -> pyfuse3.EntryAttributes:
        inode.lookups += 1
        return self._attrs(inode)

    def _open_handle(self, inode: Inode, flags: int) -> pyfuse3.FileInfo:
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = Handle(inode, flags)
        inode.open_handles += 1
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fh), keep_cache=True, direct_io=False)

    def _handle(self, fh: int) -> Handle:
        try:
            return self._handles[fh]
        except KeyError:
            raise FsError(errno.EBADF, f"no handle {fh}") from None

    def _xattrs_enabled(self) -> None:
        # ENOSYS makes the kernel stop asking (for every xattr call of this mount) and answer
        # EOPNOTSUPP itself: consistent for callers, and no round trip per write.
        if not self.xattrs:
            raise FsError(errno.ENOSYS, "xattrs are off in this filesystem's config")

    def _evict(self, inode: Inode) -> None:
        """Drop a forgotten inode from the caches so memory follows the kernel's working set;
        one with unflushed changes stays until a later forget finds it clean."""
        ino = inode.ino
        data = self.data
        if (
            ino in self.ns.dirty
            or data.extents.has_pending(ino)
            or ino in data.in_flight  # a sync holds its rows, not yet in the database
            or inode.lock.locked()
        ):
            return
        self.ns.inodes.pop(ino, None)
        self.data.extents.evict(ino)

    async def _maybe_free(self, inode: Inode) -> None:
        if inode.nlink == 0 and inode.lookups <= 0 and inode.open_handles <= 0:
            await self.data.free(inode)

    # ------------------------------------------------------------ lookups and attributes

    @_translated
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return self._entry(self.ns.lookup(parent_inode, name))

    @_translated
    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for ino, nlookup in inode_list:
            inode = self.ns.inodes.get(ino)
            if inode is None:
                continue
            inode.lookups -= nlookup
            if inode.nlink == 0:
                await self._maybe_free(inode)
            elif inode.lookups <= 0 and inode.open_handles <= 0:
                self._evict(inode)

    @_translated
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attrs(self.ns.get(inode))

    @_translated
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        node = self.ns.get(inode)
        if fields.update_size:
            if node.is_dir:
                raise FsError(errno.EISDIR)
            await self.data.truncate(node, attr.st_size)
        changed = False
        if fields.update_mode:
            node.mode = stat.S_IFMT(node.mode) | stat.S_IMODE(attr.st_mode)
            changed = True
        if fields.update_uid or fields.update_gid:
            if fields.update_uid:
                node.uid = attr.st_uid
            if fields.update_gid:
                node.gid = attr.st_gid
            if not node.is_dir and not fields.update_mode:
                # chown clears set-user-ID, and set-group-ID when group-executable
                node.mode &= ~stat.S_ISUID
                if node.mode & stat.S_IXGRP:
                    node.mode &= ~stat.S_ISGID
            changed = True
        if fields.update_atime:
            node.atime_ns = attr.st_atime_ns
            changed = True
        if fields.update_mtime:
            node.mtime_ns = attr.st_mtime_ns
            changed = True
        if changed or fields.update_size:
            node.ctime_ns = attr.st_ctime_ns if fields.update_ctime else now_ns()
            self.ns.save_attrs(node)
        return self._attrs(node)

    @_translated
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return self.ns.readlink(inode)

    # ------------------------------------------------------------ namespace changes

    @_translated
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return self._entry(self.ns.create(parent_inode, name, mode, ctx.uid, ctx.gid, rdev))

    @_translated
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        mode = stat.S_IFDIR | stat.S_IMODE(mode)
        return self._entry(self.ns.create(parent_inode, name, mode, ctx.uid, ctx.gid))

    @_translated
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        mode = stat.S_IFLNK | 0o777
        return self._entry(
            self.ns.create(parent_inode, name, mode, ctx.uid, ctx.gid, target=target)
        )

    @_translated
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return self._entry(self.ns.link(inode, new_parent_inode, new_name))

    @_translated
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        inode = self.ns.unlink(parent_inode, name)
        await self._maybe_free(inode)

    @_translated
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        inode = self.ns.rmdir(parent_inode, name)
        await self._maybe_free(inode)

    @_translated
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        replaced = self.ns.rename(parent_inode_old, name_old, parent_inode_new, name_new, flags)
        if replaced is not None:
            await self._maybe_free(replaced)

    # ------------------------------------------------------------ files

    @_translated
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        mode = stat.S_IFREG | stat.S_IMODE(mode)
        inode = self.ns.create(parent_inode, name, mode, ctx.uid, ctx.gid)
        return self._open_handle(inode, flags), self._entry(inode)

    @_translated
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        node = self.ns.get(inode)
        if node.is_dir:
            raise FsError(errno.EISDIR)
        if flags & os.O_TRUNC and node.is_reg:
            # libfuse asks for atomic_o_trunc: the kernel then sends O_TRUNC here instead of
            # a setattr, and only empties its own cache; the truncate is ours to do.
            await self.data.truncate(node, 0)
        return self._open_handle(node, flags)

    async def read(self, fh: int, off: int, size: int) -> bytes | bytearray:  # type: ignore[override]
        # Not @_translated: the common read is answered here without awaiting anything, and
        # the wrapper's coroutine was a measurable share of it. pyfuse3 replies with any
        # contiguous buffer (PyObject_GetBuffer), so a bytearray goes back without a copy.
        self.reads += 1
        handle = self._handles.get(fh)
        if handle is not None:
            try:
                data = self.data.read_now(handle.inode, off, size)
            except Exception:
                log.exception("internal error in read")
                raise pyfuse3.FUSEError(errno.EIO) from None
            if data is not None:
                return data
        return await self._read_rest(fh, off, size)

    @_translated
    async def _read_rest(self, fh: int, off: int, size: int) -> bytes | bytearray:
        return await self.data.read_rest(self._handle(fh).inode, off, size)

    async def write(self, fh: int, off: int, buf: bytes) -> int:  # type: ignore[override]
        # Not @_translated, as read: the common write lands without awaiting anything.
        self.writes += 1
        handle = self._handles.get(fh)
        if handle is not None and not handle.flags & _SYNC_FLAGS:
            try:
                written = self.data.write_now(handle.inode, off, buf)
            except FsError as exc:
                raise pyfuse3.FUSEError(exc.errno) from None
            except Exception:
                log.exception("internal error in write")
                raise pyfuse3.FUSEError(errno.EIO) from None
            if written is not None:
                return written
        return await self._write_rest(fh, off, buf)

    @_translated
    async def _write_rest(self, fh: int, off: int, buf: bytes) -> int:
        handle = self._handle(fh)
        written = await self.data.write(handle.inode, off, buf)
        if handle.flags & _SYNC_FLAGS:
            # Without the writeback cache the kernel does not follow an O_SYNC write with
            # an fsync; make it durable here. With it, the kernel's fsync does the same.
            await self.data.sync([handle.inode.ino], durable=True)
        return written

    @_translated
    async def flush(self, fh: int) -> None:
        self._handle(fh)

    @_translated
    async def release(self, fh: int) -> None:
        handle = self._handles.pop(fh, None)
        if handle is not None:
            handle.inode.open_handles -= 1
            await self._maybe_free(handle.inode)

    @_translated
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self.data.sync([self._handle(fh).inode.ino], durable=True)

    # ------------------------------------------------------------ directories

    @_translated
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = self.ns.get(inode)
        if not node.is_dir:
            raise FsError(errno.ENOTDIR)
        return inode

    @_translated
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        for entry in self.ns.readdir(fh, start_id):
            if not pyfuse3.readdir_reply(token, entry.name, self._attrs(entry.inode), entry.offset):
                break
            entry.inode.lookups += 1

    @_translated
    async def releasedir(self, fh: int) -> None:
        return None

    @_translated
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        # Namespace changes are committed as they happen; making them durable is enough.
        await self.data.sync([], durable=True)

    # ------------------------------------------------------------ xattrs and statfs

    @_translated
    async def setxattr(
        self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        self._xattrs_enabled()
        self.ns.setxattr(inode, name, value)

    @_translated
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        self._xattrs_enabled()
        return self.ns.getxattr(inode, name)

    @_translated
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        self._xattrs_enabled()
        return self.ns.listxattr(inode)

    @_translated
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._xattrs_enabled()
        self.ns.removexattr(inode, name)

    @_translated
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        data = self.data
        device = data.devices[data.backing]
        cap = device.capacity(data.usage[data.backing].bytes)
        total = min(cap.budget, cap.used + cap.fs_free)
        result = pyfuse3.StatvfsData()
        result.f_bsize = 4096
        result.f_frsize = 4096
        result.f_blocks = total // 4096
        result.f_bfree = cap.available // 4096
        result.f_bavail = cap.available // 4096
        inodes = self.ns.count_inodes()
        result.f_files = inodes + 1_000_000
        result.f_ffree = 1_000_000
        result.f_favail = 1_000_000
        result.f_namemax = 255
        return result
