"""fio with --verify through the mount (issue 3, point 9): every block fio wrote reads back with
its checksum, buffered and O_DIRECT, and again from the devices after a remount."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from mountfs import ShadowMount

pytestmark = [
    pytest.mark.mount,
    pytest.mark.timeout(90),
    pytest.mark.skipif(shutil.which("fio") is None, reason="fio is not installed"),
]


def fio(directory: Path, *args: str, timeout: float = 60.0) -> dict[str, Any]:
    cmd = [
        "fio",
        "--name=e2e",
        f"--directory={directory}",
        # explicit: fio otherwise names every job's file after a same-named entry in its cwd
        "--filename_format=$jobname.$jobnum.$filenum",
        "--output-format=json",
        "--verify_fatal=1",
        "--do_verify=1",
        *args,
    ]
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, cwd=directory.parent
    )
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stdout[-3000:]}\n{result.stderr}"
    assert "verify" not in result.stderr.lower(), result.stderr
    report = json.loads(result.stdout[result.stdout.index("{") :])
    for job in report["jobs"]:
        assert job["error"] == 0, job
    return report  # type: ignore[no-any-return]


def _written(report: dict[str, Any]) -> int:
    return sum(job["write"]["io_bytes"] for job in report["jobs"])


def _read(report: dict[str, Any]) -> int:
    return sum(job["read"]["io_bytes"] for job in report["jobs"])


def test_fio_buffered_randwrite_verify_crc32c(fs: ShadowMount) -> None:
    common = ["--rw=randwrite", "--bs=4k", "--size=16m", "--ioengine=psync", "--verify=crc32c"]
    report = fio(fs.mnt, *common, "--numjobs=2", "--fsync=64")
    assert _written(report) == 2 * 16 << 20
    assert _read(report) == 2 * 16 << 20  # the verify pass read everything back
    # again from what the daemon stored, after a clean remount
    fs.umount()
    fs.start()
    report = fio(fs.mnt, *common, "--numjobs=2", "--verify_only")
    assert _read(report) == 2 * 16 << 20


def test_fio_o_direct_libaio_qd16_verify(fs: ShadowMount) -> None:
    report = fio(
        fs.mnt,
        "--rw=randwrite",
        "--bsrange=4k-128k",
        "--size=48m",
        "--ioengine=libaio",
        "--direct=1",
        "--iodepth=16",
        "--verify=crc32c",
        "--verify_backlog=256",
    )
    assert _written(report) >= 48 << 20
    assert _read(report) > 0


def test_fio_mixed_sequential_and_unaligned_direct_verify(fs: ShadowMount) -> None:
    # sequential 1 MiB writes across extents, then odd-sized O_DIRECT writes (FUSE needs no
    # alignment), both verified with a different checksum
    fio(fs.mnt, "--rw=write", "--bs=1m", "--size=32m", "--ioengine=psync", "--verify=md5")
    report = fio(
        fs.mnt,
        "--filename=odd",
        "--rw=randwrite",
        "--bs=3584",
        "--size=8m",
        "--ioengine=psync",
        "--direct=1",
        "--verify=xxhash",
    )
    assert _read(report) > 0
