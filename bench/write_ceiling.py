"""Writeback daemons that store the bytes off the event loop: the write ceiling's other designs.

The write diagnostic (bench.datapath.probe_write_ceiling) bounds what a daemon storing bytes
through the kernel's writeback cache reaches. `bench.passthrough --writeback` is the simplest
such daemon: one inline `os.pwrite` per request, on the trio thread. A daemon may do better by
handing its writes to threads, so the bound is only as good as the designs tried; this module
adds two. Both are the writeback passthrough with its `write` replaced:

- `--threads N`: each write is an `os.pwrite` in one of N threads (the event loop receives the
  next request while the page cache is filled);
- `--threads N --direct`: the same, but through an O_DIRECT descriptor from a page-aligned
  bounce buffer, so the backing page cache is not filled at all (writes the kernel sends
  unaligned, which it does not for a sequential writer, fall back to `os.pwrite`).

    python -m bench.write_ceiling SOURCE_DIR MOUNTPOINT --threads N [--direct]
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import mmap
import os
import threading

import numpy
import pyfuse3
import trio

from bench.passthrough import Passthrough, run

ALIGN = 4096
_bounce = threading.local()


def pwrite_direct(dfd: int, data: bytes, offset: int) -> int | None:
    """Write through this thread's aligned bounce buffer; None if ``offset`` or the length is
    not aligned (the caller then writes through the page cache)."""
    n = len(data)
    if (offset | n) % ALIGN:
        return None
    if getattr(_bounce, "buf", None) is None or len(_bounce.buf) < n:
        _bounce.buf = mmap.mmap(-1, max(n, 1 << 20), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        _bounce.anchor = ctypes.c_char.from_buffer(_bounce.buf)
    source = numpy.frombuffer(data, dtype=numpy.uint8)  # its address, without a copy
    ctypes.memmove(ctypes.addressof(_bounce.anchor), source.ctypes.data, n)  # GIL released
    with memoryview(_bounce.buf) as view:
        return os.pwrite(dfd, view[:n], offset)


class ThreadedWriteback(Passthrough):
    """The writeback passthrough, its writes done in threads (optionally O_DIRECT)."""

    def __init__(self, source: str, threads: int, direct: bool = False) -> None:
        super().__init__(source, writeback=True)
        self._limiter = trio.CapacityLimiter(threads)
        self._direct = direct
        self._direct_fds: dict[int, int] = {}

    async def write(self, fh, off, buf):  # type: ignore[no-untyped-def]
        try:
            if self._direct:
                written = await trio.to_thread.run_sync(
                    pwrite_direct, self._direct_fd(fh), buf, off, limiter=self._limiter
                )
                if written is not None:
                    return written
            return await trio.to_thread.run_sync(os.pwrite, fh, buf, off, limiter=self._limiter)
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None

    def _direct_fd(self, fh: int) -> int:
        if fh not in self._direct_fds:
            self._direct_fds[fh] = os.open(f"/proc/self/fd/{fh}", os.O_WRONLY | os.O_DIRECT)
        return self._direct_fds[fh]

    async def release(self, fh):  # type: ignore[no-untyped-def]
        direct = self._direct_fds.pop(fh, None)
        if direct is not None:
            os.close(direct)
        await super().release(fh)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("mountpoint")
    parser.add_argument("--threads", type=int, required=True, help="writer threads (>= 1)")
    parser.add_argument("--direct", action="store_true", help="O_DIRECT from a bounce buffer")
    args = parser.parse_args()
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    ops = ThreadedWriteback(args.source, args.threads, args.direct)
    run(ops, args.mountpoint, "write-ceiling", "writeceiling")


if __name__ == "__main__":
    main()
