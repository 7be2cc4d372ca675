"""The fio jobs of the data-path benchmark, how to run one, and what we keep of its result.

Each job is one fio invocation with JSON output. Two choices hold for every job and are
easy to get wrong:

- `invalidate=0`: fio's default drops the file's page cache before every job, which makes
  every "hot" job cold (and measures nothing but the disk). The runner decides the cache
  state itself: it warms a file by reading it, or drops caches and remounts for cold jobs.
- `fallocate=none`: pyfuse3 has no fallocate handler, so fio would preallocate on native
  and not through FUSE; with it off every target writes the same way.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Literal

MiB = 1 << 20
GiB = 1 << 30

DATA_FILE = "data.bin"  # written once per target, read and overwritten by most jobs
WRITE_FILE = "seqwrite.bin"  # removed before each sequential write job


class CacheState(Enum):
    """The page-cache state the runner establishes before a job."""

    COLD = "cold"  # sync, drop caches, remount FUSE targets
    HOT = "hot"  # read the whole file through the target first
    AS_LEFT = "as left"  # whatever the previous job left (O_DIRECT and write jobs)


@dataclass(frozen=True)
class Job:
    """One fio job; `options` are fio's own option names and values."""

    name: str
    title: str
    metric: Literal["bw", "iops"]  # the figure its ratio is computed on
    direction: Literal["read", "write"]
    cache: CacheState
    options: tuple[tuple[str, str], ...]
    time_based: bool = True
    file: str = DATA_FILE

    @property
    def fresh_file(self) -> bool:
        return self.file == WRITE_FILE


def _opts(**options: object) -> tuple[tuple[str, str], ...]:
    return tuple((key, str(value)) for key, value in options.items())


_SEQ = _opts(bs="1M", ioengine="psync")
_RAND_SYNC = _opts(bs="4k", ioengine="psync", iodepth=1)
# Buffered I/O through libaio is synchronous, so a buffered queue depth of 16 needs io_uring,
# which punts blocking buffered I/O to its kernel workers: 16 requests really are in flight.
_RAND_URING16 = _opts(bs="4k", ioengine="io_uring", iodepth=16)


def _direct(depth: int) -> tuple[tuple[str, str], ...]:
    return _opts(bs="4k", ioengine="libaio", direct=1, iodepth=depth)


R: Literal["read"] = "read"
W: Literal["write"] = "write"
COLD, HOT, AS_LEFT = CacheState.COLD, CacheState.HOT, CacheState.AS_LEFT

# In run order within a round: cold first (it drops every cache), the sequential write last
# (its new file never disturbs the others' data file).
JOBS: tuple[Job, ...] = (
    Job("seqread-cold", "Sequential 1 MiB read, cold", "bw", R, COLD,
        (("rw", "read"), *_SEQ), time_based=False),
    Job("seqread-hot", "Sequential 1 MiB read, page-cache hot", "bw", R, HOT,
        (("rw", "read"), *_SEQ)),
    Job("randread-cached-qd1", "4 KiB random read, page-cache-resident file, QD1 (psync)",
        "iops", R, HOT, (("rw", "randread"), *_RAND_SYNC)),
    Job("randread-cached-qd16", "4 KiB random read, page-cache-resident file, QD16 (io_uring)",
        "iops", R, HOT, (("rw", "randread"), *_RAND_URING16)),
    Job("randread-direct-qd1", "4 KiB random read, O_DIRECT, QD1 (libaio)", "iops", R,
        AS_LEFT, (("rw", "randread"), *_direct(1))),
    Job("randread-direct-qd16", "4 KiB random read, O_DIRECT, QD16 (libaio)", "iops", R,
        AS_LEFT, (("rw", "randread"), *_direct(16))),
    Job("randwrite-direct-qd1", "4 KiB random write, O_DIRECT, QD1 (libaio)", "iops", W,
        AS_LEFT, (("rw", "randwrite"), *_direct(1))),
    Job("randwrite-direct-qd16", "4 KiB random write, O_DIRECT, QD16 (libaio)", "iops", W,
        AS_LEFT, (("rw", "randwrite"), *_direct(16))),
    Job("randwrite-buffered-qd1", "4 KiB random write, buffered, QD1 (psync)", "iops", W,
        AS_LEFT, (("rw", "randwrite"), *_RAND_SYNC)),
    Job("randwrite-buffered-qd16", "4 KiB random write, buffered, QD16 (io_uring)", "iops", W,
        AS_LEFT, (("rw", "randwrite"), *_RAND_URING16)),
    Job("seqwrite-fsync", "Sequential 1 MiB write of a new file, ending in fsync", "bw", W,
        AS_LEFT, (("rw", "write"), *_SEQ, ("end_fsync", "1")), time_based=False,
        file=WRITE_FILE),
)  # fmt: skip

JOBS_BY_NAME = {job.name: job for job in JOBS}


@dataclass(frozen=True)
class Goal:
    """A target from issue 3 point 8: `job` must reach `ratio` times `baseline`."""

    job: str
    baseline: Literal["native", "passthrough"]
    ratio: float
    text: str


GOALS: tuple[Goal, ...] = (
    Goal("seqread-cold", "native", 0.9, "sequential 1 MiB read, cold >= 0.9x native"),
    Goal("seqread-hot", "native", 0.9, "sequential 1 MiB read, hot >= 0.9x native"),
    Goal("seqwrite-fsync", "native", 0.8, "sequential 1 MiB write ending in fsync >= 0.8x native"),
    Goal("randread-cached-qd1", "native", 0.5,
         "4 KiB random read, page-cache-resident, QD1 >= 0.5x native"),
    Goal("randread-cached-qd16", "native", 0.5,
         "4 KiB random read, page-cache-resident, QD16 >= 0.5x native"),
    Goal("randread-direct-qd16", "passthrough", 0.95,
         "4 KiB O_DIRECT random read, QD16 >= 0.95x passthrough"),
    Goal("randwrite-direct-qd16", "passthrough", 0.95,
         "4 KiB O_DIRECT random write, QD16 >= 0.95x passthrough"),
)  # fmt: skip


@dataclass(frozen=True)
class FioResult:
    """What one fio run moved, how fast, and its p99 completion latency."""

    bw_bytes: float  # bytes/s; for end_fsync jobs fio's runtime includes the fsync
    iops: float
    p99_ns: float
    io_bytes: int
    runtime_ms: int

    def metric(self, name: Literal["bw", "iops"]) -> float:
        return self.bw_bytes if name == "bw" else self.iops


class FioError(RuntimeError):
    """fio failed or printed no usable result."""


def command(job: Job, directory: Path, size: int, runtime: float) -> list[str]:
    """The fio command line for *job* on files in *directory*."""
    args = [
        "fio",
        f"--name={job.name}",
        f"--filename={directory / job.file}",
        f"--size={size}",
        "--invalidate=0",
        "--fallocate=none",
        "--randrepeat=1",
        "--norandommap",
        "--output-format=json",
        "--percentile_list=50:99:99.9",
    ]
    args += [f"--{key}={value}" for key, value in job.options]
    if job.time_based:
        args += ["--time_based", f"--runtime={runtime:g}"]
    else:
        # One pass over the file; runtime only caps a pathologically slow target.
        args += [f"--runtime={max(60.0, runtime * 20):g}"]
    return args


def run(job: Job, directory: Path, size: int, runtime: float) -> FioResult:
    """Run *job* and parse fio's JSON; raise FioError with fio's own words on failure."""
    args = command(job, directory, size, runtime)
    timeout = (runtime if job.time_based else max(60.0, runtime * 20)) + 120
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise FioError(f"fio {job.name} did not finish within {timeout:.0f} s") from exc
    if proc.returncode != 0:
        raise FioError(f"fio {job.name} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return parse(proc.stdout, job.direction)


def parse(output: str, direction: Literal["read", "write"]) -> FioResult:
    """Pick the one job's figures out of fio's JSON (which may follow warning lines)."""
    start = output.find("{")
    if start < 0:
        raise FioError(f"no JSON in fio output: {output[:300]!r}")
    try:
        report: dict[str, Any] = json.loads(output[start:])
        stats = report["jobs"][0][direction]
    except (ValueError, KeyError, IndexError) as exc:
        raise FioError(f"unusable fio JSON: {exc}") from exc
    percentiles = stats.get("clat_ns", {}).get("percentile", {})
    return FioResult(
        bw_bytes=float(stats["bw_bytes"]),
        iops=float(stats["iops"]),
        p99_ns=float(percentiles.get("99.000000", 0.0)),
        io_bytes=int(stats["io_bytes"]),
        runtime_ms=int(stats["runtime"]),
    )


def fio_version() -> str:
    try:
        return subprocess.run(["fio", "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "fio not found"
