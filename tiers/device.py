"""The device interface: what the daemon may ask of one device, and the records it trades in.

The interface is deliberately narrow and extent-shaped (read a range of an extent copy, write it,
make it durable, delete it, list what is held, report capacity) so that a remote class (an S3
object store holding cold shadows) can slot in beside local directories without touching the
FUSE layer or the engines.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple, Protocol


class IOMode(enum.Enum):
    """How a device's I/O is issued, chosen by measurement, never by declared class.

    INLINE: reads try the page cache on the event loop (RWF_NOWAIT) and writes go straight to
    the page cache; only what would block is handed to a worker thread.
    THREADED: every I/O runs in the device's worker threads under a limiter and a deadline,
    because the device has recently been slow or erring.
    """

    INLINE = "inline"
    THREADED = "threaded"


class ExtentKey(NamedTuple):
    """Names one extent of one file: the inode number and the extent's index in the file.

    A tuple, not a dataclass: it keys the fd cache on every read and write, and a tuple's
    hash and equality run in C (the dataclass's generated ones were measurable per I/O).
    """

    ino: int
    index: int  # type: ignore[assignment]  # shadows tuple.index, which nothing here uses
    # (Once it keyed the fd cache, one copy file per extent; copies now share one container
    # per inode, which is what the fd cache keys on.)


@dataclass(frozen=True)
class Capacity:
    """A device's budget and what shadowfs uses of it, capped by the real free space under it."""

    budget: int
    used: int
    fs_free: int

    @property
    def available(self) -> int:
        return max(0, min(self.budget - self.used, self.fs_free))


class DeviceError(OSError):
    """A device failed an I/O; errno tells how. The data path tries another copy if it has one."""


class DeviceTimeout(DeviceError):
    """A device did not answer within its deadline. The thread may still be stuck in the kernel."""


class Device(Protocol):
    """One place that holds extent copies: what the data path needs of any device."""

    name: str
    durability_log: list[tuple[str, str]] | None  # test hook: the order of durability steps

    @property
    def mode(self) -> IOMode: ...

    def read_inline(self, ino: int, index: int, offset: int, size: int) -> bytes | bytearray | None:
        """All ``size`` bytes of copy (ino, index) at once, if getting them cannot stall the
        caller (a page-cache hit, or a device measured to answer misses fast); else None
        (then call ``read``). Synchronous, and named by two ints rather than an ExtentKey:
        this is the hot path of every small read, and building the key cost more than a
        third of a microsecond per read."""
        ...

    async def read(self, key: ExtentKey, offset: int, size: int) -> bytes | bytearray:
        """Bytes of the copy at [offset, offset+size); shorter if the copy ends first."""
        ...

    def write_inline(self, ino: int, index: int, offset: int, data: bytes | memoryview) -> bool:
        """Write into the existing copy of extent ``index`` of inode ``ino`` at once if that
        cannot block (its file open, the device answering inline); False, having done
        nothing, otherwise (then ``write``). Two ints, not an ExtentKey: it runs per write."""
        ...

    async def write(self, key: ExtentKey, offset: int, data: bytes | memoryview) -> bool:
        """Write into the copy, creating it if needed. True when a new copy was created."""
        ...

    async def truncate(self, key: ExtentKey, length: int) -> None:
        """Shorten the copy: past *length* it reads as zeros from now on."""
        ...

    async def delete(self, key: ExtentKey) -> None:
        """Drop one copy of an inode that lives on."""
        ...

    async def delete_inode(self, ino: int) -> None:
        """Drop every copy of an inode that is gone."""
        ...

    async def sync(self, keys: Iterable[ExtentKey]) -> None:
        """Make the named copies' data durable."""
        ...

    async def sync_namespace(self) -> None:
        """Make the directory entries of copies created since the last call durable."""
        ...

    @property
    def has_unsynced_namespace(self) -> bool: ...

    def copy_length(self, key: ExtentKey) -> int:
        """Where the copy's stored data ends (0 if it holds none); may be rounded up to the
        device's block size. May block briefly: for fsck and recovery."""
        ...

    def list_copies(self) -> Iterator[ExtentKey]:
        """The copies holding any stored data."""
        ...

    def stored_copies(self) -> Iterator[tuple[ExtentKey, int]]:
        """``list_copies``, each with its ``copy_length``."""
        ...

    def list_containers(self) -> Iterator[tuple[int, int]]:
        """The (inode, segment) of every container file on this device."""
        ...

    def capacity(self, used: int) -> Capacity: ...


def single_error(group: BaseExceptionGroup) -> BaseException:
    """The one exception to report from a nursery of device I/O.

    Concurrent syncs fail together when a device dies; callers want a DeviceError they can
    translate to EIO, not a group. Anything that is not an OSError (a bug, a cancellation)
    keeps the whole group so that nothing is hidden.
    """
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(exc.exceptions)
        else:
            leaves.append(exc)
    if leaves and all(isinstance(e, OSError) for e in leaves):
        return leaves[0]
    return group
