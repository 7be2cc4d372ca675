"""The failure score: configuration, probabilities, and the reason every score carries.

Owns the arithmetic that turns evidence into "the probability that a health signal crosses
its failure threshold within the horizon", and the fusion across signals:

- forecast crossing: from an ARIMA forecast (mean, sd per step) of a signal, the largest
  per-step probability that the step's value exceeds the threshold (a lower bound on the
  probability of any crossing; for the d=1 models we fit, the last step dominates);
- persistent level (fail-slow): the probability that the signal's recent level (median of the
  last `level_window_s`) exceeds the fail-slow threshold, from the median's standard error;
- sustained error rate: the probability that the device's error rate exceeds the threshold,
  from a Gamma posterior on the errors counted over `error_window_s`;
- fusion: 1 - prod(1 - p) over signals, i.e. "some signal crosses", treating them as
  independent (read and write latency are not, which makes the fusion slightly eager).

Scores are 0-100; each carries a `Reason`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class ScoreConfig:
    """Every knob of the score, with the issue's defaults."""

    warn: float = 50.0
    act: float = 80.0
    latency_threshold_factor: float = 5.0  # failure: p99 at 5x the device's own baseline
    fail_slow_factor: float = 1.5  # a persistent slowdown beyond this is fail-slow
    error_rate_per_min: float = 0.15  # failure: a sustained error rate above this...
    error_window_s: float = 600.0  # ...over this window
    slow_error_rate_per_min: float = 0.04  # or a lower rate sustained over a longer window
    slow_error_window_s: float = 3600.0
    min_error_intervals: int = 2  # "sustained": errors in at least this many intervals
    min_error_trend_intervals: int = 4  # an error forecast counts once the slow window has
    # errors in this many intervals: a trend needs more than a pair or three of chance errors
    min_horizon_s: float = 3600.0  # horizon = max(this, 2 x evacuation time)
    level_window_s: float = 300.0  # a hiccup shorter than half of it cannot move the median
    min_level_samples: int = 3
    # A level counts (fail-slow, forecast confirmation) once it has held this long: a 1-2
    # minute hiccup next to one noisy or GC-paused sample fills 3 of a 5-minute window's 5
    # samples at 60 s, but it is gone one window later.
    level_persist_s: float = 60.0
    warmup_s: float = 1800.0  # learn the baselines before scoring
    screen_factor: float = 1.3  # forecast only signals whose level exceeds this...
    forecast_every_s: float = 300.0  # ...refreshed at most this often
    history_minutes: int = 360  # 1-minute aggregates the ARIMA models see
    max_forecast_steps: int = 240
    cusum_k: float = 1.0
    cusum_h: float = 6.0
    cusum_clip: float = 3.0
    silent_after_intervals: float = 3.0

    def horizon_s(self, evacuation_s: float | None) -> float:
        if evacuation_s is None:
            return self.min_horizon_s
        return max(self.min_horizon_s, 2.0 * evacuation_s)


class Signal(Enum):
    READ_LATENCY = "read_latency"
    WRITE_LATENCY = "write_latency"
    ERRORS = "errors"


class ReasonKind(Enum):
    NONE = "none"  # nothing elevated
    WARMING_UP = "warming_up"  # still learning the device's baseline
    FORECAST = "forecast"  # ARIMA forecast crosses the failure threshold within the horizon
    FAIL_SLOW = "fail_slow"  # a persistent shift beyond the fail-slow threshold
    ERROR_RATE = "error_rate"  # sustained errors above the threshold
    EXTERNAL = "external"  # evidence from outside the series (e.g. SMART), set by the caller
    SILENT = "silent"  # the device stopped reporting


class HealthState(Enum):
    WARMING_UP = "warming_up"
    HEALTHY = "healthy"
    WARN = "warn"
    ACT = "act"
    SILENT = "silent"


@dataclass(frozen=True)
class Reason:
    """Why a score is what it is: the signal that drives it and the numbers behind it."""

    kind: ReasonKind
    signal: Signal | None = None
    value: float = math.nan  # forecast or level: x baseline for latency, errors/min for errors
    threshold: float = math.nan  # same unit as value
    horizon_s: float = math.nan
    confidence: float = 0.0  # this signal's probability, 0..1
    source: str | None = None  # EXTERNAL: where the evidence comes from (e.g. "smart")
    note: str = ""  # EXTERNAL: the caller's reason, verbatim

    def text(self) -> str:
        if self.kind is ReasonKind.NONE:
            return "no signal elevated"
        if self.kind is ReasonKind.WARMING_UP:
            return "learning baseline"
        if self.kind is ReasonKind.SILENT:
            return "device stopped reporting"
        if self.kind is ReasonKind.EXTERNAL:
            return f"{self.source}: {self.note}, p={self.confidence:.2f}"
        assert self.signal is not None
        unit = "/min" if self.signal is Signal.ERRORS else "x baseline"
        what = {
            ReasonKind.FORECAST: f"forecast within {self.horizon_s / 3600:.3g} h",
            ReasonKind.FAIL_SLOW: "sustained level",
            ReasonKind.ERROR_RATE: "sustained error rate",
        }[self.kind]
        return (
            f"{self.signal.value}: {what} {self.value:.3g}{unit} vs threshold "
            f"{self.threshold:.3g}{unit}, p={self.confidence:.2f}"
        )

    def as_dict(self) -> dict[str, object]:
        def clean(x: float) -> float | None:
            return None if math.isnan(x) or math.isinf(x) else round(x, 4)

        return {
            "kind": self.kind.value,
            "signal": self.signal.value if self.signal else None,
            "value": clean(self.value),
            "threshold": clean(self.threshold),
            "horizon_s": clean(self.horizon_s),
            "confidence": round(self.confidence, 4),
            "source": self.source,
            "text": self.text(),
        }


@dataclass(frozen=True)
class DeviceScore:
    device: str
    time_s: float
    score: float  # 0..100
    state: HealthState
    reason: Reason


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def crossing_probability(mean: Sequence[float], sd: Sequence[float], threshold: float) -> float:
    """Largest per-step probability that the forecast exceeds `threshold`."""
    best = 0.0
    for m, s in zip(mean, sd, strict=True):
        p = (1.0 if m > threshold else 0.0) if s <= 0 else normal_sf((threshold - m) / s)
        best = max(best, p)
    return best


def level_probability(median: float, scale: float, n: int, threshold: float) -> float:
    """P(true level > threshold) given the median of n samples with noise `scale`."""
    if n <= 0 or math.isnan(median):
        return 0.0
    # The sample median of n normal draws has standard error ~ 1.2533 sigma / sqrt(n).
    standard_error = 1.2533 * scale / math.sqrt(n)
    return normal_sf((threshold - median) / standard_error)


def gamma_sf(x: float, shape: float, scale: float) -> float:
    """P(G > x) for G ~ Gamma(shape, scale), Wilson-Hilferty approximation (no scipy)."""
    if x <= 0:
        return 1.0
    c = 1.0 / (9.0 * shape)
    z = ((x / (shape * scale)) ** (1.0 / 3.0) - (1.0 - c)) / math.sqrt(c)
    return normal_sf(z)


def error_rate_probability(errors: float, window_min: float, threshold_per_min: float) -> float:
    """P(error rate > threshold) from `errors` counted over `window_min` (Jeffreys prior)."""
    if window_min <= 0:
        return 0.0
    return gamma_sf(threshold_per_min, errors + 0.5, 1.0 / window_min)


def fuse(probabilities: Sequence[float]) -> float:
    """P(at least one signal crosses), signals taken as independent."""
    keep = 1.0
    for p in probabilities:
        keep *= 1.0 - min(max(p, 0.0), 1.0)
    return 1.0 - keep


def state_for(score: float, config: ScoreConfig) -> HealthState:
    if score >= config.act:
        return HealthState.ACT
    if score >= config.warn:
        return HealthState.WARN
    return HealthState.HEALTHY
