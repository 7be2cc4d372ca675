"""What the kernel reports about the block device under each device directory.

Owns the mapping device directory -> block device (os.stat(path).st_dev -> major:minor ->
/sys/dev/block/MAJ:MIN), the parsing of its `stat` file, and the differencing of those
cumulative counters into per-interval rates. A counter that decreases is a reset (device
re-attached, loop device re-created): that interval is reported from the new value, flagged
`reset`, and never as a huge negative or wrapped rate.

Partitions report their own counters but are grouped by their whole disk; a loop device
names its backing file (its I/O lands on another device); filesystems without a block device
(overlay, tmpfs, btrfs subvolumes, FUSE) report `available=False` with the reason. Devices
whose directories share one whole disk are flagged: their latency and failure are not
independent, and evacuating from one onto the other protects nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

SECTOR_BYTES = 512  # /sys/block/*/stat counts 512-byte sectors whatever the device's block size

# Field order of /sys/block/<dev>/stat (Documentation/block/stat.rst); kernels before 4.18
# stop after time_in_queue, before 5.5 after discard_ticks.
STAT_FIELDS = (
    "read_ios",
    "read_merges",
    "read_sectors",
    "read_ticks_ms",
    "write_ios",
    "write_merges",
    "write_sectors",
    "write_ticks_ms",
    "in_flight",
    "io_ticks_ms",
    "time_in_queue_ms",
    "discard_ios",
    "discard_merges",
    "discard_sectors",
    "discard_ticks_ms",
    "flush_ios",
    "flush_ticks_ms",
)
# in_flight is a gauge, not a counter: it is never differenced.
_GAUGES = frozenset({"in_flight"})


@dataclass(frozen=True)
class DiskStat:
    """One reading of a stat file: cumulative counters (absent fields are 0)."""

    read_ios: int = 0
    read_merges: int = 0
    read_sectors: int = 0
    read_ticks_ms: int = 0
    write_ios: int = 0
    write_merges: int = 0
    write_sectors: int = 0
    write_ticks_ms: int = 0
    in_flight: int = 0
    io_ticks_ms: int = 0
    time_in_queue_ms: int = 0
    discard_ios: int = 0
    discard_merges: int = 0
    discard_sectors: int = 0
    discard_ticks_ms: int = 0
    flush_ios: int = 0
    flush_ticks_ms: int = 0


def parse_stat(text: str) -> DiskStat:
    """Parse the whitespace-separated counters of a /sys/.../stat file."""
    values = [int(word) for word in text.split()]
    if len(values) < 11:
        raise ValueError(f"block stat has {len(values)} fields, expected at least 11")
    return DiskStat(**dict(zip(STAT_FIELDS, values, strict=False)))


@dataclass(frozen=True)
class BlockDevice:
    """The block device under a directory, as /sys names it."""

    major: int
    minor: int
    name: str  # e.g. "vda1", "loop0"
    sys_path: str  # resolved /sys/devices/... directory holding `stat`
    whole_disk: str  # "vda" for "vda1"; the device itself when not a partition
    is_partition: bool
    loop_backing_file: str | None  # for loop devices: where their I/O really goes


@dataclass(frozen=True)
class Resolution:
    """Outcome of looking up a directory's block device: the device, or why there is none."""

    block_device: BlockDevice | None
    reason: str = ""

    @property
    def available(self) -> bool:
        return self.block_device is not None


def resolve_st_dev(st_dev: int, sys_root: str = "/sys") -> Resolution:
    """Map a `st_dev` to its block device under `sys_root` (a parameter so tests can fake it)."""
    major, minor = os.major(st_dev), os.minor(st_dev)
    if major == 0:
        # Anonymous devices: overlay, tmpfs, FUSE, btrfs subvolumes, NFS — no block stats.
        return Resolution(None, f"{major}:{minor} is not a block device (virtual filesystem)")
    link = Path(sys_root, "dev", "block", f"{major}:{minor}")
    if not link.exists():
        return Resolution(None, f"{link} does not exist")
    sys_path = link.resolve()
    name = sys_path.name
    is_partition = (sys_path / "partition").exists()
    whole_disk = sys_path.parent.name if is_partition else name
    backing: str | None = None
    backing_file = sys_path / "loop" / "backing_file"
    if backing_file.exists():
        backing = backing_file.read_text().strip()
    return Resolution(
        BlockDevice(major, minor, name, str(sys_path), whole_disk, is_partition, backing)
    )


def resolve_path(path: str, sys_root: str = "/sys") -> Resolution:
    """The block device holding the directory `path`."""
    return resolve_st_dev(os.stat(path).st_dev, sys_root)


@dataclass(frozen=True)
class KernelSample:
    """One device's block-layer activity over one interval."""

    device: str
    time_s: float
    interval_s: float
    read_iops: float
    write_iops: float
    read_bytes_per_s: float
    write_bytes_per_s: float
    read_await_ms: float  # mean time per completed read, NaN if none completed
    write_await_ms: float
    utilisation: float  # io_ticks / interval: share of time with I/O in flight (0..1)
    avg_queue_depth: float  # time_in_queue / interval
    in_flight: int  # gauge at the end of the interval
    reset: bool  # a counter decreased: this interval is counted from the new values


def difference(
    device: str, previous: DiskStat, current: DiskStat, interval_s: float, time_s: float
) -> KernelSample:
    """Rates between two readings; any decreasing counter means the counters were reset."""
    reset = any(
        getattr(current, name) < getattr(previous, name)
        for name in STAT_FIELDS
        if name not in _GAUGES
    )
    base = DiskStat() if reset else previous
    interval = max(interval_s, 1e-9)

    def delta(name: str) -> int:
        return int(getattr(current, name)) - int(getattr(base, name))

    reads, writes = delta("read_ios"), delta("write_ios")
    return KernelSample(
        device=device,
        time_s=time_s,
        interval_s=interval_s,
        read_iops=reads / interval,
        write_iops=writes / interval,
        read_bytes_per_s=delta("read_sectors") * SECTOR_BYTES / interval,
        write_bytes_per_s=delta("write_sectors") * SECTOR_BYTES / interval,
        read_await_ms=delta("read_ticks_ms") / reads if reads else float("nan"),
        write_await_ms=delta("write_ticks_ms") / writes if writes else float("nan"),
        utilisation=min(1.0, delta("io_ticks_ms") / 1000.0 / interval),
        avg_queue_depth=delta("time_in_queue_ms") / 1000.0 / interval,
        in_flight=current.in_flight,
        reset=reset,
    )


@dataclass
class _Tracked:
    resolution: Resolution
    previous: DiskStat | None = None
    previous_time: float = 0.0


@dataclass
class KernelStatsCollector:
    """Samples the block devices under a set of device directories.

    `sample(now)` reads each stat file once (a few µs of sysfs each); the first call per
    device only primes the counters and returns None for it.
    """

    device_paths: dict[str, str]
    sys_root: str = "/sys"
    _tracked: dict[str, _Tracked] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        for device, path in self.device_paths.items():
            try:
                resolution = resolve_path(path, self.sys_root)
            except OSError as error:
                resolution = Resolution(None, f"cannot stat {path}: {error.strerror}")
            self._tracked[device] = _Tracked(resolution)

    def resolution(self, device: str) -> Resolution:
        return self._tracked[device].resolution

    def shared_block_devices(self) -> dict[str, list[str]]:
        """Whole disk -> devices on it, only for disks holding two or more devices."""
        groups: dict[str, list[str]] = {}
        for device, tracked in self._tracked.items():
            block = tracked.resolution.block_device
            if block is not None:
                groups.setdefault(block.whole_disk, []).append(device)
        return {disk: sorted(devices) for disk, devices in groups.items() if len(devices) > 1}

    def sample(self, now: float) -> dict[str, KernelSample | None]:
        out: dict[str, KernelSample | None] = {}
        for device, tracked in self._tracked.items():
            block = tracked.resolution.block_device
            if block is None:
                out[device] = None
                continue
            try:
                current = parse_stat(Path(block.sys_path, "stat").read_text())
            except (OSError, ValueError):
                # The device vanished from sysfs (unplugged, loop detached): no sample, and
                # the next reading primes afresh.
                tracked.previous = None
                out[device] = None
                continue
            if tracked.previous is None:
                out[device] = None
            else:
                out[device] = difference(
                    device, tracked.previous, current, now - tracked.previous_time, now
                )
            tracked.previous, tracked.previous_time = current, now
        return out
