"""SMART health as evidence for the failure score: a probability and a reason per poll.

Owns the mapping from what a drive reports about itself (tiers.smart.SmartHealth) to the
standing evidence the streaming scorer fuses with its own signals
(`StreamingScorer.set_external(device, "smart", probability, reason)`):

- the drive's own verdict is bad — overall health FAILED, an NVMe critical warning, or the
  NVMe available spare at or below its threshold: `FAILING_P` (0.95, above the act level);
- media damage grew since the previous poll — reallocated, pending or uncorrectable sectors
  (ATA), media errors (NVMe): `GROWTH_P` (0.7, between warn and act). Damage that does not grow
  is old damage the drive has already dealt with: no evidence. Growth is held for `HOLD_S`
  (24 h) after the poll that saw it, not only until the next poll 10 minutes later, since a
  drive that has started to lose sectors is the drive the literature says fails next;
- anything else, or no SMART at all (no smartmontools, a loop device, a virtual disk): 0,
  which clears the evidence.

The first poll of a device has no previous one: growth cannot be judged yet, only the verdict.
Pure computation: no I/O, no clock (times are passed in).
"""

from __future__ import annotations

from dataclasses import dataclass

from tiers.smart import SmartHealth

FAILING_P = 0.95
GROWTH_P = 0.7
HOLD_S = 24 * 3600.0

# The counters whose growth means the medium is degrading.
DAMAGE_COUNTERS = (
    "reallocated_sectors",
    "pending_sectors",
    "uncorrectable_sectors",
    "media_errors",
)


@dataclass(frozen=True)
class Evidence:
    probability: float
    reason: str


NONE = Evidence(0.0, "")


def verdict(health: SmartHealth) -> Evidence:
    """What the drive says about itself in one poll, without history."""
    if not health.available:
        return NONE
    bad: list[str] = []
    if health.passed is False:
        bad.append("overall health self-assessment FAILED")
    if health.critical_warning:
        bad.append(f"NVMe critical_warning={health.critical_warning:#x}")
    spare, floor = health.available_spare_pct, health.available_spare_threshold_pct
    if spare is not None and floor is not None and spare <= floor:
        bad.append(f"available spare {spare}% <= threshold {floor}%")
    return Evidence(FAILING_P, "; ".join(bad)) if bad else NONE


def growth(previous: SmartHealth | None, current: SmartHealth) -> list[str]:
    """Damage counters that increased between two polls of one drive ("name a -> b")."""
    if previous is None or not previous.available or not current.available:
        return []
    grown = []
    for name in DAMAGE_COUNTERS:
        before, after = getattr(previous, name), getattr(current, name)
        if before is not None and after is not None and after > before:
            grown.append(f"{name} {before} -> {after}")
    return grown


class SmartEvidence:
    """Per-device memory of the last poll and of the last damage growth."""

    def __init__(self, hold_s: float = HOLD_S) -> None:
        self.hold_s = hold_s
        self.previous: SmartHealth | None = None
        self._growth_at: float | None = None
        self._growth_text = ""

    def update(self, health: SmartHealth, now: float) -> Evidence:
        """Fold in one poll taken at `now`; return the evidence to stand until the next."""
        grown = growth(self.previous, health)
        if health.available:
            # An unavailable answer (a timeout, say) must not erase the baseline of growth.
            self.previous = health
        if grown:
            self._growth_at, self._growth_text = now, ", ".join(grown)
        found = verdict(health)
        if found.probability > 0:
            return found
        if self._growth_at is not None and now - self._growth_at < self.hold_s:
            return Evidence(GROWTH_P, f"media damage grew: {self._growth_text}")
        return NONE
