"""The daemon's malloc tuning: glibc accepts it, and freed read buffers then stay in the heap."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.timeout(30)


def test_keep_freed_buffers_is_accepted_and_keeps_a_freed_mib_in_the_heap() -> None:
    # In a child process: the settings last for the life of the process that makes them.
    script = textwrap.dedent(
        """
        import ctypes, resource
        from shadowfs.daemon import keep_freed_buffers

        class Mallinfo2(ctypes.Structure):
            _fields_ = [(n, ctypes.c_size_t) for n in (
                "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                "uordblks", "fordblks", "keepcost")]

        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = Mallinfo2
        assert keep_freed_buffers()
        mapped = libc.mallinfo2().hblks
        buffers = [bytearray(1 << 20) for _ in range(8)]
        assert libc.mallinfo2().hblks == mapped  # 1 MiB buffers come from the heap, not mmap
        del buffers
        assert libc.mallinfo2().fordblks >= 8 << 20  # and stay there, free, once freed
        print("ok")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=20
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
