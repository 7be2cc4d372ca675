"""The metadata database: schema, transactions and the durability of the metadata itself.

SQLite in WAL mode holds the namespace and the extent map. Commits run with
synchronous=NORMAL on the trio thread (a write() into the WAL, no fsync), so namespace
operations survive a kill -9 of the daemon at once; durability against power loss comes from
``make_durable``, which fsyncs the WAL and the database file in a worker thread. Automatic
checkpoints are off (they would fsync on the trio thread); ``checkpoint`` runs them from a
second connection in a thread.

Schema (created in ``_SCHEMA``; every column documented there):

fs_info    key/value: fs_uuid, extent_size, format_version, clean ('1' after a clean unmount,
           '0' while mounted: a '0' at mount time means the last shutdown was unclean),
           created_ns.
inodes     one row per inode; numbers are AUTOINCREMENT, never reused (a freed inode's copy
           files are deleted after the next durable commit, under names a new inode must
           not take; and the kernel may still hold the old number). nlink = 0 marks an
           orphan: an inode unlinked while open; mount recovery frees orphans. size, mtime
           and allocated lag the in-memory state until the next ordered flush (data fsynced
           first, so the row never points at bytes that are not on the device).
dentries   (parent, name) -> ino. id is AUTOINCREMENT and never reused: it is the readdir
           offset, so offsets stay valid across concurrent unlinks.
symlinks   ino -> target.
xattrs     (ino, name) -> value.
extents    (ino, idx) -> generation: the extent map. generation counts writes to the extent.
copies     (ino, idx, device) -> generation, length, role, checksums: one stored instance of an
           extent. role 0 = primary (authoritative), 1 = shadow. length is the copy's
           high-water mark in its extent. A copy is current when its generation equals the extent's.
devices    name -> class, path, first_seen_ns: devices that have held data (ownership uses this
           to tell "a new empty device" from "a known device whose disk is not mounted").
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import trio

FORMAT_VERSION = 2  # 2: copies in container files per inode (1: one file per copy)
DB_NAME = "metadata.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS fs_info (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS inodes (
    ino       INTEGER PRIMARY KEY AUTOINCREMENT,
    mode      INTEGER NOT NULL,
    uid       INTEGER NOT NULL,
    gid       INTEGER NOT NULL,
    nlink     INTEGER NOT NULL,
    size      INTEGER NOT NULL DEFAULT 0,
    rdev      INTEGER NOT NULL DEFAULT 0,
    atime_ns  INTEGER NOT NULL,
    mtime_ns  INTEGER NOT NULL,
    ctime_ns  INTEGER NOT NULL,
    allocated INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS dentries (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    parent INTEGER NOT NULL,
    name   BLOB NOT NULL,
    ino    INTEGER NOT NULL,
    UNIQUE (parent, name)
);
CREATE INDEX IF NOT EXISTS dentries_by_ino ON dentries (ino);
CREATE TABLE IF NOT EXISTS symlinks (
    ino    INTEGER PRIMARY KEY,
    target BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS xattrs (
    ino   INTEGER NOT NULL,
    name  BLOB NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (ino, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS extents (
    ino        INTEGER NOT NULL,
    idx        INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    PRIMARY KEY (ino, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS copies (
    ino        INTEGER NOT NULL,
    idx        INTEGER NOT NULL,
    device     TEXT NOT NULL,
    generation INTEGER NOT NULL,
    length     INTEGER NOT NULL,
    role       INTEGER NOT NULL,
    checksums  BLOB,
    PRIMARY KEY (ino, idx, device)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS devices (
    name          TEXT PRIMARY KEY,
    class         TEXT NOT NULL,
    path          TEXT NOT NULL,
    first_seen_ns INTEGER NOT NULL
);
"""


class MetadataStore:
    """One SQLite connection, used only from the trio thread."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / DB_NAME
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA wal_autocheckpoint=0")
        self.db.execute("PRAGMA foreign_keys=OFF")
        self.db.executescript(_SCHEMA)
        self._in_tx = False
        self._checkpoint_lock = threading.Lock()

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------ transactions

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception. Not re-entrant on purpose:
        a nested call is a bug (two operations believing they are atomic together)."""
        if self._in_tx:
            raise RuntimeError("nested metadata transaction")
        self._in_tx = True
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")
        finally:
            self._in_tx = False

    # ------------------------------------------------------------ fs_info

    def info(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM fs_info WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_info(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO fs_info (key, value) VALUES (?, ?)", (key, value))

    # ------------------------------------------------------------ durability

    async def make_durable(self) -> None:
        """Everything committed so far survives power loss once this returns."""
        await trio.to_thread.run_sync(self.sync_files)

    def sync_files(self) -> None:
        # fsync through our own descriptors: Linux flushes the inode's dirty pages whichever
        # descriptor wrote them. The WAL first (it holds the commits), then the database file
        # (a checkpoint may have moved commits there).
        for name in (self.path.name + "-wal", self.path.name):
            try:
                fd = os.open(self.state_dir / name, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def checkpoint_blocking(self) -> None:
        """Move WAL content into the database file. Runs in a worker thread on its own
        connection; PASSIVE never blocks the trio thread's writers."""
        with self._checkpoint_lock:
            conn = sqlite3.connect(self.path, isolation_level=None)
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                conn.close()

    def checkpoint_truncate(self) -> None:
        """Full checkpoint at clean unmount, on the trio thread (nothing else runs then)."""
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
