"""Evaluation of the failure predictor on labelled synthetic traces; writes docs/predictor.md.

Owns the protocol of issue 4, item 5:

- tuning seeds and held-out seeds, disjoint; each seed is a fleet (predictor.generator) of
  12 devices over 2 days at 60 s intervals. "Mixed" fleets hold one device per failing kind
  (creep, error growth, fail-slow, sudden death), decoys and healthy devices; "healthy"
  fleets hold only healthy devices and decoys, to give the false-alarm bound its
  device-days;
- ours: predictor.scorer.StreamingScorer, alarm = score >= act (80), exactly as replayed;
- baselines, fed the same samples: a static threshold on p99 / the device's warm-up median,
  and an EWMA (weight 0.1) of log(p99 / warm-up median); both also get our sustained-error
  rule (>= 3 errors in 10 min), so the comparison is about latency. Each baseline's threshold
  is calibrated on the tuning seeds to the false-alarm count ours has there, then applied
  unchanged to the held-out seeds;
- figures per seed set: recall per failing kind, lead time (median, 10th percentile, over
  the degradation window, over the evacuation time), fail-slow detection delay, precision,
  false alarms per 1,000 healthy device-days with the exact Poisson 95% upper bound.

Also measured here: workload-forecast simulation (predictor.workload), replay speed of one
day of 10 s samples for 50 devices through `shadowfs predict`'s code, steady-state scorer
CPU for 64 devices at 1 s, and a full refit of 64 x 3 ARIMA models.

Run: OPENBLAS_NUM_THREADS=1 python -m bench.predictor_eval [--quick] [--jobs 2]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from predictor.generator import DAY_S, DEFAULT_KINDS, Kind, LabelledTrace, generate_fleet  # noqa: E402
from predictor.score import ScoreConfig  # noqa: E402
from predictor.scorer import StreamingScorer  # noqa: E402
from predictor.trace import group_by_time  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
IMG = DOCS / "img"
HEALTHY_KINDS = (
    Kind.HEALTHY,
    Kind.HEALTHY,
    Kind.HEALTHY,
    Kind.HEALTHY,
    Kind.HEALTHY,
    Kind.HEALTHY,
    Kind.BUSY,
    Kind.SURGE_ONE,
    Kind.SPIKE,
    Kind.HICCUP,
    Kind.HICCUP,
    Kind.SURGE_ONE,
)
# Seed sets. The held-out set 2000-2019 / 2100-2127 was retired after its summaries had been
# seen in three runs; these held-out seeds had never been run before this protocol.
TUNING_MIXED, TUNING_HEALTHY = "0-19", "100-127"
HELD_MIXED, HELD_HEALTHY = "5000-5019", "5100-5227"
LATENCY_FAILURES = (Kind.CREEP, Kind.FAIL_SLOW)
SCORED_FAILURES = (Kind.CREEP, Kind.ERROR_GROWTH, Kind.FAIL_SLOW)
ERROR_RULE_COUNT = 3
ERROR_RULE_WINDOW_S = 600.0
EWMA_WEIGHT = 0.1


@dataclass
class DeviceRun:
    """One device of one fleet: its label and what each detector saw."""

    seed: int
    device: str
    kind: Kind
    onset_s: float | None
    end_s: float | None
    evacuation_s: float
    factor: float
    warmup_end_s: float
    last_time_s: float
    ours_alarms: list[float]  # times the score entered >= act
    times: np.ndarray  # sample times after warm-up
    static_stat: np.ndarray  # max(read, write) p99 / warm-up median
    ewma_stat: np.ndarray  # exp(EWMA of log static_stat)
    error_alarm_s: float | None  # first time the sustained-error rule fired
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def failing(self) -> bool:
        return self.kind in (Kind.CREEP, Kind.ERROR_GROWTH, Kind.FAIL_SLOW, Kind.SUDDEN_DEATH)

    @property
    def healthy_days(self) -> float:
        return 0.0 if self.failing else (self.last_time_s - self.warmup_end_s) / DAY_S


def _baseline_statistics(trace: LabelledTrace, warmup_s: float) -> dict[str, dict[str, Any]]:
    per_device: dict[str, list[tuple[float, float, float, float]]] = {}
    for s in trace.samples:
        per_device.setdefault(s.device, []).append(
            (s.time_s, s.read_p99_ms, s.write_p99_ms, s.errors)
        )
    out: dict[str, dict[str, Any]] = {}
    for device, rows in per_device.items():
        data = np.array(rows)
        times = data[:, 0]
        warm = times - times[0] < warmup_s
        base_read = np.nanmedian(data[warm, 1])
        base_write = np.nanmedian(data[warm, 2])
        ratio = np.fmax(data[:, 1] / base_read, data[:, 2] / base_write)
        log_ratio = np.log(np.where(np.isfinite(ratio) & (ratio > 0), ratio, 1.0))
        ewma = np.empty_like(log_ratio)
        value = 0.0
        for i, x in enumerate(log_ratio):
            value += EWMA_WEIGHT * (x - value)
            ewma[i] = value
        # The shared sustained-error rule: >= 3 errors within 10 minutes.
        errors = data[:, 3]
        cumulative = np.concatenate(([0.0], np.cumsum(errors)))
        start = np.searchsorted(times, times - ERROR_RULE_WINDOW_S, side="right")
        window = cumulative[1:] - cumulative[start]
        fired = np.nonzero((window >= ERROR_RULE_COUNT) & ~warm)[0]
        out[device] = {
            "times": times[~warm],
            "static": ratio[~warm],
            "ewma": np.exp(ewma[~warm]),
            "error_alarm": float(times[fired[0]]) if len(fired) else None,
            "last": float(times[-1]),
            "first": float(times[0]),
        }
    return out


def run_fleet(job: tuple[int, str]) -> list[DeviceRun]:
    """Score one fleet with ours and compute the baselines' statistics."""
    seed, fleet = job
    kinds = DEFAULT_KINDS if fleet == "mixed" else HEALTHY_KINDS
    trace = generate_fleet(seed, kinds=kinds)
    config = ScoreConfig()
    scorer = StreamingScorer(trace.interval_s, config)
    for name, label in trace.labels.items():
        scorer.set_evacuation_time(name, label.evacuation_s)
    alarms: dict[str, list[float]] = {name: [] for name in trace.labels}
    above: dict[str, bool] = {}
    scores: dict[str, list[float]] = {name: [] for name in trace.labels}
    for time_s, tick in group_by_time(trace.samples):
        for score in scorer.observe(time_s, tick):
            if score.state.value == "silent":
                continue
            scores[score.device].append(score.score)
            now_above = score.score >= config.act
            if now_above and not above.get(score.device, False):
                alarms[score.device].append(score.time_s)
            above[score.device] = now_above
    warmup_s = max(config.warmup_s, 60 * trace.interval_s)
    stats = _baseline_statistics(trace, warmup_s)
    runs = []
    for name, label in trace.labels.items():
        st = stats[name]
        runs.append(
            DeviceRun(
                seed=seed,
                device=name,
                kind=label.kind,
                onset_s=label.onset_s,
                end_s=label.end_s,
                evacuation_s=label.evacuation_s,
                factor=label.factor,
                warmup_end_s=st["first"] + warmup_s,
                last_time_s=st["last"],
                ours_alarms=alarms[name],
                times=st["times"],
                static_stat=st["static"],
                ewma_stat=st["ewma"],
                error_alarm_s=st["error_alarm"],
                scores=np.array(scores[name]),
            )
        )
    return runs


# -- detectors' alarm times --------------------------------------------------------------


def alarm_times(run: DeviceRun, method: str, threshold: float) -> list[float]:
    """Times a detector entered its alarm state (ours: score >= act)."""
    if method == "ours":
        return run.ours_alarms
    stat = run.static_stat if method == "static" else run.ewma_stat
    over = stat >= threshold
    entries = np.nonzero(over & ~np.concatenate(([False], over[:-1])))[0]
    times = [float(run.times[i]) for i in entries]
    if run.error_alarm_s is not None:
        times.append(run.error_alarm_s)
    return sorted(times)


def calibrate(runs: list[DeviceRun], method: str, target_false: int) -> float:
    """Smallest threshold whose false-alarm count on `runs` is at most `target_false`."""
    peaks = []
    error_fired = 0
    for run in runs:
        if run.failing:
            continue
        if run.error_alarm_s is not None:
            error_fired += 1  # the error rule is shared and not tunable
            continue
        stat = run.static_stat if method == "static" else run.ewma_stat
        peaks.append(float(np.max(stat)) if len(stat) else 0.0)
    peaks.sort(reverse=True)
    allowed = max(0, target_false - error_fired)
    # Alarm fires at stat >= threshold: just above the (allowed+1)-th highest healthy peak.
    if allowed >= len(peaks):
        return 1.0
    return float(np.nextafter(peaks[allowed], math.inf))


@dataclass
class Summary:
    method: str
    threshold: float
    recall: dict[str, tuple[int, int]]  # kind -> (detected, total)
    leads_h: dict[str, list[float]]
    lead_over_window: list[float]
    lead_over_evac: list[float]
    fail_slow_delay_s: list[float]
    fail_slow_missed: int
    false_alarms: int
    false_by_kind: dict[str, int]
    early_alarms: int  # alarms on a failing device before its onset
    healthy_days: float
    true_alarms: int

    @property
    def precision(self) -> float:
        total = self.true_alarms + self.false_alarms + self.early_alarms
        return self.true_alarms / total if total else math.nan

    @property
    def false_per_1000_days(self) -> float:
        return 1000.0 * self.false_alarms / self.healthy_days

    @property
    def upper95_per_1000_days(self) -> float:
        from scipy.stats import chi2

        # Exact one-sided 95% Poisson upper bound on the count, per healthy device-day.
        upper = chi2.ppf(0.95, 2 * self.false_alarms + 2) / 2.0
        return 1000.0 * upper / self.healthy_days


def summarise(runs: list[DeviceRun], method: str, threshold: float) -> Summary:
    recall: dict[str, list[int]] = {k.value: [0, 0] for k in (*SCORED_FAILURES, Kind.SUDDEN_DEATH)}
    leads: dict[str, list[float]] = {k.value: [] for k in SCORED_FAILURES}
    over_window: list[float] = []
    over_evac: list[float] = []
    delays: list[float] = []
    missed = false = early = true = 0
    false_by_kind: dict[str, int] = {}
    days = 0.0
    for run in runs:
        times = alarm_times(run, method, threshold)
        if not run.failing:
            days += run.healthy_days
            if times:
                false += 1
                false_by_kind[run.kind.value] = false_by_kind.get(run.kind.value, 0) + 1
            continue
        assert run.onset_s is not None
        if any(t < run.onset_s for t in times):
            early += 1
        after = [t for t in times if t >= run.onset_s]
        if run.kind is Kind.FAIL_SLOW:
            key = run.kind.value
            recall[key][1] += 1
            if after:
                recall[key][0] += 1
                true += 1
                delays.append(after[0] - run.onset_s)
            else:
                missed += 1
            continue
        assert run.end_s is not None
        detected = [t for t in after if t < run.end_s]
        key = run.kind.value
        recall[key][1] += 1
        if detected:
            recall[key][0] += 1
            true += 1
            if run.kind is not Kind.SUDDEN_DEATH:
                lead = run.end_s - detected[0]
                leads[key].append(lead / 3600.0)
                over_window.append(lead / (run.end_s - run.onset_s))
                over_evac.append(lead / run.evacuation_s)
    return Summary(
        method=method,
        threshold=threshold,
        recall={k: (v[0], v[1]) for k, v in recall.items()},
        leads_h=leads,
        lead_over_window=over_window,
        lead_over_evac=over_evac,
        fail_slow_delay_s=delays,
        fail_slow_missed=missed,
        false_alarms=false,
        false_by_kind=false_by_kind,
        early_alarms=early,
        healthy_days=days,
        true_alarms=true,
    )


def evaluate(seeds: list[int], healthy_seeds: list[int], jobs: int) -> list[DeviceRun]:
    work = [(s, "mixed") for s in seeds] + [(s, "healthy") for s in healthy_seeds]
    if jobs <= 1:
        results = [run_fleet(job) for job in work]
    else:
        with multiprocessing.get_context("spawn").Pool(jobs) as pool:
            results = pool.map(run_fleet, work, chunksize=1)
    return [run for fleet in results for run in fleet]


# -- the other measurements --------------------------------------------------------------


def measure_replay_speed() -> dict[str, float]:
    """One day of 10 s samples for 50 devices through the `shadowfs predict` code path."""
    from predictor.trace import format_trace
    from shadowfs.predict_cli import replay

    mix: tuple[Kind, ...] = (*DEFAULT_KINDS, *HEALTHY_KINDS, *DEFAULT_KINDS, *HEALTHY_KINDS)
    kinds = mix[:50] + (Kind.HEALTHY,) * (50 - len(mix[:50]))
    trace = generate_fleet(4242, kinds=kinds, duration_s=DAY_S, interval_s=10.0)
    text = format_trace(trace.samples, with_class=False)
    wall, cpu = time.perf_counter(), time.process_time()
    result = replay(text)
    return {
        "rows": float(len(trace.samples)),
        "devices": float(len(result)),
        "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - cpu,
    }


def measure_steady_state_cpu() -> dict[str, float]:
    """Scorer CPU for 64 devices at 1 s over the hour after a 1 h warm-up."""
    kinds = (Kind.HEALTHY,) * 56 + (Kind.BUSY,) * 4 + (Kind.HICCUP,) * 2 + (Kind.SPIKE,) * 2
    trace = generate_fleet(77, kinds=kinds, duration_s=2 * 3600.0, interval_s=1.0, surge_all=False)
    scorer = StreamingScorer(1.0)
    ticks = list(group_by_time(trace.samples))
    half = len(ticks) // 2
    for time_s, tick in ticks[:half]:
        scorer.observe(time_s, tick)
    forecast_before = scorer.forecast_cpu_s
    cpu = time.process_time()
    for time_s, tick in ticks[half:]:
        scorer.observe(time_s, tick)
    spent = time.process_time() - cpu
    simulated = ticks[-1][0] - ticks[half][0]
    return {
        "cpu_s": spent,
        "simulated_s": simulated,
        "share_of_core": spent / simulated,
        "forecast_cpu_s": scorer.forecast_cpu_s - forecast_before,
        "memory_bytes": float(scorer.memory_bytes()),
    }


def measure_full_refit(devices: int = 64) -> dict[str, float]:
    """Fit 3 signals x `devices` models on 360 1-minute points each, then refit them all."""
    from predictor.arima import ArimaEngine, ForecastRequest

    rng = np.random.default_rng(5)
    engine = ArimaEngine()
    for d in range(devices):
        for signal in ("read_latency", "write_latency", "errors"):
            noise = rng.normal(0, 0.15, 360)
            y = 0.02 * np.cumsum(rng.normal(0, 0.3, 360)) + noise
            engine.forecast(ForecastRequest(f"dev{d}/{signal}", 0.0, tuple(y.tolist()), 360, 60))
    cpu = time.process_time()
    count = engine.refit_all(6 * 3600.0)
    return {"models": float(count), "cpu_s": time.process_time() - cpu}


def measure_workload() -> list[dict[str, float | str]]:
    from predictor.workload import Policy, WorkloadConfig, simulate_fast_tier

    config = WorkloadConfig()
    rows: list[dict[str, float | str]] = []
    for seed in (2, 3):
        for policy in Policy:
            result = simulate_fast_tier(policy, config, seed=seed)
            rows.append(
                {
                    "seed": float(seed),
                    "policy": policy.value,
                    "spike_share": result.spike_hit_share,
                    "background_share": result.background_hit_share,
                    "mape": result.forecast_mape,
                }
            )
    return rows


# -- report ------------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


def _fmt(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def summary_table(summaries: list[Summary]) -> str:
    head = (
        "| detector | threshold | recall creep | recall error growth | recall fail-slow | "
        "recall sudden death | median lead (h) | p10 lead (h) | median lead / window | "
        "median lead / evacuation | fail-slow delay median (s) | fail-slow <= 5 min | "
        "precision | false alarms / healthy device-days | per 1,000 days | 95% upper |"
    )
    lines = [head, "|" + "---|" * 16]
    for s in summaries:
        all_leads = [x for v in s.leads_h.values() for x in v]
        within5 = sum(1 for d in s.fail_slow_delay_s if d <= 300)
        total_fs = s.recall[Kind.FAIL_SLOW.value][1]

        def rec(kind: Kind, s: Summary = s) -> str:
            d, n = s.recall[kind.value]
            return f"{d}/{n} ({100 * d / n:.0f}%)" if n else "n/a"

        threshold = "score >= 80" if s.method == "ours" else f"{s.threshold:.3g}x"
        lines.append(
            f"| {s.method} | {threshold} | {rec(Kind.CREEP)} | {rec(Kind.ERROR_GROWTH)} | "
            f"{rec(Kind.FAIL_SLOW)} | {rec(Kind.SUDDEN_DEATH)} | {_fmt(_pct(all_leads, 50))} | "
            f"{_fmt(_pct(all_leads, 10))} | {_fmt(_pct(s.lead_over_window, 50))} | "
            f"{_fmt(_pct(s.lead_over_evac, 50), 1)} | {_fmt(_pct(s.fail_slow_delay_s, 50), 0)} | "
            f"{within5}/{total_fs} | {_fmt(s.precision)} | {s.false_alarms} / "
            f"{s.healthy_days:.0f} | {_fmt(s.false_per_1000_days)} | "
            f"{_fmt(s.upper95_per_1000_days)} |"
        )
    return "\n".join(lines)


def per_kind_lead_table(summaries: list[Summary]) -> str:
    lines = ["| detector | creep median lead (h) | error growth median lead (h) |", "|---|---|---|"]
    for s in summaries:
        lines.append(
            f"| {s.method} | {_fmt(_pct(s.leads_h['creep'], 50))} | "
            f"{_fmt(_pct(s.leads_h['error_growth'], 50))} |"
        )
    return "\n".join(lines)


def plot_example(runs: list[DeviceRun], path: Path) -> str:
    """Re-run one held-out fleet, capturing a creep device's residual, forecast and score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from predictor.score import Signal
    from predictor.series import Field

    creep = next(r for r in runs if r.kind is Kind.CREEP and r.ours_alarms)
    trace = generate_fleet(creep.seed, kinds=DEFAULT_KINDS)
    config = ScoreConfig()
    scorer = StreamingScorer(trace.interval_s, config)
    for name, label in trace.labels.items():
        scorer.set_evacuation_time(name, label.evacuation_s)
    times, scores, residuals = [], [], []
    band = None
    for time_s, tick in group_by_time(trace.samples):
        for score in scorer.observe(time_s, tick):
            if score.device != creep.device or score.state.value == "silent":
                continue
            times.append(time_s)
            scores.append(score.score)
            row = scorer.series(creep.device).raw.last(1)[1][0]
            residuals.append(float(row[Field.READ_RESIDUAL]))
            if band is None and score.score >= config.warn:
                forecast = scorer.forecast(creep.device, Signal.READ_LATENCY)
                if forecast is not None:
                    band = (time_s, forecast)
    t_h = np.array(times) / 3600.0
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    ax1.plot(t_h, np.exp(residuals), lw=0.7, label="read p99 / expected at load (net of peers)")
    ax1.axhline(config.latency_threshold_factor, color="red", ls="--", label="failure threshold 5x")
    ax1.axhline(config.fail_slow_factor, color="orange", ls=":", label="fail-slow 1.5x")
    if band is not None:
        start, forecast = band
        steps = np.arange(1, len(forecast.mean) + 1) * 60.0
        mean, sd = np.array(forecast.mean), np.array(forecast.sd)
        x = (start + steps) / 3600.0
        ax1.fill_between(
            x,
            np.exp(mean - 1.96 * sd),
            np.exp(mean + 1.96 * sd),
            alpha=0.3,
            color="green",
            label=f"ARIMA{forecast.order} 95% band at first warn",
        )
        ax1.plot(x, np.exp(mean), color="green", lw=1)
    ax1.set_yscale("log")
    ax1.set_ylabel("ratio")
    ax1.legend(fontsize=7, loc="upper left")
    ax2.plot(t_h, scores, lw=0.8, label="failure score")
    ax2.axhline(config.act, color="red", ls="--", lw=0.8, label="act 80")
    ax2.axhline(config.warn, color="orange", ls=":", lw=0.8, label="warn 50")
    for marker, colour, text in (
        (creep.onset_s, "grey", "creep onset"),
        (creep.end_s, "black", "failure"),
        (creep.ours_alarms[0], "red", "alarm"),
    ):
        if marker is not None:
            for ax in (ax1, ax2):
                ax.axvline(marker / 3600.0, color=colour, lw=0.8)
            ax2.text(marker / 3600.0, 102, text, fontsize=7, rotation=90, va="bottom")
    ax2.set_ylim(0, 100)
    ax2.set_xlabel("time (h)")
    ax2.set_ylabel("score")
    ax2.legend(fontsize=7, loc="center left")
    start_h = max(0.0, (creep.onset_s or 0) / 3600.0 - 3)
    ax2.set_xlim(start_h, (creep.end_s or t_h[-1] * 3600) / 3600.0 + 0.5)
    fig.suptitle(f"held-out seed {creep.seed}, {creep.device}: latency creep to failure")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"seed {creep.seed}, device {creep.device}"


def plot_leads(summaries: list[Summary], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, kind in zip(axes, ("creep", "error_growth"), strict=True):
        data = [s.leads_h[kind] or [0.0] for s in summaries]
        ax.boxplot(data)
        ax.set_xticks(range(1, len(summaries) + 1), [s.method for s in summaries])
        ax.set_title(f"{kind}: lead time (h), held-out seeds")
        ax.set_ylabel("hours before failure")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_workload(rows: list[dict[str, float | str]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    labels = [f"seed {int(float(r['seed']))}\n{r['policy']}" for r in rows]
    values = [100 * float(r["spike_share"]) for r in rows]
    ax.bar(labels, values, color=["grey" if "heat" in str(r["policy"]) else "green" for r in rows])
    ax.set_ylabel("spike reads from fast tier (%)")
    ax.set_ylim(0, 100)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(
    tuning: list[Summary],
    held_out: list[Summary],
    args: argparse.Namespace,
    extras: dict[str, Any],
    example: str,
) -> None:
    cfg = ScoreConfig()
    ours_held = held_out[0]
    fs_total = ours_held.recall[Kind.FAIL_SLOW.value][1]
    fs_within = sum(1 for d in ours_held.fail_slow_delay_s if d <= 300)

    def recall_of(kind: Kind) -> float:
        d, n = ours_held.recall[kind.value]
        return d / n if n else math.nan

    def lead_better(kind: str) -> str:
        ours = _pct(ours_held.leads_h[kind], 50)
        others = [_pct(s.leads_h[kind], 50) for s in held_out[1:]]
        return "yes" if all(math.isnan(o) or ours > o for o in others) else "no"

    targets = [
        (
            "recall >= 95% on creep",
            recall_of(Kind.CREEP) >= 0.95,
            f"{100 * recall_of(Kind.CREEP):.0f}%",
        ),
        (
            "recall >= 95% on error growth",
            recall_of(Kind.ERROR_GROWTH) >= 0.95,
            f"{100 * recall_of(Kind.ERROR_GROWTH):.0f}%",
        ),
        (
            "recall >= 95% on fail-slow",
            recall_of(Kind.FAIL_SLOW) >= 0.95,
            f"{100 * recall_of(Kind.FAIL_SLOW):.0f}%",
        ),
        (
            "<= 1 false alarm per 1,000 healthy device-days (point estimate)",
            ours_held.false_per_1000_days <= 1.0,
            f"{ours_held.false_per_1000_days:.2f} (95% upper bound "
            f"{ours_held.upper95_per_1000_days:.2f})",
        ),
        (
            "median lead >= half the degradation window",
            _pct(ours_held.lead_over_window, 50) >= 0.5,
            f"{_pct(ours_held.lead_over_window, 50):.2f} of the window",
        ),
        (
            "fail-slow >= 2x caught within 5 minutes",
            fs_within == fs_total,
            f"{fs_within}/{fs_total} within 5 min, median "
            f"{_pct(ours_held.fail_slow_delay_s, 50):.0f} s, max "
            f"{max(ours_held.fail_slow_delay_s, default=math.nan):.0f} s",
        ),
        (
            "lead time better than both baselines (creep)",
            lead_better("creep") == "yes",
            lead_better("creep"),
        ),
        (
            "lead time better than both baselines (error growth)",
            lead_better("error_growth") == "yes",
            lead_better("error_growth"),
        ),
    ]
    replay = extras["replay"]
    steady = extras["steady"]
    refit = extras["refit"]
    workload = extras["workload"]
    timing = extras["timing"]
    lines = [
        "# Failure predictor: evaluation",
        "",
        "Generated by `OPENBLAS_NUM_THREADS=1 python -m bench.predictor_eval"
        + (" --quick" if args.quick else "")
        + f"` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Do not edit by hand.",
        "",
        "All traces are synthetic (predictor/generator.py): they show how the detector behaves "
        "on the failure shapes we model, not how real disks fail. Every number below comes "
        "from this run.",
        "",
        "## Protocol",
        "",
        f"- Tuning seeds: mixed fleets {args.tuning_mixed}, healthy fleets "
        f"{args.tuning_healthy}. Held-out seeds: mixed {args.held_mixed}, healthy "
        f"{args.held_healthy}, run for the first time by this version of the protocol and "
        "never examined device by device. Held-out seeds never influence any threshold.",
        "- The earlier held-out set (mixed 2000-2019, healthy 2100-2127) is retired: its "
        "summary tables had been seen in three runs (8-10, then 2 false alarms), and changes "
        "made after seeing them would have turned it into a tuning set. The new held-out set "
        "is larger so that its false-alarm rate has a usable bound: with about 3,300 healthy "
        "device-days, no false alarm gives a 95% upper bound near 0.9 per 1,000.",
        "- Development seeds, examined device by device to find and fix false alarms: "
        "0-19 and 100-127 (tuning), 1000-1003, 1100-1101, 3000-3109 (earlier work), and for "
        "the last changes 7000-7039 (fleets of hiccups, busy devices and surges), 8000-8029 "
        "(mixed and failure-heavy fleets), 9000-9099 (healthy fleets as below), 10000-10099 "
        "(8 hiccups a fleet) and 11000-11059 (2 fail-slow steps and 4 hiccups a fleet).",
        "- A fleet: 12 devices (SSD and HDD), 2 days of 60 s samples. A mixed fleet holds one "
        "latency creep to failure (2-8 h window), one error-rate growth to failure, one "
        "fail-slow step (2-10x), one sudden death, a single-device load surge, a busy device, "
        "a single spike, a 1-2 minute hiccup and healthy devices; half the fleets also get a "
        "load surge on every device at once. Healthy fleets hold only healthy devices and "
        "decoys. Every device is healthy for at least 3 h before its event.",
        f"- Ours: `predictor.scorer.StreamingScorer` with default `ScoreConfig` (warn "
        f"{cfg.warn:g}, act {cfg.act:g}, failure threshold p99 {cfg.latency_threshold_factor:g}x "
        f"own baseline, fail-slow {cfg.fail_slow_factor:g}x, sustained errors "
        f"{cfg.error_rate_per_min:g}/min, horizon max(1 h, 2x evacuation time)). An alarm is "
        "the score reaching act.",
        "- Baselines: static threshold on max(read, write) p99 / the device's warm-up median; "
        f"EWMA (weight {EWMA_WEIGHT}) of the log of that ratio. Both also get the rule '>= 3 "
        "errors within 10 minutes'. Their thresholds are calibrated on the tuning seeds to "
        "ours' false-alarm count there, then applied unchanged to the held-out seeds.",
        "- A false alarm: a device that never fails (healthy or decoy) alarming at least once "
        "after warm-up. Healthy device-days count the post-warm-up time of those devices. An "
        "alarm on a failing device before its onset counts against precision. Lead time: "
        "failure time minus the first alarm after onset. Fail-slow delay: first alarm after "
        "the step minus the step time.",
        "- Sudden death gives no warning in its telemetry, by construction: it is reported, "
        "and it is **not predictable** by any detector here; the daemon sees it as a silent "
        "device.",
        "",
        "## How the score works",
        "",
        "`predictor.scorer.StreamingScorer.observe(t, samples)` takes one tick (every device's "
        "sample at time t) and uses nothing later. Per device and latency signal (read and "
        "write p99):",
        "",
        "1. **Residual**: log(p99) minus the log p99 expected at the device's current IOPS "
        "(predictor/baseline.py: the device's own load curve in quarter-octave IOPS bins, "
        "interpolated; at a load the device never showed, its class's curve plus the device's "
        "offset, with slack for the uncertainty, and never below what the device itself showed "
        "at its highest familiar load: latency does not fall with load, and the class curve "
        "pooled from devices that each knew their own range of loads can step down where one "
        "range meets another), minus the median residual of its same-class peers at that "
        "moment when positive (a surge on every device is load, not failure). "
        "The baselines learn only from samples judged healthy, with a 6 h time constant.",
        "2. **Change detection on every sample**: a one-sided CUSUM (k=1, h=6 noise scales, "
        "residuals clipped at 3 scales so one GC pause cannot trip it) on the residual over "
        "its learned noise scale.",
        "3. **Fail-slow evidence**: while the CUSUM is alarmed, P(level > 1.5x) from the median "
        "of the last 5 minutes and its standard error, counted at its lowest over the last "
        f"{cfg.level_persist_s:.0f} s (**persistence**: the CUSUM must have stayed alarmed "
        "and the median elevated that long). At 60 s a 1-2 minute hiccup is 2 of the "
        "window's 5 samples; one GC pause or noisy sample next to it makes 3, which carries "
        "the median and, just, the CUSUM; one sample later the CUSUM has fallen back and the "
        "evidence never counted. A 2x step needs its 4th or 5th sample: within 5 minutes of "
        "the step when the 5th is enough, which it usually but not always is (see the "
        "fail-slow columns below); persistence costs every fail-slow one sample.",
        "4. **Forecast evidence**: 1-minute aggregates (medians) of the residual feed an ARIMA "
        "model per signal (statsmodels; order by AIC over (0,1,1), (1,1,0), (1,1,1); refitted "
        "at most every 6 h, `results.extend` in between). For a screened signal the forecast "
        "is refreshed every 5 minutes, and P(crossing 5x within the horizon) is the largest "
        "per-step probability of the forecast distribution above log 5. It counts once the "
        "5-minute median confirms the rise (above 1.3x, with the same persistence).",
        "5. **Errors**: P(rate > 0.15/min) from a Gamma posterior over the last 10 minutes, "
        "and P(rate > 0.04/min) over the last hour, each needing errors in at least 2 "
        "intervals; plus an ARIMA forecast of log(1 + errors/min), which counts only once "
        f"the last hour has errors in at least {cfg.min_error_trend_intervals} intervals: a "
        "d=1 model reads a minute with one chance error as a new level and forecasts it for "
        "the whole horizon (on the development seeds, pairs of chance errors made most of the "
        "false alarms); a healthy device with about one error a day shows 4 error minutes "
        "within an hour about once in 80,000 device-days, a growing error rate within the "
        "first quarter of its window.",
        "6. **Fusion**: score = 100 x (1 - prod(1 - p_signal)), p_signal the largest evidence "
        "of that signal. Warn at 50, act at 80. The reason names the strongest signal, its "
        "kind (forecast, fail_slow, error_rate), value against threshold, horizon and p. "
        "Evidence from outside the series (`set_external(device, source, p, reason)`, e.g. "
        "SMART health) joins the fusion as one more signal per source until replaced; it is "
        "not used by this evaluation.",
        "",
        "## Targets (held-out seeds, ours)",
        "",
        "| target | met | measured |",
        "|---|---|---|",
        *[f"| {name} | {'yes' if ok else '**no**'} | {value} |" for name, ok, value in targets],
        "",
        "## Held-out seeds",
        "",
        summary_table(held_out),
        "",
        per_kind_lead_table(held_out),
        "",
        f"False alarms by decoy kind (ours): {held_out[0].false_by_kind or 'none'}; static: "
        f"{held_out[1].false_by_kind or 'none'}; EWMA: {held_out[2].false_by_kind or 'none'}.",
        "",
        "## Tuning seeds",
        "",
        summary_table(tuning),
        "",
        per_kind_lead_table(tuning),
        "",
        "## An example: trace, forecast band, score, alarm",
        "",
        f"![example](img/predictor_example.png) ({example}: the read-latency residual, the "
        "ARIMA forecast band fitted on the 1-minute aggregates when the score first reached "
        "warn, the score, and the alarm.)",
        "",
        "![lead times](img/predictor_leads.png)",
        "",
        "## Workload forecasting (fast-tier simulation)",
        "",
        "predictor/workload.py: a volume of 20,000 extents, a fast tier of 2,000, a Zipf "
        "background and, every 4 h, a 10-minute spike reading a 1,500-extent cold set that "
        "changes by 10% per cycle; the mirror moves at most 150 extents a minute. Heat-only "
        "promotes by decayed heat; pre-staging also stages what the spike's phase read in "
        "past cycles, 15 minutes before the seasonal IOPS forecast predicts the spike. Two "
        "warm-up cycles, six scored.",
        "",
        "| seed | policy | spike reads from fast tier | background reads from fast tier | "
        "IOPS forecast MAPE |",
        "|---|---|---|---|---|",
        *[
            f"| {int(float(r['seed']))} | {r['policy']} | {100 * float(r['spike_share']):.1f}% | "
            f"{100 * float(r['background_share']):.1f}% | "
            f"{_fmt(100 * float(r['mape']), 1) + '%' if r['policy'] == 'pre_stage' else '-'} |"
            for r in workload
        ],
        "",
        "![workload](img/predictor_workload.png)",
        "",
        "## Cost",
        "",
        f"- Replay: one day of 10 s samples for {replay['devices']:.0f} devices "
        f"({replay['rows']:.0f} rows) through `shadowfs predict`'s code: "
        f"**{replay['wall_s']:.1f} s** wall, {replay['cpu_s']:.1f} s CPU (target < 300 s).",
        f"- Steady state, 64 devices at 1 s intervals, the hour after a 1 h warm-up: "
        f"{steady['cpu_s']:.1f} s CPU over {steady['simulated_s']:.0f} s simulated = "
        f"**{100 * steady['share_of_core']:.2f}% of one core** (target <= 2%), of which "
        f"{steady['forecast_cpu_s']:.2f} s ARIMA. Series memory for those 64 devices: "
        f"{steady['memory_bytes'] / 2**20:.1f} MiB (budget 64 MiB).",
        f"- Full refit: {refit['models']:.0f} ARIMA models (64 devices x 3 signals, 360 "
        f"1-minute points each, grid of 3 orders by AIC): **{refit['cpu_s']:.1f} s CPU** of "
        "one core (target <= 60 s).",
        f"- This evaluation: **{timing['total_s'] / 60:.1f} min** wall with --jobs "
        f"{timing['jobs']:.0f} (tuning seeds {timing['tuning_s'] / 60:.1f} min, held-out "
        f"seeds {timing['held_s'] / 60:.1f} min, the rest the measurements above), on a "
        "2-core machine shared with other work.",
        "",
        "## Limits",
        "",
        "- The traces are synthetic and the detector was developed against the same "
        "generator: the held-out seeds guard against overfitting to particular seeds, not to "
        "the generator's idea of a failing disk.",
        "- A load a device has never shown is judged by its class's curve with slack; a surge "
        "to a load no device of its class has shown can still read as a slowdown (see the "
        "false alarms by decoy kind above).",
        "- The kernel block statistics and SMART health are collected (tiers/); the scorer "
        "accepts SMART as external evidence, but no SMART data is modelled or evaluated here.",
        "- Fail-slow at 2x sits at the edge of what a 5-minute median of 60 s samples can "
        "tell from noise: on the development seeds about 2 in 120 fail-slow steps (those near "
        "2x) took longer than 5 minutes, with or without persistence (estimated by replaying "
        "both rules on captured development traces).",
        "- Four minutes of elevated latency (a hiccup plus outliers on both sides) are "
        "indistinguishable from a fail-slow step at 60 s sampling; persistence removes the "
        "3-sample case, not that one.",
        "- Sudden death is detected only as silence, after the fact.",
        "",
        "ARIMA models are fitted on demand: a signal's model is fitted (order by AIC) the "
        "first time the signal is screened as elevated (CUSUM sum at half its alarm level, or "
        "errors in two intervals of the window), refitted at most every 6 h while it stays "
        "elevated, and updated with `results.extend` in between. Healthy signals cost no fits; "
        "the full-refit figure above is the worst case of every signal elevated at once.",
    ]
    (DOCS / "predictor.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few seeds, for a smoke run")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    if args.quick:
        args.tuning_mixed, args.tuning_healthy = "0-3", "100-101"
        args.held_mixed, args.held_healthy = "6000-6003", "6100-6101"  # not the held-out set
    else:
        args.tuning_mixed, args.tuning_healthy = TUNING_MIXED, TUNING_HEALTHY
        args.held_mixed, args.held_healthy = HELD_MIXED, HELD_HEALTHY

    def seeds(spec: str) -> list[int]:
        first, last = (int(x) for x in spec.split("-"))
        return list(range(first, last + 1))

    IMG.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tuning_runs = evaluate(seeds(args.tuning_mixed), seeds(args.tuning_healthy), args.jobs)
    tuning_s = time.perf_counter() - started
    print(f"tuning done in {tuning_s:.0f} s", file=sys.stderr)
    held_runs = evaluate(seeds(args.held_mixed), seeds(args.held_healthy), args.jobs)
    held_s = time.perf_counter() - started - tuning_s
    print(f"held-out done in {tuning_s + held_s:.0f} s", file=sys.stderr)

    ours_tuning = summarise(tuning_runs, "ours", math.nan)
    thresholds = {
        m: calibrate(tuning_runs, m, ours_tuning.false_alarms) for m in ("static", "ewma")
    }
    tuning = [ours_tuning] + [summarise(tuning_runs, m, thresholds[m]) for m in thresholds]
    held_out = [summarise(held_runs, "ours", math.nan)] + [
        summarise(held_runs, m, thresholds[m]) for m in thresholds
    ]
    example = plot_example(held_runs, IMG / "predictor_example.png")
    plot_leads(held_out, IMG / "predictor_leads.png")
    extras: dict[str, Any] = {}
    extras["workload"] = measure_workload()
    plot_workload(extras["workload"], IMG / "predictor_workload.png")
    extras["replay"] = measure_replay_speed()
    print(f"replay {extras['replay']}", file=sys.stderr)
    extras["steady"] = measure_steady_state_cpu()
    print(f"steady {extras['steady']}", file=sys.stderr)
    extras["refit"] = measure_full_refit()
    print(f"refit {extras['refit']}", file=sys.stderr)
    extras["timing"] = {
        "tuning_s": tuning_s,
        "held_s": held_s,
        "total_s": time.perf_counter() - started,
        "jobs": float(args.jobs),
    }
    write_report(tuning, held_out, args, extras, example)
    print(summary_table(held_out))
    print(f"total {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
