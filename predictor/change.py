"""Change detectors that run on every sample: CUSUM (ours) and EWMA (a baseline).

Owns the one-sided upper CUSUM on a standardised residual. Each step adds the residual in
units of its scale, less the allowance `k`, floored at zero; the detector is alarmed while
the sum exceeds `h`. The time the sum last left zero estimates when the shift began, which
the scorer uses to judge persistence. Residuals are clipped at `clip` scales first so that
one GC pause, however long, moves the sum by at most clip - k.

With k=1 and h=6 the in-control average run length is ~8e5 samples (Siegmund's
approximation), i.e. more than a year at 60 s intervals; a 2x shift at a noise scale of 0.25
(2.8 scales) is flagged after ~4 samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Cusum:
    k: float = 1.0
    h: float = 6.0
    clip: float = 3.0
    total: float = 0.0
    started_at: float = math.nan  # when `total` last left zero: the estimated change point
    alarmed: bool = False

    def update(self, time_s: float, z: float) -> bool:
        """Feed one standardised residual; return whether the detector is alarmed."""
        if math.isnan(z):
            return self.alarmed
        step = min(z, self.clip) - self.k
        if self.total == 0.0 and step > 0:
            self.started_at = time_s
        self.total = max(0.0, self.total + step)
        if self.total == 0.0:
            self.started_at = math.nan
        self.alarmed = self.total > self.h
        return self.alarmed

    def reset(self) -> None:
        self.total = 0.0
        self.started_at = math.nan
        self.alarmed = False


@dataclass
class Ewma:
    """Exponentially weighted moving average of a signal (used as a baseline detector)."""

    weight: float = 0.1
    value: float = math.nan

    def update(self, x: float) -> float:
        if math.isnan(x):
            return self.value
        self.value = x if math.isnan(self.value) else self.value + self.weight * (x - self.value)
        return self.value
