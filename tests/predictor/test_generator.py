"""predictor.generator: deterministic, labelled, failed devices fall silent."""

from predictor.generator import DEFAULT_KINDS, Kind, generate_fleet


def test_same_seed_same_trace_and_labels() -> None:
    a = generate_fleet(9, duration_s=6 * 3600.0)
    b = generate_fleet(9, duration_s=6 * 3600.0)
    assert a.samples == b.samples and a.labels == b.labels
    assert generate_fleet(10, duration_s=6 * 3600.0).samples != a.samples


def test_labels_and_silence() -> None:
    fleet = generate_fleet(4, duration_s=12 * 3600.0)
    assert sorted(
        label.kind.value for label in fleet.labels.values() if label.kind is not Kind.SURGE_ALL
    ) == sorted(
        k.value
        for k in DEFAULT_KINDS
        if not (
            k is Kind.HEALTHY
            and any(label.kind is Kind.SURGE_ALL for label in fleet.labels.values())
        )
    )
    last_seen: dict[str, float] = {}
    for sample in fleet.samples:
        last_seen[sample.device] = sample.time_s
    for name, label in fleet.labels.items():
        if label.fails:
            assert label.end_s is not None and last_seen[name] < label.end_s
            assert label.onset_s is not None and last_seen[name] >= label.onset_s - 60
        else:
            assert last_seen[name] == fleet.duration_s
