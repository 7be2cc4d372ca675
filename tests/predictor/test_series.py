"""predictor.series: ring buffer order, minute aggregates, and the stated memory bound."""

import math

import numpy as np

from predictor.series import (
    AGGREGATE_ROWS,
    MEMORY_BUDGET_BYTES,
    N_FIELDS,
    DeviceSeries,
    Field,
    RingBuffer,
    series_memory_bytes,
)


def test_ring_buffer_wraps_oldest_first() -> None:
    ring = RingBuffer(4)
    for i in range(6):
        ring.append(float(i), [float(i)] * N_FIELDS)
    times, values = ring.last(4)
    assert times.tolist() == [2.0, 3.0, 4.0, 5.0]
    assert values[:, 0].tolist() == [2.0, 3.0, 4.0, 5.0]
    assert ring.last(10)[0].tolist() == [2.0, 3.0, 4.0, 5.0]
    assert ring.last(1)[0].tolist() == [5.0] and len(ring) == 4


def test_minute_aggregates_median_and_errors_per_minute() -> None:
    series = DeviceSeries(interval_s=10.0)
    closed = []
    for step in range(1, 14):  # 10 s .. 130 s
        t = step * 10.0
        latency = 100.0 if step == 3 else 1.0  # one GC pause in the first minute
        residual = math.nan if step == 4 else 0.1
        row = [latency, 2.0, 100.0, 50.0, 1.0 if step < 6 else 0.0, residual, 0.2]
        result = series.append(t, row)
        if result is not None:
            closed.append(result)
    assert len(closed) == 2  # minutes [0, 60) and [60, 120)
    first = series.minutes.last(2)[1][0]
    assert first[Field.READ_P99_MS] == 1.0  # the median ignores the pause
    # minute [0, 60) holds samples at 10..50 s: 5 samples, errors in all 5 -> 60/min
    assert closed[0].errors_per_min == 5 * 60 / 50
    assert abs(closed[0].read_residual - 0.1) < 1e-6  # NaN (idle) skipped


def test_memory_bound_for_64_devices_is_stated_and_held() -> None:
    # The finest interval the trace format allows is 1 s: the largest raw buffer.
    stated = series_memory_bytes(1.0, devices=64)
    assert stated <= MEMORY_BUDGET_BYTES
    allocated = sum(DeviceSeries(1.0).nbytes for _ in range(64))
    assert allocated == stated
    assert series_memory_bytes(60.0) < stated
    # 7 days of 1-minute aggregates, no more, no less
    assert DeviceSeries(1.0).minutes.capacity == AGGREGATE_ROWS == 7 * 24 * 60
    assert DeviceSeries(1.0).minutes.values.dtype == np.float32
