"""Reconciling the extent map with the devices: mount-time recovery and ``shadowfs fsck``.

What a crash (kill -9 or power loss) can leave behind, and how it is repaired here:

- containers of inodes that no longer exist (freed just before the crash, or created and
  written after the last flush): deleted;
- data in a container for an extent no row describes (written after the last flush, never
  acknowledged): punched out;
- data past a copy's row length (writes after the last flush): punched out back to the row's
  length, so bytes the map never acknowledged cannot reappear in a gap later;
- rows whose container is missing (real loss, or a device wiped): reported as loss, the rows
  dropped; a copy holding less data than its row says is fine (the rest is a hole: zeros,
  which is what a read returns past the data either way);
- inodes with nlink = 0 (unlinked while open): freed, with their copies;
- inodes no directory entry names but nlink > 0, and entries naming no inode: the first are
  linked into /lost+found when they hold data (freed when empty), the second removed;
- link counts and allocated bytes recomputed from the entries and the copies.

Everything here is blocking and runs before the mount answers (or with the filesystem
locked, for the fsck command), so it may use the devices' blocking helpers.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from shadowfs.metadata import MetadataStore
from shadowfs.namespace import ROOT_INODE
from tiers.device import ExtentKey
from tiers.local_device import LocalDevice

LOST_AND_FOUND = b"lost+found"


@dataclass
class FsckReport:
    findings: list[str] = field(default_factory=list)
    repaired: int = 0
    data_loss: list[str] = field(default_factory=list)

    def note(self, message: str, repaired: bool = True) -> None:
        self.findings.append(message)
        if repaired:
            self.repaired += 1

    @property
    def clean(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict[str, object]:
        return {
            "clean": self.clean,
            "findings": self.findings,
            "repaired": self.repaired,
            "data_loss": self.data_loss,
        }


def check(
    store: MetadataStore,
    devices: Mapping[str, LocalDevice],
    *,
    repair: bool,
    scan_devices: bool = True,
) -> FsckReport:
    report = FsckReport()
    db = store.db
    db.execute("BEGIN IMMEDIATE")
    try:
        _check_namespace(db, report, repair)
        _check_map(db, devices, report, repair, scan_devices)
        _recount_allocated(db, report, repair)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT" if repair else "ROLLBACK")
    if repair:
        for device in devices.values():
            device.sync_namespace_now()
        store.sync_files()
    return report


def _check_namespace(db, report: FsckReport, repair: bool) -> None:  # type: ignore[no-untyped-def]
    # Entries that name no inode.
    for entry_id, parent, name in db.execute(
        "SELECT id, parent, name FROM dentries WHERE ino NOT IN (SELECT ino FROM inodes)"
    ).fetchall():
        report.note(f"entry {bytes(name)!r} in directory {parent} names no inode: removed")
        if repair:
            db.execute("DELETE FROM dentries WHERE id=?", (entry_id,))
    # Orphans: unlinked while open when the daemon stopped.
    orphans = [
        r[0]
        for r in db.execute(
            "SELECT ino FROM inodes WHERE nlink=0 AND ino<>? ", (ROOT_INODE,)
        ).fetchall()
    ]
    named = {r[0] for r in db.execute("SELECT DISTINCT ino FROM dentries")}
    for ino in orphans:
        if ino in named:
            continue  # a link count that went wrong; recounted below
        report.note(f"inode {ino} was unlinked while open: freed")
        if repair:
            _delete_inode(db, ino)
    # Inodes with links but no entry.
    for (ino,) in db.execute(
        "SELECT ino FROM inodes WHERE nlink>0 AND ino<>? AND ino NOT IN"
        " (SELECT DISTINCT ino FROM dentries)",
        (ROOT_INODE,),
    ).fetchall():
        has_data = db.execute("SELECT 1 FROM extents WHERE ino=? LIMIT 1", (ino,)).fetchone()
        if has_data:
            report.note(f"inode {ino} holds data but has no name: linked into /lost+found")
            if repair:
                lost = _lost_and_found(db)
                db.execute(
                    "INSERT INTO dentries (parent, name, ino) VALUES (?, ?, ?)",
                    (lost, str(ino).encode(), ino),
                )
        else:
            report.note(f"inode {ino} has no name and no data: freed")
            if repair:
                _delete_inode(db, ino)
    # Link counts.
    for ino, mode, nlink in db.execute("SELECT ino, mode, nlink FROM inodes").fetchall():
        if stat.S_ISDIR(mode):
            subdirs = db.execute(
                "SELECT COUNT(*) FROM dentries d JOIN inodes i ON d.ino=i.ino"
                " WHERE d.parent=? AND (i.mode & 61440)=16384",
                (ino,),
            ).fetchone()[0]
            want = 2 + subdirs
        else:
            want = db.execute("SELECT COUNT(*) FROM dentries WHERE ino=?", (ino,)).fetchone()[0]
        if want and want != nlink:
            report.note(f"inode {ino}: link count {nlink}, entries say {want}: fixed")
            if repair:
                db.execute("UPDATE inodes SET nlink=? WHERE ino=?", (want, ino))


def _lost_and_found(db) -> int:  # type: ignore[no-untyped-def]
    row = db.execute(
        "SELECT ino FROM dentries WHERE parent=? AND name=?", (ROOT_INODE, LOST_AND_FOUND)
    ).fetchone()
    if row:
        return int(row[0])
    t = time.time_ns()
    cur = db.execute(
        "INSERT INTO inodes (mode, uid, gid, nlink, size, rdev, atime_ns, mtime_ns, ctime_ns)"
        " VALUES (?, 0, 0, 2, 0, 0, ?, ?, ?)",
        (stat.S_IFDIR | 0o700, t, t, t),
    )
    db.execute(
        "INSERT INTO dentries (parent, name, ino) VALUES (?, ?, ?)",
        (ROOT_INODE, LOST_AND_FOUND, cur.lastrowid),
    )
    return int(cur.lastrowid or 0)


def _delete_inode(db, ino: int) -> None:  # type: ignore[no-untyped-def]
    for table in ("inodes", "symlinks", "xattrs", "extents"):
        db.execute(f"DELETE FROM {table} WHERE ino=?", (ino,))
    # copies rows go in _check_map with their files (they no longer have an extent)


def _check_map(  # type: ignore[no-untyped-def]
    db, devices: Mapping[str, LocalDevice], report: FsckReport, repair: bool, scan: bool
) -> None:
    # Copies without an extent (or of a device no longer configured).
    for ino, idx, device in db.execute(
        "SELECT c.ino, c.idx, c.device FROM copies c LEFT JOIN extents e"
        " ON c.ino=e.ino AND c.idx=e.idx WHERE e.ino IS NULL"
    ).fetchall():
        report.note(f"copy {ino}.{idx} on {device} belongs to no extent: removed")
        if repair:
            db.execute("DELETE FROM copies WHERE ino=? AND idx=? AND device=?", (ino, idx, device))
            if device in devices:
                devices[device].delete_now(ExtentKey(ino, idx))
    for ino, idx in db.execute(
        "SELECT e.ino, e.idx FROM extents e LEFT JOIN copies c ON c.ino=e.ino AND c.idx=e.idx"
        " WHERE c.ino IS NULL"
    ).fetchall():
        report.note(f"extent {ino}.{idx} has no copy: removed (reads as a hole)")
        if repair:
            db.execute("DELETE FROM extents WHERE ino=? AND idx=?", (ino, idx))
    if not scan:
        return
    for name, device in devices.items():
        _scan_device(db, name, device, report, repair)


def _scan_device(  # type: ignore[no-untyped-def]
    db, name: str, device: LocalDevice, report: FsckReport, repair: bool
) -> None:
    """One device's containers against the map's copies on it.

    A container stores each copy at its extent's offset, and holes read as zeros, so what is
    checked is data: data for no copy is punched out; data past a copy's acknowledged length
    is punched out (a write after the last flush); a copy with less data than its length is
    fine (the rest is a hole, zeros either way). Only a container missing while the map has
    data there is loss (each container holds one TiB of its file). A copy's data end is block
    granular, so data ending inside the last block of a copy's length is not reported, but the
    tail of that block is still zeroed.
    """
    rows = {
        ExtentKey(ino, idx): length
        for ino, idx, length in db.execute(
            "SELECT ino, idx, length FROM copies WHERE device=?", (name,)
        )
    }
    live = {ino for (ino,) in db.execute("SELECT ino FROM inodes")}
    containers = set(device.list_containers())
    for ino in sorted({ino for ino, _ in containers} - live):
        report.note(f"{name}: containers of inode {ino:x}, which no longer exists: deleted")
        if repair:
            device.delete_inode_now(ino)
    # A live inode's container may hold no copy (truncates cut them all): it stays, empty.
    block = os.statvfs(device.root).f_bsize
    for key, have in device.stored_copies():
        if key.ino not in live:
            continue  # its containers went above
        want = rows.get(key)
        if want is None:
            report.note(f"{name}: data of copy {key.ino:x}.{key.index:x} not in the map: deleted")
            if repair:
                device.delete_now(key)
            continue
        if have > want:
            if have > -(-want // block) * block:
                report.note(
                    f"{name}: copy {key.ino:x}.{key.index:x} holds data up to byte {have}, the "
                    f"map acknowledges {want}: cut back"
                )
            if repair:
                device.truncate_now(key, want)
    for key, length in rows.items():
        if device.locate(key)[0] in containers or not length:
            continue
        message = f"{name}: copy {key.ino:x}.{key.index:x} ({length} bytes) is missing"
        report.note(message)
        report.data_loss.append(message)
        if repair:
            db.execute(
                "DELETE FROM copies WHERE ino=? AND idx=? AND device=?",
                (key.ino, key.index, name),
            )
            left = db.execute(
                "SELECT 1 FROM copies WHERE ino=? AND idx=?", (key.ino, key.index)
            ).fetchone()
            if left is None:
                db.execute("DELETE FROM extents WHERE ino=? AND idx=?", (key.ino, key.index))


def _recount_allocated(db, report: FsckReport, repair: bool) -> None:  # type: ignore[no-untyped-def]
    for ino, allocated, actual in db.execute(
        "SELECT i.ino, i.allocated, COALESCE(SUM(c.length), 0) FROM inodes i"
        " LEFT JOIN copies c ON c.ino=i.ino AND c.role=0 GROUP BY i.ino"
    ).fetchall():
        if allocated != actual and repair:
            db.execute("UPDATE inodes SET allocated=? WHERE ino=?", (actual, ino))
