"""Telemetry series per device: raw samples for the last hour, 1-minute aggregates for 7 days.

Owns the memory layout: fixed-capacity numpy ring buffers (float32 values, float64 times)
allocated once per device, so memory is bounded by construction and never grows with uptime.
`series_memory_bytes(interval_s)` states the bound; for 64 devices at the finest interval
(1 s) it is ~32 MiB, within the 64 MiB budget (tests/predictor/test_series.py checks both
the formula and the allocated arrays).

Raw rows hold the sample's fields plus the scorer's per-signal residuals; a minute aggregate
holds the median of each latency and residual (robust to single-sample GC pauses), the mean
of each rate, and the errors per minute.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

RAW_WINDOW_S = 3600.0
MINUTE_S = 60.0
AGGREGATE_DAYS = 7
AGGREGATE_ROWS = AGGREGATE_DAYS * 24 * 60
MEMORY_BUDGET_BYTES = 64 * 1024 * 1024
BUDGET_DEVICES = 64


class Field(IntEnum):
    """Columns of both the raw and the aggregate buffers."""

    READ_P99_MS = 0
    WRITE_P99_MS = 1
    READ_IOPS = 2
    WRITE_IOPS = 3
    ERRORS = 4  # raw: errors in the interval; aggregate: errors per minute
    READ_RESIDUAL = 5  # log(p99 / expected p99 at this load, net of peers)
    WRITE_RESIDUAL = 6


N_FIELDS = len(Field)
_ROW_BYTES = N_FIELDS * 4 + 8  # float32 values + float64 time


class RingBuffer:
    """`capacity` rows of N_FIELDS float32 values and a float64 time, oldest overwritten."""

    __slots__ = ("times", "values", "capacity", "_next", "_size")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.times = np.zeros(capacity, dtype=np.float64)
        self.values = np.zeros((capacity, N_FIELDS), dtype=np.float32)
        self._next = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def nbytes(self) -> int:
        return int(self.times.nbytes + self.values.nbytes)

    def append(self, time_s: float, row: list[float] | np.ndarray) -> None:
        self.times[self._next] = time_s
        self.values[self._next] = row
        self._next = (self._next + 1) % self.capacity
        self._size = min(self._size + 1, self.capacity)

    def last(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The newest `n` rows (fewer if not yet filled), oldest first: (times, values)."""
        n = min(n, self._size)
        start = self._next - n
        if start >= 0:
            return self.times[start : self._next], self.values[start : self._next]
        # Wrapped: two pieces; a copy is unavoidable (and small: n is a window, not the buffer).
        return (
            np.concatenate((self.times[start:], self.times[: self._next])),
            np.concatenate((self.values[start:], self.values[: self._next])),
        )

    def last_column(self, n: int, column: Field) -> tuple[np.ndarray, np.ndarray]:
        times, values = self.last(n)
        return times, values[:, column]

    def latest_time(self) -> float:
        return float(self.times[self._next - 1]) if self._size else math.nan


def raw_capacity(interval_s: float) -> int:
    """Rows to hold one hour of raw samples at `interval_s`."""
    return math.ceil(RAW_WINDOW_S / interval_s) + 1


def series_memory_bytes(interval_s: float, devices: int = BUDGET_DEVICES) -> int:
    """Bytes the series of `devices` devices allocate at `interval_s` (the stated bound)."""
    return devices * (raw_capacity(interval_s) + AGGREGATE_ROWS) * _ROW_BYTES


@dataclass(frozen=True)
class MinuteAggregate:
    """A closed minute, handed to the forecaster."""

    minute_start_s: float
    read_residual: float
    write_residual: float
    errors_per_min: float


class DeviceSeries:
    """The series of one device; rows must arrive in time order."""

    __slots__ = ("interval_s", "raw", "minutes", "_minute", "_minute_first_row", "_rows_total")

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.raw = RingBuffer(raw_capacity(interval_s))
        self.minutes = RingBuffer(AGGREGATE_ROWS)
        self._minute = math.nan  # start time of the minute being accumulated
        self._minute_first_row = 0  # value of _rows_total when that minute began
        self._rows_total = 0

    @property
    def nbytes(self) -> int:
        return self.raw.nbytes + self.minutes.nbytes

    def append(self, time_s: float, row: list[float]) -> MinuteAggregate | None:
        """Store one raw row; return the aggregate of the minute this row closed, if any."""
        minute = math.floor(time_s / MINUTE_S) * MINUTE_S
        closed: MinuteAggregate | None = None
        if not math.isnan(self._minute) and minute != self._minute:
            closed = self._close_minute()
        if math.isnan(self._minute) or minute != self._minute:
            self._minute = minute
            self._minute_first_row = self._rows_total
        self.raw.append(time_s, row)
        self._rows_total += 1
        return closed

    def _close_minute(self) -> MinuteAggregate | None:
        n = self._rows_total - self._minute_first_row
        if n <= 0:
            return None
        _, values = self.raw.last(n)
        if n == 1:
            # Intervals of 60 s: the minute is one sample (the common case in traces).
            row = values[0].astype(np.float64)
            row[Field.ERRORS] = row[Field.ERRORS] * MINUTE_S / self.interval_s
            self.minutes.append(self._minute, row)
            return MinuteAggregate(
                self._minute,
                float(row[Field.READ_RESIDUAL]),
                float(row[Field.WRITE_RESIDUAL]),
                float(row[Field.ERRORS]),
            )
        if np.isnan(values).any():
            # Idle intervals have no latency (NaN); an all-idle minute stays NaN.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                medians = np.nanmedian(values, axis=0)
        else:
            medians = np.median(values, axis=0)
        row = medians.astype(np.float64)
        # Rates average, errors sum: the aggregate of a count is a count, scaled per minute.
        row[Field.READ_IOPS] = float(values[:, Field.READ_IOPS].mean())
        row[Field.WRITE_IOPS] = float(values[:, Field.WRITE_IOPS].mean())
        covered_s = n * self.interval_s
        row[Field.ERRORS] = float(values[:, Field.ERRORS].sum()) * MINUTE_S / covered_s
        self.minutes.append(self._minute, row)
        return MinuteAggregate(
            minute_start_s=self._minute,
            read_residual=float(row[Field.READ_RESIDUAL]),
            write_residual=float(row[Field.WRITE_RESIDUAL]),
            errors_per_min=float(row[Field.ERRORS]),
        )
