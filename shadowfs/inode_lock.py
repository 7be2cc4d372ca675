"""The per-inode mutex that orders one file's writes and truncates, on the trio thread.

trio.Lock would do, but its free acquire and release (ownership tracking so that a lock held
by a dying task can be broken) cost more than the page-cache pwrite they guard, once per
write. Everything here runs on the one trio thread, so a free lock is one attribute check
and one store. A release hands the lock straight to the longest waiter, as trio.Lock does,
so that a truncate is never starved by a stream of writes that keep finding it free.
"""

from __future__ import annotations

import trio


class InodeLock:
    __slots__ = ("_held", "_waiters")

    def __init__(self) -> None:
        self._held = False
        self._waiters: trio.lowlevel.ParkingLot | None = None  # made on first contention

    def locked(self) -> bool:
        return self._held

    def try_acquire(self) -> bool:
        if self._held:
            return False
        self._held = True
        return True

    async def acquire(self) -> None:
        """Take the lock, waiting in FIFO order if it is held. Not a checkpoint when free:
        callers take it on the per-write path, where a scheduler trip costs more than the
        write."""
        if not self._held:
            self._held = True
            return
        if self._waiters is None:
            self._waiters = trio.lowlevel.ParkingLot()
        # Woken by release() with the lock already ours; a cancel while parked leaves the
        # queue without ever holding it.
        await self._waiters.park()

    def release(self) -> None:
        if not self._held:
            raise RuntimeError("release of an InodeLock that is not held")
        if self._waiters:
            self._waiters.unpark()  # handed over: stays held by the next task
        else:
            self._held = False

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()
