"""predictor.scorer: causality, live = replay, no alarms on decoys, failures caught."""

import dataclasses

import pytest

from predictor.generator import Kind, generate_fleet
from predictor.score import DeviceScore, HealthState, ReasonKind
from predictor.scorer import StreamingScorer
from predictor.trace import Sample, format_trace, group_by_time, parse_trace

HOURS = 3600.0


def run(samples: list[Sample], interval_s: float) -> dict[str, list[DeviceScore]]:
    scorer = StreamingScorer(interval_s)
    out: dict[str, list[DeviceScore]] = {}
    for time_s, tick in group_by_time(samples):
        for score in scorer.observe(time_s, tick):
            out.setdefault(score.device, []).append(score)
    return out


def first_alarm(scores: list[DeviceScore]) -> float | None:
    return next((s.time_s for s in scores if s.score >= 80), None)


@pytest.fixture(scope="module")
def failing_fleet():
    kinds = (
        Kind.FAIL_SLOW,
        Kind.CREEP,
        Kind.ERROR_GROWTH,
        Kind.HEALTHY,
        Kind.HEALTHY,
        Kind.HEALTHY,
    )
    return generate_fleet(11, kinds=kinds, duration_s=14 * HOURS, surge_all=False)


@pytest.fixture(scope="module")
def live(failing_fleet):
    """Scores as the daemon computes them: samples fed tick by tick as they arrive."""
    return run(failing_fleet.samples, failing_fleet.interval_s)


def test_live_and_replayed_scores_agree(failing_fleet, live) -> None:
    replayed = run(parse_trace(format_trace(failing_fleet.samples)), failing_fleet.interval_s)
    assert live == replayed


def test_score_at_t_uses_only_rows_up_to_t(failing_fleet, live) -> None:
    cut = 8 * HOURS
    # Rewrite every row after `cut` (a wild future); scores up to `cut` must not move.
    future = [
        dataclasses.replace(s, read_p99_ms=s.read_p99_ms * 50, errors=s.errors + 30)
        if s.time_s > cut
        else s
        for s in failing_fleet.samples
    ]
    a = live
    b = run(future, failing_fleet.interval_s)
    for device in a:
        assert [x for x in a[device] if x.time_s <= cut] == [
            x for x in b[device] if x.time_s <= cut
        ]
    assert a != b


def test_failures_are_flagged_before_failure(failing_fleet, live) -> None:
    for device, label in failing_fleet.labels.items():
        first = first_alarm(live[device])
        if label.kind is Kind.HEALTHY:
            assert first is None, device
        elif label.kind is Kind.FAIL_SLOW:
            assert first is not None and first - label.onset_s <= 300, (device, label)
        else:
            assert first is not None and label.onset_s <= first < label.end_s, (device, label)


def test_decoys_do_not_alarm() -> None:
    kinds = (
        Kind.BUSY,
        Kind.SURGE_ONE,
        Kind.SPIKE,
        Kind.HICCUP,
        Kind.HICCUP,
        Kind.HEALTHY,
        Kind.HEALTHY,
        Kind.HEALTHY,
    )
    fleet = generate_fleet(5, kinds=kinds, duration_s=12 * HOURS, surge_all=True)
    live = run(fleet.samples, fleet.interval_s)
    peaks = {device: max(s.score for s in scores) for device, scores in live.items()}
    assert all(peak < 80 for peak in peaks.values()), peaks


def test_silent_device_and_reason(failing_fleet, live) -> None:
    creep = next(d for d, label in failing_fleet.labels.items() if label.kind is Kind.CREEP)
    silences = [s for scores in live.values() for s in scores if s.state is HealthState.SILENT]
    reasons = [s.reason for s in live[creep] if s.state is HealthState.ACT]
    failed = {d for d, label in failing_fleet.labels.items() if label.fails}
    assert {s.device for s in silences} == failed and len(silences) == len(failed)
    assert all(s.time_s < failing_fleet.labels[s.device].end_s for s in silences)
    assert reasons and reasons[0].kind in (ReasonKind.FAIL_SLOW, ReasonKind.FORECAST)
    assert reasons[0].signal is not None and reasons[0].horizon_s >= HOURS
    assert 0 < reasons[0].confidence <= 1


def test_time_must_not_go_backwards() -> None:
    scorer = StreamingScorer(10.0)
    scorer.observe(100.0, [])
    with pytest.raises(ValueError):
        scorer.observe(90.0, [])
