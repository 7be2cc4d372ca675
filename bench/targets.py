"""The places the data-path benchmark runs fio: native, shadowfs, passthrough and null fs.

A target owns its directory (native) or its mount and daemon (the FUSE targets): it starts,
makes its caches cold, tells the daemon's pids for CPU accounting, and stops, always leaving
nothing mounted. Only processes this module started are ever signalled: the passthrough and
null daemons are our children, and the shadowfs daemon is found by its pid file or by a
command line naming our own, uniquely named mountpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from bench.fio_jobs import DATA_FILE

REPO = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MOUNT_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


class TargetUnavailable(RuntimeError):
    """The target could not be started (or restarted); the runner skips it, saying why."""


@dataclass(frozen=True)
class MountEntry:
    device: str  # "major:minor", which also names the mount's bdi in /sys/class/bdi
    mountpoint: str
    fstype: str
    source: str


def mount_entries() -> list[MountEntry]:
    """Parse /proc/self/mountinfo without stat()ing anything (a hung FUSE mount blocks stat)."""
    entries = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            mountpoint = fields[4].encode().decode("unicode_escape")
            entries.append(MountEntry(fields[2], mountpoint, tail[0], tail[1]))
    return entries


def mount_of(path: Path) -> MountEntry | None:
    """The mount *path* itself is the root of, if any."""
    matches = [entry for entry in mount_entries() if entry.mountpoint == str(path)]
    return matches[-1] if matches else None


def filesystem_of(path: Path) -> MountEntry:
    """The mount that holds *path* (longest mountpoint prefix)."""
    resolved = str(path.resolve())
    best = None
    for entry in mount_entries():
        prefix = entry.mountpoint.rstrip("/") + "/"
        if (resolved + "/").startswith(prefix) and (
            best is None or len(entry.mountpoint) >= len(best.mountpoint)
        ):
            best = entry
    assert best is not None, "/ is always mounted"
    return best


def bdi_settings(device: str) -> dict[str, str]:
    """read_ahead_kb and the dirty-page limits of a mount's backing-device info."""
    settings = {}
    for name in ("read_ahead_kb", "max_ratio", "strict_limit"):
        try:
            settings[name] = Path(f"/sys/class/bdi/{device}/{name}").read_text().strip()
        except OSError:
            pass
    return settings


def drop_caches() -> bool:
    """Write back and drop the whole page cache; False if we may not (not root)."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def force_unmount(mountpoint: Path) -> None:
    """Unmount by every means short of rebooting: fusermount3 -u, abort the connection, -uz."""
    if mount_of(mountpoint) is None:
        return
    subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True, timeout=30)
    entry = mount_of(mountpoint)
    if entry is None:
        return
    # A daemon that stopped answering keeps even a lazy unmount's requests waiting; aborting
    # the connection (when fusectl is mounted) fails them all at once.
    minor = entry.device.split(":")[1]
    abort = Path(f"/sys/fs/fuse/connections/{minor}/abort")
    if abort.exists():
        try:
            abort.write_text("1\n")
        except OSError:
            pass
    subprocess.run(["fusermount3", "-uz", str(mountpoint)], capture_output=True, timeout=30)


def cpu_steal_seconds() -> float | None:
    """The machine's CPU steal time so far, summed over CPUs (/proc/stat); None where the
    kernel does not report it. Time the hypervisor gave this VM's CPUs to others: a sample
    that loses it runs slower for reasons no target controls."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    return int(fields[8]) / CLOCK_TICKS


def process_cpu_seconds(pids: list[int]) -> float:
    """utime + stime of *pids* (all their threads) from /proc/PID/stat; gone pids count 0."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()  # the comm field may contain spaces
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return total / CLOCK_TICKS


def descendants(root: int) -> list[int]:
    """*root* and every process below it (a daemon's worker processes count as its CPU)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, queue = [], [root]
    while queue:
        pid = queue.pop()
        found.append(pid)
        queue.extend(children.get(pid, []))
    return found


def _wait_for_mount(mountpoint: Path, proc: subprocess.Popen[bytes] | None, what: str) -> None:
    deadline = time.monotonic() + MOUNT_TIMEOUT
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise TargetUnavailable(f"{what} exited {proc.returncode} before mounting")
        if mount_of(mountpoint) is not None:
            os.stat(mountpoint)  # returns once the daemon answers FUSE_INIT and GETATTR
            return
        time.sleep(0.05)
    raise TargetUnavailable(f"{what} did not mount {mountpoint} within {MOUNT_TIMEOUT:.0f} s")


class Target(ABC):
    """Somewhere fio runs; `directory` holds the job files."""

    name: str
    directory: Path

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None:
        """Leave nothing mounted and none of our processes running; safe to call twice."""

    def make_cold(self) -> bool:
        """Empty every cache between fio and the disk; False if caches could not be dropped."""
        return drop_caches()

    def daemon_pids(self) -> list[int]:
        return []

    def describe(self) -> dict[str, str]:
        """Facts for the report: filesystem, readahead, dirty limits."""
        entry = filesystem_of(self.directory)
        return {"fstype": entry.fstype, "device": entry.device, **bdi_settings(entry.device)}


class NativeTarget(Target):
    """The backing device's filesystem, used directly: every ratio's denominator."""

    name = "native"

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def stop(self) -> None:
        pass


class FuseTarget(Target):
    """A FUSE mount at `mountpoint`; cold means unmounted, caches dropped, mounted again."""

    def __init__(self, mountpoint: Path) -> None:
        self.mountpoint = mountpoint
        self.directory = mountpoint

    @abstractmethod
    def _mount(self) -> None: ...

    @abstractmethod
    def _unmount(self) -> None: ...

    def start(self) -> None:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        try:
            self._mount()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        try:
            self._unmount()
        finally:
            force_unmount(self.mountpoint)

    def set_read_ahead_kb(self, kb: int) -> None:
        """Set this mount's FUSE readahead (its bdi's read_ahead_kb)."""
        entry = mount_of(self.mountpoint)
        if entry is None:
            raise TargetUnavailable(f"{self.name} is not mounted")
        Path(f"/sys/class/bdi/{entry.device}/read_ahead_kb").write_text(f"{kb}\n")

    def make_cold(self) -> bool:
        # Unmounting drops the FUSE inodes' page cache and whatever the daemon holds.
        self._unmount()
        force_unmount(self.mountpoint)
        dropped = drop_caches()
        self.start()
        return dropped

    def describe(self) -> dict[str, str]:
        entry = mount_of(self.mountpoint)
        if entry is None:
            return {}
        return {"fstype": entry.fstype, "device": entry.device, **bdi_settings(entry.device)}


class ChildDaemonTarget(FuseTarget):
    """A bench FUSE daemon run in the foreground as our child process; with `read_ahead_kb`
    its FUSE readahead is set after every mount (0 leaves the kernel's)."""

    def __init__(self, mountpoint: Path, log: Path, read_ahead_kb: int = 0) -> None:
        super().__init__(mountpoint)
        self.log = log
        self.read_ahead_kb = read_ahead_kb
        self.proc: subprocess.Popen[bytes] | None = None

    @abstractmethod
    def _command(self) -> list[str]: ...

    def _mount(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self._command(), stdout=log, stderr=subprocess.STDOUT, cwd=REPO
            )
        _wait_for_mount(self.mountpoint, self.proc, self.name)
        if self.read_ahead_kb:
            self.set_read_ahead_kb(self.read_ahead_kb)

    def _unmount(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the daemon unmounts itself on SIGTERM
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                force_unmount(self.mountpoint)
                proc.kill()
                proc.wait()

    def daemon_pids(self) -> list[int]:
        return [] if self.proc is None else descendants(self.proc.pid)


class PassthroughTarget(ChildDaemonTarget):
    """bench.passthrough over a source directory beside the native one.

    With `writeback` it runs `--writeback` (page cache and the kernel's writeback cache, as
    shadowfs does) and is named "passthrough-writeback": a diagnostic, not a target.
    """

    name = "passthrough"

    def __init__(
        self,
        source: Path,
        mountpoint: Path,
        log: Path,
        writeback: bool = False,
        read_ahead_kb: int = 0,
    ) -> None:
        super().__init__(mountpoint, log, read_ahead_kb)
        self.source = source
        self.writeback = writeback
        if writeback:
            self.name = "passthrough-writeback"

    def start(self) -> None:
        self.source.mkdir(parents=True, exist_ok=True)
        super().start()

    module = "bench.passthrough"

    def _options(self) -> list[str]:
        return ["--writeback"] if self.writeback else []

    def _command(self) -> list[str]:
        source, mountpoint = str(self.source), str(self.mountpoint)
        return [sys.executable, "-m", self.module, source, mountpoint, *self._options()]


class WriteCeilingTarget(PassthroughTarget):
    """bench.write_ceiling: the writeback passthrough with its writes in threads (optionally
    O_DIRECT). A diagnostic of the write ceiling, not a target."""

    def __init__(
        self, source: Path, mountpoint: Path, log: Path, threads: int, direct: bool = False
    ) -> None:
        super().__init__(source, mountpoint, log, writeback=True)
        self.threads = threads
        self.direct = direct
        self.name = f"writeback-{threads}threads" + ("-direct" if direct else "")

    module = "bench.write_ceiling"

    def _options(self) -> list[str]:  # always the writeback cache: no `--writeback` flag
        return ["--threads", str(self.threads), *(["--direct"] if self.direct else [])]


class NullTarget(ChildDaemonTarget):
    """bench.nullfs, recording the size of every request it is sent.

    `page_cache` (buffered opens, named "nullfs-pagecache") and `writeback` (buffered opens
    and the kernel's writeback cache, named "nullfs-writeback") are for diagnostics, not
    targets.
    """

    name = "nullfs"

    def __init__(
        self,
        mountpoint: Path,
        log: Path,
        stats: Path,
        page_cache: bool = False,
        writeback: bool = False,
        read_ahead_kb: int = 0,
    ) -> None:
        super().__init__(mountpoint, log, read_ahead_kb)
        self.stats = stats
        self.page_cache = page_cache
        self.writeback = writeback
        if writeback:
            self.name = "nullfs-writeback"
        elif page_cache:
            self.name = "nullfs-pagecache"

    def _mount(self) -> None:
        super()._mount()
        # A fresh null fs knows no names: recreate the data file so that fio finds it
        # (otherwise fio would lay it out again, writing through the mount before reading).
        with open(self.mountpoint / DATA_FILE, "ab"):
            pass

    def _command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "bench.nullfs",
            str(self.mountpoint),
            "--stats",
            str(self.stats),
            *(["--page-cache"] if self.page_cache else []),
            *(["--writeback"] if self.writeback else []),
        ]

    def _read_stats(self) -> dict[str, object] | None:
        try:
            return dict(json.loads(self.stats.read_text()))
        except (OSError, ValueError):
            return None

    def request_sizes(self) -> dict[str, object] | None:
        """The histogram since the previous call: ask the daemon (SIGUSR1) and wait for it."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        before = self._read_stats()
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            after = self._read_stats()
            if after is not None and after != before and after.get("pid") == self.proc.pid:
                return after
            time.sleep(0.02)
        return None


class ShadowfsTarget(FuseTarget):
    """The product: `shadowfs mount CONFIG MNT` (a daemon), `shadowfs umount MNT`."""

    name = "shadowfs"

    def __init__(
        self, device: Path, state_dir: Path, mountpoint: Path, config: Path, log: Path
    ) -> None:
        super().__init__(mountpoint)
        self.log = log
        self.device = device
        self.state_dir = state_dir
        self.config = config
        self.cli = Path(sys.executable).with_name("shadowfs")

    def write_config(self) -> None:
        self.config.write_text(
            "# Written by bench.datapath: one hdd-class device, the backing one.\n"
            'backing = "hdd0"\n'
            f'state_dir = "{self.state_dir}"\n\n'
            "[[devices]]\n"
            'name = "hdd0"\n'
            f'path = "{self.device}"\n'
            'class = "hdd"\n'
            'capacity = "64 GiB"\n'
        )

    def start(self) -> None:
        self.device.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if not self.config.exists():
            self.write_config()
        super().start()

    def _mount(self) -> None:
        if not self.cli.exists():
            raise TargetUnavailable(f"{self.cli} is not installed")
        # Output goes to a file, not a pipe: a daemon that inherited the pipe would keep it
        # open and make us wait for an EOF that never comes.
        with open(self.log, "a+") as log:
            start = log.tell()
            try:
                returncode = subprocess.run(
                    [str(self.cli), "mount", str(self.config), str(self.mountpoint)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=MOUNT_TIMEOUT,
                ).returncode
            except subprocess.TimeoutExpired as exc:
                raise TargetUnavailable(
                    f"shadowfs mount did not return within {MOUNT_TIMEOUT:.0f} s"
                ) from exc
            log.seek(start)
            said = log.read().strip().splitlines()
        if returncode != 0:
            raise TargetUnavailable(
                f"shadowfs mount exited {returncode}: {said[-1] if said else '(no message)'}"
            )
        _wait_for_mount(self.mountpoint, None, "shadowfs")

    def _daemon_pid(self) -> int | None:
        """The daemon's pid: its pid file, else a process whose command names our mountpoint."""
        try:
            pid = int((self.state_dir / "daemon.pid").read_text().split()[0])
            # A stale pid file may name a recycled pid: trust it only for a shadowfs process.
            if b"shadowfs" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except (OSError, ValueError, IndexError):
            pass
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            words = [os.fsdecode(word) for word in argv]
            if (
                any("shadowfs" in word for word in words)
                and "mount" in words
                and str(self.mountpoint) in words
            ):
                return int(entry.name)
        return None

    def daemon_pids(self) -> list[int]:
        pid = self._daemon_pid()
        return [] if pid is None else descendants(pid)

    def _unmount(self) -> None:
        if mount_of(self.mountpoint) is None:
            return
        pid = self._daemon_pid()
        try:
            with open(self.log, "a") as log:
                subprocess.run(
                    [str(self.cli), "umount", str(self.mountpoint)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=MOUNT_TIMEOUT,
                )
        except (OSError, subprocess.TimeoutExpired):
            pass
        force_unmount(self.mountpoint)
        if pid is not None:
            _stop_process(pid)


def _stop_process(pid: int) -> None:
    """Give one pid we started time to exit by itself, then SIGTERM, then SIGKILL."""
    for sig, wait in ((None, STOP_TIMEOUT), (signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 5.0)):
        deadline = time.monotonic() + wait
        try:
            if sig is not None:
                os.kill(pid, sig)
        except ProcessLookupError:
            return
        while time.monotonic() < deadline:
            if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
                return
            time.sleep(0.05)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True
