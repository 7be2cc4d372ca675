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
