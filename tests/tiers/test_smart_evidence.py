"""shadowfs.smart_evidence: SMART answers (recorded-format JSON fixtures) -> score evidence.

Passes without smartmontools: everything is parsed from tests/fixtures/smart/.
"""

import dataclasses
import json
from pathlib import Path

from shadowfs.smart_evidence import FAILING_P, GROWTH_P, HOLD_S, SmartEvidence, growth, verdict
from tiers.smart import SmartHealth, parse_smartctl_json

FIXTURES = Path(__file__).parent.parent / "fixtures" / "smart"


def health(name: str, t: float = 0.0) -> SmartHealth:
    data = json.loads((FIXTURES / name).read_text())
    return parse_smartctl_json(data, "/dev/x", t)


def test_the_drives_own_verdict() -> None:
    assert verdict(health("ata_healthy.json")).probability == 0.0
    assert verdict(health("nvme_healthy.json")).probability == 0.0
    assert verdict(health("no_device.json")).probability == 0.0
    failing = verdict(health("ata_failing.json"))
    assert failing.probability == FAILING_P and "FAILED" in failing.reason
    spare = verdict(health("nvme_spare_low.json"))
    assert spare.probability == FAILING_P
    assert "critical_warning=0x1" in spare.reason and "spare" in spare.reason


def test_critical_warning_alone_and_spare_alone_are_failing() -> None:
    good = health("nvme_healthy.json")
    assert verdict(dataclasses.replace(good, critical_warning=4)).probability == FAILING_P
    low = dataclasses.replace(good, available_spare_pct=9, available_spare_threshold_pct=10)
    assert verdict(low).probability == FAILING_P


def test_damage_growth_between_polls() -> None:
    before = health("ata_healthy.json", 0.0)
    after = dataclasses.replace(before, time_s=600.0, reallocated_sectors=8, pending_sectors=2)
    assert growth(None, after) == []  # the first poll cannot show growth
    assert growth(before, before) == []
    assert growth(before, after) == ["reallocated_sectors 0 -> 8", "pending_sectors 0 -> 2"]
    nvme = health("nvme_healthy.json")
    assert growth(nvme, dataclasses.replace(nvme, media_errors=3)) == ["media_errors 0 -> 3"]


def test_growth_is_evidence_held_for_a_day_then_cleared() -> None:
    memory = SmartEvidence()
    base = health("ata_healthy.json", 0.0)
    assert memory.update(base, 0.0).probability == 0.0
    grown = dataclasses.replace(base, reallocated_sectors=8)
    evidence = memory.update(grown, 600.0)
    assert evidence.probability == GROWTH_P
    assert evidence.reason == "media damage grew: reallocated_sectors 0 -> 8"
    # A failed poll in between neither clears the evidence nor resets the baseline.
    timeout = SmartHealth("/dev/x", 1200.0, available=False, error="timed out")
    assert memory.update(timeout, 1200.0).probability == GROWTH_P
    assert memory.update(grown, 1800.0).probability == GROWTH_P  # no new growth: still held
    assert memory.update(grown, 600.0 + HOLD_S).probability == 0.0  # a day without growth
    worse = dataclasses.replace(grown, reallocated_sectors=9)
    assert memory.update(worse, 700.0 + HOLD_S).probability == GROWTH_P


def test_stable_old_damage_is_not_evidence_but_a_failed_verdict_is() -> None:
    memory = SmartEvidence()
    old = dataclasses.replace(health("ata_healthy.json"), reallocated_sectors=40)
    assert memory.update(old, 0.0).probability == 0.0
    assert memory.update(old, 600.0).probability == 0.0
    failing = health("ata_failing.json")
    assert memory.update(failing, 1200.0).probability == FAILING_P
