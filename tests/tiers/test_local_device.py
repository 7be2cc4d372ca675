"""LocalDevice's read paths: the synchronous page-cache hit, partial hits, short copies."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tiers.device import ExtentKey
from tiers.local_device import LocalDevice

KEY = ExtentKey(7, 3)
MiB = 1 << 20


@pytest.fixture
def device(tmp_path: Path) -> Iterator[LocalDevice]:
    (tmp_path / "d").mkdir()
    dev = LocalDevice("hdd0", tmp_path / "d", 1 << 30)
    dev.initialise()
    yield dev
    dev.close()


def _evict(device: LocalDevice, offset: int, length: int) -> None:
    """Drop clean pages of the copy from the page cache (written back first)."""
    fd = os.open(device.path_of(KEY), os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


async def test_read_cached_answers_hits_and_declines_everything_else(device: LocalDevice) -> None:
    data = os.urandom(MiB)
    assert device.read_cached(*KEY, 0, 4096) is None  # no such copy: not its business
    await device.write(KEY, 0, data)
    assert device.read_cached(*KEY, 4096, 4096) == data[4096:8192]
    assert device.counters.cache_hits == 1 and device.counters.reads == 1
    assert device.read_cached(*KEY, MiB - 10, 4096) is None  # past the end: short
    _evict(device, 0, MiB)
    if device.read_cached(*KEY, 0, 4096) is not None:
        pytest.skip("the kernel kept the pages despite DONTNEED")
    assert await device.read(KEY, 0, 4096) == data[:4096]  # the miss path reads it


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
    _evict(device, 0, MiB)
    assert bytes(await device.read(KEY, 100, 300_000)) == data[100:300_100]
    assert device.counters.threaded_ops >= 1


async def test_prefetch_opens_the_copies_for_the_reads_that_follow(
    device: LocalDevice, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = [ExtentKey(9, i) for i in range(4)]
    for key in keys[:3]:  # the fourth copy does not exist
        await device.write(key, 0, bytes([key.index]) * 4096)
    device._forget_fd(keys[0])
    device._forget_fd(keys[1])
    kept = device._fds[keys[2]]
    await device.prefetch(keys)
    assert device._fds[keys[2]] == kept  # a cached fd is used, not replaced
    assert keys[0] in device._fds and keys[1] in device._fds
    assert keys[3] not in device._fds
    assert not device._pins  # every pin taken for the thread was given back

    opens: list[str] = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda *a, **k: opens.append(a[0]) or real_open(*a, **k))
    for key in keys[:3]:
        assert device.read_cached(*key, 0, 4096) == bytes([key.index]) * 4096
    assert opens == []  # the reads found their fds


async def test_prefetch_caches_no_fd_of_a_copy_deleted_meanwhile(
    device: LocalDevice, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = ExtentKey(9, 0)
    await device.write(key, 0, b"x" * 4096)
    device._forget_fd(key)
    real_in_thread = device._in_thread

    async def delete_during(op: str, fn: object, *args: object) -> object:
        result = await real_in_thread(op, fn, *args)  # type: ignore[arg-type]
        if op == "prefetch":
            await device.delete(key)  # lands while the prefetch's thread was out
        return result

    monkeypatch.setattr(device, "_in_thread", delete_during)
    await device.prefetch([key])
    assert key not in device._fds
    monkeypatch.undo()
    assert await device.read(key, 0, 4096) == b""  # gone, not served from a stale fd
