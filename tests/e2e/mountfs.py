"""Mounting shadowfs for the end-to-end tests: a real daemon in a subprocess, on tmp_path devices.

``shadowfs_mount`` (conftest.py) is a factory: ``fs = shadowfs_mount()`` writes a one-device
config (a single device, so the "share one filesystem" warning cannot appear), starts
``python -m shadowfs mount --foreground`` with subprocess.Popen (so the test owns the
daemon's exact PID) and returns once the control socket answers for that PID and the
mountpoint is a FUSE mount. ``fs.kill9()``, ``fs.remount()`` and ``fs.umount()`` drive
crash tests.

Teardown always runs, whatever the test did. A daemon that answers its control socket is
unmounted with ``shadowfs umount``, then ``fusermount3 -u`` if the mount is still there; if
that fails, or the daemon is hung or dead, the FUSE connection is aborted through fusectl
(/sys/fs/fuse/connections/<minor>/abort, mounting fusectl for the moment if the system has
not) and the mount detached with ``fusermount3 -uz``. Then the daemon processes this fixture
started are ended by PID (SIGTERM, or SIGKILL when hung), never by name, and a registry entry
a killed daemon of ours left behind is removed.

After each test the daemon log must hold no WARNING, ERROR, CRITICAL or Traceback line that
the test did not declare with ``fs.expect_log(regex)``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SHADOWFS = [sys.executable, "-m", "shadowfs"]
MOUNT_TIMEOUT = 30.0
_BAD_LOG = re.compile(r" (WARNING|ERROR|CRITICAL) |Traceback")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``shadowfs ARGS`` from this checkout, captured."""
    return subprocess.run(
        [*SHADOWFS, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
        cwd=REPO,
    )


def mount_entry(mountpoint: Path) -> list[str] | None:
    """The /proc/self/mountinfo fields of the mount at ``mountpoint`` (no stat of it: a dead
    or hung FUSE mount must not block the test process)."""
    target = os.path.abspath(mountpoint)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == target:
                return fields
    return None


def is_mounted(mountpoint: Path) -> bool:
    return mount_entry(mountpoint) is not None


def _abort_connection(mountpoint: Path) -> None:
    """Abort the FUSE connection of ``mountpoint`` through fusectl (mounting fusectl if the
    system has not), so that a hung daemon cannot block the unmount."""
    fields = mount_entry(mountpoint)
    if fields is None:
        return
    minor = fields[2].split(":")[1]
    conns = Path("/sys/fs/fuse/connections")
    mounted_here = False
    if not (conns / minor).exists() and not is_mounted(conns):
        mounted_here = (
            subprocess.run(
                ["mount", "-t", "fusectl", "fusectl", str(conns)], capture_output=True, timeout=10
            ).returncode
            == 0
        )
    try:
        with contextlib.suppress(OSError):
            (conns / minor / "abort").write_text("1")
    finally:
        if mounted_here:  # leave the system as we found it
            subprocess.run(["umount", str(conns)], capture_output=True, timeout=10)


def _run_quietly(cmd: list[str], timeout: float) -> int:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=timeout, env=_env()).returncode
    except subprocess.TimeoutExpired:
        return -1


def _wait(pred: Any, timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())


@dataclass
class ShadowMount:
    root: Path
    config: Path
    device: Path
    mnt: Path
    state_dir: Path
    options: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    expected_log: list[re.Pattern[str]] = field(default_factory=list)

    @property
    def log_path(self) -> Path:
        return self.state_dir / "daemon.log"

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        return self.procs[-1]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def path(self, name: str) -> Path:
        return self.mnt / name

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        assert not is_mounted(self.mnt), f"{self.mnt} is already mounted"
        err = open(self.root / f"daemon-{len(self.procs)}.stderr", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [*SHADOWFS, "mount", "--foreground", str(self.config), str(self.mnt)]
            + [a for o in self.options for a in ("-o", o)],
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
            env=_env(),
            cwd=REPO,
            start_new_session=True,
        )
        err.close()
        self.procs.append(proc)
        from shadowfs.control import DaemonUnreachable, MountRecord, call

        deadline = time.monotonic() + MOUNT_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"daemon exited {proc.returncode} before answering: "
                    f"{(self.root / f'daemon-{len(self.procs) - 1}.stderr').read_text()}"
                    f"\n{self.log_tail()}"
                )
            record = MountRecord.find(self.mnt)
            if record is not None and record.pid == proc.pid and is_mounted(self.mnt):
                try:
                    call(record.socket, "GET", "/status", timeout=5)
                except DaemonUnreachable:
                    pass
                else:
                    return
            time.sleep(0.02)
        raise RuntimeError(f"mount did not answer within {MOUNT_TIMEOUT} s\n{self.log_tail()}")

    def umount(self, via_cli: bool = False) -> None:
        """Clean unmount, the daemon must exit 0: ``fusermount3 -u`` as ``shadowfs umount``
        does (without the CLI's interpreter start-up), or through the CLI itself."""
        if via_cli:
            result = run_cli("umount", str(self.mnt), timeout=60)
            assert result.returncode == 0, result.stderr
        else:
            result = subprocess.run(
                ["fusermount3", "-u", str(self.mnt)], capture_output=True, text=True, timeout=60
            )
            assert result.returncode == 0, result.stderr
        assert self.proc.wait(timeout=60) == 0
        assert not is_mounted(self.mnt)

    def remount(self) -> None:
        self.start()

    def kill9(self, detach: bool = True) -> None:
        """SIGKILL our daemon, then (unless ``detach`` is false) detach its dead mount."""
        os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        if detach:
            self.detach()

    def detach(self) -> None:
        """Unmount the dead mount of a killed daemon."""
        if is_mounted(self.mnt):
            _run_quietly(["fusermount3", "-u", str(self.mnt)], 10)
        if is_mounted(self.mnt):
            _run_quietly(["fusermount3", "-uz", str(self.mnt)], 10)
        assert not is_mounted(self.mnt)

    def status(self) -> dict[str, Any]:
        result = run_cli("status", str(self.mnt), "--json", timeout=30)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    def writeback(self) -> int:
        """Send the kernel's dirty pages of this mount to the daemon, without acknowledging
        them: FUSE does not forward syncfs (docs/durability.md), it only writes back. Returns
        syncfs's errno (it reports any earlier writeback error of the filesystem, e.g. ENOSPC)."""
        import ctypes

        fd = os.open(self.mnt, os.O_RDONLY | os.O_DIRECTORY)
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            return 0 if libc.syncfs(fd) == 0 else ctypes.get_errno()
        finally:
            os.close(fd)

    def drop_caches(self) -> None:
        """Make the next reads reach the daemon (kernel page cache and dentries dropped).
        Only this mount is written back first: an os.sync() would wait for every disk."""
        self.writeback()
        Path("/proc/sys/vm/drop_caches").write_text("3")

    # ------------------------------------------------------------ the log

    def expect_log(self, pattern: str) -> None:
        """Declare a WARNING/ERROR line this test expects in the daemon log."""
        self.expected_log.append(re.compile(pattern))

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n: int = 20) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def unexpected_log_lines(self) -> list[str]:
        bad = []
        for line in self.log_text().splitlines():
            if _BAD_LOG.search(line) and not any(p.search(line) for p in self.expected_log):
                bad.append(line)
        return bad

    # ------------------------------------------------------------ teardown

    def answers(self, timeout: float = 3.0) -> bool:
        """Whether our daemon answers on its control socket (a hung one does not)."""
        from shadowfs.control import DaemonUnreachable, MountRecord, call

        record = MountRecord.find(self.mnt)
        if record is None or record.pid != self.pid or self.proc.poll() is not None:
            return False
        try:
            call(record.socket, "GET", "/status", timeout=timeout)
        except (DaemonUnreachable, OSError):
            return False
        return True

    def cleanup(self) -> None:
        """Unmount and stop every daemon this fixture started, whatever state they are in: a
        daemon that answers is unmounted cleanly; a hung one has its connection aborted
        (fusectl) and its mount detached, then it is killed."""
        responsive = bool(self.procs) and self.answers()
        try:
            if is_mounted(self.mnt) and responsive:
                _run_quietly([*SHADOWFS, "umount", str(self.mnt), "--timeout", "20"], 30)
                if is_mounted(self.mnt):
                    _run_quietly(["fusermount3", "-u", str(self.mnt)], 10)
            if is_mounted(self.mnt):
                _abort_connection(self.mnt)
                _run_quietly(["fusermount3", "-uz", str(self.mnt)], 10)
        finally:
            for proc in self.procs:
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(signal.SIGTERM if responsive else signal.SIGKILL)
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        with contextlib.suppress(ProcessLookupError):
                            proc.kill()
                        proc.wait(timeout=10)
            self._forget_registry_entry()

    def _forget_registry_entry(self) -> None:
        """A killed daemon cannot remove its registry entry: remove it when it is one of ours."""
        from shadowfs.control import MountRecord

        record = MountRecord.find(self.mnt)
        ours = {p.pid for p in self.procs if p.poll() is not None}
        if record is not None and record.pid in ours:
            record.remove()


def write_config(
    root: Path,
    *,
    capacity: str = "4 GiB",
    extent_size: str = "1 MiB",
    extra: str = "",
    state_dir: Path | None = None,
    extra_devices: list[tuple[str, str, str]] = (),  # type: ignore[assignment]
) -> tuple[Path, Path]:
    """A config whose backing device hdd0 is ``root/dev0``; ``extra_devices`` adds
    (name, class, capacity) devices in ``root/<name>``. Returns (config, backing path)."""
    device = root / "dev0"
    device.mkdir(exist_ok=True)
    more = ""
    for name, cls, cap in extra_devices:
        (root / name).mkdir(exist_ok=True)
        more += (
            f'\n[[devices]]\nname = "{name}"\npath = "{root / name}"\nclass = "{cls}"\n'
            f'capacity = "{cap}"\n'
        )
    config = root / "shadowfs.toml"
    config.write_text(
        f'backing = "hdd0"\n'
        f'extent_size = "{extent_size}"\n'
        + (f'state_dir = "{state_dir}"\n' if state_dir is not None else "")
        + f"{extra}\n"
        f"[[devices]]\n"
        f'name = "hdd0"\n'
        f'path = "{device}"\n'
        f'class = "hdd"\n'
        f'capacity = "{capacity}"\n' + more
    )
    return config, device
