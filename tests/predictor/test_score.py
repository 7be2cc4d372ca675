"""predictor.score: the probability arithmetic and the reason text."""

import math

from scipy import stats

from predictor.score import (
    Reason,
    ReasonKind,
    ScoreConfig,
    Signal,
    crossing_probability,
    error_rate_probability,
    fuse,
    gamma_sf,
    level_probability,
)


def test_horizon_is_max_of_hour_and_twice_evacuation() -> None:
    config = ScoreConfig()
    assert config.horizon_s(None) == 3600
    assert config.horizon_s(600) == 3600
    assert config.horizon_s(3000) == 6000


def test_crossing_probability() -> None:
    threshold = math.log(5)
    assert crossing_probability([0.0] * 10, [0.1] * 10, threshold) < 1e-6
    rising = [0.1 * h for h in range(1, 31)]
    p = crossing_probability(rising, [0.2] * 30, threshold)
    assert p > 0.99
    assert 0.45 < crossing_probability([threshold], [0.3], threshold) < 0.55


def test_level_probability_grows_with_evidence() -> None:
    threshold = math.log(1.5)
    few = level_probability(math.log(2.0), 0.25, 3, threshold)
    many = level_probability(math.log(2.0), 0.25, 30, threshold)
    assert 0.5 < few < many < 1.0
    assert level_probability(0.0, 0.25, 30, threshold) < 1e-6
    assert level_probability(math.nan, 0.25, 30, threshold) == 0.0


def test_gamma_sf_matches_scipy() -> None:
    for shape in (0.5, 2.5, 10.5):
        for x in (0.05, 0.2, 1.0):
            exact = stats.gamma.sf(x, shape, scale=0.1)
            assert abs(gamma_sf(x, shape, 0.1) - exact) < 0.03


def test_error_rate_probability() -> None:
    assert error_rate_probability(0, 10, 0.2) < 0.05
    assert error_rate_probability(20, 10, 0.2) > 0.99


def test_fuse() -> None:
    assert fuse([]) == 0.0
    assert abs(fuse([0.5, 0.5]) - 0.75) < 1e-12
    assert fuse([1.2, -1]) == 1.0


def test_reason_text_and_dict() -> None:
    reason = Reason(ReasonKind.FORECAST, Signal.READ_LATENCY, 6.2, 5.0, 7200, 0.91)
    assert "read_latency" in reason.text() and "2 h" in reason.text()
    d = reason.as_dict()
    assert d["kind"] == "forecast" and d["confidence"] == 0.91 and d["threshold"] == 5.0
    assert Reason(ReasonKind.NONE).as_dict()["value"] is None
