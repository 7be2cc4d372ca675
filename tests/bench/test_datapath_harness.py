"""Smoke tests of the data-path benchmark harness (bench/): the reference filesystems mount,
serve a tiny fio job and unmount on SIGTERM; fio's JSON is parsed; the runner writes a report.

These check the harness, not speed: every job is tiny, and the whole file runs in seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import fio_jobs
from bench.datapath import Run, Sample, parse_size
from bench.datapath_report import render
from bench.fio_jobs import DATA_FILE, FioResult
from bench.targets import NullTarget, PassthroughTarget, cpu_steal_seconds, mount_of

REPO = Path(__file__).resolve().parents[2]

needs_fuse = pytest.mark.skipif(
    not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None or os.geteuid() != 0,
    reason="needs /dev/fuse, fusermount3 and root",
)
needs_fio = pytest.mark.skipif(shutil.which("fio") is None, reason="needs fio")

TINY = 4 << 20


def tiny(name: str) -> fio_jobs.Job:
    return fio_jobs.JOBS_BY_NAME[name]


@pytest.fixture
def passthrough(tmp_path: Path) -> Iterator[PassthroughTarget]:
    target = PassthroughTarget(tmp_path / "src", tmp_path / "mnt", tmp_path / "pt.log")
    target.start()
    try:
        yield target
    finally:
        target.stop()
    assert mount_of(tmp_path / "mnt") is None


@pytest.fixture
def nullfs(tmp_path: Path) -> Iterator[NullTarget]:
    target = NullTarget(tmp_path / "mnt", tmp_path / "null.log", tmp_path / "stats.json")
    target.start()
    try:
        yield target
    finally:
        target.stop()
    assert mount_of(tmp_path / "mnt") is None


@needs_fuse
@needs_fio
def test_passthrough_serves_fio_and_mirrors_its_source(passthrough: PassthroughTarget) -> None:
    write = fio_jobs.run(tiny("seqwrite-fsync"), passthrough.directory, TINY, runtime=1)
    assert write.io_bytes == TINY
    data = os.urandom(8192)
    (passthrough.mountpoint / DATA_FILE).write_bytes(data)
    assert (passthrough.source / DATA_FILE).read_bytes() == data
    os.truncate(passthrough.mountpoint / DATA_FILE, TINY)
    result = fio_jobs.run(tiny("randread-direct-qd16"), passthrough.directory, TINY, runtime=0.5)
    assert result.iops > 0 and result.p99_ns > 0
    assert DATA_FILE in os.listdir(passthrough.mountpoint)
    assert os.statvfs(passthrough.mountpoint).f_blocks > 0
    assert passthrough.daemon_pids() == [passthrough.proc.pid]  # type: ignore[union-attr]


@needs_fuse
@needs_fio
def test_nullfs_reads_zeros_discards_writes_and_counts_requests(nullfs: NullTarget) -> None:
    path = nullfs.mountpoint / DATA_FILE  # recreated by every mount
    with open(path, "r+b", buffering=0) as file:
        assert file.write(b"x" * 4096) == 4096
        assert file.read(4096) == bytes(4096)
    assert os.stat(path).st_size == 1 << 40
    nullfs.request_sizes()  # start afresh
    result = fio_jobs.run(tiny("randread-direct-qd1"), nullfs.directory, TINY, runtime=0.5)
    requests = nullfs.request_sizes()
    assert requests is not None
    assert requests["reads"] == {"4096": pytest.approx(result.iops * result.runtime_ms / 1000, 0.2)}
    os.unlink(path)
    assert DATA_FILE not in os.listdir(nullfs.mountpoint)


@needs_fuse
def test_cold_remount_and_sigterm_leave_nothing_mounted(passthrough: PassthroughTarget) -> None:
    old = passthrough.proc
    passthrough.make_cold()
    assert passthrough.proc is not old and old is not None and old.returncode == 0
    assert mount_of(passthrough.mountpoint) is not None


def test_parse_size_and_fio_json() -> None:
    assert parse_size("1G") == 1 << 30
    assert parse_size("64MiB") == 64 << 20
    output = "fio: some warning\n" + json.dumps(
        {
            "jobs": [
                {
                    "read": {
                        "bw_bytes": 1000,
                        "iops": 10.5,
                        "io_bytes": 4096,
                        "runtime": 7,
                        "clat_ns": {"percentile": {"99.000000": 1234}},
                    }
                }
            ]
        }
    )
    assert fio_jobs.parse(output, "read") == FioResult(1000.0, 10.5, 1234.0, 4096, 7)


def _run_with(figures: dict[str, float]) -> Run:
    run = Run("python -m bench.datapath", 1 << 30, 5, 1, ["seqread-hot"], list(figures))
    for target, bw in figures.items():
        result = FioResult(bw, bw / 4096, 1000.0, 1 << 30, 5000)
        run.samples.append(Sample(target, "seqread-hot", 0, result, daemon_cpu_s=0.5))
    return run


def test_report_marks_goals_met_and_missed() -> None:
    met = render(_run_with({"native": 100.0, "shadowfs": 95.0, "passthrough": 40.0}), "src")
    assert "| sequential 1 MiB read, hot >= 0.9x native | 0.95x | 0.40x | – | **met** |" in met
    missed = render(_run_with({"native": 100.0, "shadowfs": 50.0, "nullfs": 60.0}), "src")
    assert "**missed** (with every byte crossing /dev/fuse, the null fs reaches 0.60x)" in missed
    absent = render(_run_with({"native": 100.0, "passthrough": 40.0}), "src")
    assert "not measured" in absent


def test_report_names_the_cpu_steal_beside_the_samples_that_lost_it() -> None:
    run = _run_with({"native": 100.0, "shadowfs": 95.0})
    run.samples[0].steal_s = 0.43
    run.samples[1].steal_s = 0.02  # below notice
    report = render(run, "src")
    assert "0 MiB/s (steal 0.4 s) |" in report
    assert report.count("(steal 0.") == 1


def test_cpu_steal_is_read_from_proc_stat() -> None:
    first = cpu_steal_seconds()
    assert first is not None and first >= 0.0
    second = cpu_steal_seconds()
    assert second is not None and second >= first


@needs_fuse
@needs_fio
def test_runner_quick_subset_writes_a_report(tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    args = ["--quick", "--size", "8M", "--runtime", "0.5", "--out", str(out)]
    # A test leaves the machine's DAMON and free page reporting be.
    args += ["--workdir", str(tmp_path), "--keep-damon", "--keep-page-reporting"]
    args += ["--targets", "native,passthrough,nullfs", "--jobs", "seqread-cold,seqwrite-fsync"]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.datapath", *args],
        cwd=tmp_path,  # the runner must not depend on the working directory
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr
    report = out.read_text()
    assert "### seqread-cold" in report and "### seqwrite-fsync" in report
    assert "| passthrough |" in report and "failed" not in report
    assert "class Passthrough(pyfuse3.Operations)" in report
    assert "## FUSE readahead and buffered reads" in report
    assert "## Sequential write ending in fsync through the writeback cache" in report
    assert "| passthrough `--writeback` | failed" not in report
    assert "| DAMON pageout |" in report
    assert "| free page reporting |" in report
    assert not list(tmp_path.glob("shadowfs-bench-*"))  # unmounted and removed


@needs_fio
def test_runner_refuses_a_missing_workdir_naming_it(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.datapath", "--workdir", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert f"--workdir {tmp_path / 'nope'}: not a directory" in proc.stderr
    assert "Traceback" not in proc.stderr
