"""SMART / NVMe health of a block device, through `smartctl --json` as a subprocess.

Owns running smartctl (with a timeout, at most once per `min_interval_s` per device, 10 min
by default: SMART queries can stall a busy disk for a moment, and the attributes move over
days, not seconds), and parsing its JSON into a frozen `SmartHealth`. When smartmontools is
not installed, or the device does not answer, the poller says so instead of raising: SMART
is one more health signal, never a requirement.

smartctl's exit status is a bit mask (bit 3: "disk failing", bit 4-7: prefail/error-log
bits); its JSON is printed whatever the status, so the JSON is what we read.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MIN_INTERVAL_S = 600.0
DEFAULT_TIMEOUT_S = 20.0

# ATA attribute ids whose raw value counts media damage.
ATA_REALLOCATED = 5
ATA_REPORTED_UNCORRECT = 187
ATA_PENDING = 197
ATA_OFFLINE_UNCORRECTABLE = 198


@dataclass(frozen=True)
class SmartHealth:
    """The health fields we act on; None where the device does not report the field."""

    device_path: str
    time_s: float
    available: bool
    error: str | None = None
    protocol: str | None = None  # "ATA", "NVMe", "SCSI"
    model: str | None = None
    passed: bool | None = None  # the drive's own overall verdict
    temperature_c: int | None = None
    power_on_hours: int | None = None
    reallocated_sectors: int | None = None
    pending_sectors: int | None = None
    uncorrectable_sectors: int | None = None
    media_errors: int | None = None  # NVMe media and data integrity errors
    error_log_entries: int | None = None
    percentage_used: int | None = None  # NVMe endurance used, may exceed 100
    available_spare_pct: int | None = None
    available_spare_threshold_pct: int | None = None
    critical_warning: int | None = None  # NVMe bit field; non-zero is bad

    @property
    def warnings(self) -> tuple[str, ...]:
        """Human-readable reasons this device looks unhealthy (empty when it looks fine)."""
        found: list[str] = []
        if self.passed is False:
            found.append("SMART overall health self-assessment FAILED")
        if self.critical_warning:
            found.append(f"NVMe critical_warning={self.critical_warning:#x}")
        if (
            self.available_spare_pct is not None
            and self.available_spare_threshold_pct is not None
            and self.available_spare_pct <= self.available_spare_threshold_pct
        ):
            found.append(
                f"available spare {self.available_spare_pct}% <= "
                f"threshold {self.available_spare_threshold_pct}%"
            )
        for name in (
            "reallocated_sectors",
            "pending_sectors",
            "uncorrectable_sectors",
            "media_errors",
        ):
            value = getattr(self, name)
            if value:
                found.append(f"{name}={value}")
        return tuple(found)


def _ata_raw(data: dict[str, Any], attribute_id: int) -> int | None:
    table = data.get("ata_smart_attributes", {}).get("table", [])
    for row in table:
        if row.get("id") == attribute_id:
            raw = row.get("raw", {}).get("value")
            return int(raw) if raw is not None else None
    return None


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) else None


def parse_smartctl_json(data: dict[str, Any], device_path: str, time_s: float) -> SmartHealth:
    """Turn smartctl's JSON (ATA or NVMe) into a `SmartHealth`."""
    device = data.get("device")
    if not isinstance(device, dict):
        messages = data.get("smartctl", {}).get("messages", [])
        text = "; ".join(str(m.get("string", "")) for m in messages) or "no device in output"
        return SmartHealth(device_path, time_s, available=False, error=text)
    status = data.get("smart_status", {})
    nvme = data.get("nvme_smart_health_information_log", {})
    passed = status.get("passed")
    return SmartHealth(
        device_path=device_path,
        time_s=time_s,
        available=True,
        protocol=device.get("protocol"),
        model=data.get("model_name"),
        passed=passed if isinstance(passed, bool) else None,
        temperature_c=_int_or_none(data.get("temperature", {}).get("current")),
        power_on_hours=_int_or_none(data.get("power_on_time", {}).get("hours")),
        reallocated_sectors=_ata_raw(data, ATA_REALLOCATED),
        pending_sectors=_ata_raw(data, ATA_PENDING),
        uncorrectable_sectors=_ata_raw(data, ATA_OFFLINE_UNCORRECTABLE)
        or _ata_raw(data, ATA_REPORTED_UNCORRECT),
        media_errors=_int_or_none(nvme.get("media_errors")),
        error_log_entries=_int_or_none(nvme.get("num_err_log_entries")),
        percentage_used=_int_or_none(nvme.get("percentage_used")),
        available_spare_pct=_int_or_none(nvme.get("available_spare")),
        available_spare_threshold_pct=_int_or_none(nvme.get("available_spare_threshold")),
        critical_warning=_int_or_none(nvme.get("critical_warning")),
    )


Runner = Callable[[list[str], float], str]
"""Runs argv with a timeout and returns its stdout; raises OSError/TimeoutExpired."""


def run_subprocess(argv: list[str], timeout_s: float) -> str:
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    return completed.stdout


@dataclass
class SmartPoller:
    """Rate-limited smartctl queries, one cached answer per block device path.

    `poll` blocks for up to `timeout_s`: the daemon calls it from a worker thread
    (trio.to_thread), never on the trio thread.
    """

    min_interval_s: float = DEFAULT_MIN_INTERVAL_S
    timeout_s: float = DEFAULT_TIMEOUT_S
    smartctl: str | None = field(default_factory=lambda: shutil.which("smartctl"))
    runner: Runner = run_subprocess
    _cache: dict[str, SmartHealth] = field(default_factory=dict, init=False)

    @property
    def installed(self) -> bool:
        return self.smartctl is not None

    def poll(self, device_path: str, now: float) -> SmartHealth:
        """The device's health, re-queried only if the cached answer is old enough."""
        cached = self._cache.get(device_path)
        if cached is not None and now - cached.time_s < self.min_interval_s:
            return cached
        health = self._query(device_path, now)
        self._cache[device_path] = health
        return health

    def _query(self, device_path: str, now: float) -> SmartHealth:
        if self.smartctl is None:
            return SmartHealth(device_path, now, available=False, error="smartctl not installed")
        argv = [self.smartctl, "--json", "--all", device_path]
        try:
            stdout = self.runner(argv, self.timeout_s)
        except subprocess.TimeoutExpired:
            return SmartHealth(
                device_path,
                now,
                available=False,
                error=f"smartctl timed out after {self.timeout_s:g} s",
            )
        except OSError as error:
            return SmartHealth(
                device_path,
                now,
                available=False,
                error=f"smartctl failed: {error.strerror or error}",
            )
        try:
            data = json.loads(stdout)
        except json.JSONDecodeError:
            return SmartHealth(device_path, now, available=False, error="smartctl printed no JSON")
        if not isinstance(data, dict):
            return SmartHealth(device_path, now, available=False, error="unexpected JSON")
        return parse_smartctl_json(data, device_path, now)
