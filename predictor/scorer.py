"""The streaming scorer: the one the daemon runs live and `shadowfs predict` replays.

Owns the per-device state and the order of operations for one tick (all devices' samples
that share one time). `observe(t, samples)` uses only what it has been fed up to t, so a
replayed trace scores exactly as the live daemon did. Per sample:

1. each latency signal (read, write p99) becomes a residual: log(p99) minus the log p99
   expected at the device's load (predictor/baseline.py), minus the median residual of its
   same-class peers at that moment when that is positive (a surge that hits every device is
   load, not failure);
2. the residual, in units of its own learned noise scale, feeds a CUSUM (predictor/change.py)
   on every sample; the row goes into the device's series (predictor/series.py), which closes
   1-minute aggregates;
3. evidence per signal: while the CUSUM is alarmed, the probability that the level of the
   last `level_window_s` exceeds the fail-slow threshold, at its lowest over the last
   `level_persist_s` (a hiccup next to an outlier can carry one window's median, not two);
   while the signal is elevated (screened), the probability that its ARIMA forecast crosses
   the failure threshold within the horizon (refreshed every `forecast_every_s`; it counts
   once the persisted level confirms the rise); for errors, the probability that the
   sustained rate exceeds its threshold, and the ARIMA forecast of the rate (counted once
   errors recur in `min_error_trend_intervals` intervals of the slow window);
4. the score is the fused probability x 100, with the reason of the strongest signal; standing
   evidence from outside the series (`set_external`, e.g. SMART health) joins the fusion as
   one more signal per source;
5. a sample judged healthy then teaches the load model and the noise scale.

Forecasts come from a `ForecastEngine`: predictor.arima.ArimaEngine in-process (replay,
tests) or predictor.worker.ForecastWorker (the daemon: fits in a worker process). Both are
called synchronously, so the daemon runs `observe` in a thread (trio.to_thread.run_sync).
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from predictor import baseline
from predictor.arima import ArimaEngine, Forecast, ForecastRequest
from predictor.change import Cusum
from predictor.score import (
    DeviceScore,
    HealthState,
    Reason,
    ReasonKind,
    ScoreConfig,
    Signal,
    crossing_probability,
    error_rate_probability,
    fuse,
    level_probability,
    state_for,
)
from predictor.series import DeviceSeries, Field, MinuteAggregate
from predictor.trace import DeviceClass, Sample

LATENCY_SIGNALS = (Signal.READ_LATENCY, Signal.WRITE_LATENCY)
_P99_FIELD = {Signal.READ_LATENCY: "read_p99_ms", Signal.WRITE_LATENCY: "write_p99_ms"}
_RESIDUAL_FIELD = {
    Signal.READ_LATENCY: Field.READ_RESIDUAL,
    Signal.WRITE_LATENCY: Field.WRITE_RESIDUAL,
}
SCALE_FLOOR = 0.05
SCALE_PRIOR = 0.3
LEARN_LIMIT = math.log(2.0)
BASELINE_MEMORY_S = 6 * 3600.0
OUTLIER_SCALES = 3.0  # a residual beyond 2x is never taught as normal


def _median_without(ordered: list[float], value: float) -> float:
    """Median of the sorted list `ordered` less one occurrence of `value` (NaN: none)."""
    if math.isnan(value):
        rest = ordered
    else:
        index = bisect.bisect_left(ordered, value)
        rest = ordered[:index] + ordered[index + 1 :]
    mid = len(rest) // 2
    return rest[mid] if len(rest) % 2 else 0.5 * (rest[mid - 1] + rest[mid])


class ForecastEngine(Protocol):
    def forecast(self, request: ForecastRequest) -> Forecast | None: ...


@dataclass
class _SignalState:
    signal: Signal
    cusum: Cusum
    scale: float = SCALE_PRIOR
    scale_count: int = 0
    history: deque[float] = field(default_factory=deque)
    n_total: int = 0  # aggregates produced (the engine's bookkeeping for extend)
    forecast: Forecast | None = None
    forecast_at: float = -math.inf
    level: float = math.nan  # median residual (or errors/min) over the level window
    p_level: float = 0.0
    p_forecast: float = 0.0
    residual: float = math.nan  # this tick's
    # (time, P(level > fail-slow), level) of the ticks within the persistence window.
    level_track: deque[tuple[float, float, float]] = field(default_factory=deque)
    uncertainty: float = 0.0  # this tick's load-model uncertainty (0 at a visited load)

    def learn_scale(self, residual: float) -> None:
        self.scale_count += 1
        weight = max(1.0 / self.scale_count, 0.01)
        # Mean absolute residual x 1.2533 estimates sigma for normal noise, robustly enough.
        self.scale += weight * (1.2533 * abs(residual) - self.scale)
        self.scale = max(self.scale, SCALE_FLOOR)


@dataclass
class _Device:
    name: str
    device_class: DeviceClass
    series: DeviceSeries
    first_seen: float
    last_seen: float
    signals: dict[Signal, _SignalState]
    offsets: dict[Signal, baseline.DeviceOffset]
    curves: dict[Signal, baseline.ClassCurve]  # the device's own load curve
    evacuation_s: float | None = None
    last_score: DeviceScore | None = None
    silent: bool = False
    external: dict[str, Reason] = field(default_factory=dict)  # by source


class StreamingScorer:
    """Failure scores per device from telemetry fed in time order, one tick at a time."""

    def __init__(
        self,
        interval_s: float,
        config: ScoreConfig | None = None,
        engine: ForecastEngine | None = None,
    ) -> None:
        self.interval_s = interval_s
        self.config = config or ScoreConfig()
        self.engine: ForecastEngine = engine if engine is not None else ArimaEngine()
        self._devices: dict[str, _Device] = {}
        self._curves: dict[tuple[DeviceClass, Signal], baseline.ClassCurve] = {}
        self._last_time = -math.inf
        self.forecasts_requested = 0
        self.forecast_cpu_s = 0.0
        # Warm-up lasts long enough in samples, too: 30 min at 60 s would be 30 samples.
        self._warmup_s = max(self.config.warmup_s, 60 * interval_s)
        self._level_rows = math.ceil(self.config.level_window_s / interval_s) + 1
        self._slow_error_rows = (
            math.ceil(max(self.config.error_window_s, self.config.slow_error_window_s) / interval_s)
            + 1
        )
        # Baselines forget with a time constant of BASELINE_MEMORY_S, whatever the interval.
        self._learn_weight = min(1.0, interval_s / BASELINE_MEMORY_S)

    # -- public API ------------------------------------------------------------------------

    def set_evacuation_time(self, device: str, seconds: float) -> None:
        """The device's estimated evacuation time; the horizon is max(1 h, 2x this)."""
        self._device_for(device, DeviceClass.UNKNOWN, math.nan).evacuation_s = seconds

    def set_external(self, device: str, source: str, probability: float, reason: str) -> None:
        """Standing evidence about `device` from outside its telemetry (e.g. source "smart").

        `probability` (0..1) is fused into the device's score like any signal's, from the
        next observe() on, until this source is set again; 0 clears it. The score's reason
        names the source and `reason` when this evidence is the strongest. It counts during
        warm-up too (it needs no baseline), and never stops the device's baselines learning.
        """
        if not isinstance(device, str) or not device:
            raise ValueError(f"external evidence: device must be a non-empty name, not {device!r}")
        if not isinstance(source, str) or not source:
            raise ValueError(f"external evidence: source must be a non-empty name, not {source!r}")
        if not isinstance(reason, str):
            raise ValueError(f"external evidence: reason must be a string, not {reason!r}")
        if (
            isinstance(probability, bool)
            or not isinstance(probability, (int, float))
            or not math.isfinite(probability)
            or not 0.0 <= probability <= 1.0
        ):
            raise ValueError(
                f"external evidence {source!r} for {device!r}: probability must be a finite "
                f"number in [0, 1], not {probability!r}"
            )
        evidence = self._device_for(device, DeviceClass.UNKNOWN, math.nan).external
        if probability == 0.0:
            evidence.pop(source, None)
        else:
            evidence[source] = Reason(
                ReasonKind.EXTERNAL, confidence=float(probability), source=source, note=reason
            )

    def external(self, device: str) -> dict[str, float]:
        """The standing external evidence of `device`: probability by source."""
        found = self._devices.get(device)
        return {} if found is None else {s: r.confidence for s, r in found.external.items()}

    def observe(self, time_s: float, samples: Sequence[Sample]) -> list[DeviceScore]:
        """Feed every device's sample for one tick; return their scores (and new silences)."""
        if time_s < self._last_time:
            raise ValueError(f"time went backwards: {time_s} < {self._last_time}")
        self._last_time = time_s
        residuals = {sample.device: self._raw_residuals(sample) for sample in samples}
        peer_shift = self._peer_shifts(samples, residuals)
        scores = []
        for sample in samples:
            device = self._device_for(sample.device, sample.device_class, time_s)
            device.silent = False
            device.last_seen = time_s
            score = self._score_sample(
                device, sample, residuals[sample.device], peer_shift[sample.device]
            )
            device.last_score = score
            scores.append(score)
        scores.extend(self._new_silences(time_s))
        return scores

    def latest(self) -> dict[str, DeviceScore]:
        return {name: d.last_score for name, d in self._devices.items() if d.last_score}

    def series(self, device: str) -> DeviceSeries:
        return self._devices[device].series

    def forecast(self, device: str, signal: Signal) -> Forecast | None:
        return self._devices[device].signals[signal].forecast

    def memory_bytes(self) -> int:
        return sum(d.series.nbytes for d in self._devices.values())

    # -- one tick ----------------------------------------------------------------------

    def _device_for(self, name: str, device_class: DeviceClass, time_s: float) -> _Device:
        device = self._devices.get(name)
        if device is None:
            cfg = self.config
            device = _Device(
                name=name,
                device_class=device_class,
                series=DeviceSeries(self.interval_s),
                first_seen=time_s,
                last_seen=time_s,
                signals={
                    s: _SignalState(
                        s,
                        Cusum(cfg.cusum_k, cfg.cusum_h, cfg.cusum_clip),
                        history=deque(maxlen=cfg.history_minutes),
                    )
                    for s in Signal
                },
                offsets={s: baseline.DeviceOffset() for s in LATENCY_SIGNALS},
                curves={s: baseline.ClassCurve() for s in LATENCY_SIGNALS},
            )
            self._devices[name] = device
        elif math.isnan(device.first_seen) and not math.isnan(time_s):
            # Registered early by set_evacuation_time: its data starts now.
            device.first_seen = device.last_seen = time_s
            device.device_class = device_class
        return device

    def _curve(self, device_class: DeviceClass, signal: Signal) -> baseline.ClassCurve:
        key = (device_class, signal)
        curve = self._curves.get(key)
        if curve is None:
            curve = self._curves[key] = baseline.ClassCurve()
        return curve

    def _raw_residuals(self, sample: Sample) -> dict[Signal, float]:
        device = self._devices.get(sample.device)
        out: dict[Signal, float] = {}
        for signal in LATENCY_SIGNALS:
            p99 = getattr(sample, _P99_FIELD[signal])
            expected = None
            if device is not None and p99 > 0:
                expected = baseline.expected_log_p99(
                    device.curves[signal],
                    self._curve(sample.device_class, signal),
                    device.offsets[signal],
                    sample.iops,
                )
            if expected is None:
                out[signal] = math.nan
                continue
            value, uncertainty = expected
            assert device is not None
            device.signals[signal].uncertainty = uncertainty
            # Unshrunk here: peers' residuals must show a fleet-wide surge in full, even at
            # loads their own curves have not seen (the slack is applied after the peers).
            out[signal] = math.log(p99) - value
        return out

    def _peer_shifts(
        self, samples: Sequence[Sample], residuals: dict[str, dict[Signal, float]]
    ) -> dict[str, dict[Signal, float]]:
        """Per device and signal: the positive median residual of its same-class peers."""
        shifts: dict[str, dict[Signal, float]] = {s.device: {} for s in samples}
        by_class: dict[DeviceClass, list[str]] = {}
        for sample in samples:
            by_class.setdefault(sample.device_class, []).append(sample.device)
        for names in by_class.values():
            for signal in LATENCY_SIGNALS:
                values = [(residuals[n][signal], n) for n in names]
                valid = sorted(v for v, _ in values if not math.isnan(v))
                for value, name in values:
                    # Two peers at least: one peer's own trouble must not excuse another's.
                    own = 0 if math.isnan(value) else 1
                    if len(valid) - own < 2:
                        shifts[name][signal] = 0.0
                        continue
                    shifts[name][signal] = max(0.0, _median_without(valid, value))
        return shifts

    def _score_sample(
        self,
        device: _Device,
        sample: Sample,
        raw_residual: dict[Signal, float],
        peer_shift: dict[Signal, float],
    ) -> DeviceScore:
        cfg = self.config
        t = sample.time_s
        warming = t - device.first_seen < self._warmup_s
        for signal in LATENCY_SIGNALS:
            state = device.signals[signal]
            residual = raw_residual[signal] - peer_shift[signal]
            # Only the excess beyond what the load model cannot vouch for counts.
            state.residual = math.copysign(max(0.0, abs(residual) - state.uncertainty), residual)
            if not warming and not math.isnan(state.residual):
                state.cusum.update(t, state.residual / state.scale)
        row = [
            sample.read_p99_ms,
            sample.write_p99_ms,
            sample.read_iops,
            sample.write_iops,
            sample.errors,
            device.signals[Signal.READ_LATENCY].residual,
            device.signals[Signal.WRITE_LATENCY].residual,
        ]
        closed = device.series.append(t, row)
        if closed is not None:
            self._push_aggregate(device, closed)

        external = list(device.external.values())
        if warming:
            # The noise scale is learned only in the second half of the warm-up, once the
            # load model has settled: early residuals measure the model, not the device.
            learn_scale = t - device.first_seen >= self._warmup_s / 2
            self._learn(device, sample, warming=True, learn_scale=learn_scale)
            # External evidence needs no baseline: it scores during warm-up too.
            score = round(100.0 * fuse([r.confidence for r in external]), 1)
            strongest = max(external, key=lambda r: r.confidence, default=None)
            if score >= cfg.warn and strongest is not None:
                return DeviceScore(sample.device, t, score, state_for(score, cfg), strongest)
            reason = (
                strongest
                if strongest and strongest.confidence > 0.005
                else Reason(ReasonKind.WARMING_UP)
            )
            return DeviceScore(sample.device, t, score, HealthState.WARMING_UP, reason)

        horizon_s = cfg.horizon_s(device.evacuation_s)
        steps = max(1, min(cfg.max_forecast_steps, math.ceil(horizon_s / 60.0)))
        candidates: list[Reason] = []
        for signal in LATENCY_SIGNALS:
            candidates.extend(self._latency_evidence(device, signal, t, horizon_s, steps))
        candidates.extend(self._error_evidence(device, t, horizon_s, steps))

        per_signal: dict[Signal, float] = {}
        for reason in candidates:
            assert reason.signal is not None
            per_signal[reason.signal] = max(per_signal.get(reason.signal, 0.0), reason.confidence)
        own = fuse(list(per_signal.values()))
        # Each external source is one more signal; it joins the fusion, not the learning.
        score = round(100.0 * fuse([own] + [r.confidence for r in external]), 1)
        strongest = max(candidates + external, key=lambda r: r.confidence, default=None)
        reason = (
            strongest
            if strongest and strongest.confidence > 0.005
            else Reason(ReasonKind.NONE, horizon_s=horizon_s)
        )
        health = state_for(score, cfg)
        # Whether the telemetry is healthy decides learning: a standing SMART warning must
        # not freeze the device's baselines.
        if state_for(round(100.0 * own, 1), cfg) is HealthState.HEALTHY and not any(
            device.signals[s].cusum.alarmed for s in LATENCY_SIGNALS
        ):
            self._learn(device, sample, warming=False, learn_scale=True)
        return DeviceScore(sample.device, t, score, health, reason)

    def _push_aggregate(self, device: _Device, aggregate: MinuteAggregate) -> None:
        values = {
            Signal.READ_LATENCY: aggregate.read_residual,
            Signal.WRITE_LATENCY: aggregate.write_residual,
            # log1p: error counts span orders of magnitude, and zero is common.
            Signal.ERRORS: math.log1p(aggregate.errors_per_min),
        }
        for signal, value in values.items():
            if not math.isnan(value):
                state = device.signals[signal]
                state.history.append(value)
                state.n_total += 1

    def _latency_evidence(
        self, device: _Device, signal: Signal, t: float, horizon_s: float, steps: int
    ) -> list[Reason]:
        cfg = self.config
        state = device.signals[signal]
        state.p_level = 0.0
        reasons = []
        screened = state.cusum.alarmed or state.cusum.total >= cfg.cusum_h / 2
        if screened:
            times, residuals = device.series.raw.last_column(
                self._level_rows, _RESIDUAL_FIELD[signal]
            )
            recent = residuals[(times > t - cfg.level_window_s) & ~np.isnan(residuals)]
            if len(recent):
                # GC pauses are upward outliers; two in one window would carry a median of
                # five. Drop samples far above the window's median, then take the median.
                first = float(np.median(recent))
                recent = recent[recent <= first + OUTLIER_SCALES * state.scale]
            state.level = float(np.median(recent)) if len(recent) else math.nan
            if state.cusum.alarmed and len(recent) >= cfg.min_level_samples:
                threshold = math.log(cfg.fail_slow_factor)
                state.p_level = level_probability(state.level, state.scale, len(recent), threshold)
        # Persistence: the level counts as what it has been, at least, over the last
        # `level_persist_s` (every tick of it alarmed and elevated), not what one window says.
        held_p, held_level = self._persisted(state, t)
        if held_p > 0.0:
            reasons.append(
                Reason(
                    ReasonKind.FAIL_SLOW,
                    signal,
                    math.exp(held_level),
                    cfg.fail_slow_factor,
                    horizon_s,
                    held_p,
                )
            )
        threshold = math.log(cfg.latency_threshold_factor)
        p_forecast = self._forecast_probability(device, state, t, screened, threshold, steps)
        # A forecast counts once the median of the level window confirms the rise, and has
        # for `level_persist_s`: a hiccup of a sample or two swings a d=1 model's level, but
        # cannot hold that median up for long.
        confirmed = held_level > math.log(cfg.screen_factor)
        if p_forecast > 0 and state.forecast is not None and confirmed:
            value = math.exp(state.forecast.mean[min(steps, len(state.forecast.mean)) - 1])
            reasons.append(
                Reason(
                    ReasonKind.FORECAST,
                    signal,
                    value,
                    cfg.latency_threshold_factor,
                    horizon_s,
                    p_forecast,
                )
            )
        return reasons

    def _persisted(self, state: _SignalState, t: float) -> tuple[float, float]:
        """(P(level > fail-slow), level) at their lowest over the persistence window.

        (0, -inf) until the window holds ticks back to `level_persist_s` ago: a device just
        back from silence must show its level again for that long.
        """
        alarmed = state.cusum.alarmed and not math.isnan(state.level)
        track = state.level_track
        track.append((t, state.p_level, state.level if alarmed else -math.inf))
        horizon = t - self.config.level_persist_s
        while len(track) > 1 and track[1][0] <= horizon + 1e-6:
            track.popleft()
        if not alarmed or track[0][0] > horizon + 1e-6:
            return 0.0, -math.inf
        return min(p for _, p, _ in track), min(level for _, _, level in track)

    def _error_evidence(
        self, device: _Device, t: float, horizon_s: float, steps: int
    ) -> list[Reason]:
        cfg = self.config
        state = device.signals[Signal.ERRORS]
        times, errors = device.series.raw.last_column(self._slow_error_rows, Field.ERRORS)
        reasons: list[Reason] = []
        if not errors.any():
            state.p_level = state.p_forecast = 0.0
            state.forecast = None
            return reasons
        state.p_level = 0.0
        screened = False
        slow_intervals = 0
        # Two windows: a fast rate over minutes, and a slower one sustained over an hour
        # (an error every 20 minutes is rare on a healthy device, and comes hours earlier).
        for window_s, threshold in (
            (cfg.error_window_s, cfg.error_rate_per_min),
            (cfg.slow_error_window_s, cfg.slow_error_rate_per_min),
        ):
            window_errors = errors[times > t - window_s]
            count = float(window_errors.sum())
            intervals_with_errors = int(np.count_nonzero(window_errors))
            slow_intervals = max(slow_intervals, intervals_with_errors)
            screened = screened or intervals_with_errors >= 2
            if count <= 0 or intervals_with_errors < cfg.min_error_intervals:
                continue
            window_min = len(window_errors) * self.interval_s / 60.0
            p = error_rate_probability(count, window_min, threshold)
            if p > state.p_level:
                state.p_level, state.level = p, count / window_min
                reasons.append(
                    Reason(
                        ReasonKind.ERROR_RATE, Signal.ERRORS, state.level, threshold, horizon_s, p
                    )
                )
        threshold = math.log1p(cfg.error_rate_per_min)
        p_forecast = self._forecast_probability(device, state, t, screened, threshold, steps)
        # A d=1 model reads one minute with an error as a new level; the forecast counts
        # once errors recur in enough intervals of the slow window to make a trend (a
        # healthy device's chance errors, about one a day, come that close about once in
        # 100,000 device-days).
        confirmed = slow_intervals >= cfg.min_error_trend_intervals
        if p_forecast > 0 and state.forecast is not None and confirmed:
            value = math.expm1(state.forecast.mean[min(steps, len(state.forecast.mean)) - 1])
            reasons.append(
                Reason(
                    ReasonKind.FORECAST,
                    Signal.ERRORS,
                    value,
                    cfg.error_rate_per_min,
                    horizon_s,
                    p_forecast,
                )
            )
        return reasons

    def _forecast_probability(
        self,
        device: _Device,
        state: _SignalState,
        t: float,
        screened: bool,
        threshold: float,
        steps: int,
    ) -> float:
        """Refresh the signal's ARIMA forecast if due and return its crossing probability."""
        if not screened:
            # Not elevated: no forecast is worth its CPU; drop a stale one.
            state.forecast, state.p_forecast = None, 0.0
            return 0.0
        if t - state.forecast_at >= self.config.forecast_every_s:
            state.forecast_at = t
            request = ForecastRequest(
                key=f"{device.name}/{state.signal.value}",
                now_s=t,
                history=tuple(state.history),
                n_total=state.n_total,
                steps=steps,
            )
            self.forecasts_requested += 1
            state.forecast = self.engine.forecast(request)
            if state.forecast is not None:
                self.forecast_cpu_s += state.forecast.cpu_s
                state.p_forecast = crossing_probability(
                    state.forecast.mean[:steps], state.forecast.sd[:steps], threshold
                )
            else:
                state.p_forecast = 0.0
        return state.p_forecast

    def _learn(self, device: _Device, sample: Sample, warming: bool, learn_scale: bool) -> None:
        for signal in LATENCY_SIGNALS:
            p99 = getattr(sample, _P99_FIELD[signal])
            if not p99 > 0:
                continue
            state = device.signals[signal]
            residual = state.residual
            if not warming and not abs(residual) < LEARN_LIMIT:
                continue
            # The noise scale is learned where the load model is sure: a residual shrunk by
            # extrapolation slack would teach a falsely small scale.
            if learn_scale and not math.isnan(residual) and state.uncertainty == 0.0:
                state.learn_scale(residual)
            baseline.learn(
                device.curves[signal],
                self._curve(device.device_class, signal),
                device.offsets[signal],
                sample.iops,
                math.log(p99),
                self._learn_weight,
            )

    def _new_silences(self, time_s: float) -> list[DeviceScore]:
        limit = self.config.silent_after_intervals * self.interval_s
        out = []
        for device in self._devices.values():
            if (
                not device.silent
                and not math.isnan(device.last_seen)
                and (time_s - device.last_seen > limit)
            ):
                device.silent = True
                previous = device.last_score.score if device.last_score else 0.0
                score = DeviceScore(
                    device.name,
                    device.last_seen,
                    previous,
                    HealthState.SILENT,
                    Reason(ReasonKind.SILENT),
                )
                device.last_score = score
                out.append(score)
        return out
