"""Data-path speed: fio through shadowfs against native, a plain passthrough and a null fs.

    python -m bench.datapath [--quick] [--rounds N] [--size 1G] [--runtime S] [--out FILE]
                             [--targets native,shadowfs,passthrough,nullfs] [--jobs a,b]
                             [--workdir /var/tmp] [--no-probe] [--keep-damon]
                             [--keep-page-reporting]
    python -m bench.datapath --render bench/results/datapath-<time>.json   # report only

`--quick` (64 MiB, one round, 1 s jobs) is a smoke run; it writes
bench/results/benchmarks-quick.md unless --out says otherwise, never docs/benchmarks.md.

Every round runs every job on every target before the next job starts, the targets'
order rotating each round, so that all targets see the same machine (2 shared cores, a
page cache that others use too) at nearly the same moment; the report takes medians over
rounds and states every figure as a ratio to native from the same run. All directories
and mountpoints live in a fresh /var/tmp/shadowfs-bench-XXXX (a real disk, not tmpfs)
that is unmounted and removed at the end, whatever happens. DAMON page-out schemes are
paused for the run and restored after it (bench/damon.py says why; --keep-damon leaves them),
and so is the VM's free page reporting, after the memory the run will use is made resident
(bench/page_reporting.py says why; --keep-page-reporting leaves it).
"""

from __future__ import annotations

import argparse
import errno
import itertools
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench import copy_layout, damon, fio_jobs, folios, page_reporting
from bench.datapath_report import render
from bench.fio_jobs import DATA_FILE, CacheState, FioError, FioResult, Job, MiB
from bench.targets import (
    REPO,
    NativeTarget,
    NullTarget,
    PassthroughTarget,
    ShadowfsTarget,
    Target,
    TargetUnavailable,
    WriteCeilingTarget,
    cpu_steal_seconds,
    drop_caches,
    filesystem_of,
    force_unmount,
    mount_entries,
    process_cpu_seconds,
)
from shadowfs.config import CacheConfig

TARGET_NAMES = ("native", "shadowfs", "passthrough", "nullfs")
RESULTS_DIR = REPO / "bench" / "results"  # raw JSON of every run; ignored by git


@dataclass
class Sample:
    """One fio run of one job on one target in one round."""

    target: str
    job: str
    round: int
    result: FioResult | None = None
    daemon_cpu_s: float | None = None  # utime+stime of the FUSE daemon during the fio run
    requests: dict[str, object] | None = None  # the null fs's request-size histogram
    cold: bool | None = None  # for cold jobs: were the caches really dropped
    error: str | None = None
    steal_s: float | None = None  # the machine's CPU steal during the fio run (all CPUs)


@dataclass
class Run:
    """Everything the report needs: settings, machine, targets, samples."""

    command: str
    size: int
    runtime: float
    rounds: int
    jobs: list[str]
    targets: list[str]
    started: float = field(default_factory=time.time)
    finished: float = 0.0
    workdir: str = ""
    machine: dict[str, str] = field(default_factory=dict)
    target_facts: dict[str, dict[str, str]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    readahead_probe: list[ProbeResult] = field(default_factory=list)
    write_probe: list[Sample] = field(default_factory=list)  # see probe_write_ceiling
    read_probe: list[Sample] = field(default_factory=list)  # see probe_read_ceiling
    layout_probe: list[Sample] = field(default_factory=list)  # see probe_copy_layout


@dataclass
class ProbeResult:
    """A cold sequential read through the page-cache null fs at one FUSE readahead."""

    read_ahead_kb: int
    bw_bytes: float | None = None
    requests: dict[str, object] | None = None
    error: str | None = None


def parse_size(text: str) -> int:
    """'1G', '256MiB', '64m' as bytes (binary units), at least 4 MiB."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    number = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = number[-1] if number and number[-1] in units else ""
    try:
        value = int(float(number.removesuffix(unit)) * units[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1G, 256M)") from None
    if value < 4 * MiB:
        raise argparse.ArgumentTypeError(f"size {text!r} is below the 4 MiB minimum")
    return value


def _names(allowed: tuple[str, ...] | list[str]) -> Callable[[str], list[str]]:
    """An argparse type for a comma-separated subset of *allowed*."""

    def parse(text: str) -> list[str]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in names if name not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}; got {text!r}")
        return names

    return parse


def build_targets(base: Path, names: list[str]) -> list[Target]:
    """Sibling directories on one filesystem, so every target writes to the same disk."""
    logs = base / "logs"
    logs.mkdir()
    targets: dict[str, Target] = {
        "native": NativeTarget(base / "native"),
        "shadowfs": ShadowfsTarget(
            device=base / "shadowfs-hdd0",
            state_dir=base / "shadowfs-state",
            mountpoint=base / "mnt-shadowfs",
            config=base / "shadowfs.toml",
            log=logs / "shadowfs-cli.log",
        ),
        "passthrough": PassthroughTarget(
            base / "passthrough-src", base / "mnt-passthrough", logs / "passthrough.log"
        ),
        "nullfs": NullTarget(base / "mnt-nullfs", logs / "nullfs.log", logs / "nullfs-stats.json"),
    }
    return [targets[name] for name in names]


def warm(path: Path, size: int) -> None:
    """Read *path* once through its target so that the job finds it in the page cache."""
    copy_layout.read_through(path, size)


def prepare(target: Target, size: int) -> None:
    """Write the data file through the target (never behind its back) and make it durable."""
    job = Job(
        "prepare",
        "write the data file",
        "bw",
        "write",
        CacheState.AS_LEFT,
        (("rw", "write"), ("bs", "1M"), ("ioengine", "psync"), ("end_fsync", "1")),
        time_based=False,
    )
    fio_jobs.run(job, target.directory, size, runtime=60)
    if (target.directory / DATA_FILE).stat().st_size < size:
        raise TargetUnavailable(f"{target.name}: the prepared data file is short")


def run_one(target: Target, job: Job, round_: int, settings: Run) -> Sample:
    sample = Sample(target.name, job.name, round_)
    if job.cache is CacheState.COLD:
        sample.cold = target.make_cold()
    elif job.cache is CacheState.HOT:
        warm(target.directory / job.file, settings.size)
    if job.fresh_file:
        (target.directory / job.file).unlink(missing_ok=True)
    if isinstance(target, NullTarget):
        target.request_sizes()  # start the histogram afresh: warming is not the job
    pids = target.daemon_pids()
    cpu_before = process_cpu_seconds(pids)
    steal_before = cpu_steal_seconds()
    try:
        sample.result = fio_jobs.run(job, target.directory, settings.size, settings.runtime)
    except FioError as exc:
        sample.error = str(exc)
    steal_after = cpu_steal_seconds()
    if steal_before is not None and steal_after is not None:
        sample.steal_s = steal_after - steal_before
    if pids:
        sample.daemon_cpu_s = process_cpu_seconds(pids) - cpu_before
    if isinstance(target, NullTarget):
        sample.requests = target.request_sizes()
    if job.fresh_file:
        (target.directory / job.file).unlink(missing_ok=True)  # free the disk for the next
    return sample


def page_cache_folios(target: Target, size: int) -> str:
    """How large the folios are that hold the target's data file once read (bench/folios.py)."""
    path = target.directory / DATA_FILE
    try:
        warm(path, size)
        found = folios.measure(path)
    except OSError as exc:
        if exc.errno == errno.ENODEV:  # the kernel refuses to map a direct_io file
            return "none (direct_io)"
        return f"not measured: {exc}"
    return found.describe() if found else "not measured (needs root)"


PROBE_READ_AHEAD_KB = (0, 1024, 4096)  # 0: the mount's default, left as the kernel set it


def probe_readahead(base: Path, size: int, runtime: float) -> list[ProbeResult]:
    """How the FUSE readahead shapes buffered reads: a diagnostic, not a benchmark target.

    The null fs runs in page-cache mode (no direct_io), each readahead on a fresh mount so the
    cache is cold, and counts the read requests the kernel sends for one sequential pass.
    """
    target = NullTarget(
        base / "mnt-probe", base / "logs" / "probe.log", base / "logs" / "probe.json", True
    )
    job = fio_jobs.JOBS_BY_NAME["seqread-cold"]
    results = []
    try:
        for kb in PROBE_READ_AHEAD_KB:
            target.start()
            if kb:
                target.set_read_ahead_kb(kb)
            else:
                kb = int(target.describe().get("read_ahead_kb", "0"))
            probe = ProbeResult(kb)
            target.request_sizes()
            try:
                probe.bw_bytes = fio_jobs.run(job, target.directory, size, runtime).bw_bytes
            except FioError as exc:
                probe.error = str(exc)
            probe.requests = target.request_sizes()
            results.append(probe)
            print(f"readahead probe: {kb} KiB {_bw(probe.bw_bytes)}", file=sys.stderr, flush=True)
            target.stop()
    except (TargetUnavailable, OSError) as exc:
        results.append(ProbeResult(0, error=str(exc)))
    finally:
        target.stop()
    return results


WRITE_PROBE_JOB = "seqwrite-fsync"
WRITE_PROBE_THREADS = 4


def probe_write_ceiling(base: Path, settings: Run) -> list[Sample]:
    """What a sequential write ending in fsync reaches through the writeback cache.

    A diagnostic, not a benchmark target: `seqwrite-fsync` for `settings.rounds` rounds,
    alternating in rotating order over native, three daemons that store the bytes with the
    writeback cache on (as shadowfs runs) and the null fs with `--writeback`, each a fresh
    target in its own sibling directory. The storing daemons are the passthrough with
    `--writeback` (one inline pwrite per request) and bench.write_ceiling's two designs that
    move the store off the event loop (4 threads; 4 threads with O_DIRECT); the best of them
    is the ceiling the report holds shadowfs's figure against.
    """
    logs = base / "logs"
    targets: list[Target] = [
        NativeTarget(base / "wprobe-native"),
        PassthroughTarget(
            base / "wprobe-passthrough-src",
            base / "mnt-wprobe-passthrough",
            logs / "wprobe-passthrough.log",
            writeback=True,
        ),
        *(
            WriteCeilingTarget(
                base / f"wprobe-threads{'-direct' if direct else ''}-src",
                base / f"mnt-wprobe-threads{'-direct' if direct else ''}",
                logs / f"wprobe-threads{'-direct' if direct else ''}.log",
                threads=WRITE_PROBE_THREADS,
                direct=direct,
            )
            for direct in (False, True)
        ),
        NullTarget(
            base / "mnt-wprobe-nullfs",
            logs / "wprobe-nullfs.log",
            logs / "wprobe-nullfs.json",
            writeback=True,
        ),
    ]
    return _alternate(targets, [fio_jobs.JOBS_BY_NAME[WRITE_PROBE_JOB]], settings, "write probe")


READ_PROBE_JOB = "seqread-cold"
HOT_READ_JOB = "seqread-hot"
SHADOWFS_READ_AHEAD_KB = CacheConfig().readahead_kib  # what a default shadowfs mount sets


def probe_read_ceiling(base: Path, settings: Run, read_ahead_kb: int) -> list[Sample]:
    """What a sequential read, cold and hot, reaches through the page cache of a FUSE mount.

    A diagnostic, not a benchmark target: `seqread-cold` (and `seqread-hot`, if the run has it)
    for `settings.rounds` rounds, alternating in rotating order over native, a fresh shadowfs
    mount, the passthrough in page-cache mode (`--writeback`: no `direct_io`, `keep_cache`, one
    inline pread per request from one backing file) and the null fs in page-cache mode, both
    with the FUSE readahead shadowfs sets (`read_ahead_kb`), each remounted cold before every
    sample. The passthrough is the least a daemon reading the bytes from a backing file can do
    in shadowfs's cache mode; the null fs, the transport alone. A hot read reaches no daemon at
    all, so the null fs's hot figure is every FUSE mount's ceiling. shadowfs runs in the same
    rounds so that it is compared with those ceilings minute for minute, not across the run.
    """
    logs = base / "logs"
    source = base / "rprobe-passthrough-src"
    targets: list[Target] = [
        NativeTarget(base / "rprobe-native"),
        ShadowfsTarget(
            device=base / "rprobe-shadowfs-hdd0",
            state_dir=base / "rprobe-shadowfs-state",
            mountpoint=base / "mnt-rprobe-shadowfs",
            config=base / "rprobe-shadowfs.toml",
            log=logs / "rprobe-shadowfs-cli.log",
        ),
        PassthroughTarget(
            source,
            base / "mnt-rprobe-passthrough",
            logs / "rprobe-passthrough.log",
            writeback=True,
            read_ahead_kb=read_ahead_kb,
        ),
        NullTarget(
            base / "mnt-rprobe-nullfs",
            logs / "rprobe-nullfs.log",
            logs / "rprobe-nullfs.json",
            page_cache=True,
            read_ahead_kb=read_ahead_kb,
        ),
    ]
    jobs = [name for name in (READ_PROBE_JOB, HOT_READ_JOB) if name in settings.jobs]
    return _alternate(
        targets,
        [fio_jobs.JOBS_BY_NAME[name] for name in jobs],
        settings,
        "read probe",
        prepare_data=True,
    )


COPIES = "shadowfs-copies"


def probe_copy_layout(native: Target, shadowfs: ShadowfsTarget, settings: Run) -> list[Sample]:
    """The data file read straight off the disk, cold, with no FUSE: native's file, and
    shadowfs's container of its copies from its device directory (bench/copy_layout.py),
    alternating for `settings.rounds` rounds. The container's figure bounds any daemon that
    reads it."""
    job = READ_PROBE_JOB
    ino = (shadowfs.directory / DATA_FILE).stat().st_ino
    container = copy_layout.container_path(shadowfs.device, ino)
    if not container.is_file():
        return [Sample(COPIES, job, 0, error=f"no container at {container}")]
    readers: list[tuple[str, Callable[[], float]]] = [
        ("native", lambda: copy_layout.read_file(native.directory / DATA_FILE)),
        (COPIES, lambda: copy_layout.read_file(container)),
    ]
    samples = []
    for round_ in range(settings.rounds):
        for name, read in readers[round_ % 2 :] + readers[: round_ % 2]:
            sample = Sample(name, job, round_, cold=drop_caches())
            rate = read()
            runtime_ms = int(settings.size / rate * 1000)
            sample.result = FioResult(rate, 0.0, 0.0, settings.size, runtime_ms)
            samples.append(sample)
            print(
                f"[layout probe {round_ + 1}/{settings.rounds}] {name:16} {_bw(rate)}",
                file=sys.stderr,
                flush=True,
            )
    return samples


def _alternate(
    targets: list[Target], jobs: list[Job], settings: Run, label: str, prepare_data: bool = False
) -> list[Sample]:
    """Each of `jobs` for `settings.rounds` rounds over fresh `targets`, in rotating order."""
    samples: list[Sample] = []
    try:
        live: list[Target] = []
        for target in targets:
            try:
                target.start()
                if prepare_data and not isinstance(target, NullTarget):
                    prepare(target, settings.size)
                live.append(target)
            except (TargetUnavailable, OSError, FioError) as exc:
                samples += [
                    Sample(target.name, job.name, 0, error=f"did not start: {exc}") for job in jobs
                ]
                target.stop()
        for round_, job in itertools.product(range(settings.rounds), jobs):
            shift = round_ % max(1, len(live))
            for target in live[shift:] + live[:shift]:
                try:
                    sample = run_one(target, job, round_, settings)
                except (TargetUnavailable, OSError) as exc:
                    sample = Sample(target.name, job.name, round_, error=str(exc))
                samples.append(sample)
                print(
                    f"[{label} {round_ + 1}/{settings.rounds}] {job.name:13} {target.name:24}"
                    f" {_describe(sample, job)}",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        for target in targets:
            target.stop()
    return samples


def _bw(bw_bytes: float | None) -> str:
    return "failed" if bw_bytes is None else f"{bw_bytes / MiB:.1f} MiB/s"


def _describe(sample: Sample, job: Job) -> str:
    if sample.result is None:
        return f"FAILED: {sample.error}"
    result = sample.result
    figure = (
        f"{result.bw_bytes / MiB:9.1f} MiB/s" if job.metric == "bw" else f"{result.iops:9.0f} IOPS"
    )
    cpu = "" if sample.daemon_cpu_s is None else f"  daemon {sample.daemon_cpu_s:.2f} s CPU"
    steal = "" if sample.steal_s is None else f"  steal {sample.steal_s:.2f} s"
    return f"{figure}  p99 {result.p99_ns / 1000:8.1f} us{cpu}{steal}"


def machine_facts(base: Path) -> dict[str, str]:
    def first(path: str, prefix: str) -> str:
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return "?"

    fs = filesystem_of(base)
    try:
        commit = os.popen(f"git -C {shlex.quote(str(REPO))} describe --always --dirty").read()
    except OSError:
        commit = "?"
    return {
        "nproc": str(os.cpu_count()),
        "cpu": first("/proc/cpuinfo", "model name"),
        "memory": f"{int(first('/proc/meminfo', 'MemTotal').split()[0]) / (1 << 20):.1f} GiB",
        "kernel": os.uname().release,
        "fio": fio_jobs.fio_version(),
        "python": sys.version.split()[0],
        "workdir filesystem": f"{fs.fstype} on {fs.source} ({fs.device}) at {fs.mountpoint}",
        "load average at start": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "repository commit": commit.strip() or "?",
    }


def keep_daemon_log(target: ShadowfsTarget, settings: Run) -> None:
    """Copy shadowfs's log out of the work directory and count what it complained about."""
    log = target.state_dir / "daemon.log"
    if not log.exists():
        return
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    kept = RESULTS_DIR / time.strftime("datapath-%Y%m%dT%H%M%SZ-shadowfs.log", time.gmtime())
    shutil.copyfile(log, kept)
    text = log.read_text(errors="replace")
    facts = settings.target_facts.setdefault(target.name, {})
    facts["daemon log"] = (
        f"{text.count('WARNING')} WARNING, {text.count('ERROR')} ERROR lines (kept in {kept})"
    )


def cleanup(base: Path, targets: list[Target]) -> None:
    """Stop every target; remove the work directory only if nothing is mounted inside it."""
    for target in targets:
        try:
            target.stop()
        except Exception as exc:  # keep stopping the others; say what went wrong
            print(f"warning: stopping {target.name}: {exc}", file=sys.stderr)
    for entry in mount_entries():
        if entry.mountpoint.startswith(str(base) + "/"):
            force_unmount(Path(entry.mountpoint))
    if any(entry.mountpoint.startswith(str(base) + "/") for entry in mount_entries()):
        print(f"warning: {base} still has mounts; left in place", file=sys.stderr)
    else:
        shutil.rmtree(base, ignore_errors=True)


def run(
    settings: Run,
    workdir: Path,
    probe: bool = True,
    keep_damon: bool = False,
    keep_reporting: bool = False,
) -> Run:
    base = Path(tempfile.mkdtemp(prefix="shadowfs-bench-", dir=workdir))
    settings.workdir = str(base)
    settings.machine = machine_facts(base)
    # The data files of four targets and the page caches above and below a FUSE mount.
    resident = min(
        page_reporting.free_bytes() - page_reporting.KEEP_FREE, 8 * settings.size + (2 << 30)
    )
    # Restored on the way out, by the with statements, whatever ends the run (SIGTERM included).
    with (
        damon.paused_pageout(keep=keep_damon) as pause,
        page_reporting.held_reporting(keep=keep_reporting, resident=max(0, resident)) as hold,
    ):
        settings.machine["DAMON pageout"] = pause.note
        settings.machine["free page reporting"] = hold.note
        _run(settings, base, probe)
    settings.machine["DAMON pageout"] = pause.note  # a failed restore says so
    settings.machine["free page reporting"] = hold.note
    return settings


def _run(settings: Run, base: Path, probe: bool) -> None:
    if filesystem_of(base).fstype in ("tmpfs", "ramfs"):
        print(f"warning: {base} is on {filesystem_of(base).fstype}, not a disk", file=sys.stderr)
    jobs = [fio_jobs.JOBS_BY_NAME[name] for name in settings.jobs]
    targets = build_targets(base, settings.targets)
    try:
        live: list[Target] = []
        for target in targets:
            print(f"starting {target.name} ...", file=sys.stderr, flush=True)
            try:
                target.start()
                prepare(target, settings.size)
            except (TargetUnavailable, FioError, OSError) as exc:
                settings.skipped[target.name] = str(exc)
                print(f"SKIPPING {target.name}: {exc}", file=sys.stderr, flush=True)
                target.stop()
                continue
            settings.target_facts[target.name] = target.describe()
            live.append(target)
        for round_ in range(settings.rounds):
            shift = round_ % max(1, len(live))
            order = live[shift:] + live[:shift]
            for job in jobs:
                for target in order:
                    if target.name in settings.skipped:
                        continue
                    try:
                        sample = run_one(target, job, round_, settings)
                    except (TargetUnavailable, OSError) as exc:
                        settings.skipped[target.name] = f"{job.name}, round {round_ + 1}: {exc}"
                        print(f"SKIPPING {target.name}: {exc}", file=sys.stderr, flush=True)
                        target.stop()
                        continue
                    settings.samples.append(sample)
                    print(
                        f"[round {round_ + 1}/{settings.rounds}] {job.name:24} {target.name:12}"
                        f" {_describe(sample, job)}",
                        file=sys.stderr,
                        flush=True,
                    )
        for target in live:
            if target.name not in settings.skipped:
                # A daemon may retune its mount while running (readahead after INIT, say).
                facts = settings.target_facts[target.name]
                for key, value in target.describe().items():
                    if key != "device" and facts.get(key, value) != value:  # remounts renumber
                        facts[key] = f"{facts[key]} at start, {value} at end"
                if HOT_READ_JOB in settings.jobs:
                    facts["folios"] = page_cache_folios(target, settings.size)
        by_name = {target.name: target for target in live if target.name not in settings.skipped}
        shadowfs = by_name.get("shadowfs")
        if probe and READ_PROBE_JOB in settings.jobs and "native" in by_name and shadowfs:
            assert isinstance(shadowfs, ShadowfsTarget)
            settings.layout_probe = probe_copy_layout(by_name["native"], shadowfs, settings)
        if probe and "nullfs" in settings.targets:
            settings.readahead_probe = probe_readahead(base, settings.size, settings.runtime)
        if probe and WRITE_PROBE_JOB in settings.jobs:
            settings.write_probe = probe_write_ceiling(base, settings)
        if probe and READ_PROBE_JOB in settings.jobs:
            settings.read_probe = probe_read_ceiling(base, settings, SHADOWFS_READ_AHEAD_KB)
        settings.machine["load average at end"] = " ".join(
            Path("/proc/loadavg").read_text().split()[:3]
        )
    finally:
        for target in targets:
            if isinstance(target, ShadowfsTarget):
                try:
                    target.stop()  # first, so that the log includes the unmount
                finally:
                    keep_daemon_log(target, settings)
        cleanup(base, targets)
        settings.finished = time.time()


def load(path: Path) -> Run:
    """A run saved in bench/results/ (its raw JSON), to re-render without measuring again."""
    record = json.loads(path.read_text())

    def samples(key: str) -> list[Sample]:
        return [
            Sample(
                **{**sample, "result": FioResult(**sample["result"]) if sample["result"] else None}
            )
            for sample in record.pop(key, [])
        ]

    main, write_probe = samples("samples"), samples("write_probe")
    read_probe, layout_probe = samples("read_probe"), samples("layout_probe")
    probes = [ProbeResult(**probe) for probe in record.pop("readahead_probe", [])]
    return Run(
        **record,
        samples=main,
        readahead_probe=probes,
        write_probe=write_probe,
        read_probe=read_probe,
        layout_probe=layout_probe,
    )


def write_report(settings: Run, out: Path) -> None:
    passthrough_source = (REPO / "bench" / "passthrough.py").read_text()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(settings, passthrough_source))


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that unmount


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.datapath", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="64 MiB, 1 round, 1 s jobs")
    parser.add_argument("--rounds", type=int, help="rounds over all jobs (default 3)")
    parser.add_argument("--size", type=parse_size, help="data file size (default 1G)")
    parser.add_argument("--runtime", type=float, help="seconds per time-based job (default 5)")
    parser.add_argument("--out", type=Path, help="report (default docs/benchmarks.md)")
    parser.add_argument("--targets", type=_names(TARGET_NAMES), default=list(TARGET_NAMES))
    parser.add_argument("--jobs", type=_names([job.name for job in fio_jobs.JOBS]))
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp"))
    parser.add_argument(
        "--render", type=Path, metavar="RAW_JSON", help="only re-render a saved run's report"
    )
    parser.add_argument(
        "--no-probe",
        action="store_true",
        help="skip the diagnostics: the FUSE readahead probe, the data file read straight off "
        "the disk, and the read and write ceilings",
    )
    parser.add_argument(
        "--keep-damon",
        action="store_true",
        help="leave running DAMON pageout schemes alone (default: pause them for the run)",
    )
    parser.add_argument(
        "--keep-page-reporting",
        action="store_true",
        help="leave the VM's free page reporting on (default: hold it for the run)",
    )
    args = parser.parse_args(argv)
    if "native" not in args.targets:
        parser.error("--targets must include native: every figure is a ratio to it")
    quick = args.quick
    # Quick runs are smoke tests: they must not overwrite the committed report by default.
    default_out = RESULTS_DIR / "benchmarks-quick.md" if quick else REPO / "docs" / "benchmarks.md"
    out = args.out or default_out
    if args.render:
        write_report(load(args.render), out)
        print(f"wrote {out} from {args.render}", file=sys.stderr)
        return 0
    settings = Run(
        command=" ".join(
            ["python -m bench.datapath", shlex.join(sys.argv[1:] if argv is None else argv)]
        ).strip(),
        size=args.size or (64 * MiB if quick else 1 << 30),
        runtime=args.runtime or (1.0 if quick else 5.0),
        rounds=args.rounds or (1 if quick else 3),
        jobs=args.jobs or [job.name for job in fio_jobs.JOBS],
        targets=args.targets,
    )
    if settings.rounds < 1:
        parser.error("--rounds must be at least 1")
    if shutil.which("fio") is None:
        parser.error("fio is not installed")
    if not args.workdir.is_dir():
        parser.error(f"--workdir {args.workdir}: not a directory")
    signal.signal(signal.SIGTERM, _terminate)
    run(
        settings,
        args.workdir,
        probe=not args.no_probe,
        keep_damon=args.keep_damon,
        keep_reporting=args.keep_page_reporting,
    )
    # The raw samples go beside an explicitly named report, else into bench/results/.
    raw = (
        args.out.with_suffix(".json")
        if args.out
        else RESULTS_DIR / time.strftime("datapath-%Y%m%dT%H%M%SZ.json", time.gmtime())
    )
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps(asdict(settings), indent=1))
    write_report(settings, out)
    print(f"wrote {out} (raw samples: {raw})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
