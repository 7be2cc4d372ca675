"""The mount fixture itself: whatever state a test leaves the daemon in, cleanup unmounts and
ends it, and kills nothing but its own PIDs."""

from __future__ import annotations

import errno
import os
import signal
import threading
import time
from typing import Any

import pytest
from mountfs import ShadowMount, is_mounted

pytestmark = [pytest.mark.mount, pytest.mark.timeout(60)]


def test_cleanup_of_a_hung_daemon_aborts_the_connection(fs: ShadowMount) -> None:
    fs.path("a").write_bytes(b"x" * 100_000)  # dirty pages a plain umount would wait on
    os.kill(fs.pid, signal.SIGSTOP)
    outcome: list[Any] = []

    def client() -> None:  # blocked in the hung mount until the connection is aborted
        try:
            fs.path("b").write_bytes(b"y")
            outcome.append("ok")
        except OSError as exc:
            outcome.append(exc.errno)

    t = threading.Thread(target=client, daemon=True)
    t.start()
    time.sleep(0.3)
    assert t.is_alive() and not outcome
    started = time.monotonic()
    fs.cleanup()
    assert time.monotonic() - started < 20
    assert not is_mounted(fs.mnt)
    assert fs.proc.returncode == -signal.SIGKILL
    t.join(10)
    assert not t.is_alive()
    assert outcome in ([errno.ENOTCONN], [errno.ECONNABORTED], [errno.ENOENT])


def test_cleanup_after_a_kill_and_after_a_clean_unmount(fs: ShadowMount) -> None:
    fs.kill9(detach=False)  # a dead daemon whose mount is still attached
    assert is_mounted(fs.mnt)
    fs.cleanup()
    assert not is_mounted(fs.mnt)
    fs.start()
    fs.expect_log("last shutdown was not clean|recovery")
    fs.umount()
    fs.cleanup()  # nothing left to do, and nothing goes wrong
    assert not is_mounted(fs.mnt)
    assert all(p.poll() is not None for p in fs.procs)
