"""The data path: read, write, truncate and sync of file data through the extent map.

A handler in the FUSE class looks up its inode and calls one method here. Everything here runs
on the trio thread; device I/O is awaited and may run inline or in the device's threads
(tiers.local_device decides).

Durability, in the order the design fixes (ARCHITECTURE.md, invariant 1) — ``sync``:
1. fsync every copy written since its last sync (per device, in that device's threads);
2. fsync the directories that gained or lost container files;
3. write the metadata rows that describe them (one transaction);
4. for an acknowledged sync (fsync, fdatasync, O_SYNC/O_DSYNC writes, fsyncdir), fsync the
   metadata database.
The periodic flush runs 1-3 (data first, so a row never describes bytes that a power loss could
take), and a crash between steps leaves rows that describe older, durable state.

Locks: ``inode.lock`` orders writes and truncates of one file (with the writeback cache the
kernel may send writes to one file concurrently; a truncate must not interleave with them).
``_sync_lock`` serialises syncs, so that an fsync never returns while another sync still holds
half of that file's pending work.
"""

from __future__ import annotations

import errno
import logging
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import trio

from shadowfs.errors import FsError
from shadowfs.extent_map import Copy, Extent, ExtentMap
from shadowfs.metadata import MetadataStore
from shadowfs.namespace import Inode, Namespace, now_ns
from tiers.device import Device, DeviceError, ExtentKey, single_error

# The kernel's own limit for a FUSE file (MAX_LFS_FILESIZE). With the writeback cache the kernel
# accepts a buffered write into its page cache before we see it, so a lower limit of ours would
# only turn into EIO at writeback, the data silently gone; at this one the kernel itself answers
# EFBIG (or a short write) when the write is made.
MAX_FILE_SIZE = (1 << 63) - 1
log = logging.getLogger(__name__)
# Larger reads skip the synchronous inline attempt. They are the sequential ones, whose copy
# is often only partly read ahead yet: the inline read would copy the part that is there and
# then give up (or wait for the rest on the event loop), and the general path would copy it
# again. The general path keeps what one RWF_NOWAIT read gives and reads only the rest, and
# its few coroutines are nothing against a large copy.
FAST_READ_MAX = 128 * 1024


def _growth(extents: Mapping[int, Extent], idx: int, new_end: int) -> int:
    """How far a write ending ``new_end`` bytes into extent ``idx`` raises its primary copy's
    high-water mark (what the budget is charged)."""
    extent = extents.get(idx)
    have = extent.primary().length if extent is not None else 0
    return max(0, new_end - have)


def _write_error(exc: DeviceError) -> FsError:
    """A device's failure as the write's errno: ENOSPC for a full device, else EIO."""
    code = errno.ENOSPC if exc.errno in (errno.ENOSPC, errno.EDQUOT) else errno.EIO
    return FsError(code, str(exc))


@dataclass
class DeviceUsage:
    copies: int = 0
    bytes: int = 0


class DataPath:
    def __init__(
        self,
        store: MetadataStore,
        namespace: Namespace,
        extents: ExtentMap,
        devices: Mapping[str, Device],
        backing: str,
        extent_size: int,
    ) -> None:
        self.store = store
        self.ns = namespace
        self.extents = extents
        self.devices = dict(devices)
        self.backing = backing
        self.extent_size = extent_size
        # Extent sizes are powers of two (the config insists): a shift and a mask split an
        # offset without a divmod call on the per-request paths.
        self._shift = extent_size.bit_length() - 1
        self._mask = extent_size - 1
        self.usage = {name: DeviceUsage() for name in self.devices}
        for name, (n, b) in extents.usage_by_device().items():
            if name in self.usage:
                self.usage[name] = DeviceUsage(n, b)
        self._sync_lock = trio.Lock()
        # Inodes whose rows a sync has taken but not yet committed: their state in memory is
        # newer than the database's, so they must not be evicted (and reloaded stale) meanwhile.
        self.in_flight: set[int] = set()
        # Inodes whose data a device failed to make durable. Linux reports a writeback error
        # once per open file, so a retried fsync would succeed on data that never reached the
        # disk: the failure is remembered here and every later fsync of the file says EIO.
        self.failed_inodes: set[int] = set()
        self.pending_frees: list[tuple[int, str]] = []  # (inode, device): containers to drop
        self.durability_log: list[tuple[str, str]] | None = None

    def _pieces(self, offset: int, length: int) -> Iterable[tuple[int, int, int, int]]:
        """(extent index, offset inside the extent, length, offset inside the buffer)."""
        es = self.extent_size
        pos = 0
        while pos < length:
            idx, inner = divmod(offset + pos, es)
            n = min(es - inner, length - pos)
            yield idx, inner, n, pos
            pos += n

    # ------------------------------------------------------------ read

    def read_now(self, inode: Inode, offset: int, size: int) -> bytes | bytearray | None:
        """The answer if it needs no waiting, else None (then ``read_rest``).

        Synchronous, because it is the common case: a read past the end, or inside one extent
        whose copy the page cache holds, or inside a hole. Answering it without a coroutine
        per layer was measured to matter (a third of the daemon's own time per 4 KiB O_DIRECT
        read went to the general path).
        """
        left = inode.size - offset
        if left <= 0 or size <= 0:
            return b""
        if size > left:
            size = left
        inner = offset & self._mask
        if inner + size > self.extent_size or size > FAST_READ_MAX:
            return None
        extents = self.extents.files.get(inode.ino)
        if extents is None:
            return None  # not loaded: ``read_rest`` loads it
        idx = offset >> self._shift
        extent = extents.get(idx)
        if extent is None:
            return bytes(size)
        copy = extent.main
        if copy is None or inner + size > copy.length:
            return None
        return self.devices[copy.device].read_inline(inode.ino, idx, inner, size)

    async def read_rest(self, inode: Inode, offset: int, size: int) -> bytes | bytearray:
        """What ``read_now`` could not answer, waiting on devices as needed."""
        if offset >= inode.size or size <= 0:
            return b""
        size = min(size, inode.size - offset)
        extents = self.extents.of(inode.ino)
        parts: list[bytes | bytearray] = []
        for idx, inner, n, _ in self._pieces(offset, size):
            extent = extents.get(idx)
            if extent is None:
                parts.append(bytes(n))
                continue
            parts.append(await self._read_extent(inode.ino, extent, inner, n))
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def read(self, inode: Inode, offset: int, size: int) -> bytes | bytearray:
        data = self.read_now(inode, offset, size)
        return data if data is not None else await self.read_rest(inode, offset, size)

    async def _read_extent(self, ino: int, extent: Extent, inner: int, n: int) -> bytes | bytearray:
        copy = extent.primary()
        avail = max(0, min(n, copy.length - inner))
        data: bytes | bytearray = b""
        if avail:
            try:
                data = await self.devices[copy.device].read(
                    ExtentKey(ino, extent.index), inner, avail
                )
            except DeviceError as exc:
                raise FsError(errno.EIO, str(exc)) from exc
        if len(data) < n:  # a hole inside the copy, or past its high-water mark
            data = bytes(data) + bytes(n - len(data))
        return data

    # ------------------------------------------------------------ write

    def write_now(self, inode: Inode, offset: int, data: bytes) -> int | None:
        """The write if it needs no waiting, else None (then ``write``).

        Synchronous, like ``read_now``, for the common write: inside one extent that has a
        copy, whose device takes it inline into an open container, the inode's lock free.
        Running start to end without a checkpoint, it is what ``write`` does under the lock,
        without a coroutine per layer: in-process, a 4 KiB overwrite cost about 3.3 µs more
        than a bare ``os.pwrite`` this way, against 5.1 µs through ``write``.
        """
        n = len(data)
        inner = offset & self._mask
        if inner + n > self.extent_size or n == 0 or offset < 0 or inode.lock.locked():
            return None
        if offset + n > MAX_FILE_SIZE:
            return None  # ``write`` says EFBIG
        extents = self.extents.files.get(inode.ino)
        if extents is None:
            return None
        idx = offset >> self._shift
        extent = extents.get(idx)
        if extent is None:
            return None
        copy = extent.main
        if copy is None:
            return None
        if inner + n > copy.length:
            self._check_growth(inner + n - copy.length)
        try:
            if not self.devices[copy.device].write_inline(inode.ino, idx, inner, data):
                return None
        except DeviceError as exc:
            raise _write_error(exc) from exc
        self._wrote_piece(inode, extent, copy, inner, n)
        self._wrote(inode, offset + n)
        return n

    async def write(self, inode: Inode, offset: int, data: bytes) -> int:
        if not data:
            return 0
        end = offset + len(data)
        if offset < 0 or end > MAX_FILE_SIZE:
            raise FsError(errno.EFBIG, f"write ending at {end} beyond {MAX_FILE_SIZE}")
        lock = inode.lock
        if not lock.try_acquire():
            await lock.acquire()
        try:
            extents = self.extents.of(inode.ino)
            es = self.extent_size
            idx, inner = divmod(offset, es)
            if inner + len(data) <= es:  # most writes: one extent, no slicing
                self._reserve_one(extents, idx, inner + len(data))
                await self._write_piece(inode, extents, idx, inner, data)
            else:
                self._reserve(inode.ino, offset, len(data))
                view = memoryview(data)
                for idx, inner, n, pos in self._pieces(offset, len(data)):
                    await self._write_piece(inode, extents, idx, inner, view[pos : pos + n])
            self._wrote(inode, end)
        finally:
            lock.release()
        return len(data)

    def _wrote(self, inode: Inode, end: int) -> None:
        """A write ending at ``end`` landed: the size, times and set-ID bits follow."""
        if end > inode.size:
            inode.size = end
        inode.mtime_ns = inode.ctime_ns = now_ns()
        if inode.mode & (stat.S_ISUID | stat.S_ISGID):
            self._kill_suid(inode)
        self.ns.mark_dirty(inode)

    async def _write_piece(
        self,
        inode: Inode,
        extents: dict[int, Extent],
        idx: int,
        inner: int,
        data: bytes | memoryview,
    ) -> None:
        extent = extents.get(idx)
        if extent is None:
            extent = self.extents.add(inode.ino, idx, self.backing)
        copy = extent.primary()
        device = self.devices[copy.device]
        try:
            # Synchronous first: a coroutine per layer cost more than the pwrite (measured).
            if not device.write_inline(inode.ino, idx, inner, data):
                await device.write(ExtentKey(inode.ino, idx), inner, data)
        except DeviceError as exc:
            raise _write_error(exc) from exc
        self._wrote_piece(inode, extent, copy, inner, len(data))

    def _wrote_piece(self, inode: Inode, extent: Extent, copy: Copy, inner: int, n: int) -> None:
        """``n`` bytes landed in ``copy`` at ``inner``: a new generation, and the high-water
        mark, the budget and the dirty sets follow."""
        extent.generation += 1
        copy.generation = extent.generation
        if inner + n > copy.length:
            grown = inner + n - copy.length
            copy.length = inner + n
            inode.allocated += grown
            usage = self.usage[copy.device]
            usage.bytes += grown
            if copy.length == grown:
                usage.copies += 1
            self.extents.mark_dirty(inode.ino, extent.index)  # its row's length changes
        self.extents.mark_written(inode.ino, extent.index, copy.device)

    def _kill_suid(self, inode: Inode) -> None:
        # POSIX: a write by anyone clears set-user-ID, and set-group-ID when group-executable.
        mode = inode.mode & ~stat.S_ISUID
        if mode & stat.S_IXGRP:
            mode &= ~stat.S_ISGID
        if mode != inode.mode:
            inode.mode = mode
            self.ns.save_attrs(inode)

    def _reserve(self, ino: int, offset: int, length: int) -> None:
        """ENOSPC before any byte is written when the growth would not fit the backing budget
        or the free space under it (so a failed write leaves the file unchanged)."""
        extents = self.extents.of(ino)
        growth = sum(
            _growth(extents, idx, inner + n) for idx, inner, n, _ in self._pieces(offset, length)
        )
        self._check_growth(growth)

    def _reserve_one(self, extents: Mapping[int, Extent], idx: int, new_end: int) -> None:
        """``_reserve`` for a write inside one extent, ending ``new_end`` bytes into it."""
        self._check_growth(_growth(extents, idx, new_end))

    def _check_growth(self, growth: int) -> None:
        if growth == 0:
            return
        device = self.devices[self.backing]
        cap = device.capacity(self.usage[self.backing].bytes)
        if growth > cap.available:
            raise FsError(
                errno.ENOSPC,
                f"device {self.backing}: {growth} bytes needed, {cap.available} available",
            )

    async def truncate(self, inode: Inode, size: int) -> None:
        """Set the size. Shrinking changes the map first and commits it (after syncing this
        file's pending data, as every flush does), and only then deletes or cuts the copy
        files: a crash in between leaves files longer than the map, which recovery cuts back,
        never a map that points at bytes already gone."""
        if size < 0 or size > MAX_FILE_SIZE:
            raise FsError(errno.EFBIG if size > 0 else errno.EINVAL, f"size {size}")
        async with inode.lock:
            doomed: list[tuple[ExtentKey, str]] = []
            cuts: list[tuple[ExtentKey, str, int]] = []
            if size < inode.size:
                doomed, cuts = self._plan_cut(inode, size)
            inode.size = size
            inode.mtime_ns = inode.ctime_ns = now_ns()
            self.ns.mark_dirty(inode)
            if not (doomed or cuts):
                return
            try:
                # durable: after a power loss the old rows must not come back pointing at
                # files deleted below
                await self.sync([inode.ino], durable=True)
            finally:
                # Even when the commit failed: memory already says these bytes are gone, and a
                # later extension must read zeros there, so the files follow memory. A crash
                # before the next commit then finds copies shorter than their rows, which
                # recovery reconciles.
                await self._apply_cut(doomed, cuts)

    async def _apply_cut(
        self, doomed: list[tuple[ExtentKey, str]], cuts: list[tuple[ExtentKey, str, int]]
    ) -> None:
        try:
            for key, device in doomed:
                await self.devices[device].delete(key)
            for key, device, length in cuts:
                await self.devices[device].truncate(key, length)
        except DeviceError as exc:
            raise FsError(errno.EIO, str(exc)) from exc

    def _plan_cut(
        self, inode: Inode, size: int
    ) -> tuple[list[tuple[ExtentKey, str]], list[tuple[ExtentKey, str, int]]]:
        """Drop from the map the copies wholly past ``size`` and shorten the one that
        straddles it; return the device work that makes the files follow."""
        es = self.extent_size
        extents = self.extents.of(inode.ino)
        first_gone = -(-size // es)
        doomed = []
        for idx in sorted(i for i in extents if i >= first_gone):
            extent = self.extents.remove(inode.ino, idx)
            assert extent is not None
            doomed += [(ExtentKey(inode.ino, idx), c.device) for c in extent.copies.values()]
            self._forget_usage(inode, extent)
        cuts = []
        tail = size % es
        extent = extents.get(size // es) if tail else None
        if extent is not None:
            extent.generation += 1
            for copy in extent.copies.values():
                if copy.length > tail:
                    cuts.append((ExtentKey(inode.ino, extent.index), copy.device, tail))
                    shrink = copy.length - tail
                    copy.length = tail
                    inode.allocated -= shrink
                    self.usage[copy.device].bytes -= shrink
                copy.generation = extent.generation
                self.extents.mark_written(inode.ino, extent.index, copy.device)
            self.extents.mark_dirty(inode.ino, extent.index)
        return doomed, cuts

    def _forget_usage(self, inode: Inode, extent: Extent) -> None:
        for copy in extent.copies.values():
            inode.allocated -= copy.length
            usage = self.usage[copy.device]
            usage.bytes -= copy.length
            usage.copies -= 1

    async def free(self, inode: Inode) -> None:
        """Release every copy of an inode that has no name and no user left: rows first, then
        its containers (a crash in between leaves orphan containers, which recovery deletes).
        Every device is asked, not only those with a copy now: a container whose copies were
        all cut away by truncates is still a file."""
        async with inode.lock:
            for idx in sorted(self.extents.of(inode.ino)):
                extent = self.extents.remove(inode.ino, idx)
                assert extent is not None
                self._forget_usage(inode, extent)
            self.extents.drop_inode(inode.ino)
            # A flush in flight may hold this inode's rows, taken before it was freed: let it
            # commit first, or its commit would put them back after our delete.
            async with self._sync_lock:
                with self.store.transaction():
                    self.extents.delete_inode_rows(inode.ino)
                self.ns.free(inode)
                # The files go once that deletion is durable (next flush): a power loss before
                # it must find the inode with its data, never rows pointing at deleted files.
                # Inode numbers are never reused, so no new copy can take these names.
                self.pending_frees.extend((inode.ino, name) for name in self.devices)
                self.failed_inodes.discard(inode.ino)

    # ------------------------------------------------------------ durability

    async def sync(
        self, inos: Iterable[int] | None, durable: bool, overwrites: bool = True
    ) -> None:
        """Ordered flush of the given inodes' pending work (all when None); see module doc.
        ``overwrites=False`` leaves extents only overwritten in place for a later flush
        (ExtentMap.take_batch says why)."""
        async with self._sync_lock:
            inos = None if inos is None else list(inos)
            lost = self.failed_inodes.intersection(inos or ())
            if lost:
                raise FsError(errno.EIO, f"inodes {sorted(lost)}: an earlier sync failed")
            batch = self.extents.take_batch(inos, overwrites)
            rows = self.ns.take_dirty_rows() if inos is None else self._take_rows(inos)
            self.in_flight = (
                {ino for ino, _ in batch.deleted}
                | {row[0] for row in batch.extent_rows}
                | {key.ino for keys in batch.unsynced.values() for key in keys}
                | {row[-1] for row in rows}
            )
            try:
                try:
                    async with trio.open_nursery() as nursery:
                        for name, keys in batch.unsynced.items():
                            nursery.start_soon(self.devices[name].sync, keys)
                except BaseExceptionGroup as group:
                    raise single_error(group) from None
                for device in self.devices.values():
                    if device.has_unsynced_namespace:
                        await device.sync_namespace()
            except BaseException as exc:
                self.in_flight = set()  # given back: pending again, which also bars eviction
                self.extents.give_back(batch)
                for row in rows:
                    self.ns.dirty.add(row[-1])
                if isinstance(exc, DeviceError):
                    self.failed_inodes.update(
                        key.ino for keys in batch.unsynced.values() for key in keys
                    )
                    raise FsError(errno.EIO, str(exc)) from exc
                raise
            if batch or rows:
                with self.store.transaction():
                    self.extents.write_batch(batch)
                    self.ns.write_dirty_rows(self._with_current_times(rows))
                self._log("metadata", "commit")
            self.in_flight = set()
            if durable or (inos is None and self.pending_frees):
                await self.store.make_durable()
                self._log("metadata", "durable")
            if inos is None:
                await self._delete_freed()
                if durable and self.failed_inodes:
                    raise FsError(
                        errno.EIO,
                        f"inodes {sorted(self.failed_inodes)}: a device failed to make their"
                        " data durable",
                    )

    async def _delete_freed(self) -> None:
        frees, self.pending_frees = self.pending_frees, []
        for ino, device in frees:
            try:
                await self.devices[device].delete_inode(ino)
            except DeviceError as exc:
                log.warning("freeing inode %s on %s failed (fsck will): %s", ino, device, exc)

    def _with_current_times(
        self, rows: list[tuple[int, int, int, int, int]]
    ) -> list[tuple[int, int, int, int, int]]:
        """Size and allocation stay the snapshot that matches the synced data; the times are
        the inode's now: a setattr (utime, chmod) may have committed newer ones while this sync
        ran, and the snapshot's would undo them."""
        out = []
        for size, allocated, mtime, ctime, ino in rows:
            inode = self.ns.inodes.get(ino)
            if inode is not None:
                mtime, ctime = inode.mtime_ns, inode.ctime_ns
            out.append((size, allocated, mtime, ctime, ino))
        return out

    def _take_rows(self, inos: list[int]) -> list[tuple[int, int, int, int, int]]:
        rows = []
        for ino in inos:
            if ino in self.ns.dirty:
                self.ns.dirty.discard(ino)
                inode = self.ns.inodes.get(ino)
                if inode is not None:
                    rows.append((inode.size, inode.allocated, inode.mtime_ns, inode.ctime_ns, ino))
        return rows

    def _log(self, kind: str, what: str) -> None:
        if self.durability_log is not None:
            self.durability_log.append((kind, what))

    def attach_durability_log(self, log: list[tuple[str, str]]) -> None:
        """Test hook: every device and this path append their durability steps to ``log``."""
        self.durability_log = log
        for device in self.devices.values():
            device.durability_log = log
