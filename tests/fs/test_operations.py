"""The FUSE operations class driven in-process: every test ends with an fsck that finds nothing."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pyfuse3
import pytest

from shadowfs.daemon import open_filesystem
from shadowfs.datapath import MAX_FILE_SIZE
from shadowfs.metadata import FORMAT_VERSION, MetadataStore
from shadowfs.ownership import OwnershipError
from tests.fs.harness import CTX, Fields, FsHarness, make_config

ROOT = pyfuse3.ROOT_INODE
MiB = 1 << 20


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[FsHarness]:
    harness = FsHarness(make_config(tmp_path))
    try:
        yield harness
        assert await harness.fsck_findings() == []
    finally:
        await harness.close()


def errno_of(exc: pytest.ExceptionInfo[pyfuse3.FUSEError]) -> int:
    return exc.value.errno


async def test_write_read_across_extents(h: FsHarness) -> None:
    fh, ino = await h.create(b"vol")
    data = os.urandom(3 * MiB + 12345)
    assert await h.ops.write(fh, 100, data) == len(data)
    assert bytes(await h.ops.read(fh, 100, len(data))) == data
    assert bytes(await h.ops.read(fh, 0, 100)) == bytes(100)
    assert (await h.ops.getattr(ino, CTX)).st_size == 100 + len(data)
    assert bytes(await h.ops.read(fh, 100 + len(data), 10)) == b""
    await h.ops.release(fh)


async def test_holes_read_zeros_and_take_no_space(h: FsHarness) -> None:
    fh, ino = await h.create(b"sparse")
    tib = 1 << 40
    await h.ops.write(fh, tib - 4096, b"x" * 4096)
    attr = await h.ops.getattr(ino, CTX)
    assert attr.st_size == tib
    # space is accounted per copy up to its high-water mark: one extent here, not 1 TiB
    assert attr.st_blocks * 512 <= MiB
    assert bytes(await h.ops.read(fh, 5 * MiB, 4096)) == bytes(4096)
    assert bytes(await h.ops.read(fh, tib - 4096, 4096)) == b"x" * 4096
    assert h.fs.data.usage["hdd0"].copies == 1
    await h.ops.release(fh)


async def test_write_is_counted_once_and_a_bug_in_its_fast_path_answers_eio(
    h: FsHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    fh, ino = await h.create(b"fast")
    await h.ops.write(fh, 0, b"a" * MiB)  # a new extent: the general path
    before = h.ops.request_counts["write"]
    assert await h.ops.write(fh, 4096, b"b" * 4096) == 4096  # inside it: the fast path
    assert await h.ops.write(fh, MiB - 10, b"c" * 20) == 20  # across two extents
    assert h.ops.request_counts["write"] == before + 2
    assert "_write_rest" not in h.ops.request_counts
    got = bytes(await h.ops.read(fh, 0, MiB + 10))
    assert got == b"a" * 4096 + b"b" * 4096 + b"a" * (MiB - 8192 - 10) + b"c" * 20
    assert (await h.ops.getattr(ino, CTX)).st_size == MiB + 10
    with pytest.raises(pyfuse3.FUSEError) as bad_handle:
        await h.ops.write(fh + 1000, 0, b"x")
    assert errno_of(bad_handle) == errno.EBADF

    def broken(*args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(h.fs.data, "write_now", broken)
    with pytest.raises(pyfuse3.FUSEError) as exc:
        await h.ops.write(fh, 0, b"x")
    assert errno_of(exc) == errno.EIO
    monkeypatch.undo()
    await h.ops.release(fh)


async def test_a_write_waits_for_the_inode_lock_even_when_it_could_land_at_once(
    h: FsHarness,
) -> None:
    # The fast path runs without a checkpoint, as if under the lock; while an operation
    # holds the lock (a truncate between its awaits, say) the write must wait its turn.
    import trio

    fh, ino = await h.create(b"locked")
    await h.ops.write(fh, 0, b"a" * 8192)
    inode = h.fs.namespace.get(ino)
    await inode.lock.acquire()
    done: list[int] = []
    async with trio.open_nursery() as nursery:

        async def write() -> None:
            done.append(await h.ops.write(fh, 0, b"b" * 4096))

        nursery.start_soon(write)
        await trio.testing.wait_all_tasks_blocked()
        assert done == [] and bytes(await h.ops.read(fh, 0, 4096)) == b"a" * 4096
        inode.lock.release()
    assert done == [4096] and bytes(await h.ops.read(fh, 0, 4096)) == b"b" * 4096
    await h.ops.release(fh)


async def test_growing_a_copy_inside_its_extent_past_the_budget_is_enospc(
    tmp_path: Path,
) -> None:
    h = FsHarness(make_config(tmp_path, capacity="1 MiB"))
    try:
        fh, ino = await h.create(b"small")
        await h.ops.write(fh, 0, b"a" * 4096)
        fh2, _ = await h.create(b"filler")
        await h.ops.write(fh2, 0, b"f" * (MiB - 8192))  # 4 KiB of the budget left
        with pytest.raises(pyfuse3.FUSEError) as exc:
            await h.ops.write(fh, 4096, b"b" * 8192)  # the extent exists: the fast path
        assert errno_of(exc) == errno.ENOSPC
        assert (await h.ops.getattr(ino, CTX)).st_size == 4096
        assert bytes(await h.ops.read(fh, 0, MiB)) == b"a" * 4096
        assert await h.ops.write(fh, 4096, b"b" * 4096) == 4096  # what fits, fits
        await h.ops.release(fh)
        await h.ops.release(fh2)
        assert await h.fsck_findings() == []
    finally:
        await h.close()


async def test_efbig_beyond_max_file_size(h: FsHarness) -> None:
    fh, _ = await h.create(b"big")
    with pytest.raises(pyfuse3.FUSEError) as exc:
        await h.ops.write(fh, MAX_FILE_SIZE, b"x")
    assert errno_of(exc) == errno.EFBIG
    await h.ops.release(fh)


async def test_enospc_leaves_file_unchanged(tmp_path: Path) -> None:
    h = FsHarness(make_config(tmp_path, capacity="4 MiB"))
    try:
        fh, ino = await h.create(b"f")
        await h.ops.write(fh, 0, b"a" * (3 * MiB))
        with pytest.raises(pyfuse3.FUSEError) as exc:
            await h.ops.write(fh, 3 * MiB, b"b" * (2 * MiB))
        assert errno_of(exc) == errno.ENOSPC
        assert (await h.ops.getattr(ino, CTX)).st_size == 3 * MiB
        # overwriting what is already allocated needs no space
        await h.ops.write(fh, 0, b"c" * MiB)
        stat_ = await h.ops.statfs(CTX)
        assert stat_.f_bavail * stat_.f_frsize <= 1 * MiB
        await h.ops.release(fh)
        assert await h.fsck_findings() == []
    finally:
        await h.close()


async def test_truncate_shrink_then_extend_reads_zeros(h: FsHarness) -> None:
    fh, ino = await h.create(b"t")
    await h.ops.write(fh, 0, b"z" * (2 * MiB + 500))
    attr = pyfuse3.EntryAttributes()
    fields = Fields(update_size=True)
    attr.st_size = MiB + 10
    await h.ops.setattr(ino, attr, fields, fh, CTX)
    attr.st_size = 3 * MiB
    await h.ops.setattr(ino, attr, fields, fh, CTX)
    data = bytes(await h.ops.read(fh, 0, 3 * MiB))
    assert data[: MiB + 10] == b"z" * (MiB + 10)
    assert data[MiB + 10 :] == bytes(3 * MiB - MiB - 10)
    await h.ops.write(fh, 2 * MiB + 100, b"q")  # writing past the cut keeps the gap zero
    data = bytes(await h.ops.read(fh, MiB, MiB + 200))
    assert data[10:].count(b"z") == 0
    await h.ops.release(fh)


async def test_unlinked_open_file_stays_readable_until_released(h: FsHarness) -> None:
    fh, ino = await h.create(b"ghost")
    await h.ops.write(fh, 0, b"still here")
    (await h.ops.lookup(ROOT, b"ghost", CTX))  # kernel holds a lookup
    await h.ops.unlink(ROOT, b"ghost", CTX)
    with pytest.raises(pyfuse3.FUSEError) as exc:
        await h.ops.lookup(ROOT, b"ghost", CTX)
    assert errno_of(exc) == errno.ENOENT
    assert bytes(await h.ops.read(fh, 0, 100)) == b"still here"
    await h.ops.write(fh, 10, b"!")
    await h.ops.release(fh)
    assert h.fs.data.usage["hdd0"].copies == 1  # the kernel still remembers the inode
    await h.ops.forget([(ino, 2)])  # create + lookup
    assert h.fs.data.usage["hdd0"].copies == 0
    assert list(h.fs.devices["hdd0"].list_copies()) != []  # files go after a durable commit
    await h.fs.data.sync(None, durable=False)
    assert list(h.fs.devices["hdd0"].list_copies()) == []


async def test_rename_replaces_atomically(h: FsHarness) -> None:
    fh1, ino1 = await h.create(b"a")
    await h.ops.write(fh1, 0, b"new")
    fh2, ino2 = await h.create(b"b")
    await h.ops.write(fh2, 0, b"old")
    await h.ops.release(fh2)
    await h.ops.rename(ROOT, b"a", ROOT, b"b", 0, CTX)
    assert await h.lookup(b"b") == ino1
    assert await h.listdir() == [b"b"]
    await h.ops.forget([(ino2, 1)])
    assert h.fs.data.usage["hdd0"].copies == 1
    await h.ops.rename(ROOT, b"b", ROOT, b"b2", 1, CTX)  # NOREPLACE, target absent: ok
    assert await h.listdir() == [b"b2"]
    await h.ops.release(fh1)


async def test_rename_flags(h: FsHarness) -> None:
    fh1, ino1 = await h.create(b"a")
    fh2, ino2 = await h.create(b"b")
    with pytest.raises(pyfuse3.FUSEError) as exc:
        await h.ops.rename(ROOT, b"a", ROOT, b"b", 1, CTX)  # RENAME_NOREPLACE
    assert errno_of(exc) == errno.EEXIST
    await h.ops.rename(ROOT, b"a", ROOT, b"b", 2, CTX)  # RENAME_EXCHANGE
    assert await h.lookup(b"a") == ino2
    assert await h.lookup(b"b") == ino1
    await h.ops.release(fh1)
    await h.ops.release(fh2)


async def test_directories(h: FsHarness) -> None:
    d = await h.ops.mkdir(ROOT, b"d", 0o755, CTX)
    sub = await h.ops.mkdir(d.st_ino, b"sub", 0o755, CTX)
    assert (await h.ops.getattr(d.st_ino, CTX)).st_nlink == 3
    assert (await h.ops.getattr(ROOT, CTX)).st_nlink == 3
    with pytest.raises(pyfuse3.FUSEError) as exc:
        await h.ops.rmdir(ROOT, b"d", CTX)
    assert errno_of(exc) == errno.ENOTEMPTY
    with pytest.raises(pyfuse3.FUSEError) as exc:
        await h.ops.rename(ROOT, b"d", sub.st_ino, b"loop", 0, CTX)
    assert errno_of(exc) == errno.EINVAL
    with pytest.raises(pyfuse3.FUSEError) as exc:
        await h.ops.mkdir(ROOT, b"x" * 256, 0o755, CTX)
    assert errno_of(exc) == errno.ENAMETOOLONG
    with pytest.raises(pyfuse3.FUSEError) as exc:
        await h.ops.mkdir(ROOT, b"d", 0o755, CTX)
    assert errno_of(exc) == errno.EEXIST
    await h.ops.rmdir(d.st_ino, b"sub", CTX)
    await h.ops.rmdir(ROOT, b"d", CTX)
    assert (await h.ops.getattr(ROOT, CTX)).st_nlink == 2
    await h.ops.forget([(d.st_ino, 1), (sub.st_ino, 1)])


async def test_readdir_offsets_are_stable_keys(h: FsHarness) -> None:
    inodes = []
    for i in range(10):
        fh, ino = await h.create(b"f%d" % i)
        inodes.append((ino, 1))
        await h.ops.release(fh)
    entries = list(h.fs.namespace.readdir(ROOT, 0))
    resume_after = entries[4].offset
    for name in (b"f0", b"f2", b"f5"):
        await h.ops.unlink(ROOT, name, CTX)
    rest = [e.name for e in h.fs.namespace.readdir(ROOT, resume_after)]
    assert rest == [b"f6", b"f7", b"f8", b"f9"]
    await h.ops.forget(inodes)


async def test_links_symlinks_nodes_xattrs(h: FsHarness) -> None:
    fh, ino = await h.create(b"file")
    await h.ops.release(fh)
    await h.ops.link(ino, ROOT, b"hard", CTX)
    assert (await h.ops.getattr(ino, CTX)).st_nlink == 2
    link = await h.ops.symlink(ROOT, b"sym", b"file", CTX)
    assert await h.ops.readlink(link.st_ino, CTX) == b"file"
    assert stat.S_ISLNK(link.st_mode)
    fifo = await h.ops.mknod(ROOT, b"fifo", stat.S_IFIFO | 0o600, 0, CTX)
    assert stat.S_ISFIFO(fifo.st_mode)
    sock = await h.ops.mknod(ROOT, b"sock", stat.S_IFSOCK | 0o600, 0, CTX)
    assert stat.S_ISSOCK(sock.st_mode)
    await h.ops.setxattr(ino, b"user.k", b"v", CTX)
    assert await h.ops.getxattr(ino, b"user.k", CTX) == b"v"
    assert await h.ops.listxattr(ino, CTX) == [b"user.k"]
    await h.ops.removexattr(ino, b"user.k", CTX)
    with pytest.raises(pyfuse3.FUSEError) as exc:
        await h.ops.getxattr(ino, b"user.k", CTX)
    assert errno_of(exc) == errno.ENODATA


async def test_suid_cleared_on_write_and_chown(h: FsHarness) -> None:
    fh, ino = await h.create(b"s", mode=0o6755)
    await h.ops.write(fh, 0, b"x")
    assert stat.S_IMODE((await h.ops.getattr(ino, CTX)).st_mode) == 0o755
    attr = pyfuse3.EntryAttributes()
    fields = Fields(update_mode=True)
    attr.st_mode = stat.S_IFREG | 0o6755
    await h.ops.setattr(ino, attr, fields, fh, CTX)
    fields = Fields(update_uid=True)
    attr.st_uid = 1000
    got = await h.ops.setattr(ino, attr, fields, fh, CTX)
    assert stat.S_IMODE(got.st_mode) == 0o755 and got.st_uid == 1000
    await h.ops.release(fh)


async def test_data_and_namespace_survive_clean_remount(h: FsHarness) -> None:
    fh, ino = await h.create(b"keep")
    payload = os.urandom(MiB + 7)
    await h.ops.write(fh, 0, payload)
    await h.ops.release(fh)
    await h.remount()
    assert h.fs.last_shutdown_clean
    ino = await h.lookup(b"keep")
    fh = await h.open(ino)
    assert bytes(await h.ops.read(fh, 0, len(payload) + 10)) == payload
    await h.ops.release(fh)


async def test_fsync_survives_crash_and_unsynced_copies_are_cut(h: FsHarness) -> None:
    fh, ino = await h.create(b"acked")
    acked = os.urandom(MiB)
    await h.ops.write(fh, 0, acked)
    await h.ops.fsync(fh, False)
    await h.ops.write(fh, MiB, b"u" * 4096)  # never acknowledged, never flushed
    h.crash()
    assert not h.fs.last_shutdown_clean
    assert h.fs.recovery is not None
    assert any("not in the map" in f for f in h.fs.recovery.findings)
    ino = await h.lookup(b"acked")
    fh = await h.open(ino)
    assert bytes(await h.ops.read(fh, 0, MiB)) == acked
    await h.ops.release(fh)


async def test_fsync_orders_data_then_directories_then_metadata(h: FsHarness) -> None:
    log: list[tuple[str, str]] = []
    h.fs.data.attach_durability_log(log)
    fh, ino = await h.create(b"ordered")
    await h.ops.write(fh, 0, b"a" * (2 * MiB))  # two extents, one container file
    await h.ops.fsync(fh, False)
    kinds = [kind for kind, _ in log]
    assert kinds == ["file", "dir", "metadata", "metadata"]
    assert log[0] == ("file", f"hdd0:extents/{ino & 0xFF:02x}/{ino:x}-0")
    assert log[-2:] == [("metadata", "commit"), ("metadata", "durable")]
    await h.ops.release(fh)


async def test_a_filesystem_of_the_one_file_per_copy_format_is_refused(h: FsHarness) -> None:
    await h.ops.write((await h.create(b"kept"))[0], 0, b"data")
    await h.fs.close()
    store = MetadataStore(h.config.state_dir)
    with store.transaction():
        store.set_info("format_version", "1")
    store.close()
    with pytest.raises(OwnershipError) as info:
        open_filesystem(h.config)
    assert "format version 1" in str(info.value) and "one file per extent copy" in str(info.value)
    store = MetadataStore(h.config.state_dir)
    with store.transaction():
        store.set_info("format_version", str(FORMAT_VERSION))
    store.close()
    h.fs = open_filesystem(h.config)  # nothing was touched: it opens again


async def test_recovery_punches_unacknowledged_data_and_drops_orphan_containers(
    h: FsHarness,
) -> None:
    fh, ino = await h.create(b"cut")
    await h.ops.write(fh, 0, b"a" * 10_000)
    await h.ops.fsync(fh, False)  # acknowledged: 10,000 bytes of extent 0
    device = h.fs.devices["hdd0"]
    segment = (ino, 0)
    with open(device.path_of(segment), "r+b") as container:  # as if written after the flush
        container.seek(20_000)
        container.write(b"b" * 5000)  # past the copy's length
        container.seek(3 * MiB)
        container.write(b"c" * 4096)  # an extent the map does not know
    orphan = device.path_of((ino + 1000, 0))
    orphan.write_bytes(b"orphan")
    await h.ops.release(fh)
    h.crash()
    findings = h.fs.recovery.findings if h.fs.recovery else []
    assert any("holds data up to byte" in f and "cut back" in f for f in findings), findings
    assert any("not in the map: deleted" in f for f in findings), findings
    assert any("which no longer exists: deleted" in f for f in findings), findings
    assert not orphan.exists()
    assert h.fs.recovery is not None and h.fs.recovery.data_loss == []
    with open(device.path_of(segment), "rb") as container:
        data = container.read()
    assert data[:10_000] == b"a" * 10_000
    assert data[10_000:] == bytes(len(data) - 10_000)  # nothing past the acknowledged bytes


async def test_a_live_file_cut_to_nothing_keeps_its_empty_container_and_fsck_is_clean(
    h: FsHarness,
) -> None:
    fh, ino = await h.create(b"cut")
    await h.ops.write(fh, 0, b"a" * (2 * MiB))
    await h.ops.fsync(fh, False)
    attr = pyfuse3.EntryAttributes()
    attr.st_size = 0
    await h.ops.setattr(ino, attr, Fields(update_size=True), fh, CTX)
    await h.ops.fsync(fh, False)
    assert list(h.fs.devices["hdd0"].list_copies()) == []
    assert h.fs.devices["hdd0"].path_of((ino, 0)).exists()  # freed with the inode, not before
    assert await h.fsck_findings() == []
    await h.ops.release(fh)
    await h.ops.unlink(ROOT, b"cut", CTX)
    await h.ops.forget([(ino, 1)])  # the create's lookup: now the inode is freed
    await h.fs.data.sync(None, durable=False)  # and the next flush drops its containers
    assert not h.fs.devices["hdd0"].path_of((ino, 0)).exists()


async def test_orphan_freed_by_recovery(h: FsHarness) -> None:
    fh, ino = await h.create(b"tmp")
    await h.ops.write(fh, 0, b"data")
    await h.ops.fsync(fh, False)
    await h.ops.unlink(ROOT, b"tmp", CTX)
    h.crash()  # still open at the crash: an orphan
    assert h.fs.recovery is not None
    assert any("unlinked while open" in f for f in h.fs.recovery.findings)
    assert list(h.fs.devices["hdd0"].list_copies()) == []


async def test_bad_handles_and_inodes_are_errors_not_crashes(h: FsHarness) -> None:
    with pytest.raises(pyfuse3.FUSEError) as exc:
        await h.ops.read(999, 0, 10)
    assert errno_of(exc) == errno.EBADF
    with pytest.raises(pyfuse3.FUSEError) as exc:
        await h.ops.getattr(424242, CTX)
    assert errno_of(exc) == errno.ENOENT
    with pytest.raises(pyfuse3.FUSEError) as exc:
        await h.ops.lookup(ROOT, b"a/b", CTX)
    assert errno_of(exc) == errno.ENOENT


async def test_truncate_then_crash_keeps_the_cut_and_the_data_before_it(h: FsHarness) -> None:
    fh, ino = await h.create(b"cut")
    data = os.urandom(3 * MiB)
    await h.ops.write(fh, 0, data)
    await h.ops.fsync(fh, False)
    await h.ops.setattr(ino, _size(MiB + 100), Fields(update_size=True), fh, CTX)
    h.crash()  # no flush after the truncate
    assert h.fs.recovery is not None and h.fs.recovery.data_loss == []
    ino = await h.lookup(b"cut")
    assert (await h.ops.getattr(ino, CTX)).st_size == MiB + 100
    fh = await h.open(ino)
    assert bytes(await h.ops.read(fh, 0, 3 * MiB)) == data[: MiB + 100]
    await h.ops.release(fh)


async def test_a_failed_device_fsync_is_reported_on_every_later_fsync(
    h: FsHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    fh, _ = await h.create(b"eio")
    await h.ops.write(fh, 0, b"x" * 4096)
    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "injected writeback error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(pyfuse3.FUSEError) as exc:
        await h.ops.fsync(fh, False)
    assert errno_of(exc) == errno.EIO
    monkeypatch.setattr(os, "fsync", real_fsync)
    # the kernel would now report success on a retry: we must not
    with pytest.raises(pyfuse3.FUSEError) as exc:
        await h.ops.fsync(fh, False)
    assert errno_of(exc) == errno.EIO
    await h.ops.release(fh)


def _size(n: int) -> pyfuse3.EntryAttributes:
    attr = pyfuse3.EntryAttributes()
    attr.st_size = n
    return attr


async def test_xattrs_off_answer_enosys_so_the_kernel_stops_asking(tmp_path: Path) -> None:
    h = FsHarness(make_config(tmp_path, xattrs=False))
    try:
        fh, ino = await h.create(b"f")
        for call in (
            h.ops.getxattr(ino, b"security.capability", CTX),
            h.ops.setxattr(ino, b"user.a", b"1", CTX),
            h.ops.listxattr(ino, CTX),
            h.ops.removexattr(ino, b"user.a", CTX),
        ):
            with pytest.raises(pyfuse3.FUSEError) as exc:
                await call
            assert errno_of(exc) == errno.ENOSYS
        await h.ops.release(fh)
    finally:
        await h.close()


async def test_failed_shrink_still_reads_zeros_after_a_later_extension(
    h: FsHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    fh, ino = await h.create(b"shrink")
    await h.ops.write(fh, 0, b"o" * (2 * MiB))

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "injected")

    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(pyfuse3.FUSEError):
        await h.ops.setattr(ino, _size(0), Fields(update_size=True), fh, CTX)
    monkeypatch.setattr(os, "fsync", real_fsync)
    await h.ops.write(fh, MiB + MiB // 2, b"n" * 4096)
    assert bytes(await h.ops.read(fh, MiB, 4096)) == bytes(4096)
    assert bytes(await h.ops.read(fh, 0, 4096)) == bytes(4096)
    await h.ops.release(fh)
    h.fs.data.failed_inodes.clear()  # the injected failure is over; let the fixture's fsck run


async def test_inode_numbers_are_never_reused(h: FsHarness) -> None:
    fh, first = await h.create(b"one")
    await h.ops.release(fh)
    await h.ops.unlink(ROOT, b"one", CTX)
    await h.ops.forget([(first, 1)])
    await h.fs.data.sync(None, durable=False)
    fh, second = await h.create(b"two")
    await h.ops.release(fh)
    assert second > first


def _generation_in_db(h: FsHarness, ino: int, idx: int) -> int:
    row = h.fs.store.db.execute(
        "SELECT generation FROM extents WHERE ino=? AND idx=?", (ino, idx)
    ).fetchone()
    return int(row[0])


async def test_periodic_flush_leaves_in_place_overwrites_to_the_full_flush(h: FsHarness) -> None:
    """The frequent flush syncs and commits what changed in shape (new extents, grown
    copies) and leaves extents only overwritten in place for the full flush or an fsync."""
    log: list[tuple[str, str]] = []
    h.fs.data.attach_durability_log(log)
    fh, ino = await h.create(b"image")
    await h.ops.write(fh, 0, b"a" * (MiB + 4096))  # extent 0 full, extent 1 partial
    await h.fs.data.sync(None, durable=False, overwrites=False)
    container = f"hdd0:extents/{ino & 0xFF:02x}/{ino:x}-0"  # both extents' copies live there
    assert [what for kind, what in log if kind == "file"] == [container]  # new extents: synced
    gen0 = _generation_in_db(h, ino, 0)

    log.clear()
    await h.ops.write(fh, 4096, b"b" * 4096)  # overwrite in place, extent 0
    await h.ops.write(fh, MiB + 4096, b"c" * 4096)  # grows extent 1's copy
    await h.fs.data.sync(None, durable=False, overwrites=False)
    synced = [what for kind, what in log if kind == "file"]
    assert synced == [container]  # for the grown extent (its fsync takes extent 0's too)
    assert _generation_in_db(h, ino, 0) == gen0  # but extent 0's row waits for the full flush
    assert h.fs.extents.has_pending(ino)

    log.clear()
    await h.fs.data.sync(None, durable=False, overwrites=True)
    synced = [what for kind, what in log if kind == "file"]
    assert synced == [container]
    assert _generation_in_db(h, ino, 0) > gen0
    assert not h.fs.extents.has_pending(ino)

    log.clear()
    await h.ops.write(fh, 8192, b"d" * 4096)
    await h.ops.fsync(fh, True)  # an acknowledged sync never leaves anything behind
    assert [kind for kind, _ in log][:1] == ["file"]
    assert not h.fs.extents.has_pending(ino)
    await h.ops.release(fh)


async def test_unsynced_overwrite_then_crash_reads_old_or_new_bytes(h: FsHarness) -> None:
    fh, ino = await h.create(b"vm")
    old = os.urandom(MiB)
    await h.ops.write(fh, 0, old)
    await h.ops.fsync(fh, False)
    new = os.urandom(4096)
    await h.ops.write(fh, 8192, new)
    await h.fs.data.sync(None, durable=False, overwrites=False)  # the periodic flush
    h.crash()
    assert h.fs.recovery is not None and h.fs.recovery.data_loss == []
    ino = await h.lookup(b"vm")
    fh2 = await h.open(ino)
    got = await h.ops.read(fh2, 0, MiB)
    assert got[8192 : 8192 + 4096] in (old[8192 : 8192 + 4096], new)
    assert got[:8192] == old[:8192] and got[8192 + 4096 :] == old[8192 + 4096 :]
    await h.ops.release(fh2)


async def test_read_is_counted_once_and_a_bug_in_its_fast_path_answers_eio(
    h: FsHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    fh, _ = await h.create(b"fast")
    data = os.urandom(2 * MiB)
    await h.ops.write(fh, 0, data)
    before = h.ops.request_counts.get("read", 0)
    assert bytes(await h.ops.read(fh, 4096, 4096)) == data[4096:8192]  # inside one extent
    assert bytes(await h.ops.read(fh, MiB - 10, 20)) == data[MiB - 10 : MiB + 10]  # across two
    assert h.ops.request_counts["read"] == before + 2
    assert "_read_rest" not in h.ops.request_counts
    with pytest.raises(pyfuse3.FUSEError) as bad_handle:
        await h.ops.read(fh + 1000, 0, 4096)
    assert errno_of(bad_handle) == errno.EBADF

    def broken(*args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(h.fs.data, "read_now", broken)
    with pytest.raises(pyfuse3.FUSEError) as exc:
        await h.ops.read(fh, 0, 4096)
    assert errno_of(exc) == errno.EIO
    monkeypatch.undo()
    await h.ops.release(fh)
