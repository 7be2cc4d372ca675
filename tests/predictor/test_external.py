"""StreamingScorer.set_external: standing evidence from outside the series (e.g. SMART)."""

import math

import pytest

from predictor.score import HealthState, ReasonKind
from predictor.scorer import LATENCY_SIGNALS, StreamingScorer
from predictor.trace import DeviceClass, Sample


def sample(t: float, device: str = "ssd0") -> Sample:
    return Sample(
        time_s=t,
        device=device,
        device_class=DeviceClass.SSD,
        read_p99_ms=1.0,
        write_p99_ms=2.0,
        read_iops=100.0,
        write_iops=50.0,
        errors=0,
    )


def feed(scorer: StreamingScorer, start: float, end: float, step: float = 60.0):
    score = None
    t = start
    while t < end:
        (score,) = [s for s in scorer.observe(t, [sample(t)]) if s.device == "ssd0"]
        t += step
    assert score is not None
    return score


def test_external_evidence_is_fused_named_and_cleared() -> None:
    scorer = StreamingScorer(60.0)
    warm = feed(scorer, 0.0, 4 * 3600.0)
    assert warm.state is HealthState.HEALTHY and warm.score == 0.0

    scorer.set_external("ssd0", "smart", 0.9, "reallocated sectors rising")
    score = feed(scorer, 4 * 3600.0, 4 * 3600.0 + 60.0)
    assert score.score == pytest.approx(90.0)
    assert score.state is HealthState.ACT
    assert score.reason.kind is ReasonKind.EXTERNAL
    assert score.reason.source == "smart"
    assert "reallocated sectors rising" in score.reason.text()
    assert score.reason.as_dict()["source"] == "smart"

    # Two sources fuse as independent signals: 1 - (1 - 0.9)(1 - 0.5) = 0.95.
    scorer.set_external("ssd0", "vendor", 0.5, "media wear 97%")
    score = feed(scorer, 4 * 3600.0 + 60.0, 4 * 3600.0 + 120.0)
    assert score.score == pytest.approx(95.0)
    assert score.reason.source == "smart"  # the strongest is named

    # Replacing a source's evidence replaces it; probability 0 clears it.
    scorer.set_external("ssd0", "smart", 0.0, "")
    scorer.set_external("ssd0", "vendor", 0.2, "media wear 90%")
    score = feed(scorer, 4 * 3600.0 + 120.0, 4 * 3600.0 + 180.0)
    assert score.score == pytest.approx(20.0)
    assert scorer.external("ssd0") == {"vendor": 0.2}
    scorer.set_external("ssd0", "vendor", 0.0, "")
    score = feed(scorer, 4 * 3600.0 + 180.0, 4 * 3600.0 + 240.0)
    assert score.score == 0.0 and score.reason.kind is ReasonKind.NONE


def test_external_evidence_counts_during_warm_up_and_before_first_sample() -> None:
    scorer = StreamingScorer(60.0)
    scorer.set_external("ssd0", "smart", 0.85, "SMART overall-health FAILED")
    score = feed(scorer, 0.0, 60.0)
    assert score.score == pytest.approx(85.0) and score.state is HealthState.ACT
    assert score.reason.kind is ReasonKind.EXTERNAL
    scorer.set_external("ssd0", "smart", 0.1, "one pending sector")
    score = feed(scorer, 60.0, 120.0)
    assert score.state is HealthState.WARMING_UP and score.score == pytest.approx(10.0)


def test_external_evidence_does_not_freeze_learning() -> None:
    # A standing warning must not stop the baselines learning: the same device with and
    # without it ends up with the same latency-derived state.
    a, b = StreamingScorer(60.0), StreamingScorer(60.0)
    b.set_external("ssd0", "smart", 0.7, "warning")
    feed(a, 0.0, 6 * 3600.0)
    feed(b, 0.0, 6 * 3600.0)
    for signal in LATENCY_SIGNALS:
        sa, sb = a._devices["ssd0"].signals[signal], b._devices["ssd0"].signals[signal]
        assert sa.scale_count == sb.scale_count > 0
        assert sa.scale == sb.scale


@pytest.mark.parametrize(
    ("probability", "message"),
    [
        (-0.1, "probability"),
        (1.5, "probability"),
        (math.nan, "probability"),
        (math.inf, "probability"),
        ("0.5", "probability"),
        (True, "probability"),
    ],
)
def test_external_evidence_rejects_bad_probability(probability, message) -> None:
    scorer = StreamingScorer(60.0)
    with pytest.raises(ValueError, match=message):
        scorer.set_external("ssd0", "smart", probability, "x")
    assert scorer.external("ssd0") == {}


def test_external_evidence_rejects_bad_names() -> None:
    scorer = StreamingScorer(60.0)
    with pytest.raises(ValueError, match="source"):
        scorer.set_external("ssd0", "", 0.5, "x")
    with pytest.raises(ValueError, match="device"):
        scorer.set_external("", "smart", 0.5, "x")
    with pytest.raises(ValueError, match="reason"):
        scorer.set_external("ssd0", "smart", 0.5, None)  # type: ignore[arg-type]
