"""tiers.smart with recorded-format JSON fixtures: passes without smartmontools installed."""

import json
import subprocess
from pathlib import Path

from tiers.smart import SmartPoller, parse_smartctl_json

FIXTURES = Path(__file__).parent.parent / "fixtures" / "smart"


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def test_ata_healthy() -> None:
    health = parse_smartctl_json(load("ata_healthy.json"), "/dev/sda", 0.0)
    assert health.available and health.protocol == "ATA" and health.passed is True
    assert health.reallocated_sectors == 0 and health.pending_sectors == 0
    assert health.temperature_c == 34 and health.power_on_hours == 23145
    assert health.warnings == ()


def test_ata_failing() -> None:
    health = parse_smartctl_json(load("ata_failing.json"), "/dev/sdb", 0.0)
    assert health.passed is False
    assert health.reallocated_sectors == 3912 and health.pending_sectors == 56
    assert health.uncorrectable_sectors == 56
    assert any("FAILED" in w for w in health.warnings)


def test_nvme_healthy_and_spare_low() -> None:
    good = parse_smartctl_json(load("nvme_healthy.json"), "/dev/nvme0", 0.0)
    assert good.protocol == "NVMe" and good.media_errors == 0 and good.percentage_used == 3
    assert good.warnings == ()
    bad = parse_smartctl_json(load("nvme_spare_low.json"), "/dev/nvme1", 0.0)
    assert bad.critical_warning == 1 and bad.media_errors == 17
    assert any("spare" in w for w in bad.warnings)


def test_no_device() -> None:
    health = parse_smartctl_json(load("no_device.json"), "/dev/vdz", 0.0)
    assert not health.available and "Unable to detect" in (health.error or "")


def test_poller_rate_limits_and_handles_failures() -> None:
    calls: list[list[str]] = []

    def runner(argv: list[str], timeout_s: float) -> str:
        calls.append(argv)
        return (FIXTURES / "nvme_healthy.json").read_text()

    poller = SmartPoller(smartctl="/usr/sbin/smartctl", runner=runner)
    assert poller.poll("/dev/nvme0", 0.0).available
    assert poller.poll("/dev/nvme0", 599.0).time_s == 0.0  # cached: < 10 min
    assert len(calls) == 1
    poller.poll("/dev/nvme0", 600.0)
    assert len(calls) == 2 and calls[0][:3] == ["/usr/sbin/smartctl", "--json", "--all"]

    def hanging(argv: list[str], timeout_s: float) -> str:
        raise subprocess.TimeoutExpired(argv, timeout_s)

    slow = SmartPoller(smartctl="smartctl", runner=hanging, timeout_s=3)
    result = slow.poll("/dev/sda", 0.0)
    assert not result.available and "timed out" in (result.error or "")
    missing = SmartPoller(smartctl=None)
    assert not missing.installed
    assert missing.poll("/dev/sda", 0.0).error == "smartctl not installed"
    garbage = SmartPoller(smartctl="smartctl", runner=lambda argv, t: "not json")
    assert not garbage.poll("/dev/sda", 0.0).available
