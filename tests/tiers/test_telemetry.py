"""tiers.telemetry: bucket maths, percentiles, cache hits kept out, interval reset."""

import math
import random

from tiers.telemetry import (
    N_BUCKETS,
    DeviceTelemetry,
    LatencyHistogram,
    bucket_index,
    bucket_upper_us,
)


def test_bucket_bounds_contain_the_value() -> None:
    rng = random.Random(4)
    for _ in range(5000):
        latency_us = 10 ** rng.uniform(0, 8)
        index = bucket_index(latency_us)
        assert 0 < index < N_BUCKETS - 1
        upper = bucket_upper_us(index)
        lower = bucket_upper_us(index - 1)
        assert lower <= latency_us < upper
        assert upper / lower <= 1 + 1 / 8 + 1e-9 or index == 1


def test_record_uses_the_same_buckets_as_bucket_index() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        latency_s = 10 ** rng.uniform(-7, 3)
        hist = LatencyHistogram()
        hist.record(latency_s)
        assert hist.counts[bucket_index(latency_s * 1e6)] == 1


def test_bucket_extremes() -> None:
    assert bucket_index(0.0) == 0
    assert bucket_index(0.5) == 0
    assert bucket_index(1e12) == N_BUCKETS - 1


def test_percentiles_within_bucket_error() -> None:
    rng = random.Random(1)
    hist = LatencyHistogram()
    values = sorted(rng.lognormvariate(math.log(0.002), 0.5) for _ in range(20000))
    for value in values:
        hist.record(value)
    for fraction in (0.5, 0.99):
        exact_ms = values[math.ceil(fraction * len(values)) - 1] * 1000
        estimate_ms = hist.percentile_ms(fraction)
        # never optimistic, at most one bucket (12.5%) pessimistic
        assert exact_ms <= estimate_ms <= exact_ms * 1.125 * 1.0001


def test_empty_histogram_is_nan() -> None:
    assert math.isnan(LatencyHistogram().percentile_ms(0.99))


def test_cache_hits_do_not_count_as_device_latency() -> None:
    tele = DeviceTelemetry("ssd0", now=100.0)
    for _ in range(99):
        tele.record_read(0.000002, 4096, from_device=False)
    tele.record_read(0.010, 4096, from_device=True)
    sample = tele.snapshot(101.0)
    assert sample.cache_hits == 99
    assert sample.read_iops == 1.0
    assert 10.0 <= sample.read_p50_ms <= 11.0
    assert sample.read_bytes_per_s == 4096


def test_snapshot_rates_and_reset() -> None:
    tele = DeviceTelemetry("hdd0", now=0.0)
    for _ in range(20):
        tele.record_write(0.004, 8192)
    tele.record_error()
    tele.record_timeout()
    first = tele.snapshot(2.0)
    assert first.interval_s == 2.0
    assert first.write_iops == 10.0
    assert first.write_bytes_per_s == 20 * 8192 / 2
    assert first.errors == 1 and first.timeouts == 1
    assert first.trace_fields()["errors"] == 2
    assert math.isnan(first.read_p99_ms)
    second = tele.snapshot(3.0)
    assert second.write_iops == 0 and second.errors == 0 and math.isnan(second.write_p99_ms)


def test_the_recorder_hook_matches_the_record_methods() -> None:
    """DeviceTelemetry.record (the one call per I/O the device makes) counts exactly what
    record_read/record_write/record_error/record_timeout count, and ignores the rest."""
    rng = random.Random(11)
    hook, methods = DeviceTelemetry("d", 0.0), DeviceTelemetry("d", 0.0)
    for _ in range(3000):
        latency_s = 10 ** rng.uniform(-7, 3)
        nbytes = rng.choice((4096, 1 << 20))
        op = rng.choice(("read", "write", "open", "fsync", "statvfs", "read_error", "timeout"))
        reached = rng.random() < 0.8
        hook.record(op, latency_s, nbytes, reached)
        if op == "read":
            methods.record_read(latency_s, nbytes, reached)
        elif op == "write":
            methods.record_write(latency_s, nbytes)
        elif op == "timeout":
            methods.record_timeout()
        elif op == "read_error":
            methods.record_error()
    assert hook._read_hist.counts == methods._read_hist.counts
    assert hook._write_hist.counts == methods._write_hist.counts
    a, b = hook.snapshot(1.0), methods.snapshot(1.0)
    assert a == b and a.errors > 0 and a.timeouts > 0 and a.cache_hits > 0


def test_the_fast_bucket_table_agrees_with_bucket_index_everywhere() -> None:
    from tiers.telemetry import FAST_INDEX, FAST_LIMIT, FAST_UNITS_PER_US

    assert len(FAST_INDEX) == FAST_LIMIT
    for units in range(FAST_LIMIT):
        assert FAST_INDEX[units] == bucket_index(units / FAST_UNITS_PER_US), units
    # Around the table's end, the slow path takes over with the same buckets.
    for latency_us in (16383.0, 16383.99, 16384.0, 16384.5, 20000.0, 1e9):
        hist = LatencyHistogram()
        hist.record(latency_us / 1e6)
        assert hist.counts[bucket_index(latency_us)] == 1 and hist.total == 1
