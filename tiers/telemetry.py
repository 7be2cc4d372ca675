"""In-line per-device I/O accounting for the data path.

Owns the counters a device keeps for every I/O it serves: a fixed logarithmic latency
histogram per direction (O(1) per record, p50/p99 read from the buckets), operation and
byte counts, errors, timeouts, and page-cache hits. `DeviceTelemetry.snapshot(now)` turns
one interval into a frozen `TelemetrySample` and starts the next interval.

Only I/O that reached the device is timed: a read the page cache served measured RAM, not
the disk, so it is counted as a cache hit and kept out of the latency histogram.

Dependency-free on purpose (no numpy): it runs on the hot path, once per I/O. Not
thread-safe: call it from the trio thread after the I/O returns (code between two awaits is
atomic under trio), never from inside a worker thread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Buckets: SUB_BUCKETS per power of two, from 2**MIN_EXP µs (1 µs) to 2**MAX_EXP µs (~137 s).
# 8 linear sub-buckets per octave bound the relative error of a percentile to 1/8 = 12.5%.
SUB_BUCKETS = 8
MIN_EXP = 0
MAX_EXP = 27
N_BUCKETS = (MAX_EXP - MIN_EXP) * SUB_BUCKETS + 2  # + underflow and overflow buckets
_SUB_SCALE = 2 * SUB_BUCKETS
_frexp = math.frexp


def bucket_index(latency_us: float) -> int:
    """Index of the bucket holding `latency_us` (O(1): one frexp, no loop)."""
    if latency_us < 1.0:
        return 0
    mantissa, exponent = math.frexp(latency_us)  # latency = mantissa * 2**exponent, m in [.5, 1)
    octave = exponent - 1 - MIN_EXP
    if octave >= MAX_EXP - MIN_EXP:
        return N_BUCKETS - 1
    return 1 + octave * SUB_BUCKETS + int((mantissa - 0.5) * 2 * SUB_BUCKETS)


def bucket_upper_us(index: int) -> float:
    """Upper bound in µs of bucket `index` (what a percentile reports: never optimistic)."""
    if index <= 0:
        return 1.0
    if index >= N_BUCKETS - 1:
        return float("inf")
    octave, sub = divmod(index - 1, SUB_BUCKETS)
    return 2.0 ** (octave + MIN_EXP) * (1.0 + (sub + 1) / SUB_BUCKETS)


# The fast path of the bucket computation: every bucket boundary below 2**MAX_EXP µs lies on
# the grid of 1/8 µs (2**octave * (1 + k/8), octave >= 0), so flooring a latency to that grid
# never moves it across a boundary, and a table indexed by the latency in 1/8 µs gives its
# bucket exactly (tested against bucket_index). 2**17 entries cover latencies below 16.4 ms,
# nearly every I/O, for 1 MiB of memory per process (one table shared by all devices); one
# multiply, one int() and one list index replace frexp and its arithmetic (~200 ns saved per
# I/O, measured). Longer latencies take the frexp path.
FAST_UNITS_PER_US = 8
FAST_LIMIT = 1 << 17
_FAST_SCALE = 1e6 * FAST_UNITS_PER_US


def _fast_table() -> list[int]:
    table = [0] * FAST_LIMIT  # below 1 µs: the underflow bucket
    for index in range(1, N_BUCKETS - 1):
        lower = 1.0 if index == 1 else bucket_upper_us(index - 1)
        low = int(lower * FAST_UNITS_PER_US)
        high = min(FAST_LIMIT, int(bucket_upper_us(index) * FAST_UNITS_PER_US))
        if low >= FAST_LIMIT:
            break
        table[low:high] = [index] * (high - low)
    return table


FAST_INDEX = _fast_table()


def _slow_index(latency_s: float) -> int:
    """bucket_index for a latency beyond the fast table."""
    mantissa, exponent = _frexp(latency_s * 1e6)
    octave = exponent - 1 - MIN_EXP
    if octave >= MAX_EXP - MIN_EXP:
        return N_BUCKETS - 1
    return 1 + octave * SUB_BUCKETS + int((mantissa - 0.5) * _SUB_SCALE)


class LatencyHistogram:
    """Counts per fixed logarithmic bucket; percentiles read from the cumulative counts.

    The count is not kept apart: `total` sums the buckets (at snapshot time, once per
    interval), so that recording is one list increment.
    """

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts = [0] * N_BUCKETS

    @property
    def total(self) -> int:
        return sum(self.counts)

    def record(self, latency_s: float) -> None:
        # bucket_index inlined (fast table, else frexp): this runs once per I/O.
        units = int(latency_s * _FAST_SCALE)
        if 0 <= units < FAST_LIMIT:
            self.counts[FAST_INDEX[units]] += 1
        else:
            self.counts[_slow_index(latency_s) if units > 0 else 0] += 1

    def percentile_ms(self, fraction: float) -> float:
        """Upper bound of the bucket holding the `fraction` quantile, in ms; NaN if empty."""
        total = self.total
        if total == 0:
            return math.nan
        rank = max(1, math.ceil(fraction * total))
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return bucket_upper_us(index) / 1000.0
        return math.inf  # unreachable: counts sum to total

    def reset(self) -> None:
        self.counts = [0] * N_BUCKETS


@dataclass(frozen=True)
class TelemetrySample:
    """One device over one interval. Latencies in ms are NaN when no I/O reached the device."""

    device: str
    time_s: float
    interval_s: float
    read_p50_ms: float
    read_p99_ms: float
    write_p50_ms: float
    write_p99_ms: float
    read_iops: float
    write_iops: float
    read_bytes_per_s: float
    write_bytes_per_s: float
    errors: int
    timeouts: int
    cache_hits: int

    def trace_fields(self) -> dict[str, float | int | str]:
        """The columns of the predictor's trace format (docs/telemetry.md)."""
        return {
            "time_s": self.time_s,
            "device": self.device,
            "read_p99_ms": self.read_p99_ms,
            "write_p99_ms": self.write_p99_ms,
            "read_iops": self.read_iops,
            "write_iops": self.write_iops,
            # A timeout is an error the application would have seen without a shadow copy.
            "errors": self.errors + self.timeouts,
        }


class DeviceTelemetry:
    """The accounting of one device, reset at every `snapshot`."""

    __slots__ = (
        "device",
        "_read_hist",
        "_write_hist",
        "_read_bytes",
        "_write_bytes",
        "_errors",
        "_timeouts",
        "_cache_hits",
        "_interval_start",
    )

    def __init__(self, device: str, now: float) -> None:
        self.device = device
        self._read_hist = LatencyHistogram()
        self._write_hist = LatencyHistogram()
        self._read_bytes = 0
        self._write_bytes = 0
        self._errors = 0
        self._timeouts = 0
        self._cache_hits = 0
        self._interval_start = now

    def record(self, op: str, latency_s: float, nbytes: int, reached_device: bool) -> None:
        """The device's I/O recorder hook (tiers.local_device.IORecorder), in one call.

        `op` is "read", "write", "timeout", "<op>_error", or another op ("open", "fsync",
        "statvfs") that is not the device's read/write latency and is ignored: an fsync's time
        grows with the dirty data it writes back, whatever the device's health. Reads and
        writes, once per I/O, cost one bucket lookup and two increments (the operation count
        is the histogram's sum, taken at snapshot time): the daemon's whole CPU per 4 KiB
        request is ~40-70 µs here, and every Python attribute or call costs tens of ns.
        """
        if op == "read":
            if not reached_device:
                self._cache_hits += 1
                return
            counts = self._read_hist.counts
            self._read_bytes += nbytes
        elif op == "write":
            counts = self._write_hist.counts
            self._write_bytes += nbytes
        else:
            if op == "timeout":
                self._timeouts += 1
            elif op.endswith("_error"):
                self._errors += 1
            return
        units = int(latency_s * _FAST_SCALE)
        if 0 <= units < FAST_LIMIT:
            counts[FAST_INDEX[units]] += 1
        else:
            counts[_slow_index(latency_s) if units > 0 else 0] += 1

    def record_read(self, latency_s: float, nbytes: int, from_device: bool = True) -> None:
        """Account one successful read; `from_device=False` for a page-cache hit."""
        if not from_device:
            self._cache_hits += 1
            return
        self._read_hist.record(latency_s)
        self._read_bytes += nbytes

    def record_write(self, latency_s: float, nbytes: int) -> None:
        """Account one successful write (or fsync, with nbytes=0) that reached the device."""
        self._write_hist.record(latency_s)
        self._write_bytes += nbytes

    def record_error(self) -> None:
        """An I/O the device answered with an error (EIO, checksum mismatch on its copy)."""
        self._errors += 1

    def record_timeout(self) -> None:
        """An I/O cancelled at its deadline: the device did not answer in time."""
        self._timeouts += 1

    def snapshot(self, now: float) -> TelemetrySample:
        """Close the interval ending at `now`, return it, and start the next one."""
        interval = max(now - self._interval_start, 1e-9)
        sample = TelemetrySample(
            device=self.device,
            time_s=now,
            interval_s=interval,
            read_p50_ms=self._read_hist.percentile_ms(0.50),
            read_p99_ms=self._read_hist.percentile_ms(0.99),
            write_p50_ms=self._write_hist.percentile_ms(0.50),
            write_p99_ms=self._write_hist.percentile_ms(0.99),
            read_iops=self._read_hist.total / interval,
            write_iops=self._write_hist.total / interval,
            read_bytes_per_s=self._read_bytes / interval,
            write_bytes_per_s=self._write_bytes / interval,
            errors=self._errors,
            timeouts=self._timeouts,
            cache_hits=self._cache_hits,
        )
        self._read_hist.reset()
        self._write_hist.reset()
        self._read_bytes = self._write_bytes = 0
        self._errors = self._timeouts = self._cache_hits = 0
        self._interval_start = now
        return sample
