"""A passthrough FUSE filesystem whose reads, writes and fsyncs can be made slow at will.

There is no dm-delay here, so a test that needs a device that really blocks in the kernel
mounts this over a directory and points a shadowfs device at the mount. The delay in seconds is
read from a control file (re-read at most every 50 ms) so a test can slow the device mid-run.

    python -m tests.mount.slowfs SOURCE MOUNTPOINT CONTROL_FILE
"""

from __future__ import annotations

import os
import sys
import time

import pyfuse3

from bench.passthrough import Passthrough, _os, run


class SlowPassthrough(Passthrough):
    def __init__(self, source: str, control: str) -> None:
        super().__init__(source)
        self._control = control
        self._delay = 0.0
        self._checked = 0.0

    def _stall(self) -> None:
        now = time.monotonic()
        if now - self._checked > 0.05:
            self._checked = now
            try:
                with open(self._control) as f:
                    self._delay = float(f.read().strip() or 0)
            except (FileNotFoundError, ValueError):
                self._delay = 0.0
        if self._delay:
            time.sleep(self._delay)  # blocks this daemon: the device is slow for everyone

    async def read(self, fh, off, size):  # type: ignore[no-untyped-def]
        self._stall()
        return await super().read(fh, off, size)

    async def write(self, fh, off, buf):  # type: ignore[no-untyped-def]
        self._stall()
        return await super().write(fh, off, buf)

    async def fsync(self, fh, datasync):  # type: ignore[no-untyped-def]
        self._stall()
        await super().fsync(fh, datasync)

    async def mkdir(self, parent_inode, name, mode, ctx):  # type: ignore[no-untyped-def]
        path = self._child(parent_inode, name)
        _os(os.mkdir, path, mode)
        return self._attr(self._inode(path))

    async def rename(self, p_old, n_old, p_new, n_new, flags, ctx):  # type: ignore[no-untyped-def]
        old, new = self._child(p_old, n_old), self._child(p_new, n_new)
        _os(os.rename, old, new)
        ino = self._inodes.pop(old, None)
        if ino is not None:
            self._inodes[new] = ino
            self._paths[ino] = new

    async def fsyncdir(self, fh, datasync):  # type: ignore[no-untyped-def]
        return None

    async def flush(self, fh):  # type: ignore[no-untyped-def]
        return None


if __name__ == "__main__":
    source, mountpoint, control = sys.argv[1:4]
    run(SlowPassthrough(os.path.realpath(source), control), mountpoint, "slowfs", "slowfs")
    _ = pyfuse3
