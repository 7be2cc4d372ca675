"""A device that is a directory on a local filesystem: the containers of extent copies, their I/O.

Layout under the device root::

    shadowfs.label            the filesystem's identity (shadowfs.ownership writes it)
    extents/XX/INO-SEG        a container file holding an inode's copies on this device, one
                              per TiB of the file (SEG = offset // 1 TiB); XX = low byte of
                              the inode number, all in hex. The copy of extent IDX lives at
                              the extent's own offset within its TiB; what no copy holds is
                              a hole. (A TiB per file keeps every offset below what the
                              filesystem underneath takes, 16 TiB on ext4, while a FUSE file
                              may reach 2**63 bytes.)

Why one file per inode, not one per copy: a volume read in order is then one file that the
filesystem below lays out in long runs and reads ahead by itself, as a native read is; and a
random read touches one inode, one page-cache tree and one fd instead of one of a thousand per
GiB (measured, 4 KiB O_DIRECT random reads at queue depth 16 through shadowfs's daemon, a bare
pread handler: 0.79x of the plain passthrough on per-extent copy files, 0.94x on one file).
Deleting or shortening a copy punches a hole (FALLOC_FL_PUNCH_HOLE); the container goes when
its inode is freed. The extent map, not the file, says how long each copy is: bytes past a
copy's length always read as zeros, because every shortening punches them out and recovery
punches out whatever an unacknowledged write left there.

The 256 fan-out directories are created when the device is initialised, so the first copy of
an inode adds an entry to an existing directory: durability then needs the container's fsync
and one fsync of its fan-out directory (tracked in ``_dirty_dirs``).

I/O mode follows measurement (ARCHITECTURE.md): a pread that the page cache can answer runs on
the event loop (preadv with RWF_NOWAIT says whether it would block), and so does a miss while
the device answers misses faster than a thread hop would cost (then a small read is one plain
timed pread, hit or miss); anything that may block runs in this device's worker threads under
a CapacityLimiter with a deadline. A device whose
I/O is slow or failing goes THREADED at once and returns to INLINE only after a clean period.
Buffered RWF_NOWAIT writes are not supported by ext4 on this kernel (EOPNOTSUPP, measured), so
inline writes are plain pwrite calls into the page cache while the device measures fast; dirty
page throttling can still block them briefly, which is the exposure docs/architecture.md
states.

Threads never touch shared Python state: they get an fd and arguments and return bytes or a
count. The fd cache pins an fd while a thread uses it so that eviction cannot close it (and
let the number be reused) under the thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import trio

from tiers.device import Capacity, DeviceError, DeviceTimeout, ExtentKey, IOMode, single_error
from tiers.mounts import mount_entries

EXTENTS_DIR = "extents"
FANOUT = 256
_NOWAIT = os.RWF_NOWAIT  # once per read: globals, not module attribute lookups
_clock = time.perf_counter
_INLINE = IOMode.INLINE
# Filesystems whose buffered reads honour RWF_NOWAIT and whose page-cache writes do not wait on
# a remote peer. On anything else (FUSE, NFS, CIFS, ...) a "non-blocking" read can still block,
# as a FUSE direct_io file does (measured: it ignores the flag), so such a device never runs
# inline.
INLINE_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "tmpfs"})
_T = TypeVar("_T")


DEFAULT_EXTENT_SIZE = 1 << 20
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
_libc = ctypes.CDLL(None, use_errno=True)
_fallocate = _libc.fallocate
_fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)


SEGMENT_BYTES = 1 << 40  # the file bytes one container holds
Segment = tuple[int, int]  # (inode, segment): names one container


def container_relpath(ino: int, seg: int = 0) -> str:
    return f"{EXTENTS_DIR}/{ino & (FANOUT - 1):02x}/{ino:x}-{seg:x}"


def parse_container_name(fanout: str, name: str) -> Segment | None:
    """The (inode, segment) a container file's name encodes, or None for anything else."""
    ino_s, dash, seg_s = name.partition("-")
    try:
        segment = (int(ino_s, 16), int(seg_s, 16))
    except ValueError:
        return None
    if (
        not dash
        or segment[0] <= 0
        or container_relpath(*segment) != f"{EXTENTS_DIR}/{fanout}/{name}"
    ):
        return None
    return segment


@dataclass(frozen=True)
class IOPolicy:
    """How a device's I/O is bounded; see shadowfs.config.IOConfig for the operator's knobs."""

    deadline_s: float = 30.0
    threads: int = 8
    slow_threshold_s: float = 0.050
    clean_period_s: float = 60.0
    error_threshold: int = 1
    inline_miss_s: float = 0.0005
    max_open_files: int = 512
    slow_ops_to_switch: int = 3  # slow I/Os within slow_window_s that send the device threaded
    slow_window_s: float = 10.0


@dataclass
class DeviceCounters:
    """Cumulative counts for status and metrics. Plain ints: updated on the trio thread only."""

    reads: int = 0
    writes: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    cache_hits: int = 0
    threaded_ops: int = 0
    errors: int = 0
    timeouts: int = 0
    syncs: int = 0
    mode_changes: int = 0


IORecorder = Callable[[str, float, int, bool], None]
"""Called as (op, latency_s, nbytes, reached_device) after each I/O, on the trio thread."""


class LocalDevice:
    """Extent copies stored as files under one directory."""

    def __init__(
        self,
        name: str,
        root: Path,
        budget: int,
        policy: IOPolicy | None = None,
        recorder: IORecorder | None = None,
        extent_size: int = DEFAULT_EXTENT_SIZE,
    ) -> None:
        self.name = name
        self.extent_size = extent_size
        self._seg_shift = (SEGMENT_BYTES // extent_size).bit_length() - 1
        self._seg_mask = (1 << self._seg_shift) - 1
        self.root = Path(root)
        self.budget = budget
        self.policy = policy or IOPolicy()
        self.recorder = recorder
        self.counters = DeviceCounters()
        self.durability_log: list[tuple[str, str]] | None = None
        self._limiter = trio.CapacityLimiter(self.policy.threads)
        self._mode = IOMode.INLINE
        self._threaded_until = 0.0
        self._recent_errors = 0
        self._delete_epoch = 0
        self.last_mode_reason = ""
        self._slow_at: deque[float] = deque(maxlen=self.policy.slow_ops_to_switch)
        self.miss_latency_s = 0.0  # EWMA of reads that missed the page cache
        self._inline_miss_s = self.policy.inline_miss_s
        # An inline pread slower than this is counted as a miss: well above a page-cache hit
        # of the largest inline read, well below the miss latency that sends misses to threads.
        self._hit_max_s = self.policy.inline_miss_s / 10
        self._nowait_reads = True
        self._fds: OrderedDict[Segment, int] = OrderedDict()  # container -> its fd
        self._pins: dict[int, int] = {}
        self._closing: set[int] = set()
        self._dirty_dirs: set[str] = set()
        self._closed = False
        self._fs_free: int | None = None
        self.fs_type = filesystem_type(self.root)
        self.inline_capable = self.fs_type in INLINE_FILESYSTEMS
        if not self.inline_capable:
            self._nowait_reads = False
            self._mode = IOMode.THREADED

    # ----------------------------------------------------------------- lifecycle

    def initialise(self) -> None:
        """Create the fan-out directories (idempotent). Called before the mount answers."""
        base = self.root / EXTENTS_DIR
        created = False
        if not base.is_dir():
            base.mkdir()
            created = True
        present = set(os.listdir(base))
        for i in range(FANOUT):
            if f"{i:02x}" not in present:
                (base / f"{i:02x}").mkdir()
                created = True
        if created:
            _fsync_dir(base)
            _fsync_dir(self.root)

    def close(self) -> None:
        self._closed = True
        for fd in self._fds.values():
            if fd not in self._pins:
                os.close(fd)
        self._fds.clear()

    # ----------------------------------------------------------------- mode

    @property
    def mode(self) -> IOMode:
        if (
            self._mode is IOMode.THREADED
            and self.inline_capable
            and time.monotonic() >= self._threaded_until
        ):
            self._set_mode(IOMode.INLINE)
            self._recent_errors = 0
        return self._mode

    def force_threaded(self, reason: str) -> None:
        """Send every I/O to threads for at least one clean period from now."""
        self._threaded_until = time.monotonic() + self.policy.clean_period_s
        if self._mode is not IOMode.THREADED:
            self._set_mode(IOMode.THREADED)
        self.last_mode_reason = reason

    def _set_mode(self, mode: IOMode) -> None:
        self._mode = mode
        self.counters.mode_changes += 1

    def _account(self, op: str, started: float, nbytes: int, reached_device: bool) -> None:
        self._account_latency(op, time.perf_counter() - started, nbytes, reached_device)

    def _account_latency(self, op: str, latency: float, nbytes: int, reached_device: bool) -> None:
        # fsync time grows with the dirty data it writes back, so it says little about the
        # device's health on its own; it always runs threaded anyway.
        threshold = self.policy.slow_threshold_s
        if reached_device and latency > threshold and op != "fsync":
            self._slow(op, latency, threshold)
        if self.recorder is not None:
            self.recorder(op, latency, nbytes, reached_device)

    def _slow(self, op: str, latency: float, threshold: float) -> None:
        """One very slow I/O, or a few slow ones close together, send the device threaded.

        A single op a little over the threshold is as often this process being descheduled
        on a busy machine as the device being slow; going threaded for it costs every later
        I/O a thread hop (4x at 4 KiB, measured) for a whole clean period.
        """
        now = time.monotonic()
        self._slow_at.append(now)
        full = len(self._slow_at) == self._slow_at.maxlen
        if latency > 10 * threshold or (
            full and now - self._slow_at[0] <= self.policy.slow_window_s
        ):
            self.force_threaded(f"{op} took {latency * 1000:.1f} ms")

    def _failed(self, op: str, exc: BaseException) -> DeviceError:
        code = exc.errno if isinstance(exc, OSError) and exc.errno else errno.EIO
        if code in (errno.ENOSPC, errno.EDQUOT):
            # Full, not failing: no threaded mode, no error in the health telemetry.
            return DeviceError(code, f"device {self.name}: {op}: no space left")
        self.counters.errors += 1
        self._recent_errors += 1
        if self._recent_errors >= self.policy.error_threshold:
            self.force_threaded(f"{op} failed: {exc}")
        if self.recorder is not None and not isinstance(exc, DeviceTimeout):
            self.recorder(op + "_error", 0.0, 0, True)
        if isinstance(exc, DeviceError):
            return exc
        return DeviceError(code, f"device {self.name}: {op} failed: {exc}")

    # ----------------------------------------------------------------- threads

    async def _in_thread(self, op: str, fn: Callable[..., _T], *args: Any) -> _T:
        """Run a blocking call in this device's threads, bounded by the deadline.

        On timeout the thread is abandoned (it may stay stuck in the kernel and keep its
        limiter token, which is what bounds a hung device to its own threads).
        """
        self.counters.threaded_ops += 1
        with trio.move_on_after(self.policy.deadline_s) as scope:
            return await trio.to_thread.run_sync(
                fn, *args, limiter=self._limiter, abandon_on_cancel=True
            )
        assert scope.cancelled_caught
        self.counters.timeouts += 1
        if self.recorder is not None:
            self.recorder("timeout", self.policy.deadline_s, 0, True)
        self.force_threaded(f"{op} exceeded its {self.policy.deadline_s:g} s deadline")
        raise DeviceTimeout(
            errno.ETIMEDOUT,
            f"device {self.name}: {op} did not answer within {self.policy.deadline_s:g} s",
        )

    # ----------------------------------------------------------------- fd cache

    def path_of(self, segment: Segment) -> Path:
        """The container file of (inode, segment) on this device."""
        return self.root / container_relpath(*segment)

    def locate(self, key: ExtentKey) -> tuple[Segment, int]:
        """The container holding the copy of *key*, and the copy's offset in it."""
        return (
            (key.ino, key.index >> self._seg_shift),
            (key.index & self._seg_mask) * self.extent_size,
        )

    def _cached_fd(self, segment: Segment) -> int | None:
        fd = self._fds.get(segment)
        if fd is not None:
            self._fds.move_to_end(segment)
        return fd

    def _remember_fd(self, segment: Segment, fd: int) -> int:
        old = self._fds.get(segment)
        if old is not None:  # another task opened it meanwhile: keep one
            if old != fd:
                os.close(fd)
            return old
        self._fds[segment] = fd
        while len(self._fds) > self.policy.max_open_files:
            _, victim = self._fds.popitem(last=False)
            self._release_fd(victim)
        return fd

    def _release_fd(self, fd: int) -> None:
        if fd in self._pins:
            self._closing.add(fd)  # closed when the last thread using it returns
        else:
            os.close(fd)

    def _pin(self, fd: int) -> None:
        self._pins[fd] = self._pins.get(fd, 0) + 1

    def _unpin(self, fd: int) -> None:
        left = self._pins[fd] - 1
        if left:
            self._pins[fd] = left
            return
        del self._pins[fd]
        if fd in self._closing:
            self._closing.discard(fd)
            os.close(fd)

    async def _on_fd(self, op: str, fd: int, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(fd, *args)`` in a thread with the fd pinned. After a timeout the pin is
        kept for good: the abandoned thread may still use the fd, and closing it would let
        the number be reused under that thread (a write landing in another file)."""
        self._pin(fd)
        try:
            result = await self._in_thread(op, fn, fd, *args)
        except DeviceTimeout:
            raise
        except BaseException:
            self._unpin(fd)
            raise
        self._unpin(fd)
        return result

    def _forget_fd(self, segment: Segment) -> None:
        fd = self._fds.pop(segment, None)
        if fd is not None:
            self._release_fd(fd)

    async def _open(self, segment: Segment, create: bool) -> tuple[int | None, bool]:
        """The container's fd (None if absent and not created), and whether it was just
        created."""
        fd = self._cached_fd(segment)
        if fd is not None:
            return fd, False
        path = str(self.path_of(segment))
        started = time.perf_counter()
        while True:
            epoch = self._delete_epoch
            try:
                if self.mode is IOMode.INLINE:
                    fd, created = _open_copy(path, create)
                else:
                    fd, created = await self._in_thread("open", _open_copy, path, create)
            except FileNotFoundError:
                return None, False
            except OSError as exc:
                raise self._failed("open", exc) from exc
            if epoch == self._delete_epoch or fd is None:
                break
            # A delete ran while we waited for the thread: this fd may name a file that is
            # now unlinked, and caching it would send later writes into the dead file.
            os.close(fd)
        self._account("open", started, 0, True)
        if fd is None:
            return None, False
        if created:
            self._dirty_dirs.add(os.path.dirname(path))
        return self._remember_fd(segment, fd), created

    # ----------------------------------------------------------------- I/O

    def read_inline(self, ino: int, index: int, offset: int, size: int) -> bytes | bytearray | None:
        # The hot path of every small read: no coroutine, no open. Two ways to answer without
        # stalling the loop. While the device answers misses faster than a thread hop would
        # cost (measured, as ``_read_miss`` decides), a plain pread runs here whether or not
        # the page cache holds the bytes, timed so that a miss still feeds the miss latency:
        # cheaper than preadv into a fresh bytearray (1.2 against 1.6-1.9 µs per 4 KiB hit,
        # measured), and it serves filesystems that refuse RWF_NOWAIT (tmpfs). Otherwise
        # preadv with RWF_NOWAIT answers page-cache hits only.
        segment = (ino, index >> self._seg_shift)
        fds = self._fds
        fd = fds.get(segment)
        if fd is None:
            return None
        offset += (index & self._seg_mask) * self.extent_size
        if self._mode is _INLINE and self.miss_latency_s < self._inline_miss_s:
            started = _clock()
            try:
                data = os.pread(fd, size, offset)
            except OSError:
                return None  # ``read`` meets the error again and reports it
            latency = _clock() - started
            if len(data) != size:
                return None  # the container ends first: ``read`` pads the copy's tail
            fds.move_to_end(segment)
            counters = self.counters
            counters.reads += 1
            counters.bytes_read += size
            if latency > self._hit_max_s:  # taken for a miss: a hit rarely takes this long
                self._note_miss(latency)
                self._account_latency("read", latency, size, True)
            else:
                counters.cache_hits += 1
                if self.recorder is not None:
                    self.recorder("read", latency, size, False)
            return data
        if not self._nowait_reads:
            return None
        buf = bytearray(size)
        try:
            n = os.preadv(fd, [buf], offset, _NOWAIT)
        except OSError:
            return None  # a miss (EAGAIN), or an error that ``read`` meets again and reports
        if n != size:
            return None
        fds.move_to_end(segment)
        counters = self.counters
        counters.reads += 1
        counters.cache_hits += 1
        counters.bytes_read += n
        if self.recorder is not None:
            self.recorder("read", 0.0, n, False)
        return buf

    def _preadv_nowait(self, fd: int, buf: bytearray, offset: int) -> int:
        """Bytes the page cache gave at once (0 for none). With RWF_NOWAIT the kernel answers
        from the page cache or not at all, so this never waits on the device, in either mode."""
        try:
            return os.preadv(fd, [buf], offset, os.RWF_NOWAIT)
        except BlockingIOError:
            return 0
        except OSError as exc:
            if exc.errno != errno.EOPNOTSUPP:
                raise
            self._nowait_reads = False  # the filesystem below does not support it
            return 0

    async def read(self, key: ExtentKey, offset: int, size: int) -> bytes | bytearray:
        """Up to *size* bytes of the copy from *offset*; fewer where the container ends."""
        segment, base = self.locate(key)
        fd, _ = await self._open(segment, create=False)
        if fd is None:
            return b""
        self.counters.reads += 1
        started = time.perf_counter()
        offset += base
        buf = bytearray(size)
        cached = 0
        if self._nowait_reads:
            try:
                cached = self._preadv_nowait(fd, buf, offset)
            except OSError as exc:
                raise self._failed("read", exc) from exc
            if cached == size:
                self.counters.cache_hits += 1
                self.counters.bytes_read += size
                self._account("read", started, size, False)
                return buf
        # The rest goes into the same buffer (a partial hit, while read-ahead is still
        # landing, costs no second copy of what the page cache already gave).
        total = cached + await self._read_miss(fd, buf, cached, offset, started)
        self.counters.bytes_read += cached
        if total < size:  # the copy ends first
            del buf[total:]
        return buf

    async def _read_miss(
        self, fd: int, buf: bytearray, start: int, offset: int, started: float
    ) -> int:
        """Fill ``buf[start:]`` from the copy at ``offset + start``, where the page cache could
        not: inline while the device answers misses faster than a thread hop would cost
        (measured), in a thread otherwise. Returns the bytes read."""
        try:
            if self.mode is IOMode.INLINE and self.miss_latency_s < self.policy.inline_miss_s:
                n, device_s = _timed_preadv(fd, buf, start, offset)
            else:
                n, device_s = await self._on_fd("read", fd, _timed_preadv, buf, start, offset)
        except OSError as exc:
            raise self._failed("read", exc) from exc
        self._note_miss(device_s)
        self.counters.bytes_read += n
        self._account("read", started, n, True)
        return n

    def _note_miss(self, device_s: float) -> None:
        """A read that reached the device took ``device_s``: the miss latency (an EWMA, weight
        0.2) that decides whether misses run inline follows it."""
        self.miss_latency_s += 0.2 * (device_s - self.miss_latency_s)

    def write_inline(self, ino: int, index: int, offset: int, data: bytes | memoryview) -> bool:
        # The per-write hot path: no coroutine, no open, no ExtentKey, and ``_mode`` rather
        # than the ``mode`` property (a device whose threaded period is over comes back
        # inline through ``write``, which asks ``mode``). Inline writes land in the page cache.
        if self._mode is not IOMode.INLINE:
            return False
        segment = (ino, index >> self._seg_shift)
        fd = self._fds.get(segment)
        if fd is None:
            return False
        self._fds.move_to_end(segment)
        self._pwrite_inline(fd, offset + (index & self._seg_mask) * self.extent_size, data)
        return True

    def _pwrite_inline(self, fd: int, offset: int, data: bytes | memoryview) -> None:
        # Once per write, so ``_pwrite_all`` and ``_account`` are unrolled here: each call
        # cost more in the daemon than its body (measured per request).
        counters = self.counters
        counters.writes += 1
        started = _clock()
        try:
            n = os.pwrite(fd, data, offset)
            if n < len(data):  # a short write: the rest, or the error that explains it
                n += _pwrite_all(fd, memoryview(data)[n:], offset + n)
        except OSError as exc:
            raise self._failed("write", exc) from exc
        counters.bytes_written += n
        latency = _clock() - started
        threshold = self.policy.slow_threshold_s
        if latency > threshold:
            self._slow("write", latency, threshold)
        if self.recorder is not None:
            self.recorder("write", latency, n, True)

    async def write(self, key: ExtentKey, offset: int, data: bytes | memoryview) -> bool:
        """Store *data* in the copy at *offset*; True when this created the container (its
        directory entry then needs ``sync_namespace`` to be durable)."""
        segment, base = self.locate(key)
        fd, created = await self._open(segment, create=True)
        assert fd is not None
        offset += base
        if self.mode is IOMode.INLINE:
            self._pwrite_inline(fd, offset, data)
            return created
        self.counters.writes += 1
        started = time.perf_counter()
        try:
            n = await self._on_fd("write", fd, _pwrite_all, data, offset)
        except OSError as exc:
            raise self._failed("write", exc) from exc
        self.counters.bytes_written += n
        self._account("write", started, n, True)
        return created

    async def truncate(self, key: ExtentKey, length: int) -> None:
        """Shorten the copy to *length* bytes: what lay past it reads as zeros from now on."""
        segment, base = self.locate(key)
        fd, _ = await self._open(segment, create=False)
        if fd is None:
            return
        start = base + length
        try:
            await self._on_fd("truncate", fd, _punch, start, self.extent_size - length)
        except OSError as exc:
            raise self._failed("truncate", exc) from exc

    async def delete(self, key: ExtentKey) -> None:
        """Drop one copy: its bytes in the container become a hole."""
        await self.truncate(key, 0)

    async def delete_inode(self, ino: int) -> None:
        """Drop the containers of an inode that is gone, with every copy in them."""
        self._delete_epoch += 1
        self._forget_fd((ino, 0))
        directory = self.path_of((ino, 0)).parent
        unlinked: list[Segment] = []
        try:
            unlinked = await self._in_thread("delete", _unlink_containers, directory, ino)
        except OSError as exc:
            raise self._failed("delete", exc) from exc
        finally:
            # A sync may have opened (and cached) a container while the unlink ran: drop
            # those fds too; the inode is gone, so nothing may write there again. Only a
            # container that exists can have a cached fd, so those unlinked are all there is
            # to forget, without a walk over the whole fd cache for every freed inode.
            for segment in [(ino, 0), *unlinked]:
                self._forget_fd(segment)
        self._dirty_dirs.add(str(directory))

    async def sync(self, keys: Iterable[ExtentKey]) -> None:
        """fsync the containers of the named copies in this device's threads: batches of files
        per thread call (one thread hop per batch, not per file), a few batches at once."""
        fds: list[tuple[Segment, int]] = []
        try:
            for segment in sorted({self.locate(key)[0] for key in keys}):
                fd, _ = await self._open(segment, create=False)
                if fd is not None:
                    fds.append((segment, fd))
                    self._pin(fd)
            batches = max(1, min(4, self.policy.threads))
            size = -(-len(fds) // batches) if fds else 0
            async with trio.open_nursery() as nursery:
                for i in range(0, len(fds), max(size, 1)):
                    nursery.start_soon(self._sync_batch, fds[i : i + size])
        except BaseExceptionGroup as group:
            raise single_error(group) from None
        finally:
            for _, fd in fds:
                self._unpin(fd)

    async def _sync_batch(self, batch: list[tuple[Segment, int]]) -> None:
        started = time.perf_counter()
        try:
            await self._in_thread("fsync", _fsync_all, [fd for _, fd in batch])
        except DeviceTimeout:
            for _, fd in batch:
                self._pin(fd)  # for good: the abandoned thread may still fsync them
            raise
        except OSError as exc:
            raise self._failed("fsync", exc) from exc
        self.counters.syncs += len(batch)
        self._account("fsync", started, 0, True)
        if self.durability_log is not None:
            for segment, _ in batch:
                self.durability_log.append(("file", f"{self.name}:{container_relpath(*segment)}"))

    async def sync_namespace(self) -> None:
        dirs, self._dirty_dirs = self._dirty_dirs, set()
        try:
            for d in sorted(dirs):
                await self._in_thread("fsync_dir", _fsync_dir, Path(d))
                if self.durability_log is not None:
                    self.durability_log.append(("dir", f"{self.name}:{d}"))
        except OSError as exc:
            self._dirty_dirs |= dirs
            raise self._failed("fsync_dir", exc) from exc
        except BaseException:
            self._dirty_dirs |= dirs
            raise

    def sync_namespace_now(self) -> None:
        """Blocking twin of ``sync_namespace`` for recovery and fsck."""
        dirs, self._dirty_dirs = self._dirty_dirs, set()
        for d in sorted(dirs):
            _fsync_dir(Path(d))

    @property
    def has_unsynced_namespace(self) -> bool:
        return bool(self._dirty_dirs)

    # ----------------------------------------------------------------- blocking helpers

    def copy_length(self, key: ExtentKey) -> int:
        """Where the copy's stored data ends, block-rounded unless the container ends first (0
        if it holds none): what the filesystem below reports as data, not a hole."""
        segment, base = self.locate(key)
        try:
            fd = os.open(self.path_of(segment), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return 0
        try:
            end = 0
            for _, stop in _data_spans(fd, base, base + self.extent_size):
                end = stop - base
            return end
        finally:
            os.close(fd)

    def list_containers(self) -> Iterator[Segment]:
        """The (inode, segment) of every container on this device."""
        base = self.root / EXTENTS_DIR
        if not base.is_dir():
            return
        for fan in sorted(os.listdir(base)):
            fan_dir = base / fan
            if not fan_dir.is_dir():
                continue
            for name in os.listdir(fan_dir):
                segment = parse_container_name(fan, name)
                if segment is not None:
                    yield segment

    def list_copies(self) -> Iterator[ExtentKey]:
        """The copies that hold any data (a copy that is all holes has nothing to list)."""
        for key, _ in self.stored_copies():
            yield key

    def stored_copies(self) -> Iterator[tuple[ExtentKey, int]]:
        """Each copy holding any data, with where its data ends (as ``copy_length`` says), in
        one pass over each container's data: for fsck, which needs both for every copy."""
        es = self.extent_size
        for ino, seg in self.list_containers():
            try:
                fd = os.open(self.path_of((ino, seg)), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            first = seg << self._seg_shift
            ends: dict[int, int] = {}  # index in the container -> where its data ends
            try:
                for start, stop in _data_spans(fd, 0, os.fstat(fd).st_size):
                    for index in range(start // es, (stop - 1) // es + 1):
                        ends[index] = min(stop, (index + 1) * es) - index * es
            finally:
                os.close(fd)
            for index, end in ends.items():
                yield ExtentKey(ino, first + index), end

    def delete_now(self, key: ExtentKey) -> None:
        """Blocking delete of one copy, for recovery and fsck (before the mount answers)."""
        self.truncate_now(key, 0)

    def delete_inode_now(self, ino: int) -> None:
        """Blocking ``delete_inode``, for recovery and fsck."""
        directory = self.path_of((ino, 0)).parent
        for segment in _unlink_containers(directory, ino):
            self._forget_fd(segment)
        self._dirty_dirs.add(str(directory))

    def truncate_now(self, key: ExtentKey, length: int) -> None:
        segment, base = self.locate(key)
        try:
            fd = os.open(self.path_of(segment), os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            _punch(fd, base + length, self.extent_size - length)
        finally:
            os.close(fd)

    def capacity(self, used: int) -> Capacity:
        """From the free space last measured: statfs and the ENOSPC check must not wait on
        a device that has turned slow (statvfs of a hung mount blocks like any other I/O)."""
        if self._fs_free is None:
            self._fs_free = _free_bytes(self.root)
        return Capacity(budget=self.budget, used=used, fs_free=self._fs_free)

    async def refresh_capacity(self) -> None:
        """Re-measure the free space under the device, in its threads, bounded."""
        try:
            self._fs_free = await self._in_thread("statvfs", _free_bytes, self.root)
        except OSError:
            pass  # a timeout is counted by _in_thread; keep the last figure either way


def _free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def filesystem_type(path: Path) -> str:
    """The type of the filesystem holding ``path``: that of the deepest mount containing it,
    "unknown" when it cannot be told."""
    target = os.path.realpath(path)
    best, best_type = "", "unknown"
    try:
        for entry in mount_entries():
            mp = entry.mount_point
            inside = target == mp or target.startswith(mp.rstrip("/") + "/")
            if inside and len(mp) >= len(best):
                best, best_type = mp, entry.fs_type
    except OSError:
        pass
    return best_type


def _open_copy(path: str, create: bool) -> tuple[int | None, bool]:
    try:
        return _open_noatime(path, os.O_RDWR), False
    except FileNotFoundError:
        if not create:
            return None, False
    try:
        return _open_noatime(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600), True
    except FileExistsError:  # raced with ourselves in another thread
        return _open_noatime(path, os.O_RDWR), False


def _open_noatime(path: str, flags: int, mode: int = 0o600) -> int:
    """O_NOATIME: a read must not turn into an inode update (and a possible wait on the
    journal) on the device. Only the owner or a privileged process may ask for it.

    POSIX_FADV_SEQUENTIAL doubles the kernel's readahead on the container, the only
    read-ahead shadowfs relies on: a container holds a whole TiB of the file, so the device
    reads a sequential stream ahead across extents by itself. Random reads are not read
    ahead either way (the kernel reads a lone miss as asked). With it, a cold 1 GiB
    sequential read through the mount left 154-235 of its 1,024 reads to a thread instead of
    281-305, and ran at 1,127-1,286 MiB/s against 1,037-1,205 (5 alternating rounds)."""
    try:
        fd = os.open(path, flags | os.O_CLOEXEC | os.O_NOATIME, mode)
    except PermissionError:
        fd = os.open(path, flags | os.O_CLOEXEC, mode)
    with contextlib.suppress(OSError):  # a hint; a filesystem may not take it
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    return fd


def _timed_preadv(fd: int, buf: bytearray, start: int, offset: int) -> tuple[int, float]:
    """Read ``buf[start:]`` from ``offset + start`` (less at the end of the file); the count
    and the time the device took, measured where the call runs (so a thread hop's
    scheduling is not counted as device latency)."""
    t0 = time.perf_counter()
    total = 0
    with memoryview(buf) as view:
        while start + total < len(view):
            n = os.preadv(fd, [view[start + total :]], offset + start + total)
            if n == 0:
                break
            total += n
    return total, time.perf_counter() - t0


def _punch(fd: int, offset: int, length: int) -> None:
    """Make [offset, offset + length) of the file a hole, its size unchanged: the blocks are
    freed and the bytes read as zeros. Where the filesystem cannot punch, zeros are written."""
    if length <= 0:
        return
    if _fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) == 0:
        return
    code = ctypes.get_errno()
    if code not in (errno.EOPNOTSUPP, errno.ENOSYS):
        raise OSError(code, os.strerror(code))
    size = os.fstat(fd).st_size
    zeros = bytes(min(length, 1 << 20))
    position, end = offset, min(offset + length, size)  # nothing past the end to clear
    while position < end:
        position += os.pwrite(fd, zeros[: end - position], position)


def _data_spans(fd: int, start: int, end: int) -> Iterator[tuple[int, int]]:
    """The (start, stop) byte ranges of [start, end) that hold data, not holes, as the
    filesystem reports them (SEEK_DATA/SEEK_HOLE; block granular)."""
    position = start
    while position < end:
        try:
            data = os.lseek(fd, position, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data past position
                return
            raise
        if data >= end:
            return
        hole = os.lseek(fd, data, os.SEEK_HOLE)
        yield data, min(hole, end)
        position = hole


def _fsync_all(fds: list[int]) -> None:
    for fd in fds:
        os.fsync(fd)


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> int:
    total = os.pwrite(fd, data, offset)  # all of it, almost always: no view, no loop
    if total == len(data):
        return total
    view = memoryview(data)
    while total < len(view):
        n = os.pwrite(fd, view[total:], offset + total)
        if n <= 0:
            raise OSError(errno.EIO, "short write")
        total += n
    return total


def _unlink_containers(directory: Path, ino: int) -> list[Segment]:
    """Unlink every container of *ino* in its fan-out *directory*; the (inode, segment) of
    each one found."""
    found = []
    for name in os.listdir(directory):
        segment = parse_container_name(directory.name, name)
        if segment is not None and segment[0] == ino:
            _unlink_if_present(os.path.join(directory, name))
            found.append(segment)
    return found


def _unlink_if_present(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
