"""predictor.change: CUSUM detects shifts quickly, ignores noise and single spikes."""

import numpy as np

from predictor.change import Cusum, Ewma


def test_no_alarm_on_long_noise() -> None:
    rng = np.random.default_rng(0)
    cusum = Cusum()
    alarms = sum(cusum.update(float(i), float(z)) for i, z in enumerate(rng.normal(0, 1, 50000)))
    assert alarms == 0


def test_single_huge_spike_cannot_alarm() -> None:
    cusum = Cusum()
    for i in range(10):
        cusum.update(float(i), 0.0)
    assert not cusum.update(10.0, 1000.0)  # clipped to 3 scales
    assert cusum.total == 2.0


def test_shift_detected_and_change_point_estimated() -> None:
    rng = np.random.default_rng(1)
    cusum = Cusum()
    for i in range(200):
        cusum.update(float(i), float(rng.normal(0, 1)))
    detected = None
    for i in range(200, 260):
        if cusum.update(float(i), float(rng.normal(2.8, 1))):  # a 2x step at scale 0.25
            detected = i
            break
    assert detected is not None and detected - 200 <= 6
    assert 195 <= cusum.started_at <= 202
    cusum.reset()
    assert not cusum.alarmed and cusum.total == 0


def test_ewma() -> None:
    ewma = Ewma(weight=0.5)
    assert ewma.update(2.0) == 2.0
    assert ewma.update(4.0) == 3.0
    assert ewma.update(float("nan")) == 3.0
