"""Workload forecasting per volume: seasonal IOPS and the extents a coming spike will read.

Owns two forecasters and the simulation that judges them:

- `SeasonalIopsForecaster`: 1-minute IOPS of a volume, forecast as a per-slot seasonal
  profile (EWMA across cycles, so it follows slow drift) scaled by the recent level;
- `HotExtentForecaster`: per phase slot of the period, a decayed count of the extents read
  then; asked "what will be hot at time t", it answers with the extents that were hot at
  t's phase in past cycles;
- `simulate_fast_tier`: a fast tier of fixed capacity in front of a volume, fed by a
  synthetic periodic access trace (a Zipf background plus a spike that, every period, reads
  a mostly stable set of otherwise cold extents). Policy HEAT_ONLY promotes by decayed heat;
  PRE_STAGE also copies the extents forecast for a spike the IOPS forecast predicts, a few
  minutes ahead. Both move at most `promotions_per_min` extents a minute (the mirror engine's
  bandwidth). The figure of merit is the share of the spike's reads served from the fast tier.

Pure computation (numpy), no I/O; the mounted measurement comes with the tiering engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

import numpy as np


@dataclass
class SeasonalIopsForecaster:
    period_min: int
    weight: float = 0.3  # how fast the profile forgets older cycles
    profile: np.ndarray = field(init=False)
    seen: np.ndarray = field(init=False)
    minute: int = 0

    def __post_init__(self) -> None:
        self.profile = np.zeros(self.period_min)
        self.seen = np.zeros(self.period_min, dtype=bool)

    def observe(self, iops: float) -> None:
        slot = self.minute % self.period_min
        if self.seen[slot]:
            self.profile[slot] += self.weight * (iops - self.profile[slot])
        else:
            self.profile[slot], self.seen[slot] = iops, True
        self.minute += 1

    def forecast(self, steps: int) -> np.ndarray:
        """IOPS for the next `steps` minutes (NaN where no full cycle has been seen)."""
        slots = (self.minute + np.arange(steps)) % self.period_min
        return np.where(self.seen[slots], self.profile[slots], np.nan)


@dataclass
class HotExtentForecaster:
    period_min: int
    slot_min: int = 5
    decay: float = 0.5  # per cycle: an extent a spike stopped reading fades in a few cycles
    _counts: list[dict[int, float]] = field(init=False)
    _cycle: list[int] = field(init=False)

    def __post_init__(self) -> None:
        slots = math.ceil(self.period_min / self.slot_min)
        self._counts = [{} for _ in range(slots)]
        self._cycle = [-1] * slots

    def _slot(self, minute: int) -> int:
        return (minute % self.period_min) // self.slot_min

    def observe(self, minute: int, extents: np.ndarray) -> None:
        slot = self._slot(minute)
        cycle = minute // self.period_min
        counts = self._counts[slot]
        if self._cycle[slot] != cycle:
            # First visit of this slot in a new cycle: age what earlier cycles taught.
            for extent in list(counts):
                counts[extent] *= self.decay
                if counts[extent] < 0.05:
                    del counts[extent]
            self._cycle[slot] = cycle
        unique, hits = np.unique(extents, return_counts=True)
        for extent, n in zip(unique.tolist(), hits.tolist(), strict=True):
            counts[extent] = counts.get(extent, 0.0) + n

    def predict(self, minute: int, k: int) -> list[int]:
        """The `k` extents most read at `minute`'s phase in past cycles."""
        counts = self._counts[self._slot(minute)]
        return [e for e, _ in sorted(counts.items(), key=lambda item: -item[1])[:k]]


class Policy(Enum):
    HEAT_ONLY = "heat_only"
    PRE_STAGE = "pre_stage"


@dataclass(frozen=True)
class WorkloadConfig:
    extents: int = 20000
    fast_capacity: int = 2000
    period_min: int = 240  # a batch job every 4 hours
    spike_len_min: int = 10
    spike_extents: int = 1500  # the cold set a spike reads
    spike_churn: float = 0.1  # share of the spike set replaced each cycle
    background_iops: float = 400.0
    spike_iops: float = 3000.0
    zipf_a: float = 1.2
    promotions_per_min: int = 150
    heat_half_life_min: float = 30.0
    lead_min: int = 15  # pre-stage this far ahead of a forecast spike
    cycles: int = 8
    warmup_cycles: int = 2  # cycles the forecasters learn before results count


@dataclass(frozen=True)
class WorkloadResult:
    policy: Policy
    spike_reads: int
    spike_hits: int
    background_reads: int
    background_hits: int
    forecast_mape: float  # IOPS forecast error over the scored cycles (pre-stage only)

    @property
    def spike_hit_share(self) -> float:
        return self.spike_hits / self.spike_reads if self.spike_reads else math.nan

    @property
    def background_hit_share(self) -> float:
        return self.background_hits / self.background_reads if self.background_reads else math.nan


def _access_trace(config: WorkloadConfig, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Per minute, the extents read; and a bool per minute: is it a spike minute."""
    rng = np.random.default_rng(seed)
    minutes = config.period_min * config.cycles
    ranks = rng.permutation(config.extents)  # background popularity order
    cold = ranks[config.extents // 2 :]  # spikes read from the cold half
    spike_set = rng.choice(cold, config.spike_extents, replace=False)
    spike_start = config.period_min - config.spike_len_min - 20  # late in each period
    trace: list[np.ndarray] = []
    is_spike = np.zeros(minutes, dtype=bool)
    for minute in range(minutes):
        phase = minute % config.period_min
        if phase == 0 and minute > 0:
            churn = int(config.spike_churn * config.spike_extents)
            replace = rng.choice(config.spike_extents, churn, replace=False)
            spike_set = spike_set.copy()
            spike_set[replace] = rng.choice(cold, churn, replace=False)
        background = np.minimum(
            rng.zipf(config.zipf_a, rng.poisson(config.background_iops * 60 / 100)),
            config.extents,
        )
        reads = [ranks[background - 1]]
        if spike_start <= phase < spike_start + config.spike_len_min:
            is_spike[minute] = True
            reads.append(rng.choice(spike_set, rng.poisson(config.spike_iops * 60 / 100)))
        trace.append(np.concatenate(reads))
    return trace, is_spike


def simulate_fast_tier(policy: Policy, config: WorkloadConfig, seed: int = 2) -> WorkloadResult:
    """Run one policy over the synthetic trace (reads sampled at 1/100 of the IOPS)."""
    trace, is_spike = _access_trace(config, seed)
    decay = 0.5 ** (1.0 / config.heat_half_life_min)
    heat = np.zeros(config.extents)
    fast: set[int] = set()
    pinned: dict[int, int] = {}  # extent -> last minute it stays pinned
    iops_forecaster = SeasonalIopsForecaster(config.period_min)
    extent_forecaster = HotExtentForecaster(config.period_min)
    scored_from = config.warmup_cycles * config.period_min
    spike_reads = spike_hits = background_reads = background_hits = 0
    errors: list[float] = []
    for minute, reads in enumerate(trace):
        hits = np.fromiter((e in fast for e in reads.tolist()), dtype=bool, count=len(reads))
        if minute >= scored_from:
            if is_spike[minute]:
                spike_reads += len(reads)
                spike_hits += int(hits.sum())
            else:
                background_reads += len(reads)
                background_hits += int(hits.sum())
        # End of minute: learn, then move extents for the next minute.
        heat *= decay
        np.add.at(heat, reads, 1.0)
        iops = len(reads) * 100 / 60.0
        if policy is Policy.PRE_STAGE and minute >= scored_from:
            predicted = iops_forecaster.forecast(1)[0]
            if not math.isnan(predicted) and iops > 0:
                errors.append(abs(predicted - iops) / iops)
        iops_forecaster.observe(iops)
        extent_forecaster.observe(minute, reads)
        wanted: list[int] = []
        if policy is Policy.PRE_STAGE:
            # A spike forecast within the lead time: stage what that phase read before.
            ahead = iops_forecaster.forecast(config.lead_min)
            level = np.nanmedian(iops_forecaster.profile) if iops_forecaster.seen.any() else 0
            for step in np.nonzero(ahead > 2.0 * level)[0].tolist():
                for extent in extent_forecaster.predict(minute + 1 + step, config.spike_extents):
                    if extent not in fast and extent not in wanted:
                        wanted.append(extent)
        budget = config.promotions_per_min
        staged = wanted[:budget]
        hottest = np.argpartition(-heat, config.fast_capacity)[: config.fast_capacity]
        by_heat = [int(e) for e in hottest[np.argsort(-heat[hottest])] if int(e) not in fast]
        promote = staged + by_heat[: budget - len(staged)]
        protected = set(staged)
        # A staged copy is pinned until the spike it was staged for has passed: it has no
        # heat yet, and the next minute's staging must not evict it as "coldest".
        for extent in staged:
            pinned[extent] = minute + config.lead_min + config.spike_len_min
        # Eviction order: coldest first, never a pinned extent.
        victims = sorted(
            (e for e in fast if e not in protected and pinned.get(e, -1) < minute),
            key=lambda e: heat[e],
        )
        next_victim = 0
        for extent in promote:
            if len(fast) >= config.fast_capacity:
                if next_victim >= len(victims):
                    break
                coldest = victims[next_victim]
                if extent not in protected and heat[coldest] >= heat[extent]:
                    continue  # heat alone never displaces a hotter extent
                next_victim += 1
                fast.discard(coldest)
            fast.add(extent)
    return WorkloadResult(
        policy=policy,
        spike_reads=spike_reads,
        spike_hits=spike_hits,
        background_reads=background_reads,
        background_hits=background_hits,
        forecast_mape=float(np.mean(errors)) if errors else math.nan,
    )
