"""docs/benchmarks.md from one bench.datapath run: a fixed introduction, then the figures.

The introduction is written by hand and lives here, so that regenerating the report never
loses it; everything after it is computed from the run's samples.
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING

from bench.fio_jobs import GOALS, JOBS_BY_NAME, GiB, Job, MiB

if TYPE_CHECKING:
    from bench.datapath import Run, Sample

INTRO = """\
# Data-path benchmarks

How fast bytes move through a shadowfs mount, measured against the disk itself and against two
reference FUSE filesystems, by `python -m bench.datapath` (bench/datapath.py). This file is
written by that command; edit the introduction in bench/datapath_report.py.

## Method

- **Targets**, all in one fresh `/var/tmp/shadowfs-bench-XXXX` on the same disk:
  - **native**: a plain directory on the backing filesystem; the denominator of every ratio.
  - **shadowfs**: `shadowfs mount CONFIG MNT` with one hdd-class device (the backing device,
    a sibling directory), exactly as a user would run it; it configures its own caching and
    readahead.
  - **passthrough**: bench/passthrough.py, the fixed plain reference quoted at the end: inline
    `os.pread`/`os.pwrite` on the trio thread, `direct_io` on every open, nothing tuned. The
    harness leaves its readahead alone (with `direct_io` the page cache, and so readahead, is
    not used for its files anyway). Its `--writeback` mode (page cache and the kernel's
    writeback cache, as shadowfs runs) is used only by the write diagnostic at the end, with
    bench/write_ceiling.py, the same daemon storing its writes from threads.
  - **nullfs**: bench/nullfs.py, reads return zeros and writes are discarded, also `direct_io`
    on every open: every byte crosses /dev/fuse and nothing stands behind it, so it is the
    ceiling of the FUSE transport plus pyfuse3's per-request cost on this machine. It also
    counts the size of every request it gets (table at the end). Its page-cache and
    `--writeback` modes are used only by the diagnostics at the end.
- **Alternation**: in each round every job runs on every target before the next job starts,
  and the targets' order rotates from round to round; figures are medians over the rounds and
  ratios are taken between medians of the same run.
- **Cache states** are set by the harness, never by fio (`invalidate=0` on every job; fio's
  default would silently drop the page cache before every "hot" job):
  - *cold*: `sync`, FUSE targets unmounted, `echo 3 > /proc/sys/vm/drop_caches`, remounted;
  - *hot*: the file is read once through the target just before the job;
  - *as left*: O_DIRECT and write jobs run on whatever the previous jobs left.
- **DAMON**: this machine runs a DAMON kdamond with a `pageout` scheme that reclaims page-cache
  pages DAMON has seen idle for about 30 s (6 aggregation intervals of 5 s), including pages a
  4 KiB random-read job touches too sparsely for DAMON to notice, which makes *hot* and *as
  left* depend on timing. The harness pauses every running kdamond that has a `pageout` scheme
  for the whole run (writes `off` to its sysfs `state`) and restores the state it found
  afterwards, on errors and SIGTERM too (bench/damon.py). Like `drop_caches`, it is control of
  the environment and applies to every target alike; the machine table says what was found and
  done, and `--keep-damon` leaves DAMON alone.
- **Free page reporting**: this machine is a VM that reports free memory to the host, which
  takes it back; the next write to such a page waits while the host faults it in again (1 GiB
  of fresh memory took 0.8 s to write when the host still held it, 2.5-2.7 s when reported).
  Native's page cache is filled by DMA, so the host's I/O thread waits; a FUSE page cache is
  filled by the daemon's memcpy, so the daemon's CPU does: with reporting on, the same
  passthrough cold-read a cached file at 2,000-2,700 MiB/s or at 400-750 MiB/s, 79% of its
  CPU in that memcpy. The harness holds reporting for the run (`page_reporting_order` above
  the largest page order) after writing once to the memory the run will use, and restores
  the order it found afterwards (bench/page_reporting.py); the machine table says what was
  done, and `--keep-page-reporting` leaves it alone.
- **Queue depth**: O_DIRECT jobs use libaio; buffered QD1 uses psync; buffered QD16 uses
  io_uring (libaio is synchronous for buffered I/O, so its iodepth would be a fiction), whose
  kernel workers keep 16 buffered requests in flight.
- **Sequential write** writes a new file and ends in fsync (`end_fsync=1`); fio counts the fsync
  in the job's runtime, so the bandwidth is "bytes made durable per second".
- **p99** is fio's completion-latency 99th percentile. **Daemon CPU** is utime+stime of the FUSE
  daemon and its child processes over the fio run (from /proc/PID/stat), per GiB moved (for
  4 KiB jobs, 1 s/GiB is 3.8 µs per I/O); *busy* is that CPU time over the job's runtime, so
  100% means one core kept busy: the ceiling of a daemon that serves requests on one thread.
- **O_DIRECT through FUSE** reaches the daemon, which does what it likes below: the passthrough
  reads and writes its backing file *buffered* (os.pread buffers are not aligned for O_DIRECT),
  so its O_DIRECT figures can come from the backing page cache while native O_DIRECT goes to the
  disk. That is why the O_DIRECT targets compare shadowfs with the passthrough, not with native.
- **Noise**: the machine's two cores are shared with other work; the load average at the start
  and end of the run is recorded below, and every round's figure is listed beside the median.
  The disk behind /dev/vda varies a lot from minute to minute (native sequential write with
  fsync has measured anywhere from 280 to 1,200 MiB/s on the same file), so read differences
  of tens of percent between single rounds as noise, and trust the medians only as far as the
  rounds agree. One pattern has held in every run so far: native's sequential write of 1 GiB
  ending in fsync comes out *slower* than the passthrough's (about 0.5x), so that target says
  little about FUSE costs on this disk.

## What the FUSE transport does on this machine

Measured with the null fs (its request histograms are in the tables at the end); facts that
hold whatever the figures of one run:

- **One request costs about 35–70 µs** round trip through pyfuse3 even when the daemon does
  nothing: 4 KiB I/O through the null fs tops out around 15–30k requests/s, at queue depth 1
  or 16 alike (one trio thread serves them all). Anything that must reach the daemon per 4 KiB
  is bounded there; page-cache hits never reach it.
- **`direct_io` request sizes follow the application's buffer alignment.** A 1 MiB read or
  write from a page-aligned buffer arrives as one 1 MiB request; from a buffer that is not
  page aligned (fio's default, and glibc malloc's for large buffers, which sit 16 bytes into a
  page) it arrives as two requests, 1,048,560 + 16 bytes, because a request carries at most 256
  pages. Writes never arrive larger than 1 MiB.
- **Buffered reads are shaped by the FUSE readahead** (the mount's bdi
  `/sys/class/bdi/0:N/read_ahead_kb`, default 128): at the default they arrive as 256 KiB
  requests; at 1024 as 1 MiB requests; beyond that they stay 1 MiB (the 256-page cap), so a
  larger readahead only reads further ahead. The backing ext4 disk's own readahead here is
  8 MiB. The harness changes no target's readahead; see the probe table at the end.
- **FUSE mounts get `max_ratio` 1 and `strict_limit` 1** on their bdi: with the writeback
  cache on, a FUSE mount may hold only a small share of the dirty-page limit before writers are
  throttled, unlike the backing ext4 (100, 0). Both are writable in sysfs per mount.
"""


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# CPU steal (summed over the machine's CPUs) during one fio run that the report names beside
# the sample: a tenth of a second is 1% of a 5 s run on two CPUs.
NOTABLE_STEAL_S = 0.1


def _ok(samples: list[Sample]) -> list[Sample]:
    return [sample for sample in samples if sample.result is not None]


class Figures:
    """Medians per (target, job) of the job's metric, p99 and daemon CPU per GiB."""

    def __init__(self, run: Run, samples: list[Sample] | None = None) -> None:
        self.run = run
        self.by_key: dict[tuple[str, str], list[Sample]] = {}
        for sample in run.samples if samples is None else samples:
            self.by_key.setdefault((sample.target, sample.job), []).append(sample)

    def samples(self, target: str, job: str) -> list[Sample]:
        return _ok(self.by_key.get((target, job), []))

    def metric(self, target: str, job: Job) -> float | None:
        values = [s.result.metric(job.metric) for s in self.samples(target, job.name) if s.result]
        return _median(values)

    def spread_cell(self, target: str, job: Job) -> str:
        """Every sample's figure in round order, each marked with the CPU steal it lost when
        that was notable: the hypervisor's share of the noise, named where it happened."""
        cells = []
        for sample in self.samples(target, job.name):
            assert sample.result is not None
            cell = _fmt_metric(job, sample.result.metric(job.metric))
            if sample.steal_s is not None and sample.steal_s >= NOTABLE_STEAL_S:
                cell += f" (steal {sample.steal_s:.1f} s)"
            cells.append(cell)
        return ", ".join(cells)

    def p99(self, target: str, job: str) -> float | None:
        return _median([s.result.p99_ns for s in self.samples(target, job) if s.result])

    def cpu_per_gib(self, target: str, job: str) -> float | None:
        values = [
            s.daemon_cpu_s / (s.result.io_bytes / GiB)
            for s in self.samples(target, job)
            if s.result and s.daemon_cpu_s is not None and s.result.io_bytes
        ]
        return _median(values)

    def cpu_busy(self, target: str, job: str) -> float | None:
        """The daemon's CPU time over the job's runtime: 1.0 is one core kept busy."""
        values = [
            s.daemon_cpu_s / (s.result.runtime_ms / 1000)
            for s in self.samples(target, job)
            if s.result and s.daemon_cpu_s is not None and s.result.runtime_ms
        ]
        return _median(values)

    def ratio(self, target: str, job: Job, baseline: str) -> float | None:
        value, base = self.metric(target, job), self.metric(baseline, job)
        return None if value is None or not base else value / base


def _fmt_metric(job: Job, value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value / MiB:,.0f} MiB/s" if job.metric == "bw" else f"{value:,.0f} IOPS"


def _fmt_ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}x"


def _fmt_us(ns: float | None) -> str:
    if ns is None or ns == 0:
        return "–"
    return f"{ns / 1000:,.0f} µs" if ns >= 10_000 else f"{ns / 1000:.1f} µs"


def _fmt_p99(figures: Figures, target: str, job: str) -> str:
    p99, native = figures.p99(target, job), figures.p99("native", job)
    if not p99 or not native or target == "native":
        return _fmt_us(p99)
    return f"{_fmt_us(p99)} ({p99 / native:.1f}x)"


def _fmt_size(size: int) -> str:
    return f"{size // 1024} KiB" if size % 1024 == 0 else f"{size} B"


WRITE_PROBE_JOB = "seqwrite-fsync"
WRITE_PROBE_TARGETS = {
    "native": "native",
    "passthrough-writeback": "passthrough `--writeback`",
    "writeback-4threads": "passthrough `--writeback`, writes in 4 threads",
    "writeback-4threads-direct": "passthrough `--writeback`, writes in 4 threads, O_DIRECT",
    "nullfs-writeback": "nullfs `--writeback`",
}
# The daemons of the write probe that store the bytes: the best of them is the ceiling.
WRITE_PROBE_STORING = ("passthrough-writeback", "writeback-4threads", "writeback-4threads-direct")


def _write_ceiling(run: Run) -> tuple[float, str] | None:
    """The best ratio to native of the storing daemons in the write probe, and its label."""
    probe = Figures(run, run.write_probe)
    job = JOBS_BY_NAME[WRITE_PROBE_JOB]
    measured = [
        (ratio, WRITE_PROBE_TARGETS[name])
        for name in WRITE_PROBE_STORING
        if (ratio := probe.ratio(name, job, "native")) is not None
    ]
    return max(measured) if measured else None


READ_PROBE_JOB = "seqread-cold"
READ_PROBE_TARGETS = {
    "native": "native",
    "shadowfs": "shadowfs",
    "passthrough-writeback": "passthrough, page-cache mode",
    "nullfs-pagecache": "nullfs, page-cache mode",
}


HOT_READ_JOB = "seqread-hot"


def _read_ceiling(run: Run) -> float | None:
    """The page-cache passthrough's ratio to native in the read probe, if it was measured."""
    return Figures(run, run.read_probe).ratio(
        "passthrough-writeback", JOBS_BY_NAME[READ_PROBE_JOB], "native"
    )


def _hot_ceiling(run: Run) -> float | None:
    """The page-cache null fs's hot-read ratio to native in the read probe: a hot read reaches
    no daemon, so this is what the kernel's FUSE page cache gives any FUSE mount."""
    return Figures(run, run.read_probe).ratio(
        "nullfs-pagecache", JOBS_BY_NAME[HOT_READ_JOB], "native"
    )


def _probe_shadowfs(run: Run, job: Job) -> str:
    """ ", where shadowfs reached R in the same rounds", if the read probe measured it."""
    ratio = Figures(run, run.read_probe).ratio("shadowfs", job, "native")
    return "" if ratio is None else f", where shadowfs reached {ratio:.2f}x in the same rounds"


def _goals(figures: Figures, run: Run) -> list[str]:
    lines = [
        "| target (issue 3, point 8) | shadowfs | passthrough | nullfs | shadowfs verdict |",
        "| --- | --- | --- | --- | --- |",
    ]
    for goal in GOALS:
        job = JOBS_BY_NAME.get(goal.job)
        if job is None or goal.job not in run.jobs:
            continue
        ratios = {name: figures.ratio(name, job, goal.baseline) for name in run.targets}
        shadow = ratios.get("shadowfs")
        if shadow is None:
            verdict = "not measured" + (
                f" ({run.skipped['shadowfs']})" if "shadowfs" in run.skipped else ""
            )
        elif shadow >= goal.ratio:
            verdict = "**met**"
        else:
            verdict = "**missed**"
            ceiling = ratios.get("nullfs")
            if ceiling is not None and ceiling < goal.ratio:
                # Evidence, not proof: shadowfs may keep the page cache, which the null fs does not.
                verdict += (
                    f" (with every byte crossing /dev/fuse, the null fs reaches {ceiling:.2f}x)"
                )
            beside = _probe_shadowfs(run, job) if goal.job in (READ_PROBE_JOB, HOT_READ_JOB) else ""
            reading = _read_ceiling(run) if goal.job == READ_PROBE_JOB else None
            if reading is not None and reading < goal.ratio:
                verdict += (
                    f" (ceiling {reading:.2f}x: the page-cache passthrough's ratio in the read"
                    f" diagnostic below{beside})"
                )
            hot = _hot_ceiling(run) if goal.job == HOT_READ_JOB else None
            if hot is not None and hot < goal.ratio:
                verdict += (
                    f" (ceiling {hot:.2f}x: the null fs's hot read through its page cache, no"
                    f" daemon involved, in the read diagnostic below{beside})"
                )
            transport = (
                Figures(run, run.write_probe).ratio("nullfs-writeback", job, "native")
                if goal.job == WRITE_PROBE_JOB
                else None
            )
            if transport is not None and transport < goal.ratio:
                verdict += (
                    f" (transport ceiling {transport:.2f}x: the null fs with the writeback cache"
                    " that the issue asks for, nothing stored, in the write diagnostic below)"
                )
            writeback = _write_ceiling(run) if goal.job == WRITE_PROBE_JOB else None
            if writeback is not None and writeback[0] < goal.ratio:
                verdict += (
                    f" (ceiling {writeback[0]:.2f}x: the best storing daemon's ratio in the"
                    f" write diagnostic below, {writeback[1]})"
                )
        cells = [_fmt_ratio(ratios.get(name)) for name in ("shadowfs", "passthrough", "nullfs")]
        lines.append(f"| {goal.text} | {' | '.join(cells)} | {verdict} |")
    lines.append("")
    lines.append(
        "Ratios are medians of the target over medians of the baseline named in the goal; the "
        "null fs column is the transport's ceiling when every byte crosses /dev/fuse. In the "
        "rounds columns below, a sample that lost notable CPU to the hypervisor (steal, summed "
        f"over CPUs, at least {NOTABLE_STEAL_S:g} s) says how much."
    )
    return lines


def _job_table(figures: Figures, run: Run, job: Job) -> list[str]:
    lines = [
        f"### {job.name}: {job.title}",
        "",
        f"Cache: {job.cache.value}. fio: "
        + ", ".join(f"`{key}={value}`" for key, value in job.options)
        + (", time based" if job.time_based else ", one pass over the file"),
        "",
        "| target | median | x native | x passthrough | p99 (x native) | daemon CPU s/GiB (busy) "
        "| rounds |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for target in run.targets:
        failures = [s for s in figures.by_key.get((target, job.name), []) if s.result is None]
        if not figures.samples(target, job.name):
            reason = failures[0].error if failures else run.skipped.get(target, "not run")
            lines.append(f"| {target} | failed or skipped: {reason} | | | | | |")
            continue
        cpu, busy = figures.cpu_per_gib(target, job.name), figures.cpu_busy(target, job.name)
        cpu_cell = "–" if cpu is None or busy is None else f"{cpu:.2f} ({busy:.0%})"
        spread = figures.spread_cell(target, job)
        lines.append(
            f"| {target} | {_fmt_metric(job, figures.metric(target, job))} "
            f"| {_fmt_ratio(figures.ratio(target, job, 'native'))} "
            f"| {_fmt_ratio(figures.ratio(target, job, 'passthrough'))} "
            f"| {_fmt_p99(figures, target, job.name)} "
            f"| {cpu_cell} | {spread} |"
        )
    not_cold = [s for s in run.samples if s.job == job.name and s.cold is False]
    if not_cold:
        lines += [
            "",
            "**Caches could not be dropped (not root): these 'cold' runs were not cold.**",
        ]
    lines.append("")
    return lines


def _requests(run: Run) -> list[str]:
    lines = [
        "## Requests the null fs received",
        "",
        "Size of the read and write requests reaching the daemon, summed over rounds: what the "
        "kernel makes of each job's I/O on a `direct_io` mount.",
        "",
        "| job | reads (size x count) | writes (size x count) | fsyncs |",
        "| --- | --- | --- | --- |",
    ]
    for name in run.jobs:
        reads: dict[int, int] = {}
        writes: dict[int, int] = {}
        fsyncs = 0
        seen = False
        for sample in run.samples:
            if sample.target != "nullfs" or sample.job != name or not sample.requests:
                continue
            seen = True
            for key, into in (("reads", reads), ("writes", writes)):
                histogram = sample.requests.get(key) or {}
                assert isinstance(histogram, dict)
                for size, count in histogram.items():
                    into[int(size)] = into.get(int(size), 0) + int(count)
            fsyncs += int(sample.requests.get("fsyncs", 0))  # type: ignore[call-overload]
        if not seen:
            continue

        lines.append(f"| {name} | {_top(reads)} | {_top(writes)} | {fsyncs} |")
    lines.append("")
    return lines


def _top(histogram: dict[int, int]) -> str:
    ranked = sorted(histogram.items(), key=lambda item: -item[1])[:4]
    return ", ".join(f"{_fmt_size(size)} x {count:,}" for size, count in ranked) or "–"


def _probe(run: Run) -> list[str]:
    lines = [
        "## FUSE readahead and buffered reads (diagnostic)",
        "",
        "Not a target: the null fs in page-cache mode (no `direct_io`, `keep_cache`), freshly "
        "mounted for each row so its cache is cold, one sequential 1 MiB pass "
        "(`seqread-cold`'s fio job) with the mount's `read_ahead_kb` set as shown (the first row "
        "is the kernel's default). It shows the read sizes the kernel sends a daemon that keeps "
        "the page cache, and what raising the readahead buys when nothing stands behind it.",
        "",
        "| read_ahead_kb | MiB/s | read requests (size x count) |",
        "| --- | --- | --- |",
    ]
    for probe in run.readahead_probe:
        if probe.error:
            lines.append(f"| {probe.read_ahead_kb} | failed: {probe.error} | |")
            continue
        reads = (probe.requests or {}).get("reads") or {}
        assert isinstance(reads, dict)
        histogram = {int(size): int(count) for size, count in reads.items()}
        bw = "–" if probe.bw_bytes is None else f"{probe.bw_bytes / MiB:,.0f}"
        lines.append(f"| {probe.read_ahead_kb} | {bw} | {_top(histogram)} |")
    lines.append("")
    return lines


def _probe_table(probe: Figures, job: Job, labels: dict[str, str]) -> list[str]:
    lines = [
        "| target | median | x native | rounds | daemon CPU s/GiB (busy) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for target, label in labels.items():
        failures = [s for s in probe.by_key.get((target, job.name), []) if s.result is None]
        if not probe.samples(target, job.name):
            reason = failures[0].error if failures else "not run"
            lines.append(f"| {label} | failed: {reason} | | | |")
            continue
        cpu, busy = probe.cpu_per_gib(target, job.name), probe.cpu_busy(target, job.name)
        cpu_cell = "–" if cpu is None or busy is None else f"{cpu:.2f} ({busy:.0%})"
        spread = probe.spread_cell(target, job)
        failed = f" ({len(failures)} failed)" if failures else ""
        lines.append(
            f"| {label} | {_fmt_metric(job, probe.metric(target, job))} "
            f"| {_fmt_ratio(probe.ratio(target, job, 'native'))} | {spread}{failed} | {cpu_cell} |"
        )
    return lines


def _probe_head(
    title: str, run: Run, job: Job, probe: Figures, labels: dict[str, str], over: str
) -> list[str]:
    """A diagnostic section's title, what it ran `over`, and its table."""
    return [
        f"## {title} (diagnostic)",
        "",
        f"Not a target: `{job.name}`'s fio job, {run.rounds} round(s) after the main rounds, "
        f"alternating in rotating order over {over}; ratios are to native in this probe.",
        "",
        *_probe_table(probe, job, labels),
        "",
    ]


def _read_probe(run: Run, figures: Figures) -> list[str]:
    job = JOBS_BY_NAME[READ_PROBE_JOB]
    probe = Figures(run, run.read_probe)
    facts = run.target_facts.get("shadowfs", {})
    labels = dict(READ_PROBE_TARGETS)
    if not any(sample.target == "shadowfs" for sample in run.read_probe):
        del labels["shadowfs"]  # runs saved before shadowfs joined the probe
    lines = _probe_head(
        "Sequential cold read through a FUSE page cache",
        run,
        job,
        probe,
        labels,
        "native, a fresh shadowfs mount, the passthrough in page-cache mode (`--writeback`: no "
        "`direct_io`, `keep_cache`, as shadowfs runs; one inline `os.pread` per request from "
        "one backing file) and the null fs in page-cache mode, both with the FUSE readahead a "
        "default shadowfs mount sets, each remounted cold before every sample",
    )
    hot_job = JOBS_BY_NAME[HOT_READ_JOB]
    hot = _hot_ceiling(run)
    if probe.samples("native", HOT_READ_JOB):
        lines += [
            f"`{hot_job.name}` over the same targets, in the same rounds:",
            "",
            *_probe_table(probe, hot_job, labels),
            "",
        ]
    if hot is not None:
        folios = {
            name: facts["folios"] for name, facts in run.target_facts.items() if facts.get("folios")
        }
        lines.append(
            "A hot read reaches no daemon: the kernel copies out of the FUSE mount's page cache "
            "as it copies out of ext4's for native. So the null fs's hot figure "
            f"({hot:.2f}x) is what any FUSE filesystem's hot read gets here, against "
            f"shadowfs's {_fmt_ratio(figures.ratio('shadowfs', hot_job, 'native'))} in the "
            f"main run{_probe_shadowfs(run, hot_job)}. Page-cache folios of the data files "
            "after the main rounds "
            "(bench/folios.py): "
            + "; ".join(f"{name}: {value}" for name, value in folios.items())
            + "."
        )
        lines.append("")
    ceiling = _read_ceiling(run)
    null = probe.ratio("nullfs-pagecache", job, "native")
    shadow = figures.ratio("shadowfs", job, "native")
    if ceiling is not None:
        lines.append(
            "The page-cache passthrough is the least a daemon reading the bytes from a backing "
            "file can do in shadowfs's cache mode (one inline pread per request, nothing asked "
            f"for ahead, no map): {ceiling:.2f}x here, against "
            f"shadowfs's {_fmt_ratio(shadow)} in the main run{_probe_shadowfs(run, job)}. "
            "The null fs row is the transport "
            f"and the FUSE page cache alone, nothing read behind them ({_fmt_ratio(null)}). "
            f"Native's median was {_fmt_metric(job, figures.metric('native', job))} in the main "
            f"run and {_fmt_metric(job, probe.metric('native', job))} here."
            + (
                f" shadowfs's readahead: {facts['read_ahead_kb']} KiB."
                if facts.get("read_ahead_kb")
                else ""
            )
        )
        lines.append("")
    return lines


LAYOUT_PROBE_TARGETS = {"native": "native data file", "shadowfs-copies": "shadowfs's container"}


def _layout_probe(run: Run, figures: Figures) -> list[str]:
    job = JOBS_BY_NAME[READ_PROBE_JOB]
    probe = Figures(run, run.layout_probe)
    lines = [
        "## The data file read straight off the disk (diagnostic)",
        "",
        f"Not a target, and no FUSE: {run.rounds} round(s) after the main rounds, each dropping "
        "the caches first, alternating: native's data file and the container that holds "
        "shadowfs's copies of its data file (straight from its device directory), each read "
        "whole, 1 MiB at a time (bench/copy_layout.py). The second bounds any daemon that "
        "reads those copies.",
        "",
        *_probe_table(probe, job, LAYOUT_PROBE_TARGETS),
        "",
    ]
    copies = probe.ratio("shadowfs-copies", job, "native")
    if copies is not None:
        mounted = _fmt_ratio(figures.ratio("shadowfs", job, "native"))
        lines.append(
            f"The container came off the disk at {copies:.2f}x of native's file; shadowfs's "
            f"cold read through the mount reached {mounted} in the main run."
        )
        lines.append("")
    return lines


def _write_probe(run: Run, figures: Figures) -> list[str]:
    job = JOBS_BY_NAME[WRITE_PROBE_JOB]
    probe = Figures(run, run.write_probe)
    lines = _probe_head(
        "Sequential write ending in fsync through the writeback cache",
        run,
        job,
        probe,
        WRITE_PROBE_TARGETS,
        "native, the passthrough with `--writeback` (no `direct_io`, `keep_cache`, the kernel's "
        "writeback cache on, as shadowfs runs; still inline `os.pwrite` into one backing file), "
        "the same with its writes in 4 threads (`bench/write_ceiling.py`), the same again "
        "writing with O_DIRECT from an aligned buffer (the backing page cache left alone), and "
        "the null fs with `--writeback` (the same cache modes, writes discarded), each fresh in "
        "its own directory",
    )
    best = _write_ceiling(run)
    null = probe.ratio("nullfs-writeback", job, "native")
    shadow = figures.ratio("shadowfs", job, "native")
    if best is not None:
        ceiling, label = best
        above = (
            " (above the bound: noise between the two measurements can do that)"
            if shadow is not None and shadow > ceiling
            else ""
        )
        lines.append(
            "The three storing daemons do the least work per request a daemon storing the bytes "
            "in a backing file can do with the writeback cache on, inline or with the store moved "
            f"off the event loop; the best of them ({label}) reached {ceiling:.2f}x, which bounds "
            "what shadowfs's design (a container file per inode, metadata besides) can reach on "
            f"this job; shadowfs reached {_fmt_ratio(shadow)} in the main run{above}. Native's "
            f"median was {_fmt_metric(job, figures.metric('native', job))} there and "
            f"{_fmt_metric(job, probe.metric('native', job))} here: the two ratios come from "
            "different minutes of a disk whose speed drifts, so compare them loosely. The null "
            "fs row is the transport alone, the kernel's writeback through /dev/fuse with "
            f"nothing behind it ({_fmt_ratio(null)})."
        )
        lines.append("")
    return lines


def render(run: Run, passthrough_source: str) -> str:
    figures = Figures(run)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(run.started))
    minutes = (run.finished - run.started) / 60
    lines = [
        INTRO,
        "## Last run",
        "",
        f"- Command: `{run.command}`",
        f"- Started {started}, took {minutes:.1f} min; {run.rounds} round(s); data file "
        f"{run.size / MiB:,.0f} MiB; time-based jobs run {run.runtime:g} s.",
        "",
        "| machine | |",
        "| --- | --- |",
        *[f"| {key} | {value} |" for key, value in run.machine.items()],
        "",
        "| target | filesystem | bdi | read_ahead_kb | max_ratio | strict_limit | page cache |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in run.targets:
        facts = run.target_facts.get(name)
        if facts is None:
            lines.append(f"| {name} | skipped: {run.skipped.get(name, '?')} | | | | | |")
            continue
        lines.append(
            f"| {name} | {facts.get('fstype', '?')} | {facts.get('device', '?')} "
            f"| {facts.get('read_ahead_kb', '?')} | {facts.get('max_ratio', '?')} "
            f"| {facts.get('strict_limit', '?')} | {facts.get('folios', '–')} |"
        )
    for name, facts in run.target_facts.items():
        if "daemon log" in facts:
            lines.append(f"\n{name} daemon log: {facts['daemon log']}")
    late = {name: why for name, why in run.skipped.items() if name in run.target_facts}
    for name, why in late.items():
        lines.append(f"\n{name} stopped part-way: {why}")
    lines += ["", "## Targets", "", *_goals(figures, run), "", "## Results per job", ""]
    for name in run.jobs:
        lines += _job_table(figures, run, JOBS_BY_NAME[name])
    if "nullfs" in run.targets:
        lines += _requests(run)
    if run.readahead_probe:
        lines += _probe(run)
    if run.layout_probe:
        lines += _layout_probe(run, figures)
    if run.read_probe:
        lines += _read_probe(run, figures)
    if run.write_probe:
        lines += _write_probe(run, figures)
    lines += [
        "## The passthrough (bench/passthrough.py, verbatim)",
        "",
        "```python",
        passthrough_source.rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)
