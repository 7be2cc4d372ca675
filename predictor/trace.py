"""The telemetry trace format: one CSV row per device and interval.

Owns parsing and formatting of `time_s,device,read_p99_ms,write_p99_ms,read_iops,write_iops,
errors[,class]` text. The class comes from the optional `class` column, else from a leading
nvme|ssd|hdd in the device name. `errors` counts errors during the interval; `*_iops` is the
mean rate over it; an empty or `nan` latency means no I/O reached the device that interval.
The interval is one constant from 1 to 60 s, inferred from the data. A device whose rows stop
is silent (the scorer decides what silence means).

Pure text in, records out: callers open files; this module does no I/O.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum

COLUMNS = ("time_s", "device", "read_p99_ms", "write_p99_ms", "read_iops", "write_iops", "errors")
MIN_INTERVAL_S = 1.0
MAX_INTERVAL_S = 60.0


class DeviceClass(Enum):
    NVME = "nvme"
    SSD = "ssd"
    HDD = "hdd"
    UNKNOWN = "unknown"


_CLASS_PREFIX = re.compile(r"^(nvme|ssd|hdd)", re.IGNORECASE)


def class_from_name(device: str) -> DeviceClass:
    match = _CLASS_PREFIX.match(device)
    return DeviceClass(match.group(1).lower()) if match else DeviceClass.UNKNOWN


class TraceError(ValueError):
    """A trace that cannot be read; the message names the line."""


@dataclass(frozen=True)
class Sample:
    """One device over one interval ending at `time_s`."""

    time_s: float
    device: str
    read_p99_ms: float
    write_p99_ms: float
    read_iops: float
    write_iops: float
    errors: float
    device_class: DeviceClass

    @property
    def iops(self) -> float:
        return self.read_iops + self.write_iops


def _number(text: str, column: str, line: int) -> float:
    text = text.strip()
    if text == "" or text.lower() == "nan":
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise TraceError(f"line {line}: {column}={text!r} is not a number") from None
    if value < 0 or math.isinf(value):
        raise TraceError(f"line {line}: {column}={text!r} must be finite and >= 0")
    return value


def _zero_if_nan(value: float) -> float:
    # An idle interval may leave rates empty: no I/O is zero I/O, and no errors.
    return 0.0 if math.isnan(value) else value


def parse_trace(text: str | Iterable[str]) -> list[Sample]:
    """Parse CSV text into samples sorted by time (stable for rows of one time)."""
    lines = io.StringIO(text) if isinstance(text, str) else text
    reader = csv.DictReader(lines)
    header = reader.fieldnames or []
    missing = [column for column in COLUMNS if column not in header]
    if missing:
        raise TraceError(f"header lacks column(s) {', '.join(missing)}; need {','.join(COLUMNS)}")
    has_class = "class" in header
    samples: list[Sample] = []
    for line, row in enumerate(reader, start=2):
        device = (row["device"] or "").strip()
        if not device:
            raise TraceError(f"line {line}: empty device")
        time_s = _number(row["time_s"], "time_s", line)
        if math.isnan(time_s):
            raise TraceError(f"line {line}: time_s is empty")
        if has_class and (row.get("class") or "").strip():
            try:
                device_class = DeviceClass(row["class"].strip().lower())
            except ValueError:
                raise TraceError(f"line {line}: class={row['class']!r} not nvme|ssd|hdd") from None
        else:
            device_class = class_from_name(device)
        errors = _number(row["errors"], "errors", line)
        samples.append(
            Sample(
                time_s=time_s,
                device=device,
                read_p99_ms=_number(row["read_p99_ms"], "read_p99_ms", line),
                write_p99_ms=_number(row["write_p99_ms"], "write_p99_ms", line),
                read_iops=_zero_if_nan(_number(row["read_iops"], "read_iops", line)),
                write_iops=_zero_if_nan(_number(row["write_iops"], "write_iops", line)),
                errors=_zero_if_nan(errors),
                device_class=device_class,
            )
        )
    samples.sort(key=lambda s: s.time_s)
    return samples


def infer_interval(samples: list[Sample]) -> float:
    """The sampling interval: the most common gap between one device's consecutive rows."""
    last: dict[str, float] = {}
    gaps: dict[float, int] = {}
    for sample in samples:
        previous = last.get(sample.device)
        if previous is not None:
            gap = round(sample.time_s - previous, 3)
            if gap > 0:
                gaps[gap] = gaps.get(gap, 0) + 1
        last[sample.device] = sample.time_s
    if not gaps:
        raise TraceError("cannot infer the interval: no device has two rows")
    interval = max(gaps.items(), key=lambda item: (item[1], -item[0]))[0]
    if not MIN_INTERVAL_S <= interval <= MAX_INTERVAL_S:
        raise TraceError(f"inferred interval {interval:g} s is outside 1-60 s")
    return interval


def group_by_time(samples: Iterable[Sample]) -> Iterator[tuple[float, list[Sample]]]:
    """Consecutive samples sharing one time_s (samples must be sorted by time)."""
    current: list[Sample] = []
    current_time = math.nan
    for sample in samples:
        if current and sample.time_s != current_time:
            yield current_time, current
            current = []
        current_time = sample.time_s
        current.append(sample)
    if current:
        yield current_time, current


def _format_number(value: float) -> str:
    if math.isnan(value):
        return ""
    # repr is the shortest text that reads back as the same float: a replayed trace scores
    # exactly as the live samples it was exported from.
    return repr(float(value))


def format_trace(samples: Iterable[Sample], with_class: bool = True) -> str:
    """Samples as CSV text in the trace format (the inverse of `parse_trace`)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow((*COLUMNS, "class") if with_class else COLUMNS)
    for s in samples:
        row = [
            _format_number(s.time_s),
            s.device,
            _format_number(s.read_p99_ms),
            _format_number(s.write_p99_ms),
            _format_number(s.read_iops),
            _format_number(s.write_iops),
            _format_number(s.errors),
        ]
        if with_class:
            row.append(s.device_class.value)
        writer.writerow(row)
    return out.getvalue()
