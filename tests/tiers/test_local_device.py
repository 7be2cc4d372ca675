"""LocalDevice's read paths: the synchronous inline read, partial hits, short copies."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tiers import local_device
from tiers.device import ExtentKey
from tiers.local_device import SEGMENT_BYTES, IOMode, IOPolicy, LocalDevice

KEY = ExtentKey(7, 3)
MiB = 1 << 20


@pytest.fixture
def device(tmp_path: Path) -> Iterator[LocalDevice]:
    (tmp_path / "d").mkdir()
    dev = LocalDevice("hdd0", tmp_path / "d", 1 << 30)
    dev.initialise()
    yield dev
    dev.close()


@pytest.fixture
def nowait(tmp_path: Path) -> None:
    """Skip where the filesystem under the test refuses RWF_NOWAIT (tmpfs does): there
    the RWF_NOWAIT probe declines every read by design and the miss path serves them."""
    probe = tmp_path / "nowait-probe"
    probe.write_bytes(b"x" * 4096)
    fd = os.open(probe, os.O_RDONLY)
    try:
        os.preadv(fd, [bytearray(4096)], 0, os.RWF_NOWAIT)
    except OSError as exc:
        if exc.errno == errno.EOPNOTSUPP:
            pytest.skip(f"{tmp_path} does not support RWF_NOWAIT")
    finally:
        os.close(fd)
        probe.unlink()


def _evict(device: LocalDevice, offset: int, length: int) -> None:
    """Drop clean pages of KEY's copy from the page cache (written back first)."""
    fd = os.open(device.path_of((KEY.ino, 0)), os.O_RDONLY)
    try:
        os.fsync(fd)
        base = KEY.index * device.extent_size
        os.posix_fadvise(fd, base + offset, length, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


async def test_read_inline_without_fast_misses_answers_hits_only(
    device: LocalDevice, nowait: None
) -> None:
    data = os.urandom(MiB)
    assert device.read_inline(*KEY, 0, 4096) is None  # no such copy: not its business
    await device.write(KEY, 0, data)
    device.miss_latency_s = 1.0  # misses measured slow: they belong to threads
    assert device.read_inline(*KEY, 4096, 4096) == data[4096:8192]
    assert device.counters.cache_hits == 1 and device.counters.reads == 1
    assert device.read_inline(*KEY, MiB - 10, 4096) is None  # past the end: short
    _evict(device, 0, MiB)
    if device.read_inline(*KEY, 0, 4096) is not None:
        pytest.skip("the kernel kept the pages despite DONTNEED")
    assert await device.read(KEY, 0, 4096) == data[:4096]  # the miss path reads it


async def test_read_inline_on_a_device_with_fast_misses_preads_hit_or_miss(
    device: LocalDevice,
) -> None:
    data = os.urandom(MiB)
    await device.write(KEY, 0, data)
    device._nowait_reads = False  # as on tmpfs: the pread path does not need RWF_NOWAIT
    _evict(device, 0, MiB)
    assert device.read_inline(*KEY, 8192, 4096) == data[8192 : 8192 + 4096]
    assert device.read_inline(*KEY, MiB - 10, 4096) is None  # past the end: ``read`` pads
    assert device.counters.reads == 1 and device.counters.bytes_read == 4096
    assert device.counters.threaded_ops == 0


async def test_slow_inline_preads_feed_the_miss_latency_and_can_send_the_device_threaded(
    device: LocalDevice, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(MiB)
    await device.write(KEY, 0, data)
    recorded: list[tuple[str, float, int, bool]] = []
    device.recorder = lambda op, latency, n, reached: recorded.append((op, latency, n, reached))
    took = [0.0]

    def fake_clock() -> float:  # each pread appears to take took[0] seconds
        fake_clock.calls += 1  # type: ignore[attr-defined]
        return took[0] if fake_clock.calls % 2 == 0 else 0.0  # type: ignore[attr-defined]

    fake_clock.calls = 0  # type: ignore[attr-defined]
    monkeypatch.setattr(local_device, "_clock", fake_clock)
    took[0] = 2e-6  # a page-cache hit
    assert device.read_inline(*KEY, 0, 4096) == data[:4096]
    assert device.counters.cache_hits == 1 and device.miss_latency_s == 0.0
    took[0] = 0.002  # a miss answered in 2 ms: slower than a thread hop
    assert device.read_inline(*KEY, 0, 4096) == data[:4096]
    assert device.counters.cache_hits == 1
    assert device.miss_latency_s == pytest.approx(0.0004)
    assert recorded == [("read", 2e-6, 4096, False), ("read", 0.002, 4096, True)]
    assert device.read_inline(*KEY, 0, 4096) == data[:4096]  # the average passes 0.5 ms...
    assert device.miss_latency_s > device.policy.inline_miss_s
    monkeypatch.setattr(os, "pread", None)  # ...so the next read may not block: RWF_NOWAIT
    if device._nowait_reads:
        assert device.read_inline(*KEY, 0, 4096) == data[:4096]
    monkeypatch.undo()
    monkeypatch.setattr(local_device, "_clock", fake_clock)
    device.miss_latency_s = 0.0
    took[0] = 1.0  # one read far past the slow threshold sends the device threaded at once
    assert device.read_inline(*KEY, 0, 4096) == data[:4096]
    assert device.mode is IOMode.THREADED and "read took" in device.last_mode_reason


async def test_a_partial_hit_is_completed_from_the_device(device: LocalDevice) -> None:
    data = os.urandom(MiB)
    await device.write(KEY, 0, data)
    _evict(device, MiB // 2, MiB // 2)  # first half cached, second half not
    got = await device.read(KEY, 0, MiB)
    assert bytes(got) == data
    assert device.counters.bytes_read == MiB


async def test_a_read_past_the_copy_end_is_short(device: LocalDevice) -> None:
    data = os.urandom(10_000)
    await device.write(KEY, 0, data)
    _evict(device, 0, MiB)
    got = await device.read(KEY, 8192, 4096)
    assert bytes(got) == data[8192:]
    assert await device.read(ExtentKey(7, 4), 0, 4096) == b""  # no copy at all


async def test_threaded_reads_return_the_same_bytes(device: LocalDevice) -> None:
    data = os.urandom(MiB)
    await device.write(KEY, 0, data)
    device.force_threaded("test")
    # Whether DONTNEED drops the pages is the kernel's call (on tmpfs it never does), so the
    # page-cache probe is switched off rather than trusted to miss: every byte takes the miss
    # path, which in threaded mode is a device thread.
    device._nowait_reads = False
    assert bytes(await device.read(KEY, 100, 300_000)) == data[100:300_100]
    assert device.counters.threaded_ops >= 1 and device.counters.cache_hits == 0


async def test_containers_are_opened_with_the_sequential_hint_which_may_be_refused(
    device: LocalDevice, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The device's own readahead is the only read-ahead: a container holds a TiB of its file.
    advice: list[int] = []
    real = os.posix_fadvise

    def record(fd: int, offset: int, length: int, what: int) -> None:
        advice.append(what)
        real(fd, offset, length, what)

    monkeypatch.setattr(os, "posix_fadvise", record)
    await device.write(ExtentKey(9, 0), 0, b"x" * 4096)  # created
    device._forget_fd((9, 0))
    assert bytes(await device.read(ExtentKey(9, 0), 0, 4096)) == b"x" * 4096  # opened again
    assert advice == [os.POSIX_FADV_SEQUENTIAL] * 2

    def refuse(fd: int, offset: int, length: int, what: int) -> None:
        raise OSError(errno.EINVAL, "no hints here")

    monkeypatch.setattr(os, "posix_fadvise", refuse)
    device._forget_fd((9, 0))
    assert bytes(await device.read(ExtentKey(9, 0), 0, 4096)) == b"x" * 4096


async def test_copies_of_one_inode_share_a_container_at_their_extent_offsets(
    device: LocalDevice,
) -> None:
    first, second = ExtentKey(5, 0), ExtentKey(5, 2)
    await device.write(first, 0, b"a" * MiB)
    await device.write(second, 100, b"b" * 4096)
    assert os.listdir(device.root / "extents" / "05") == ["5-0"]  # one file for the inode
    with open(device.path_of((5, 0)), "rb") as container:
        data = container.read()
    assert data[:MiB] == b"a" * MiB
    assert data[MiB : 2 * MiB + 100] == bytes(MiB + 100)  # extent 1 has no copy: a hole
    assert data[2 * MiB + 100 :] == b"b" * 4096
    assert await device.read(second, 0, 200) == bytes(100) + b"b" * 100
    assert sorted(device.list_copies()) == [first, second]
    assert device.copy_length(first) == MiB
    assert device.copy_length(second) == 4196  # where the container ends (else block granular)
    assert device.copy_length(ExtentKey(5, 1)) == 0
    assert sorted(device.stored_copies()) == [(first, MiB), (second, 4196)]
    assert list(device.list_containers()) == [(5, 0)]


async def test_delete_and_truncate_punch_holes_and_free_the_blocks(device: LocalDevice) -> None:
    first, second = ExtentKey(6, 0), ExtentKey(6, 1)
    await device.write(first, 0, os.urandom(MiB))
    await device.write(second, 0, b"keep" * 1024)
    await device.sync([first, second])
    blocks = os.stat(device.path_of((6, 0))).st_blocks
    await device.delete(first)
    assert await device.read(first, 0, 4096) == bytes(4096)
    assert bytes(await device.read(second, 0, 4096)) == b"keep" * 1024  # untouched
    assert os.stat(device.path_of((6, 0))).st_blocks <= blocks - MiB // 512
    assert list(device.list_copies()) == [second]
    await device.truncate(second, 10)
    assert bytes(await device.read(second, 0, 4096)) == b"keepkeepke" + bytes(4086)
    device.truncate_now(second, 2)
    assert bytes(await device.read(second, 0, 16)) == b"ke" + bytes(14)
    device.delete_now(second)
    assert list(device.list_copies()) == []
    assert list(device.list_containers()) == [(6, 0)]  # the container stays while the inode lives


async def test_delete_inode_removes_the_container_and_its_cached_fd(device: LocalDevice) -> None:
    key = ExtentKey(0x1234, 3)
    await device.write(key, 0, b"x" * 4096)
    assert (key.ino, 0) in device._fds
    await device.delete_inode(key.ino)
    assert not device.path_of((key.ino, 0)).exists()
    assert (key.ino, 0) not in device._fds
    assert device.has_unsynced_namespace  # the fan-out directory lost an entry
    assert await device.read(key, 0, 4096) == b""
    await device.delete_inode(key.ino)  # already gone: nothing to do
    await device.write(ExtentKey(7, 0), 0, b"y")
    device.delete_inode_now(7)
    assert list(device.list_containers()) == []


def test_container_names_round_trip_and_foreign_names_are_not_containers() -> None:
    from tiers.local_device import container_relpath, parse_container_name

    assert container_relpath(0x1234) == "extents/34/1234-0"
    assert container_relpath(0x1234, 2) == "extents/34/1234-2"
    assert parse_container_name("34", "1234-0") == (0x1234, 0)
    assert parse_container_name("34", "1234-1f") == (0x1234, 0x1F)
    foreign = [("35", "1234-0"), ("34", "1234.0"), ("34", "1234"), ("34", "01234-0"), ("00", "0-0")]
    for fan, name in [*foreign, ("34", "1234-01"), ("34", "x-0")]:
        assert parse_container_name(fan, name) is None


async def test_a_file_past_a_tib_spreads_over_containers_each_below_a_tib(
    device: LocalDevice, nowait: None
) -> None:
    """A FUSE file may reach 2**63 bytes, ext4 files 16 TiB: each container holds one TiB."""
    per_container = SEGMENT_BYTES // device.extent_size
    near, far = ExtentKey(3, 5), ExtentKey(3, 40 * per_container + 7)  # 40 TiB in
    await device.write(near, 0, b"n" * 4096)
    await device.write(far, 10, b"f" * 4096)
    assert sorted(device.list_containers()) == [(3, 0), (3, 40)]
    assert os.stat(device.path_of((3, 40))).st_size == 7 * device.extent_size + 10 + 4096
    assert bytes(await device.read(far, 10, 4096)) == b"f" * 4096
    assert device.read_inline(*far, 10, 4096) == b"f" * 4096
    assert sorted(device.list_copies()) == [near, far]
    assert device.copy_length(far) == 10 + 4096
    await device.sync([near, far])
    await device.delete(far)
    assert sorted(device.list_copies()) == [near]
    assert (3, 40) in device._fds
    await device.delete_inode(3)
    assert list(device.list_containers()) == []
    assert not [segment for segment in device._fds if segment[0] == 3]  # far ones too


async def test_inline_writes_stop_while_threaded_and_resume_after_the_clean_period(
    tmp_path: Path,
) -> None:
    (tmp_path / "d").mkdir()
    device = LocalDevice("hdd0", tmp_path / "d", 1 << 30, policy=IOPolicy(clean_period_s=0.2))
    device.initialise()
    try:
        await device.write(KEY, 0, b"a" * 4096)  # creates the container, caches its fd
        assert device.write_inline(KEY.ino, KEY.index, 0, b"b" * 4096)
        device.force_threaded("test")
        assert not device.write_inline(KEY.ino, KEY.index, 0, b"c" * 4096)  # nothing written
        assert bytes(await device.read(KEY, 0, 4096)) == b"b" * 4096
        time.sleep(0.25)
        # The general path asks ``mode``, which ends the threaded period once it is over...
        await device.write(KEY, 0, b"d" * 4096)
        assert device.mode is IOMode.INLINE
        threaded = device.counters.threaded_ops
        assert device.write_inline(KEY.ino, KEY.index, 4096, b"e" * 4096)  # ...then inline again
        assert device.counters.threaded_ops == threaded
        assert bytes(await device.read(KEY, 0, 8192)) == b"d" * 4096 + b"e" * 4096
    finally:
        device.close()
