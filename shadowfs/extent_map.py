"""The extent map: for every file, its extents, their generations and their copies.

In memory it is the truth for the trio thread; the ``extents`` and ``copies`` tables lag it
until the next ordered flush. Per inode the map is loaded on first use.

Three sets of work hang off it, all keyed by inode so that an fsync of one file touches only
that file's share:
- ``_dirty``: extents whose rows must be (re)written at the next flush;
- ``_removed``: extents whose rows must be deleted at the next flush;
- ``_unsynced``: copies written since their data was last fsynced, per device.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from shadowfs.metadata import MetadataStore
from tiers.device import ExtentKey


class CopyRole(enum.IntEnum):
    PRIMARY = 0
    SHADOW = 1


@dataclass(slots=True)
class Copy:
    device: str
    generation: int
    length: int
    role: CopyRole
    checksums: bytes | None = None


@dataclass(slots=True)
class Extent:
    index: int
    generation: int
    copies: dict[str, Copy] = field(default_factory=dict)
    # The primary copy, kept beside ``copies`` because every read and write asks for it and
    # a search per request was measurable; ``put`` keeps the two in step.
    main: Copy | None = None

    def put(self, copy: Copy) -> None:
        """Add ``copy``, or replace the one on its device."""
        self.copies[copy.device] = copy
        if copy.role is CopyRole.PRIMARY:
            self.main = copy
        elif self.main is not None and self.main.device == copy.device:
            self.main = None  # the primary it replaced is gone

    def primary(self) -> Copy:
        if self.main is None:
            raise LookupError(f"extent {self.index} has no primary copy")
        return self.main

    def current_copies(self) -> list[Copy]:
        return [c for c in self.copies.values() if c.generation == self.generation]


@dataclass
class FlushBatch:
    """A snapshot of map rows to write, taken before the data they describe is synced."""

    deleted: list[tuple[int, int]] = field(default_factory=list)
    extent_rows: list[tuple[int, int, int]] = field(default_factory=list)
    copy_rows: list[tuple[int, int, str, int, int, int, bytes | None]] = field(default_factory=list)
    unsynced: dict[str, set[ExtentKey]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.deleted or self.extent_rows or self.copy_rows or self.unsynced)


class ExtentMap:
    def __init__(self, store: MetadataStore) -> None:
        self.db = store.db
        # Loaded maps by inode. ``of`` loads a missing one; the per-request paths look here
        # first and call ``of`` only on a miss (a call per request was measurable).
        self.files: dict[int, dict[int, Extent]] = {}
        self._dirty: dict[int, set[int]] = {}
        self._removed: dict[int, set[int]] = {}
        self._unsynced: dict[int, dict[str, set[int]]] = {}
        # Dirty extents whose rows change more than their generation (new, grown, cut). The
        # rest were only overwritten in place: their rows wait for an acknowledged sync or a
        # full periodic flush, and so do their fsyncs (see take_batch).
        self._structural: dict[int, set[int]] = {}

    # ------------------------------------------------------------ lookups

    def of(self, ino: int) -> dict[int, Extent]:
        extents = self.files.get(ino)
        if extents is None:
            extents = self._load(ino)
            self.files[ino] = extents
        return extents

    def _load(self, ino: int) -> dict[int, Extent]:
        extents = {
            idx: Extent(idx, gen)
            for idx, gen in self.db.execute(
                "SELECT idx, generation FROM extents WHERE ino=?", (ino,)
            )
        }
        for idx, device, gen, length, role, checksums in self.db.execute(
            "SELECT idx, device, generation, length, role, checksums FROM copies WHERE ino=?",
            (ino,),
        ):
            extent = extents.get(idx)
            if extent is not None:  # fsck removes copies without an extent
                extent.put(Copy(device, gen, length, CopyRole(role), checksums))
        return extents

    def get(self, ino: int, index: int) -> Extent | None:
        return self.of(ino).get(index)

    # ------------------------------------------------------------ changes

    def add(self, ino: int, index: int, device: str) -> Extent:
        extent = Extent(index, 0)
        extent.put(Copy(device, 0, 0, CopyRole.PRIMARY))
        self.of(ino)[index] = extent
        self.mark_dirty(ino, index)
        return extent

    def mark_dirty(self, ino: int, index: int) -> None:
        """The extent's rows changed in shape: it is new, or a copy grew or was cut."""
        self._dirty.setdefault(ino, set()).add(index)
        self._structural.setdefault(ino, set()).add(index)

    def mark_written(self, ino: int, index: int, device: str) -> None:
        """Bytes of the extent's copy on ``device`` changed; on its own (no ``mark_dirty``),
        an overwrite in place."""
        # Once per write: no empty set or dict built only for ``setdefault`` to drop.
        dirty = self._dirty.get(ino)
        if dirty is None:
            dirty = self._dirty[ino] = set()
        dirty.add(index)
        by_device = self._unsynced.get(ino)
        if by_device is None:
            by_device = self._unsynced[ino] = {}
        unsynced = by_device.get(device)
        if unsynced is None:
            unsynced = by_device[device] = set()
        unsynced.add(index)

    def remove(self, ino: int, index: int) -> Extent | None:
        extent = self.of(ino).pop(index, None)
        if extent is not None:
            self._removed.setdefault(ino, set()).add(index)
            for pending in (self._dirty.get(ino), self._structural.get(ino)):
                if pending:
                    pending.discard(index)
            for indexes in self._unsynced.get(ino, {}).values():
                indexes.discard(index)  # no point making durable what is about to go
        return extent

    def drop_inode(self, ino: int) -> None:
        """Forget a freed inode; its rows are deleted by ``delete_inode_rows``."""
        self.files.pop(ino, None)
        self._dirty.pop(ino, None)
        self._removed.pop(ino, None)
        self._unsynced.pop(ino, None)
        self._structural.pop(ino, None)

    def evict(self, ino: int) -> None:
        """Forget a clean inode's map; it is loaded again on next use."""
        if not self.has_pending(ino):
            self.files.pop(ino, None)

    def delete_inode_rows(self, ino: int) -> None:
        self.db.execute("DELETE FROM extents WHERE ino=?", (ino,))
        self.db.execute("DELETE FROM copies WHERE ino=?", (ino,))

    # ------------------------------------------------------------ flushing

    def has_pending(self, ino: int | None = None) -> bool:
        if ino is None:
            return bool(self._dirty or self._removed or self._unsynced)
        return ino in self._dirty or ino in self._removed or ino in self._unsynced

    def take_batch(self, inos: Iterable[int] | None = None, overwrites: bool = True) -> FlushBatch:
        """Snapshot and clear the pending work of the given inodes (all when None).

        With ``overwrites`` false (the frequent periodic flush) extents only overwritten in
        place stay pending: their rows would change nothing but the generation, and syncing
        them every few seconds costs a random-write workload (a VM image) a stream of fsyncs
        its application never asked for. Nothing is lost by waiting: their rows still
        describe durable bytes (the old ones, or newer ones the kernel wrote back), and an
        acknowledged sync, the full periodic flush and unmount take them.
        """
        batch = FlushBatch()
        if inos is None:
            inos = set(self._dirty) | set(self._removed) | set(self._unsynced)
        for ino in inos:
            for idx in self._removed.pop(ino, ()):
                batch.deleted.append((ino, idx))
            if overwrites:
                taken = self._dirty.pop(ino, set())
                self._structural.pop(ino, None)
                unsynced = self._unsynced.pop(ino, {})
            else:
                taken = self._structural.pop(ino, set())
                self._discard(self._dirty, ino, taken)
                unsynced = {}
                for device, indexes in self._unsynced.get(ino, {}).items():
                    if indexes & taken:
                        unsynced[device] = indexes & taken
                for device, indexes in unsynced.items():
                    self._discard(self._unsynced[ino], device, indexes)
                if not self._unsynced.get(ino, True):
                    del self._unsynced[ino]
            extents = self.files.get(ino, {})
            for idx in taken:
                extent = extents.get(idx)
                if extent is None:
                    continue
                batch.extent_rows.append((ino, idx, extent.generation))
                for c in extent.copies.values():
                    batch.copy_rows.append(
                        (ino, idx, c.device, c.generation, c.length, int(c.role), c.checksums)
                    )
            for device, indexes in unsynced.items():
                keys = batch.unsynced.setdefault(device, set())
                keys.update(ExtentKey(ino, idx) for idx in indexes)
        return batch

    @staticmethod
    def _discard(pending: dict[Any, set[int]], key: Any, indexes: set[int]) -> None:
        left = pending.get(key)
        if left is None:
            return
        left -= indexes
        if not left:
            del pending[key]

    def give_back(self, batch: FlushBatch) -> None:
        """A flush failed before its rows were written: keep the work for the next attempt
        (as structural: the next periodic flush retries it whatever it was)."""
        for ino, idx in batch.deleted:
            self._removed.setdefault(ino, set()).add(idx)
        for ino, idx, _ in batch.extent_rows:
            self.mark_dirty(ino, idx)
        for device, keys in batch.unsynced.items():
            for key in keys:
                self._unsynced.setdefault(key.ino, {}).setdefault(device, set()).add(key.index)

    def write_batch(self, batch: FlushBatch) -> None:
        """Inside an open transaction."""
        self.db.executemany("DELETE FROM extents WHERE ino=? AND idx=?", batch.deleted)
        self.db.executemany("DELETE FROM copies WHERE ino=? AND idx=?", batch.deleted)
        self.db.executemany(
            "INSERT OR REPLACE INTO extents (ino, idx, generation) VALUES (?, ?, ?)",
            batch.extent_rows,
        )
        self.db.executemany(
            "INSERT OR REPLACE INTO copies (ino, idx, device, generation, length, role,"
            " checksums) VALUES (?, ?, ?, ?, ?, ?, ?)",
            batch.copy_rows,
        )

    # ------------------------------------------------------------ usage

    def usage_by_device(self) -> dict[str, tuple[int, int]]:
        """(copies, bytes) per device as the database holds it (used at mount)."""
        return {
            str(dev): (int(n), int(b or 0))
            for dev, n, b in self.db.execute(
                "SELECT device, COUNT(*), SUM(length) FROM copies GROUP BY device"
            )
        }
