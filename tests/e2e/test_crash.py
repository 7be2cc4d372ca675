"""kill -9 of the daemon: acknowledged data and namespace survive, nothing reads back as bytes
never written, mount recovers by itself and says so, fsck is clean afterwards, and the lock
refuses a second mount or an fsck of a mounted filesystem (issue 3, points 6 and 9).

*Acknowledged* = returned from fsync or fdatasync (of the file or its directory), or from a
write on an O_SYNC / O_DSYNC descriptor. Most tests here set a long metadata flush interval,
so that nothing but the acknowledgment itself can have made the data durable.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from mountfs import ShadowMount, is_mounted, run_cli

pytestmark = [pytest.mark.mount, pytest.mark.timeout(90)]

MiB = 1 << 20
BLOCK = 4096
SLOW_FLUSH = "[metadata]\nflush_interval_s = 600.0\n"
FAST_FLUSH = "[metadata]\nflush_interval_s = 0.05\n"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def expect_recovery(fs: ShadowMount) -> None:
    fs.expect_log(r"WARNING shadowfs.daemon: last shutdown was not clean")
    fs.expect_log(r"WARNING shadowfs.daemon: recovery")


def crash_and_remount(fs: ShadowMount) -> dict[str, Any]:
    fs.kill9()
    fs.start()
    status = fs.status()
    assert status["last_shutdown_clean"] is False
    assert status["recovery"] is not None
    return status


def write_file(path: Path, data: bytes, flags: int = 0, sync: str = "fsync") -> None:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC | flags, 0o644)
    try:
        view = memoryview(data)
        pos = 0
        while pos < len(data):
            pos += os.write(fd, view[pos : pos + 256 * 1024])
        if sync == "fsync":
            os.fsync(fd)
        elif sync == "fdatasync":
            os.fdatasync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def blocks_are_one_of(got: bytes, *allowed: bytes) -> list[int]:
    """Indexes of 4 KiB blocks of ``got`` that equal the same block of none of ``allowed``."""
    bad = []
    for start in range(0, len(got), BLOCK):
        piece = got[start : start + BLOCK]
        if not any(a[start : start + len(piece)] == piece for a in allowed):
            bad.append(start // BLOCK)
    return bad


# ---------------------------------------------------------------- acknowledged data


def test_every_kind_of_acknowledgment_survives_kill9(shadowfs_mount: Any) -> None:
    fs = shadowfs_mount(extra=SLOW_FLUSH)
    expect_recovery(fs)
    m = fs.mnt
    acked: dict[str, bytes] = {}

    def ack(name: str, data: bytes) -> None:
        acked[name] = data

    data = os.urandom(3 * MiB + 333)
    write_file(m / "fsync", data, sync="fsync")
    ack("fsync", data)

    data = os.urandom(2 * MiB + 1)
    write_file(m / "fdatasync", data, sync="fdatasync")
    ack("fdatasync", data)

    data = os.urandom(MiB + 4097)
    write_file(m / "o_dsync", data, flags=os.O_DSYNC, sync="none")
    ack("o_dsync", data)

    data = os.urandom(700_000)
    write_file(m / "o_sync", data, flags=os.O_SYNC, sync="none")
    ack("o_sync", data)

    data = os.urandom(300_000)  # O_DIRECT | O_DSYNC: written straight through and acknowledged
    write_file(m / "o_direct_dsync", data, flags=os.O_DIRECT | os.O_DSYNC, sync="none")
    ack("o_direct_dsync", data)

    # overwrite in place, then fdatasync: the new bytes are acknowledged
    fd = os.open(m / "fsync", os.O_RDWR)
    try:
        os.pwrite(fd, b"N" * 10_000, MiB - 5000)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    d = bytearray(acked["fsync"])
    d[MiB - 5000 : MiB + 5000] = b"N" * 10_000
    ack("fsync", bytes(d))

    # truncate, then fsync: the shorter size is acknowledged
    data = os.urandom(2 * MiB)
    write_file(m / "shrunk", data)
    fd = os.open(m / "shrunk", os.O_RDWR)
    try:
        os.ftruncate(fd, MiB + 17)
        os.fsync(fd)
    finally:
        os.close(fd)
    ack("shrunk", data[: MiB + 17])

    # shrink then extend, then fsync: the cut region is acknowledged as zeros
    data = os.urandom(2 * MiB)
    write_file(m / "regrown", data)
    fd = os.open(m / "regrown", os.O_RDWR)
    try:
        os.ftruncate(fd, 100_000)
        os.ftruncate(fd, 5 * MiB)
        os.fdatasync(fd)  # the size is needed to read the data back: fdatasync covers it
    finally:
        os.close(fd)
    ack("regrown", data[:100_000] + bytes(5 * MiB - 100_000))

    # namespace: fsync of the directory after create, rename, mkdir, unlink, link, symlink
    (m / "dir").mkdir()
    data = os.urandom(200_000)
    write_file(m / "dir" / "tmp", data)
    os.rename(m / "dir" / "tmp", m / "dir" / "final")
    fsync_dir(m / "dir")
    ack("dir/final", data)
    (m / "dir" / "empty").touch()
    os.link(m / "dir" / "final", m / "dir" / "hardlink")
    os.symlink("final", m / "dir" / "symlink")
    (m / "dir" / "sub").mkdir()
    fsync_dir(m / "dir")
    write_file(m / "gone", b"x" * 5000)
    os.unlink(m / "gone")
    fsync_dir(m)
    fsync_dir(m)
    ack("dir/empty", b"")
    ack("dir/hardlink", acked["dir/final"])

    # namespace changes no fsync covered: each is all or nothing
    write_file(m / "maybe-gone", b"g" * 9000)
    fsync_dir(m)
    os.unlink(m / "maybe-gone")
    write_file(m / "maybe-replaced", b"1" * 7000)
    write_file(m / "replacement", b"2" * 3000)
    fsync_dir(m)
    os.rename(m / "replacement", m / "maybe-replaced")

    # replace by rename, then fsync of the directory
    write_file(m / "config", b"old" * 1000)
    write_file(m / "config.new", b"new" * 2000)
    os.rename(m / "config.new", m / "config")
    fsync_dir(m)
    ack("config", b"new" * 2000)

    digests = {name: digest(data) for name, data in acked.items()}
    status = crash_and_remount(fs)

    for name, want in digests.items():
        got = (m / name).read_bytes()
        assert len(got) == len(acked[name]), name
        assert digest(got) == want, name
    assert sorted(os.listdir(m / "dir")) == ["empty", "final", "hardlink", "sub", "symlink"]
    assert os.readlink(m / "dir" / "symlink") == "final"
    assert (m / "dir" / "final").stat().st_nlink == 2
    assert not (m / "gone").exists() and not (m / "config.new").exists()
    if (m / "maybe-gone").exists():
        assert (m / "maybe-gone").read_bytes() == b"g" * 9000
    replaced = (m / "maybe-replaced").read_bytes()
    if replaced == b"1" * 7000:
        assert (m / "replacement").read_bytes() == b"2" * 3000
    else:
        assert replaced == b"2" * 3000 and not (m / "replacement").exists()
    names = set(os.listdir(m)) - {"maybe-gone", "maybe-replaced", "replacement"}
    assert sorted(names) == sorted(
        [
            *("fsync", "fdatasync", "o_dsync", "o_sync", "o_direct_dsync"),
            *("shrunk", "regrown", "dir", "config"),
        ]
    )
    assert status["recovery"]["data_loss"] == []
    # the recovery is described in the log
    log = fs.log_text()
    assert "last shutdown was not clean: recovering before the mount answers" in log
    assert "recovery done:" in log
    # a clean unmount after recovery (through the CLI), then fsck finds nothing
    fs.umount(via_cli=True)
    result = run_cli("fsck", str(fs.config))
    assert result.returncode == 0, result.stderr
    assert "fsck: 0 findings, 0 repaired, 0 with data loss" in result.stdout
    fs.start()
    assert fs.status()["last_shutdown_clean"] is True
    for name, want in digests.items():
        assert digest((m / name).read_bytes()) == want, name


def test_unacknowledged_overwrite_reads_as_old_or_new_per_block(shadowfs_mount: Any) -> None:
    """A (fsynced) then B over it (never synced), kill -9: every 4 KiB block reads all A or
    all B, never zeros or other bytes where A was acknowledged; past A's size, B or a hole."""
    fs = shadowfs_mount(extra=FAST_FLUSH)  # flushes race the B writes
    expect_recovery(fs)
    p = fs.path("vol.img")
    size_a = 6 * MiB
    a = os.urandom(size_a)
    write_file(p, a)
    b = bytearray(os.urandom(size_a + 2 * MiB))
    fd = os.open(p, os.O_RDWR)
    direct = os.open(p, os.O_RDWR | os.O_DIRECT)
    try:
        rng = random.Random(7)
        for i in range(600):
            blk = rng.randrange(0, len(b) // BLOCK - 4)
            n = rng.choice((1, 1, 2, 4)) * BLOCK
            off = blk * BLOCK
            target = direct if i % 5 == 0 else fd
            os.pwrite(target, bytes(b[off : off + n]), off)
            if i % 100 == 0:
                time.sleep(0.06)  # let a periodic flush commit part of B
    finally:
        os.close(fd)
        os.close(direct)
    crash_and_remount(fs)
    got = p.read_bytes()
    assert size_a <= len(got) <= len(b)
    hole = bytes(len(b))
    bad = blocks_are_one_of(got[:size_a], a, bytes(b))
    assert not bad, f"{len(bad)} acknowledged blocks read as neither A nor B: {bad[:10]}"
    bad = [i + size_a // BLOCK for i in blocks_are_one_of(got[size_a:], bytes(b[size_a:]), hole)]
    assert not bad, f"{len(bad)} blocks past A's size read as neither B nor a hole: {bad[:10]}"


def test_acknowledged_writes_survive_kills_during_a_busy_workload(shadowfs_mount: Any) -> None:
    """A writer keeps creating, fsyncing and renaming files; the daemon is killed under it,
    twice. Everything the writer saw acknowledged is there afterwards, byte for byte."""
    fs = shadowfs_mount()
    expect_recovery(fs)
    m = fs.mnt
    (m / "w").mkdir()
    acked: dict[str, str] = {}

    def writer(first: int, stop: threading.Event, errors: list[BaseException]) -> None:
        i = first
        try:
            while not stop.is_set():
                data = os.urandom(64 * 1024 * (1 + i % 8) + i)
                tmp, final = m / "w" / f"tmp{i}", m / "w" / f"file{i:04d}"
                write_file(tmp, data, sync="fdatasync" if i % 2 else "fsync")
                os.rename(tmp, final)
                fsync_dir(m / "w")
                acked[final.name] = digest(data)
                # unacknowledged churn alongside
                with open(m / "w" / f"scratch{i % 3}", "ab") as f:
                    f.write(os.urandom(50_000))
                i += 1
        except OSError as exc:
            if exc.errno not in (errno.ENOTCONN, errno.ECONNABORTED, errno.EIO):
                errors.append(exc)

    for round_ in range(2):
        stop, errors = threading.Event(), []
        t = threading.Thread(target=writer, args=(1000 * round_, stop, errors))
        t.start()
        time.sleep(1.5)
        fs.kill9(detach=False)  # the writer meets the dead connection, not the bare directory
        stop.set()
        t.join(30)
        assert not t.is_alive()
        fs.detach()
        assert not errors, errors
        assert len(acked) >= 5 * (round_ + 1), "the writer made too little progress"
        fs.start()
        assert fs.status()["last_shutdown_clean"] is False
        for name, want in acked.items():
            assert digest((m / "w" / name).read_bytes()) == want, name
        leftovers = {n for n in os.listdir(m / "w") if n.startswith("tmp")}
        assert len(leftovers) <= round_ + 1  # at most the one in flight at each kill
    fs.umount()
    result = run_cli("fsck", str(fs.config))
    assert result.returncode == 0 and "0 findings" in result.stdout, result.stdout


def test_open_unlinked_file_at_crash_is_freed_by_recovery(shadowfs_mount: Any) -> None:
    fs = shadowfs_mount(extra=SLOW_FLUSH)
    expect_recovery(fs)
    keep = os.urandom(MiB)
    write_file(fs.path("keep"), keep)
    p = fs.path("orphan")
    write_file(p, os.urandom(3 * MiB))
    fd = os.open(p, os.O_RDWR)
    try:
        os.unlink(p)
        fsync_dir(fs.mnt)
        status = crash_and_remount(fs)
    finally:
        try:
            os.close(fd)
        except OSError as exc:  # its flush goes to the dead connection
            assert exc.errno == errno.ENOTCONN
    assert any("unlinked while open: freed" in f for f in status["recovery"]["findings"])
    assert status["devices"][0]["used"] == MiB
    assert "unlinked while open: freed" in fs.log_text()
    assert os.listdir(fs.mnt) == ["keep"]
    assert fs.path("keep").read_bytes() == keep


def test_unacknowledged_truncate_is_all_or_nothing(shadowfs_mount: Any) -> None:
    """A shrink that no fsync covered: after kill -9 the file is as before or as after it,
    never its old size with zeros where acknowledged data was."""
    fs = shadowfs_mount(extra=SLOW_FLUSH)
    expect_recovery(fs)
    a = os.urandom(3 * MiB)
    write_file(fs.path("f"), a)
    fd = os.open(fs.path("f"), os.O_RDWR)
    try:
        os.ftruncate(fd, MiB // 2)  # not acknowledged
    finally:
        os.close(fd)
    status = crash_and_remount(fs)
    got = fs.path("f").read_bytes()
    assert got in (a, a[: MiB // 2]), (len(got), status["recovery"])
    assert status["recovery"]["data_loss"] == []


@pytest.mark.xfail(
    strict=True,
    reason="syncfs is not an acknowledgment on this mount: the kernel sends FUSE_SYNCFS only"
    " to virtiofs (fc->sync_fs), so a plain FUSE daemon never learns of a syncfs; the dirty"
    " pages reach the daemon but nothing makes them durable before the next periodic flush"
    " (docs/durability.md)",
)
def test_syncfs_is_an_acknowledgment(shadowfs_mount: Any) -> None:
    fs = shadowfs_mount(extra=SLOW_FLUSH)
    expect_recovery(fs)
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    data = os.urandom(MiB)
    fd = os.open(fs.path("f"), os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, data)
        assert libc.syncfs(fd) == 0
    finally:
        os.close(fd)
    crash_and_remount(fs)
    assert fs.path("f").read_bytes() == data


# ---------------------------------------------------------------- the lock


def test_second_mount_and_fsck_of_a_mounted_filesystem_are_refused(
    fs: ShadowMount, tmp_path: Path
) -> None:
    fs.path("f").write_bytes(b"in use")
    other = tmp_path / "other-mnt"
    other.mkdir()
    in_use = f"in use by pid {fs.pid} (mount)"

    daemon = run_cli("mount", str(fs.config), str(other))  # the CLI's daemon mode
    assert daemon.returncode == 3, (daemon.returncode, daemon.stderr)
    assert in_use in daemon.stderr
    foreground = run_cli("mount", "--foreground", str(fs.config), str(other))
    assert foreground.returncode == 3, (foreground.returncode, foreground.stderr)
    assert in_use in foreground.stderr and "unmount it first" in foreground.stderr
    assert not is_mounted(other)

    fsck = run_cli("fsck", str(fs.config))
    assert fsck.returncode == 3, (fsck.returncode, fsck.stderr)
    assert in_use in fsck.stderr

    # the mounted filesystem is unharmed and still clean
    assert fs.path("f").read_bytes() == b"in use"
    fs.umount()
    result = run_cli("fsck", str(fs.config))
    assert result.returncode == 0 and "0 findings" in result.stdout, result.stdout


def test_fsck_of_a_crashed_filesystem_repairs_without_losing_acknowledged_data(
    shadowfs_mount: Any,
) -> None:
    fs = shadowfs_mount(extra=SLOW_FLUSH)
    m = fs.mnt
    acked = os.urandom(2 * MiB + 99)
    write_file(m / "acked", acked)
    write_file(m / "unacked", os.urandom(3 * MiB), sync="none")  # dirty, then written back
    fd = os.open(m / "acked", os.O_WRONLY)
    try:
        os.pwrite(fd, os.urandom(MiB), 2 * MiB + 99)  # an unacknowledged extension
    finally:
        os.close(fd)
    assert fs.writeback() == 0  # the daemon has the unacknowledged bytes; its map does not
    fs.kill9()

    check = run_cli("fsck", "--no-repair", str(fs.config))
    assert check.returncode == 6, (check.returncode, check.stdout, check.stderr)
    assert "not in the map" in check.stdout or "cut back" in check.stdout, check.stdout
    repair = run_cli("fsck", str(fs.config))
    assert repair.returncode == 0, (repair.stdout, repair.stderr)
    assert "0 with data loss" in repair.stdout and " 0 findings" not in repair.stdout
    again = run_cli("fsck", "--no-repair", str(fs.config))
    assert again.returncode == 0 and "fsck: 0 findings" in again.stdout, again.stdout

    fs.start()  # fsck left it clean: no recovery needed
    assert fs.status()["last_shutdown_clean"] is True
    got = (m / "acked").read_bytes()
    assert got[: len(acked)] == acked
    assert len(got) in (len(acked), len(acked) + MiB)
    if (m / "unacked").exists():
        data = (m / "unacked").read_bytes()
        assert len(data) <= 3 * MiB
