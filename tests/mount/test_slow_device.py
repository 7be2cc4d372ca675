"""A device that turns slow mid-run must not stall the mount (invariant 4).

The backing device is a directory on a FUSE passthrough whose reads we can slow at will. While
one reader waits on the slow device, metadata operations and page-cache reads through the
shadowfs mount keep answering; the device moves to threaded I/O; and an I/O that outlives the
deadline fails with EIO instead of hanging, while the mount still answers.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.mount, pytest.mark.timeout(180)]
PY = sys.executable


def _mounted(path: Path) -> bool:
    target = os.path.abspath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def _wait_mounted(path: Path, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not _mounted(path):
        assert proc.poll() is None, "slowfs exited before mounting"
        assert time.monotonic() < deadline, "slowfs did not mount"
        time.sleep(0.05)


def _unmount(path: Path) -> None:
    if _mounted(path) and subprocess.run(["fusermount3", "-u", str(path)]).returncode:
        subprocess.run(["fusermount3", "-uz", str(path)])


@pytest.fixture
def slow_mount(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    src, dev, mnt, state = (tmp_path / n for n in ("src", "dev", "mnt", "state"))
    for d in (src, dev, mnt):
        d.mkdir()
    control = tmp_path / "delay"
    control.write_text("0")
    slowfs = subprocess.Popen(
        [PY, "-m", "tests.mount.slowfs", str(src), str(dev), str(control)],
        cwd=Path(__file__).parents[2],
    )
    config = tmp_path / "fs.toml"
    config.write_text(
        f'backing = "hdd0"\nstate_dir = "{state}"\n'
        f'[[devices]]\nname = "hdd0"\npath = "{dev}"\nclass = "hdd"\ncapacity = "1 GiB"\n'
        "[io]\ndeadline_s = 2.0\nslow_threshold_ms = 50\nclean_period_s = 600\n"
        "[metadata]\nflush_interval_s = 600\n"
    )
    try:
        _wait_mounted(dev, slowfs)
        r = subprocess.run(
            [PY, "-m", "shadowfs", "mount", str(config), str(mnt)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        yield mnt, control, state
    finally:
        control.write_text("0")
        if _mounted(mnt):
            r = subprocess.run(
                [PY, "-m", "shadowfs", "umount", str(mnt)], capture_output=True, timeout=60
            )
            _unmount(mnt)
        _unmount(dev)
        slowfs.terminate()
        try:
            slowfs.wait(10)
        except subprocess.TimeoutExpired:
            slowfs.kill()


def _status(mnt: Path) -> dict[str, Any]:
    cmd = [PY, "-m", "shadowfs", "status", str(mnt), "--json"]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)  # type: ignore[no-any-return]


def _direct_read(path: Path, size: int = 65536) -> bytes:
    buf = mmap.mmap(-1, size)  # page-aligned, as O_DIRECT wants
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        n = os.preadv(fd, [buf], 0)
        return bytes(buf[:n])
    finally:
        os.close(fd)


def test_slow_device_does_not_stall_the_mount(slow_mount: tuple[Path, Path, Path]) -> None:
    mnt, control, state = slow_mount
    hot = mnt / "hot.img"
    for path, byte in ((mnt / "cold.img"), b"c"), (hot, b"h"):
        # written back and durable now, so that no later close has dirty pages to push to
        # the device once it is slow (that would be this file's own I/O, not a stall)
        with open(path, "wb") as f:
            f.write(byte * 65536)
            f.flush()
            os.fsync(f.fileno())
    assert hot.read_bytes() == b"h" * 65536  # now in the kernel page cache (keep_cache)
    assert _direct_read(mnt / "cold.img") == b"c" * 65536

    control.write_text("1.0")
    time.sleep(0.1)
    result: dict[str, object] = {}

    def slow_reader() -> None:
        t0 = time.monotonic()
        result["data"] = _direct_read(mnt / "cold.img")
        result["seconds"] = time.monotonic() - t0

    reader = threading.Thread(target=slow_reader)
    reader.start()
    time.sleep(0.2)  # the reader is now waiting on the slow device
    worst = 0.0
    for _ in range(10):
        t0 = time.monotonic()
        os.stat(mnt / "hot.img")
        os.listdir(mnt)
        os.statvfs(mnt)
        (mnt / f"new-{_}").touch()
        assert hot.read_bytes() == b"h" * 65536
        worst = max(worst, time.monotonic() - t0)
    reader.join(30)
    assert result["data"] == b"c" * 65536
    assert result["seconds"] >= 0.9  # it really waited on the device
    assert worst < 0.5, f"the mount stalled for {worst:.2f} s behind a slow device"

    status = _status(mnt)
    hdd0 = status["devices"][0]
    assert hdd0["io_mode"] == "threaded"

    # A device slower than the deadline: the read fails with EIO, the mount keeps answering.
    control.write_text("5")
    time.sleep(0.1)
    t0 = time.monotonic()
    with pytest.raises(OSError) as exc:
        _direct_read(mnt / "cold.img")
    assert exc.value.errno == errno.EIO
    assert time.monotonic() - t0 < 4.5
    t0 = time.monotonic()
    os.listdir(mnt)
    assert time.monotonic() - t0 < 0.5
    control.write_text("0")
    status = _status(mnt)
    assert status["devices"][0]["counters"]["timeouts"] >= 1
