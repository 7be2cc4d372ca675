"""Seeded generator of labelled device telemetry traces for the evaluation harness.

Owns the synthetic fleet: per device a healthy model (load with a daily cycle and
minute-long bursts, latency rising with utilisation as 1/(1-rho), lognormal noise, single
sample GC pauses, rare errors) and at most one event:

- CREEP: p99 grows as 20^(u^1.5) over a window of 2-8 h (u: 0..1), then the device fails;
- ERROR_GROWTH: errors/min grow from 0.01 to 30 over 2-8 h (retries nudge latency), then it
  fails;
- FAIL_SLOW: p99 steps up by 2-10x (log-uniform) and stays there;
- SUDDEN_DEATH: the device stops reporting, nothing before;
- decoys that must not alarm: SURGE_ONE (this device's load x1.5-2 for 20-60 min),
  SURGE_ALL (every device of the fleet at once), BUSY (utilisation ~0.6 all the time), SPIKE
  (one sample x20), HICCUP (x3-8 for 60-120 s, then normal).

A failed device's rows stop. Everything derives from the seed: same seed, same trace.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import numpy as np

from predictor.trace import DeviceClass, Sample

DAY_S = 86400.0


class Kind(Enum):
    HEALTHY = "healthy"
    CREEP = "creep"
    ERROR_GROWTH = "error_growth"
    FAIL_SLOW = "fail_slow"
    SUDDEN_DEATH = "sudden_death"
    SURGE_ONE = "surge_one"
    SURGE_ALL = "surge_all"
    BUSY = "busy"
    SPIKE = "spike"
    HICCUP = "hiccup"


FAILING_KINDS = frozenset({Kind.CREEP, Kind.ERROR_GROWTH, Kind.FAIL_SLOW, Kind.SUDDEN_DEATH})
DECOY_KINDS = frozenset({Kind.SURGE_ONE, Kind.SURGE_ALL, Kind.BUSY, Kind.SPIKE, Kind.HICCUP})


@dataclass(frozen=True)
class ClassModel:
    base_p99_ms: float
    capacity_iops: float


CLASS_MODELS = {
    DeviceClass.NVME: ClassModel(0.25, 60000.0),
    DeviceClass.SSD: ClassModel(1.2, 20000.0),
    DeviceClass.HDD: ClassModel(18.0, 400.0),
}


@dataclass(frozen=True)
class DeviceLabel:
    device: str
    kind: Kind
    device_class: DeviceClass
    onset_s: float | None  # degradation (or decoy) start
    end_s: float | None  # failure (rows stop) for failing kinds; decoy end for decoys
    evacuation_s: float
    factor: float = math.nan  # fail-slow step or surge factor

    @property
    def fails(self) -> bool:
        return self.kind in (Kind.CREEP, Kind.ERROR_GROWTH, Kind.SUDDEN_DEATH)


@dataclass(frozen=True)
class LabelledTrace:
    seed: int
    interval_s: float
    duration_s: float
    samples: list[Sample]
    labels: dict[str, DeviceLabel]


DEFAULT_KINDS = (
    Kind.CREEP,
    Kind.ERROR_GROWTH,
    Kind.FAIL_SLOW,
    Kind.SUDDEN_DEATH,
    Kind.SURGE_ONE,
    Kind.BUSY,
    Kind.SPIKE,
    Kind.HICCUP,
    Kind.HEALTHY,
    Kind.HEALTHY,
    Kind.HEALTHY,
    Kind.HEALTHY,
)
EVENT_EARLIEST_S = 3 * 3600.0  # the scorer has learned the device by then


def generate_fleet(
    seed: int,
    kinds: tuple[Kind, ...] = DEFAULT_KINDS,
    duration_s: float = 2 * DAY_S,
    interval_s: float = 60.0,
    surge_all: bool | None = None,
    classes: tuple[DeviceClass, ...] = (DeviceClass.SSD, DeviceClass.HDD),
) -> LabelledTrace:
    """A fleet with one device per entry of `kinds`, split evenly over `classes`."""
    rng = np.random.default_rng(seed)
    n = len(kinds)
    # Short traces (cost measurements) still get their events, after half the trace.
    earliest = min(EVENT_EARLIEST_S, duration_s / 2)
    times = np.arange(interval_s, duration_s + interval_s / 2, interval_s)
    steps = len(times)
    if surge_all is None:
        surge_all = bool(rng.random() < 0.5)
    fleet_surge = None
    if surge_all:
        start = rng.uniform(earliest, duration_s - 3600)
        fleet_surge = (start, start + rng.uniform(1200, 3600), rng.uniform(1.5, 2.0))
    day_phase = rng.uniform(0, 2 * math.pi)
    daily = 1.0 + 0.35 * np.sin(2 * math.pi * times / DAY_S + day_phase)

    columns: dict[str, np.ndarray] = {}
    labels: dict[str, DeviceLabel] = {}
    order = rng.permutation(n)
    for index in range(n):
        kind = kinds[order[index]]
        device_class = classes[index % len(classes)]
        name = f"{device_class.value}{index:02d}"
        model = CLASS_MODELS[device_class]
        utilisation = rng.uniform(0.55, 0.65) if kind is Kind.BUSY else rng.uniform(0.1, 0.35)
        load = model.capacity_iops * utilisation * daily
        # Minute-long bursts: about one every two hours, doubling the load.
        bursts = rng.random(steps) < interval_s / 7200.0
        burst_len = max(1, round(60.0 / interval_s))
        burst_mask = np.convolve(bursts, np.ones(burst_len), mode="full")[:steps] > 0
        load = load * np.where(burst_mask, 2.0, 1.0)
        if fleet_surge is not None:
            in_surge = (times >= fleet_surge[0]) & (times < fleet_surge[1])
            load = load * np.where(in_surge, fleet_surge[2], 1.0)
        evacuation_s = float(rng.uniform(600, 3600))
        onset: float | None = None
        end: float | None = None
        factor = math.nan
        latency_mult = np.ones(steps)
        error_rate_per_min = np.full(steps, 1.0 / 1440.0)  # healthy: about one error a day
        if kind in (Kind.CREEP, Kind.ERROR_GROWTH):
            # Short traces squeeze the window so the failure still happens inside them.
            window = min(rng.uniform(2 * 3600, 8 * 3600), duration_s - earliest - 1200)
            onset = float(rng.uniform(earliest, duration_s - window - 600))
            end = onset + window
            u = np.clip((times - onset) / window, 0.0, 1.0)
            if kind is Kind.CREEP:
                latency_mult = np.power(20.0, np.power(u, 1.5))
            else:
                growing = 0.01 * np.power(3000.0, u)
                error_rate_per_min = np.where(times >= onset, growing, error_rate_per_min)
                latency_mult = 1.0 + 0.3 * u
        elif kind is Kind.FAIL_SLOW:
            onset = float(rng.uniform(earliest, duration_s - 3600))
            factor = float(math.exp(rng.uniform(math.log(2.0), math.log(10.0))))
            latency_mult = np.where(times >= onset, factor, 1.0)
        elif kind is Kind.SUDDEN_DEATH:
            onset = end = float(rng.uniform(earliest, duration_s - 600))
        elif kind is Kind.SURGE_ONE:
            onset = float(rng.uniform(earliest, duration_s - 3600))
            end = onset + float(rng.uniform(1200, 3600))
            factor = float(rng.uniform(1.5, 2.0))
            load = load * np.where((times >= onset) & (times < end), factor, 1.0)
        elif kind is Kind.SPIKE:
            onset = float(times[rng.integers(int(earliest / interval_s), steps)])
            end = onset
            latency_mult = np.where(times == onset, 20.0, 1.0)
        elif kind is Kind.HICCUP:
            onset = float(rng.uniform(earliest, duration_s - 600))
            end = onset + float(rng.uniform(60, 120))
            factor = float(rng.uniform(3, 8))
            latency_mult = np.where((times >= onset) & (times < end), factor, 1.0)

        rho = np.minimum(load / model.capacity_iops, 0.9)
        base = model.base_p99_ms * math.exp(rng.normal(0, 0.15))
        queueing = 1.0 / (1.0 - rho)
        gc_pauses = np.where(rng.random(steps) < 0.002, rng.uniform(3, 20, steps), 1.0)
        read_p99 = base * queueing * latency_mult * gc_pauses * np.exp(rng.normal(0, 0.2, steps))
        write_p99 = 1.5 * base * queueing * latency_mult * np.exp(rng.normal(0, 0.25, steps))
        read_share = rng.uniform(0.5, 0.8)
        errors = rng.poisson(error_rate_per_min * interval_s / 60.0).astype(np.float64)
        alive = times < end if (end is not None and kind in FAILING_KINDS) else times > -1
        columns[name] = np.stack(
            [read_p99, write_p99, load * read_share, load * (1 - read_share), errors, alive]
        )
        labels[name] = DeviceLabel(name, kind, device_class, onset, end, evacuation_s, factor)
        if kind is Kind.FAIL_SLOW:
            labels[name] = DeviceLabel(name, kind, device_class, onset, None, evacuation_s, factor)

    if fleet_surge is not None:
        # Every device lived through the surge: label healthy devices as its witnesses.
        for name, label in labels.items():
            if label.kind is Kind.HEALTHY:
                labels[name] = DeviceLabel(
                    name,
                    Kind.SURGE_ALL,
                    label.device_class,
                    fleet_surge[0],
                    fleet_surge[1],
                    label.evacuation_s,
                    fleet_surge[2],
                )
    samples: list[Sample] = []
    names = list(columns)
    for step, time_s in enumerate(times.tolist()):
        for name in names:
            c = columns[name]
            if not c[5, step]:
                continue
            samples.append(
                Sample(
                    time_s=time_s,
                    device=name,
                    read_p99_ms=float(c[0, step]),
                    write_p99_ms=float(c[1, step]),
                    read_iops=float(c[2, step]),
                    write_iops=float(c[3, step]),
                    errors=float(c[4, step]),
                    device_class=labels[name].device_class,
                )
            )
    return LabelledTrace(seed, interval_s, duration_s, samples, labels)
