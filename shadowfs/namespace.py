"""The namespace: inodes, directory entries, symlinks and xattrs, over the metadata database.

Inode numbers are shadowfs's own (never a device's st_ino: a file has copies on several
devices). Inodes are cached in memory once loaded; the cache is the truth for the trio thread.

Two write paths reach the ``inodes`` table, each owning distinct columns:
- namespace operations (create, link, unlink, rename, setattr of mode/owner/times) commit
  their rows at once, in one transaction each: cheap (no fsync) and they survive a kill -9;
- the data path's changes (size, allocated, and the mtime/ctime a write sets) are marked dirty
  and written by the ordered flush after the data they describe is durable on the devices, so
  a row never claims a size whose bytes could be missing after a power loss.

Lookup counts and open handles live here too (in memory only): an inode whose nlink reached 0
is freed by ``forget`` once the kernel has forgotten it and no handle is open; until then it
stays readable, and a crash leaves it as an orphan (nlink = 0) that mount recovery frees.
"""

from __future__ import annotations

import errno
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from shadowfs.errors import FsError
from shadowfs.inode_lock import InodeLock
from shadowfs.metadata import MetadataStore

ROOT_INODE = 1
NAME_MAX = 255
XATTR_NAME_MAX = 255
XATTR_SIZE_MAX = 65536

_ATTR_COLUMNS = "mode, uid, gid, nlink, rdev, atime_ns, mtime_ns, ctime_ns"


# The clock itself, not a function around it: every write asks it.
now_ns = time.time_ns


@dataclass(eq=False)
class Inode:
    ino: int
    mode: int
    uid: int
    gid: int
    nlink: int
    size: int
    rdev: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    allocated: int = 0
    lookups: int = 0
    open_handles: int = 0
    lock: InodeLock = field(default_factory=InodeLock, repr=False)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_reg(self) -> bool:
        return stat.S_ISREG(self.mode)

    def attr_row(self) -> tuple[int, ...]:
        return (
            self.mode,
            self.uid,
            self.gid,
            self.nlink,
            self.rdev,
            self.atime_ns,
            self.mtime_ns,
            self.ctime_ns,
            self.ino,
        )


@dataclass(frozen=True)
class DirEntry:
    offset: int  # the dentry id: a stable readdir cookie
    name: bytes
    inode: Inode


def check_name(name: bytes) -> None:
    if len(name) > NAME_MAX:
        raise FsError(errno.ENAMETOOLONG, f"name of {len(name)} bytes")
    if not name or b"/" in name or name in (b".", b".."):
        raise FsError(errno.EINVAL, f"invalid name {name!r}")


class Namespace:
    def __init__(self, store: MetadataStore) -> None:
        self.store = store
        self.db = store.db
        self.inodes: dict[int, Inode] = {}
        self.dirty: set[int] = set()

    # ------------------------------------------------------------ set-up

    def create_root(self, uid: int, gid: int) -> None:
        t = now_ns()
        self.db.execute(
            "INSERT OR IGNORE INTO inodes (ino, mode, uid, gid, nlink, size, rdev, atime_ns,"
            " mtime_ns, ctime_ns) VALUES (?, ?, ?, ?, 2, 0, 0, ?, ?, ?)",
            (ROOT_INODE, stat.S_IFDIR | 0o755, uid, gid, t, t, t),
        )

    # ------------------------------------------------------------ inodes

    def get(self, ino: int) -> Inode:
        inode = self.inodes.get(ino)
        if inode is not None:
            return inode
        row = self.db.execute(
            "SELECT ino, mode, uid, gid, nlink, size, rdev, atime_ns, mtime_ns, ctime_ns,"
            " allocated FROM inodes WHERE ino=?",
            (ino,),
        ).fetchone()
        if row is None:
            raise FsError(errno.ENOENT, f"no inode {ino}")
        inode = Inode(*row)
        self.inodes[ino] = inode
        return inode

    def save_attrs(self, inode: Inode) -> None:
        """Commit the namespace-owned columns of one inode (one autocommit statement)."""
        self.db.execute(
            f"UPDATE inodes SET ({_ATTR_COLUMNS}) = (?, ?, ?, ?, ?, ?, ?, ?) WHERE ino=?",
            inode.attr_row(),
        )

    def mark_dirty(self, inode: Inode) -> None:
        self.dirty.add(inode.ino)

    def take_dirty_rows(self) -> list[tuple[int, int, int, int, int]]:
        """Snapshot (size, allocated, mtime, ctime, ino) of dirty inodes and clear the set; the
        ordered flush writes these after syncing the data they describe."""
        rows = []
        for ino in self.dirty:
            inode = self.inodes.get(ino)
            if inode is not None:
                rows.append((inode.size, inode.allocated, inode.mtime_ns, inode.ctime_ns, ino))
        self.dirty.clear()
        return rows

    def write_dirty_rows(self, rows: list[tuple[int, int, int, int, int]]) -> None:
        self.db.executemany(
            "UPDATE inodes SET size=?, allocated=?, mtime_ns=?, ctime_ns=? WHERE ino=?", rows
        )

    def _insert_inode(self, mode: int, uid: int, gid: int, rdev: int, nlink: int) -> Inode:
        t = now_ns()
        cur = self.db.execute(
            "INSERT INTO inodes (mode, uid, gid, nlink, size, rdev, atime_ns, mtime_ns,"
            " ctime_ns) VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?)",
            (mode, uid, gid, nlink, rdev, t, t, t),
        )
        assert cur.lastrowid is not None
        inode = Inode(cur.lastrowid, mode, uid, gid, nlink, 0, rdev, t, t, t)
        self.inodes[inode.ino] = inode
        return inode

    # ------------------------------------------------------------ lookups

    def lookup(self, parent: int, name: bytes) -> Inode:
        if len(name) > NAME_MAX:
            raise FsError(errno.ENAMETOOLONG, f"name of {len(name)} bytes")
        directory = self.get(parent)
        if not directory.is_dir:
            raise FsError(errno.ENOTDIR)
        if name == b".":
            return directory
        if name == b"..":
            return self.get(self.parent_of(parent))
        row = self.db.execute(
            "SELECT ino FROM dentries WHERE parent=? AND name=?", (parent, name)
        ).fetchone()
        if row is None:
            raise FsError(errno.ENOENT)
        return self.get(row[0])

    def parent_of(self, ino: int) -> int:
        if ino == ROOT_INODE:
            return ROOT_INODE
        row = self.db.execute("SELECT parent FROM dentries WHERE ino=? LIMIT 1", (ino,)).fetchone()
        return ROOT_INODE if row is None else int(row[0])

    def _entry_ino(self, parent: int, name: bytes) -> int | None:
        row = self.db.execute(
            "SELECT ino FROM dentries WHERE parent=? AND name=?", (parent, name)
        ).fetchone()
        return None if row is None else int(row[0])

    def readdir(self, parent: int, after: int) -> Iterator[DirEntry]:
        directory = self.get(parent)
        if not directory.is_dir:
            raise FsError(errno.ENOTDIR)
        rows = self.db.execute(
            "SELECT id, name, ino FROM dentries WHERE parent=? AND id>? ORDER BY id",
            (parent, after),
        ).fetchall()
        for entry_id, name, ino in rows:
            yield DirEntry(entry_id, bytes(name), self.get(ino))

    # ------------------------------------------------------------ creation

    def create(
        self,
        parent: int,
        name: bytes,
        mode: int,
        uid: int,
        gid: int,
        rdev: int = 0,
        target: bytes | None = None,
    ) -> Inode:
        """Create a file, directory, node or symlink (``target`` given) in one transaction."""
        check_name(name)
        directory = self.get(parent)
        if not directory.is_dir:
            raise FsError(errno.ENOTDIR)
        if directory.nlink == 0:
            raise FsError(errno.ENOENT, "directory was removed")
        if self._entry_ino(parent, name) is not None:
            raise FsError(errno.EEXIST)
        if directory.mode & stat.S_ISGID:  # BSD group semantics of a setgid directory
            gid = directory.gid
            if stat.S_ISDIR(mode):
                mode |= stat.S_ISGID
        is_dir = stat.S_ISDIR(mode)
        with self.store.transaction():
            inode = self._insert_inode(mode, uid, gid, rdev, 2 if is_dir else 1)
            if target is not None:
                inode.size = len(target)
                self.db.execute(
                    "INSERT INTO symlinks (ino, target) VALUES (?, ?)", (inode.ino, target)
                )
                self.db.execute("UPDATE inodes SET size=? WHERE ino=?", (inode.size, inode.ino))
            self.db.execute(
                "INSERT INTO dentries (parent, name, ino) VALUES (?, ?, ?)",
                (parent, name, inode.ino),
            )
            if is_dir:
                directory.nlink += 1
            self._touch_dir(directory)
        return inode

    def link(self, ino: int, parent: int, name: bytes) -> Inode:
        check_name(name)
        inode = self.get(ino)
        directory = self.get(parent)
        if inode.is_dir:
            raise FsError(errno.EPERM, "hard links to directories")
        if not directory.is_dir:
            raise FsError(errno.ENOTDIR)
        if self._entry_ino(parent, name) is not None:
            raise FsError(errno.EEXIST)
        if inode.nlink == 0:
            raise FsError(errno.ENOENT, "linking an unlinked inode")
        with self.store.transaction():
            self.db.execute(
                "INSERT INTO dentries (parent, name, ino) VALUES (?, ?, ?)", (parent, name, ino)
            )
            inode.nlink += 1
            inode.ctime_ns = now_ns()
            self.save_attrs(inode)
            self._touch_dir(directory)
        return inode

    def _touch_dir(self, directory: Inode) -> None:
        directory.mtime_ns = directory.ctime_ns = now_ns()
        self.save_attrs(directory)

    # ------------------------------------------------------------ removal

    def unlink(self, parent: int, name: bytes) -> Inode:
        inode = self.lookup(parent, name)
        if inode.is_dir:
            raise FsError(errno.EISDIR)
        with self.store.transaction():
            self._drop_entry(parent, name, inode)
        return inode

    def rmdir(self, parent: int, name: bytes) -> Inode:
        if name == b".":
            raise FsError(errno.EINVAL)
        if name == b"..":
            raise FsError(errno.ENOTEMPTY)
        inode = self.lookup(parent, name)
        if not inode.is_dir:
            raise FsError(errno.ENOTDIR)
        self._check_empty(inode)
        with self.store.transaction():
            self._drop_entry(parent, name, inode)
        return inode

    def _check_empty(self, directory: Inode) -> None:
        row = self.db.execute(
            "SELECT 1 FROM dentries WHERE parent=? LIMIT 1", (directory.ino,)
        ).fetchone()
        if row is not None:
            raise FsError(errno.ENOTEMPTY)

    def _drop_entry(self, parent: int, name: bytes, inode: Inode) -> None:
        """Remove one entry inside an open transaction; an inode whose last link goes keeps its
        row with nlink = 0 until ``free``."""
        self.db.execute("DELETE FROM dentries WHERE parent=? AND name=?", (parent, name))
        directory = self.get(parent)
        if inode.is_dir:
            inode.nlink = 0
            directory.nlink -= 1
        else:
            inode.nlink -= 1
        inode.ctime_ns = now_ns()
        self.save_attrs(inode)
        self._touch_dir(directory)

    def rename(
        self, old_parent: int, old_name: bytes, new_parent: int, new_name: bytes, flags: int
    ) -> Inode | None:
        """Atomic rename; returns the inode a replacement unlinked (to free later), if any."""
        check_name(new_name)
        exchange = bool(flags & 2)  # RENAME_EXCHANGE
        noreplace = bool(flags & 1)  # RENAME_NOREPLACE
        if flags & ~3:
            raise FsError(errno.EINVAL, f"rename flags {flags:#x}")
        inode = self.lookup(old_parent, old_name)
        target_ino = self._entry_ino(new_parent, new_name)
        new_dir = self.get(new_parent)
        if not new_dir.is_dir:
            raise FsError(errno.ENOTDIR)
        if inode.is_dir:
            self._check_not_ancestor(inode.ino, new_parent)
        if target_ino == inode.ino:
            return None  # rename to another name of the same inode: POSIX says do nothing
        if exchange:
            if target_ino is None:
                raise FsError(errno.ENOENT)
            self._exchange(old_parent, old_name, new_parent, new_name, inode, target_ino)
            return None
        replaced: Inode | None = None
        if target_ino is not None:
            if noreplace:
                raise FsError(errno.EEXIST)
            replaced = self.get(target_ino)
            if replaced.is_dir:
                if not inode.is_dir:
                    raise FsError(errno.EISDIR)
                self._check_empty(replaced)
            elif inode.is_dir:
                raise FsError(errno.ENOTDIR)
        with self.store.transaction():
            if replaced is not None:
                self._drop_entry(new_parent, new_name, replaced)
            self.db.execute(
                "UPDATE dentries SET parent=?, name=? WHERE parent=? AND name=?",
                (new_parent, new_name, old_parent, old_name),
            )
            old_dir = self.get(old_parent)
            if inode.is_dir and old_parent != new_parent:
                old_dir.nlink -= 1
                new_dir.nlink += 1
            inode.ctime_ns = now_ns()
            self.save_attrs(inode)
            self._touch_dir(old_dir)
            if new_parent != old_parent:
                self._touch_dir(new_dir)
        return replaced

    def _exchange(
        self, p1: int, n1: bytes, p2: int, n2: bytes, first: Inode, second_ino: int
    ) -> None:
        second = self.get(second_ino)
        if second.is_dir:
            self._check_not_ancestor(second.ino, p1)
        with self.store.transaction():
            self.db.execute(
                "UPDATE dentries SET ino=? WHERE parent=? AND name=?", (second.ino, p1, n1)
            )
            self.db.execute(
                "UPDATE dentries SET ino=? WHERE parent=? AND name=?", (first.ino, p2, n2)
            )
            if p1 != p2 and first.is_dir != second.is_dir:
                d1, d2 = self.get(p1), self.get(p2)
                delta = 1 if first.is_dir else -1
                d1.nlink -= delta
                d2.nlink += delta
            for inode in (first, second, self.get(p1), self.get(p2)):
                inode.ctime_ns = now_ns()
                self.save_attrs(inode)

    def _check_not_ancestor(self, ino: int, directory: int) -> None:
        """EINVAL when ``directory`` is ``ino`` or inside it (a directory into itself)."""
        current = directory
        for _ in range(100000):
            if current == ino:
                raise FsError(errno.EINVAL, "cannot move a directory into itself")
            if current == ROOT_INODE:
                return
            current = self.parent_of(current)

    def free(self, inode: Inode) -> None:
        """Drop an unlinked inode's rows; the caller frees its extents first."""
        with self.store.transaction():
            for table in ("inodes", "symlinks", "xattrs"):
                self.db.execute(f"DELETE FROM {table} WHERE ino=?", (inode.ino,))
        self.inodes.pop(inode.ino, None)
        self.dirty.discard(inode.ino)

    # ------------------------------------------------------------ symlinks, xattrs

    def readlink(self, ino: int) -> bytes:
        row = self.db.execute("SELECT target FROM symlinks WHERE ino=?", (ino,)).fetchone()
        if row is None:
            raise FsError(errno.EINVAL, "not a symlink")
        return bytes(row[0])

    def getxattr(self, ino: int, name: bytes) -> bytes:
        self.get(ino)
        row = self.db.execute(
            "SELECT value FROM xattrs WHERE ino=? AND name=?", (ino, name)
        ).fetchone()
        if row is None:
            raise FsError(errno.ENODATA)
        return bytes(row[0])

    def setxattr(self, ino: int, name: bytes, value: bytes) -> None:
        if len(name) > XATTR_NAME_MAX or not name:
            raise FsError(errno.ERANGE, "xattr name length")
        if len(value) > XATTR_SIZE_MAX:
            raise FsError(errno.E2BIG, "xattr value too large")
        inode = self.get(ino)
        with self.store.transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO xattrs (ino, name, value) VALUES (?, ?, ?)",
                (ino, name, value),
            )
            inode.ctime_ns = now_ns()
            self.save_attrs(inode)

    def listxattr(self, ino: int) -> list[bytes]:
        self.get(ino)
        rows = self.db.execute("SELECT name FROM xattrs WHERE ino=? ORDER BY name", (ino,))
        return [bytes(r[0]) for r in rows]

    def removexattr(self, ino: int, name: bytes) -> None:
        inode = self.get(ino)
        with self.store.transaction():
            cur = self.db.execute("DELETE FROM xattrs WHERE ino=? AND name=?", (ino, name))
            if cur.rowcount == 0:
                raise FsError(errno.ENODATA)
            inode.ctime_ns = now_ns()
            self.save_attrs(inode)

    # ------------------------------------------------------------ statistics

    def count_inodes(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM inodes").fetchone()[0])
