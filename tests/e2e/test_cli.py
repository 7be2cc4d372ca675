"""The CLI against real mounts: daemon mode, exit codes and messages (docs/cli.md), a daemon
that no longer answers, several devices on one filesystem (a warning, not a refusal)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from mountfs import ShadowMount, is_mounted, run_cli, write_config

pytestmark = [pytest.mark.mount, pytest.mark.timeout(60)]

MiB = 1 << 20


def _daemon_alive(pid: int, config: Path) -> bool:
    """``pid`` is still the daemon we started (its command line names our config)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return str(config).encode() in cmdline and state != "Z"


def test_daemon_mode_mount_status_umount(tmp_path: Path) -> None:
    config, device = write_config(tmp_path)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    pid = None
    try:
        result = run_cli("mount", str(config), str(mnt))
        assert result.returncode == 0, result.stderr
        match = re.search(r"shadowfs mounted on (\S+) \(pid (\d+), log (\S+)\)", result.stdout)
        assert match, result.stdout
        pid = int(match.group(2))
        assert Path(match.group(3)) == device / ".shadowfs-state" / "daemon.log"
        assert is_mounted(mnt)
        (mnt / "f").write_bytes(b"daemon mode")
        status = run_cli("status", str(mnt))  # the human-readable form
        assert status.returncode == 0, status.stderr
        assert "hdd0" in status.stdout and "last shutdown: clean" in status.stdout
        assert run_cli("mount", str(config), str(mnt)).returncode == 3  # already a mountpoint
        result = run_cli("umount", str(mnt))
        assert result.returncode == 0, result.stderr
        assert not is_mounted(mnt) and not _daemon_alive(pid, config)
        log = (device / ".shadowfs-state" / "daemon.log").read_text()
        assert "closed cleanly" in log
        assert not re.search(r" (WARNING|ERROR|CRITICAL) |Traceback", log), log
    finally:
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True, timeout=30)
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True, timeout=30)
        if pid is not None and _daemon_alive(pid, config):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_exit_codes_of_bad_input(tmp_path: Path) -> None:
    config, _ = write_config(tmp_path)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    missing = run_cli("mount", str(tmp_path / "nope.toml"), str(mnt))
    assert missing.returncode == 2 and "config file not found" in missing.stderr
    not_dir = run_cli("mount", str(config), str(config))
    assert not_dir.returncode == 2 and "not a directory" in not_dir.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(config.read_text().replace('capacity = "4 GiB"', 'capacity = "4 GX"'))
    result = run_cli("mount", str(bad), str(mnt))
    assert result.returncode == 2 and "devices[0].capacity" in result.stderr
    assert not is_mounted(mnt)
    for cmd in ("status", "umount"):
        result = run_cli(cmd, str(mnt))
        assert result.returncode == 4, (cmd, result.stderr)
        assert "no shadowfs daemon" in result.stderr


def test_a_daemon_that_died_is_reported_unreachable(fs: ShadowMount) -> None:
    fs.expect_log("last shutdown was not clean|recovery")
    fs.kill9(detach=False)  # the registry entry stays behind, and the dead mount
    result = run_cli("status", str(fs.mnt))
    assert result.returncode == 4 and f"pid {fs.pid} alive" in result.stderr, result.stderr
    result = run_cli("umount", str(fs.mnt))  # detaches the dead mount
    assert result.returncode == 0, result.stderr
    assert not is_mounted(fs.mnt)
    for cmd in ("status", "umount"):
        result = run_cli(cmd, str(fs.mnt))
        assert result.returncode == 4, (cmd, result.stderr)
        assert str(fs.pid) in result.stderr and "alive" in result.stderr
    fs.start()  # a new mount replaces the stale entry
    assert fs.status()["pid"] == fs.pid


def test_devices_sharing_one_filesystem_mount_with_a_warning(shadowfs_mount: Any) -> None:
    fs: ShadowMount = shadowfs_mount(
        extra_devices=[("ssd0", "ssd", "64 MiB"), ("nvme0", "nvme", "32 MiB")]
    )
    fs.expect_log(r"WARNING shadowfs.daemon: devices .* share one filesystem")
    assert "share one filesystem" in fs.log_text()
    status = fs.status()
    assert any("share one filesystem" in w for w in status["warnings"])
    data = os.urandom(3 * MiB)
    fs.path("f").write_bytes(data)
    assert fs.writeback() == 0
    devices = {d["name"]: d for d in fs.status()["devices"]}
    assert devices["hdd0"]["backing"] and devices["hdd0"]["extents"] == 3
    assert devices["ssd0"]["extents"] == devices["nvme0"]["extents"] == 0
    fs.umount()
    fs.start()
    assert fs.path("f").read_bytes() == data


def test_umount_of_a_busy_mount_is_refused_and_the_mount_keeps_working(fs: ShadowMount) -> None:
    fd = os.open(fs.path("open"), os.O_CREAT | os.O_RDWR, 0o644)
    try:
        result = run_cli("umount", str(fs.mnt))
        assert result.returncode == 3, (result.returncode, result.stderr)
        assert "unmount refused" in result.stderr and "busy" in result.stderr.lower()
        assert is_mounted(fs.mnt)
        os.write(fd, b"still mounted")
        os.fsync(fd)
    finally:
        os.close(fd)
    assert fs.status()["pid"] == fs.pid
    fs.umount(via_cli=True)
    fs.start()
    assert fs.path("open").read_bytes() == b"still mounted"
