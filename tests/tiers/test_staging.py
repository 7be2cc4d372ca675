"""Read-ahead buffers (tiers.staging) behind LocalDevice: right bytes, never stale ones."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

import tiers.local_device as local_device
import tiers.staging as staging
from tiers.device import ExtentKey
from tiers.local_device import IOPolicy, LocalDevice

MiB = 1 << 20


def _make(tmp_path: Path, **policy: object) -> LocalDevice:
    (tmp_path / "d").mkdir()
    dev = LocalDevice("hdd0", tmp_path / "d", 1 << 30, IOPolicy(**policy))  # type: ignore[arg-type]
    dev.initialise()
    return dev


@pytest.fixture
def device(tmp_path: Path) -> Iterator[LocalDevice]:
    dev = _make(tmp_path)
    yield dev
    dev.close()


async def _fill(device: LocalDevice, keys: list[ExtentKey], size: int = MiB) -> list[bytes]:
    contents = []
    for key in keys:
        data = os.urandom(size)
        await device.write(key, 0, data)
        contents.append(data)
    await device.sync(keys)
    for key in keys:  # cold: the copies' pages out of the page cache
        fd = os.open(device.path_of(key), os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    return contents


async def test_a_stream_is_answered_from_the_buffers(device: LocalDevice) -> None:
    keys = [ExtentKey(5, i) for i in range(4)]
    contents = await _fill(device, keys)
    await device.prefetch(keys, MiB)
    assert set(device._stage.entries) == set(keys)
    for key, data in zip(keys, contents, strict=True):
        first = device.read_staged(key, 0, MiB // 2)
        second = device.read_cached(key.ino, key.index, MiB // 2, 4096)
        assert first is not None and bytes(first) == data[: MiB // 2]
        assert second is not None and bytes(second) == data[MiB // 2 : MiB // 2 + 4096]
        rest = await device.read(key, MiB // 2 + 4096, MiB // 2 - 4096)
        assert bytes(rest) == data[MiB // 2 + 4096 :]
    assert device.counters.staged_hits == 3 * len(keys)
    assert not device._stage.entries  # each released once read to its end
    assert len(device._stage._pool) == len(keys)  # and its buffer back in the pool
    assert not device._pins


async def test_a_short_copy_is_staged_to_its_end_only(device: LocalDevice) -> None:
    key = ExtentKey(5, 0)
    data = os.urandom(10_000)  # not a multiple of the O_DIRECT alignment
    await device.write(key, 0, data)
    await device.sync([key])
    await device.prefetch([key], MiB)
    assert device._stage.entries[key].n == len(data)
    assert device.read_staged(key, 8192, 4096) is None  # past what is staged
    view = device.read_staged(key, 0, len(data))
    assert view is not None and bytes(view) == data


@pytest.mark.parametrize(
    "change", ["write_inline", "write", "threaded_write", "truncate", "delete"]
)
async def test_a_change_to_a_staged_copy_is_never_served_stale(
    device: LocalDevice, change: str
) -> None:
    key = ExtentKey(5, 0)
    (old,) = await _fill(device, [key])
    await device.prefetch([key], MiB)
    assert key in device._stage.entries
    new = os.urandom(4096)
    if change == "write_inline":
        assert device.write_inline(key, 0, new)
    elif change == "write":
        await device.write(key, 0, new)
    elif change == "threaded_write":
        device.force_threaded("test")
        await device.write(key, 0, new)
    elif change == "truncate":
        await device.truncate(key, 4096)
        new = old[:4096]
    else:
        await device.delete(key)
    assert key not in device._stage.entries
    got = await device.read(key, 0, 4096)
    assert bytes(got) == (b"" if change == "delete" else new)


async def test_a_write_while_the_read_ahead_is_out_wins(
    device: LocalDevice, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thread has read the old bytes when the write lands; they must not be served."""
    key = ExtentKey(5, 0)
    await _fill(device, [key])
    has_read, may_report = threading.Event(), threading.Event()
    real = staging._read_whole

    def slow_read(*args: object) -> tuple[int, bool]:
        result = real(*args)  # type: ignore[arg-type]
        has_read.set()
        may_report.wait(10)
        return result

    monkeypatch.setattr(staging, "_read_whole", slow_read)
    new = os.urandom(MiB)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(device.prefetch, [key], MiB)
        await trio.to_thread.run_sync(has_read.wait, 10)
        await device.write(key, 0, new)
        may_report.set()
    assert bytes(await device.read(key, 0, MiB)) == new
    assert device._stage._pool  # the stale buffer came back once the thread let go


async def test_a_read_ahead_during_a_threaded_write_is_dropped_when_it_completes(
    device: LocalDevice, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream may stage a copy while a threaded write to it is out: what it read raced the
    write, so the write's completion drops it."""
    key = ExtentKey(5, 0)
    await _fill(device, [key])
    device.force_threaded("test")
    writing, may_write = threading.Event(), threading.Event()
    real = local_device._pwrite_all

    def slow_pwrite(fd: int, data: bytes, offset: int) -> int:
        writing.set()
        may_write.wait(10)
        return real(fd, data, offset)

    monkeypatch.setattr(local_device, "_pwrite_all", slow_pwrite)
    new = os.urandom(MiB)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(device.write, key, 0, new)
        await trio.to_thread.run_sync(writing.wait, 10)
        await device.prefetch([key], MiB)  # stages the old bytes
        assert device._stage.entries[key].n == MiB
        may_write.set()
    assert key not in device._stage.entries
    assert bytes(await device.read(key, 0, MiB)) == new


async def test_a_reader_waits_for_its_read_ahead_instead_of_reading_twice(
    device: LocalDevice, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = ExtentKey(5, 0)
    (data,) = await _fill(device, [key])
    may_read = threading.Event()
    real = staging._read_whole

    def gated(*args: object) -> tuple[int, bool]:
        may_read.wait(10)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(staging, "_read_whole", gated)
    got: list[bytes] = []

    async def reader() -> None:
        got.append(bytes(await device.read(key, 4096, 8192)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(device.prefetch, [key], MiB)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        assert not got and device._stage.pending(key) is not None
        may_read.set()
    assert got == [data[4096:12288]]
    assert device.counters.staged_hits == 1


async def test_more_copies_than_buffers_are_advised_instead(tmp_path: Path) -> None:
    device = _make(tmp_path, stage_bytes=2 * MiB)
    try:
        keys = [ExtentKey(5, i) for i in range(5)]
        contents = await _fill(device, keys)
        await device.prefetch(keys, MiB)
        assert set(device._stage.entries) == set(keys[:2])
        assert all(key in device._fds for key in keys)  # the others were opened and advised
        for key, data in zip(keys, contents, strict=True):
            assert bytes(await device.read(key, 0, MiB)) == data
        # Unread entries are evicted oldest first for a later stream.
        await device.prefetch(keys[2:4], MiB)
        await device.prefetch([keys[4]], MiB)
        assert list(device._stage.entries) == [keys[3], keys[4]]
    finally:
        device.close()


async def test_a_read_ahead_past_its_deadline_gives_up_its_buffers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = _make(tmp_path, stage_bytes=2 * MiB, deadline_s=0.2)
    release = threading.Event()
    try:
        keys = [ExtentKey(5, 0), ExtentKey(5, 1)]
        contents = await _fill(device, keys)
        real = staging._read_whole

        def hung(*args: object) -> tuple[int, bool]:
            release.wait(10)
            return real(*args)  # type: ignore[arg-type]

        monkeypatch.setattr(staging, "_read_whole", hung)
        got: list[bytes] = []

        async def reader() -> None:
            got.append(bytes(await device.read(keys[0], 0, 4096)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(device.prefetch, keys, MiB)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(reader)
        # The waiting reader was let go and read the copy the ordinary way.
        assert got == [contents[0][:4096]]
        assert device.counters.timeouts >= 1 and not device._stage.entries
        # The hung thread may still write into those buffers: none is handed out again.
        assert device._stage.claim(keys, MiB) == []
    finally:
        release.set()
        device.close()


async def test_without_o_direct_the_copies_are_still_staged(
    device: LocalDevice, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = [ExtentKey(5, i) for i in range(6)]  # several per thread: the rest advised
    contents = await _fill(device, keys)
    real_open = os.open

    def no_direct(path: str, flags: int, *args: object) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "O_DIRECT not supported here")
        return real_open(path, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", no_direct)
    await device.prefetch(keys, MiB)
    for key, data in zip(keys, contents, strict=True):
        view = device.read_staged(key, 0, MiB)
        assert view is not None and bytes(view) == data


async def test_a_copy_already_in_the_page_cache_is_staged_from_it(
    device: LocalDevice, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = ExtentKey(5, 0)
    data = os.urandom(MiB)
    await device.write(key, 0, data)  # dirty in the page cache, not on the disk yet
    opened_direct: list[str] = []
    real_open = os.open

    def spy(path: str, flags: int, *args: object) -> int:
        if flags & os.O_DIRECT:
            opened_direct.append(path)
        return real_open(path, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", spy)
    await device.prefetch([key], MiB)
    view = device.read_staged(key, 0, MiB)
    assert view is not None and bytes(view) == data
    assert opened_direct == []  # no disk read for what memory already held
