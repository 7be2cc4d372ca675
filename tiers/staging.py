"""Read-ahead into the daemon's own buffers, past the device's page cache.

A sequential reader of a cold file used to be served by asking the device's page cache to
read ahead (POSIX_FADV_WILLNEED) and then copying from it on the event loop. On this machine
that costs more CPU than the disk read itself: a buffered read of 1 GiB of copies took 1.1-1.25
s of CPU against 0.15 s read with O_DIRECT into an aligned buffer (measured, bench notes in
docs/benchmarks.md), and it all ran on the one thread that serves every FUSE request. The
FUSE page cache keeps what the reader gets anyway (keep_cache), so a second copy in the
device's page cache buys nothing for a stream.

So a stream's next copies are read by the device's threads with O_DIRECT straight into
page-aligned buffers, and the read handler answers from a view of the buffer: no copy on the
event loop at all until the kernel takes the reply.

Who owns a buffer, at every moment, is what keeps this correct:

- *free*: in the pool; only ``claim`` hands it out, on the trio thread.
- *in flight*: a thread is reading into it. Nobody reads it. If the copy is changed meanwhile
  (``drop``), the entry is marked stale; the buffer goes back to the pool when the thread
  reports, not before.
- *ready*: readable through ``view`` until consumed, dropped or evicted.
- *abandoned*: the thread missed its deadline and may still write into it some day: it is
  never reused.

A view handed to pyfuse3 is copied by ``fuse_reply_buf`` before the handler's task yields, and
buffers are only ever re-handed in ``claim``, which runs in another task; so a buffer released
by a read is never refilled under the reply that uses it.

Staleness: every change to a copy goes through LocalDevice, which calls ``drop`` before the
change and again after it completes (a stream may have claimed the key while a threaded write
was out; what it read then raced the write and is discarded). An O_DIRECT read sees every
write that completed before it started: the kernel writes dirty pages back before reading
past them.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import platform
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import trio

from tiers.device import ExtentKey

# ``n`` values the thread reports besides a byte count.
FAILED = -1  # could not stage; the reader goes the ordinary way and meets any real error


@dataclass(eq=False)
class Staged:
    """One copy being read, or read, into ``buf``."""

    buf: mmap.mmap
    n: int | None = None  # bytes in ``buf``; None while in flight
    stale: bool = False
    done: trio.Event = field(default_factory=trio.Event)


class StageBuffers:
    """The staged copies of one device and the pool of buffers they live in."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.buffer_size = 0
        self.entries: OrderedDict[ExtentKey, Staged] = OrderedDict()
        self._pool: list[mmap.mmap] = []
        self._allocated = 0
        self.hits = 0
        self.bytes_served = 0

    def claim(self, keys: Iterable[ExtentKey], size: int) -> list[tuple[ExtentKey, Staged]]:
        """Entries for those of ``keys`` not staged yet, as far as buffers last; the caller
        starts the reads. Ready entries nobody has read are evicted oldest first when the
        pool runs dry; entries in flight are never taken."""
        if size != self.buffer_size:
            self._resize(size)
        claimed: list[tuple[ExtentKey, Staged]] = []
        for key in keys:
            if key in self.entries:
                continue
            buf = self._take()
            if buf is None:
                break
            staged = Staged(buf)
            self.entries[key] = staged
            claimed.append((key, staged))
        return claimed

    def landed(self, staged: Staged, n: int) -> None:
        """The thread finished ``staged`` (on the trio thread, via run_sync_soon)."""
        staged.n = n
        staged.done.set()
        if staged.stale or n == FAILED:
            self._discard(staged)

    def abandon(self, entries: Iterable[Staged]) -> None:
        """Their thread missed its deadline: readers stop waiting, the buffers are lost."""
        for staged in entries:
            if staged.n is None:
                staged.n = FAILED
                staged.stale = True
                staged.done.set()  # its buffer is lost: the pool is smaller from now on
                self._forget(staged)

    def view(self, key: ExtentKey, offset: int, size: int) -> memoryview | None:
        """``size`` bytes at ``offset`` of the staged copy, if it is ready and holds them.
        A read that reaches the end of what is staged releases it (a stream reads forward)."""
        staged = self.entries.get(key)
        if staged is None or staged.n is None:
            return None
        end = offset + size
        if end > staged.n:
            return None
        self.hits += 1
        self.bytes_served += size
        if end == staged.n:
            del self.entries[key]
            self._give_back(staged.buf)
        return memoryview(staged.buf)[offset:end]

    def pending(self, key: ExtentKey) -> Staged | None:
        """The entry for ``key`` if its read is still in flight."""
        staged = self.entries.get(key)
        return staged if staged is not None and staged.n is None else None

    def drop(self, key: ExtentKey) -> None:
        """``key``'s copy is about to change, or just changed: forget what was staged."""
        staged = self.entries.pop(key, None)
        if staged is None:
            return
        staged.stale = True
        if staged.n is not None:
            self._give_back(staged.buf)
        # in flight: ``landed`` returns the buffer once the thread lets go of it

    def close(self) -> None:
        self.entries.clear()
        for buf in self._pool:
            try:
                buf.close()
            except BufferError:  # a view is still out somewhere; the collector frees it
                pass
        self._pool.clear()

    @property
    def staged_bytes(self) -> int:
        return sum(s.n for s in self.entries.values() if s.n is not None and s.n > 0)

    # ----------------------------------------------------------------- buffers

    def _take(self) -> mmap.mmap | None:
        if self._pool:
            return self._pool.pop()
        if (self._allocated + 1) * self.buffer_size <= self.max_bytes:
            self._allocated += 1
            # Private and page-aligned: O_DIRECT wants the alignment, and replies from a
            # shared mapping (mmap's default) measured slower.
            flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
            return mmap.mmap(-1, self.buffer_size, flags=flags)
        for key, staged in self.entries.items():  # evict the oldest unread ready entry
            if staged.n is not None:
                del self.entries[key]
                return staged.buf
        return None

    def _discard(self, staged: Staged) -> None:
        self._forget(staged)
        self._give_back(staged.buf)

    def _give_back(self, buf: mmap.mmap) -> None:
        if len(buf) == self.buffer_size:  # not one of a size given up since
            self._pool.append(buf)

    def _forget(self, staged: Staged) -> None:
        for key, other in self.entries.items():
            if other is staged:
                del self.entries[key]
                return

    def _resize(self, size: int) -> None:
        """A new buffer size (the first claim): buffers of the old size still in flight are
        simply not returned to the pool."""
        self.entries.clear()
        self._pool.clear()
        self._allocated = 0
        self.buffer_size = size


def stage_copies(
    items: list[tuple[int | None, str, Staged]],
    opened_fd: Callable[[str], int | None],
    report: Callable[[Staged, int, float], None],
) -> list[int | None]:
    """Thread side: read each copy whole into its buffer and report each as it lands, with
    the seconds it took (so the reader of the first need not wait for the last). ``items``
    are (cached fd or None, path, entry); returns the fds opened here for the caller's fd
    cache."""
    opened: list[int | None] = []
    direct = True
    for i, (fd, path, staged) in enumerate(items):
        own: int | None = None
        n = FAILED
        started = time.perf_counter()
        try:
            if fd is None:
                own = opened_fd(path)
                fd = own
            if fd is not None:
                n, direct = _read_whole(fd, path, staged.buf, direct)
                if not direct and i == 0:
                    _advise([f for f, _, _ in items[1:]])
        except OSError:
            n = FAILED  # the reader's own read meets the error and reports it
        opened.append(own)
        report(staged, n, time.perf_counter() - started)
    return opened


def _read_whole(fd: int, path: str, buf: mmap.mmap, direct: bool) -> tuple[int, bool]:
    """The copy's bytes into ``buf``, and whether O_DIRECT may still be tried.

    A copy the page cache holds whole (one just written, say) is taken from there: reading
    it past the cache would first write its dirty pages back. Otherwise it is read with
    O_DIRECT; where the filesystem refuses that, through the page cache. (The page cache is
    asked with cachestat(2): a RWF_NOWAIT read would answer too, but a miss starts the very
    readahead into the page cache this avoids, measured to halve a cold stream.)"""
    size = min(os.fstat(fd).st_size, len(buf))
    if size == 0:
        return 0, direct
    got = 0
    if direct and not _all_cached(fd, size):
        got = _read_direct(path, buf)
        if got < 0:
            direct, got = False, 0
    with memoryview(buf) as view:
        while got < size:  # what O_DIRECT did not give (a file growing meanwhile), or all
            n = os.preadv(fd, [view[got:size]], got)
            if n == 0:
                break
            got += n
    return min(got, size), direct


def _all_cached(fd: int, size: int) -> bool:
    """Whether the page cache holds the first ``size`` bytes of ``fd`` (False if the kernel
    cannot say: then the copy is read from the device, which is always right)."""
    if _cachestat is None:
        return False
    rng = (ctypes.c_uint64 * 2)(0, size)
    stat = (ctypes.c_uint64 * 5)()
    if _cachestat(fd, ctypes.byref(rng), ctypes.byref(stat), 0) != 0:
        return False
    return stat[0] * mmap.PAGESIZE >= size


def _load_cachestat() -> Callable[..., int] | None:
    """cachestat(2) (Linux 6.5), through libc's syscall(); None where it is missing."""
    if platform.machine() not in _CACHESTAT_NR:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    nr = _CACHESTAT_NR[platform.machine()]
    probe = (ctypes.c_uint64 * 2)(0, 0)
    out = (ctypes.c_uint64 * 5)()
    if libc.syscall(nr, -1, ctypes.byref(probe), ctypes.byref(out), 0) == 0:
        return None  # an fd of -1 must fail; anything else is not cachestat
    if ctypes.get_errno() == errno.ENOSYS:
        return None
    return lambda fd, rng, stat, flags: int(libc.syscall(nr, fd, rng, stat, flags))


_CACHESTAT_NR = {"x86_64": 451, "aarch64": 451}
_cachestat = _load_cachestat()


def _read_direct(path: str, buf: mmap.mmap) -> int:
    """One O_DIRECT read of the copy from its start; -1 where the filesystem refuses it."""
    flags = os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC
    try:
        dfd = os.open(path, flags | os.O_NOATIME)
    except PermissionError:  # O_NOATIME needs ownership
        dfd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return -1
        raise
    try:
        return os.preadv(dfd, [buf], 0)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return -1
        raise
    finally:
        os.close(dfd)


def _advise(fds: list[int | None]) -> None:
    """Without O_DIRECT the copies are read through the page cache: ask for all of them at
    once, so the device works on the batch rather than one copy at a time."""
    for fd in fds:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
