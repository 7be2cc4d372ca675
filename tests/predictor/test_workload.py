"""predictor.workload: seasonal IOPS, hot-extent forecast, and the fast-tier simulation."""

import dataclasses
import math

import numpy as np

from predictor.workload import (
    HotExtentForecaster,
    Policy,
    SeasonalIopsForecaster,
    WorkloadConfig,
    simulate_fast_tier,
)


def test_seasonal_forecast_learns_the_period() -> None:
    forecaster = SeasonalIopsForecaster(period_min=60)
    pattern = 100 + 50 * np.sin(np.arange(60) * 2 * math.pi / 60)
    assert np.isnan(forecaster.forecast(5)).all()
    for _ in range(3):
        for value in pattern:
            forecaster.observe(float(value))
    np.testing.assert_allclose(forecaster.forecast(60), pattern)


def test_hot_extents_by_phase() -> None:
    forecaster = HotExtentForecaster(period_min=60, slot_min=5)
    for cycle in range(3):
        for minute in range(60):
            t = cycle * 60 + minute
            extents = np.array([1000 + minute // 5] * 10 + [1, 2])
            forecaster.observe(t, extents)
    assert forecaster.predict(3 * 60 + 12, 1) == [1002]
    assert forecaster.predict(3 * 60 + 55, 1) == [1011]


def test_pre_staging_serves_more_of_the_spike() -> None:
    config = dataclasses.replace(
        WorkloadConfig(),
        extents=4000,
        fast_capacity=600,
        spike_extents=400,
        period_min=120,
        cycles=5,
        background_iops=200,
        spike_iops=1000,
        promotions_per_min=30,
        lead_min=15,
        spike_len_min=5,
        heat_half_life_min=10,
    )
    heat = simulate_fast_tier(Policy.HEAT_ONLY, config, seed=2)
    staged = simulate_fast_tier(Policy.PRE_STAGE, config, seed=2)
    assert heat.spike_reads == staged.spike_reads > 0
    assert staged.spike_hit_share > heat.spike_hit_share + 0.1
    # pre-staging must not wreck the background
    assert staged.background_hit_share > heat.background_hit_share - 0.05
