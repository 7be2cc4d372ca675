"""The kernel page cache that keep_cache and the writeback cache preserve never serves stale
bytes: an O_DIRECT descriptor and a buffered descriptor of the same file (in one process or
two) see each other's writes, in both directions (issue 3, point 5)."""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
import time
from typing import Any

import pytest
from mountfs import ShadowMount

pytestmark = [pytest.mark.mount, pytest.mark.timeout(60)]

MiB = 1 << 20


def block(tag: int, n: int) -> bytes:
    return bytes([tag]) * n


def aligned(data: bytes) -> mmap.mmap:
    buf = mmap.mmap(-1, len(data))
    buf.write(data)
    return buf


def test_o_direct_writes_are_seen_by_a_cached_buffered_reader(fs: ShadowMount) -> None:
    p = fs.path("vm.img")
    p.write_bytes(block(1, 4 * MiB))
    reader = os.open(p, os.O_RDONLY)
    writer = os.open(p, os.O_RDWR | os.O_DIRECT)
    try:
        assert os.pread(reader, 4 * MiB, 0) == block(1, 4 * MiB)  # now in the page cache
        # aligned, unaligned and extent-straddling O_DIRECT writes
        os.pwrite(writer, aligned(block(2, 64 * 1024)), 0)
        os.pwrite(writer, block(3, 1000), 70_000)
        os.pwrite(writer, block(4, 10_000), MiB - 5000)
        want = bytearray(block(1, 4 * MiB))
        want[0 : 64 * 1024] = block(2, 64 * 1024)
        want[70_000:71_000] = block(3, 1000)
        want[MiB - 5000 : MiB + 5000] = block(4, 10_000)
        assert os.pread(reader, 4 * MiB, 0) == bytes(want)
        # a reader opened afterwards (keep_cache keeps the cache across opens) too
        with open(p, "rb") as f:
            assert f.read() == bytes(want)
        # and an mmap of the file
        with open(p, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
            os.pwrite(writer, block(5, 4096), 2 * MiB)
            want[2 * MiB : 2 * MiB + 4096] = block(5, 4096)
            assert m[2 * MiB : 2 * MiB + 4096] == block(5, 4096)
    finally:
        os.close(reader)
        os.close(writer)
    fs.drop_caches()
    assert p.read_bytes() == bytes(want)


def test_buffered_writes_are_seen_by_an_o_direct_reader(fs: ShadowMount) -> None:
    p = fs.path("vm.img")
    p.write_bytes(block(1, 2 * MiB))
    direct = os.open(p, os.O_RDWR | os.O_DIRECT)
    buffered = os.open(p, os.O_RDWR)
    try:
        out = mmap.mmap(-1, 2 * MiB)
        assert os.preadv(direct, [out], 0) == 2 * MiB
        # dirty pages in the writeback cache, not yet written back
        os.pwrite(buffered, block(7, 12_345), 100)
        os.pwrite(buffered, block(8, 4096), MiB)
        want = bytearray(block(1, 2 * MiB))
        want[100 : 100 + 12_345] = block(7, 12_345)
        want[MiB : MiB + 4096] = block(8, 4096)
        assert os.preadv(direct, [out], 0) == 2 * MiB
        assert bytes(out) == bytes(want)
        assert os.pread(direct, 50, 12_400) == bytes(want[12_400:12_450])  # unaligned
        # an extension made through the cache is visible to O_DIRECT
        os.pwrite(buffered, block(9, 5000), 2 * MiB + 3000)
        assert os.fstat(direct).st_size == 2 * MiB + 8000
        assert os.pread(direct, 8000, 2 * MiB) == bytes(3000) + block(9, 5000)
    finally:
        os.close(direct)
        os.close(buffered)


def test_truncate_through_one_descriptor_is_seen_by_the_other(fs: ShadowMount) -> None:
    p = fs.path("t")
    p.write_bytes(block(1, 3 * MiB))
    direct = os.open(p, os.O_RDWR | os.O_DIRECT)
    buffered = os.open(p, os.O_RDWR)
    try:
        assert os.pread(buffered, 3 * MiB, 0) == block(1, 3 * MiB)
        os.ftruncate(direct, MiB + 10)
        os.ftruncate(direct, 3 * MiB)
        assert os.pread(buffered, 3 * MiB, 0) == block(1, MiB + 10) + bytes(2 * MiB - 10)
        os.pwrite(buffered, block(2, 100), 2 * MiB)
        os.ftruncate(buffered, 2 * MiB + 50)
        assert os.pread(direct, 200, 2 * MiB - 100) == bytes(100) + block(2, 50)
    finally:
        os.close(direct)
        os.close(buffered)


_PEER = r"""
import os, sys
path, mode, off, n, tag = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
if mode == "write-direct":
    import mmap
    fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, n)
    buf.write(bytes([tag]) * n)
    assert os.pwrite(fd, buf, off) == n
else:
    import mmap
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, n)
    assert os.preadv(fd, [buf], off) == n
    sys.stdout.buffer.write(bytes(buf))
os.close(fd)
"""


def _peer(*args: Any) -> bytes:
    result = subprocess.run(
        [sys.executable, "-c", _PEER, *map(str, args)], capture_output=True, timeout=30
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def test_coherent_between_processes(fs: ShadowMount) -> None:
    p = fs.path("shared.img")
    p.write_bytes(block(1, MiB))
    fd = os.open(p, os.O_RDWR)
    try:
        assert os.pread(fd, MiB, 0) == block(1, MiB)  # cached in this process
        for round_ in range(20):
            off = (round_ * 37 * 4096) % (MiB - 8192)
            _peer(p, "write-direct", off, 8192, 10 + round_)
            assert os.pread(fd, 8192, off) == block(10 + round_, 8192)
            os.pwrite(fd, block(100 + round_, 777), off + 3)  # dirty page, not written back
            assert _peer(p, "read-direct", off, 780, 0) == block(10 + round_, 3) + block(
                100 + round_, 777
            )
    finally:
        os.close(fd)


def test_o_direct_extension_is_seen_by_a_buffered_reader(fs: ShadowMount) -> None:
    p = fs.path("grow.img")
    p.write_bytes(block(1, 10_000))
    reader = os.open(p, os.O_RDONLY)
    writer = os.open(p, os.O_WRONLY | os.O_DIRECT)
    try:
        assert os.pread(reader, 20_000, 0) == block(1, 10_000)  # EOF cached at 10,000
        os.pwrite(writer, block(2, 5000), 3 * MiB)  # extends past a hole
        assert os.fstat(reader).st_size == 3 * MiB + 5000
        assert p.stat().st_size == 3 * MiB + 5000
        got = os.pread(reader, 3 * MiB + 10_000, 0)
        assert got == block(1, 10_000) + bytes(3 * MiB - 10_000) + block(2, 5000)
    finally:
        os.close(reader)
        os.close(writer)
    fs.umount()
    fs.start()
    assert p.read_bytes() == block(1, 10_000) + bytes(3 * MiB - 10_000) + block(2, 5000)


def test_inodes_the_kernel_forgets_during_a_flush_read_back_whole(shadowfs_mount: Any) -> None:
    """The kernel may forget an inode (here: drop_caches) while a flush has taken its rows
    but not yet committed them; the daemon must not reload it from the database then, or a
    file written a moment ago reads back empty."""
    from pathlib import Path

    fs: ShadowMount = shadowfs_mount(extra="[metadata]\nflush_interval_s = 0.05\n")
    ballast = os.open(fs.path("ballast"), os.O_CREAT | os.O_WRONLY | os.O_DIRECT, 0o644)
    big = aligned(os.urandom(32 * MiB))
    bad = []
    try:
        for i in range(20):
            os.pwrite(ballast, big, 0)  # gives the next flush 32 MiB to fsync
            data = os.urandom(MiB)
            p = fs.path(f"f{i}")
            fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_DIRECT, 0o644)
            try:
                os.write(fd, aligned(data))
            finally:
                os.close(fd)
            time.sleep(0.03 + (i % 4) * 0.015)  # a flush is fsyncing the ballast, holding f{i}
            Path("/proc/sys/vm/drop_caches").write_text("2")  # the kernel forgets f{i}
            got = p.read_bytes()
            if got != data:
                bad.append((i, len(got)))
    finally:
        os.close(ballast)
    assert not bad, f"files read back wrong after an eviction (index, length): {bad}"
