"""What a healthy device's p99 latency should be at a given load.

Owns the load model that turns a raw p99 into a residual: log(p99) minus the log p99 the
device is expected to show at its current IOPS. Latency rises with load on a healthy disk,
so a busy device is not a sick one. The curve is learned per device class from every
healthy device of that class (pooled, so a device surging to a load its peers have already
shown is judged by what they showed), plus a per-device offset (one disk of a class is a
bit faster than another).

The curve is binned by quarter-octaves of IOPS. A bin nobody has visited is judged by the
nearest visited bin: a load never seen on any device of the class can look like a
slowdown, which is the documented limit of this model.

Learning happens only on samples the caller deems healthy, so a degrading device does not
teach its own degradation as the new normal.
"""

from __future__ import annotations

import math

N_BINS = 96
BINS_PER_OCTAVE = 4  # near saturation p99 can double within a half-octave of load
MIN_BIN_COUNT = 5
CURVE_MIN_WEIGHT = 0.01  # running mean for the first 100 samples of a bin, then EWMA
OFFSET_MIN_WEIGHT = 0.002  # slow: a device's own offset should not chase a creep
EXTRAPOLATION_UNCERTAINTY = 0.15  # log units per quarter-octave bin away from visited load
MIN_OWN_COUNT = 10  # samples at a load before the device's own curve answers there
OWN_MISS = 0.5  # slack when the class curve stands in: a load this device never showed


def load_bin(iops: float) -> int:
    return min(N_BINS - 1, int(BINS_PER_OCTAVE * math.log2(1.0 + max(iops, 0.0))))


class ClassCurve:
    """log p99 (net of device offsets) per load bin, for one class and one direction."""

    __slots__ = ("values", "counts")

    def __init__(self) -> None:
        self.values = [0.0] * N_BINS
        self.counts = [0] * N_BINS

    def at(self, bin_index: int) -> tuple[float, float] | None:
        """(expected value, its uncertainty) at `bin_index`; None before any data.

        A visited bin is certain. Above the highest visited bin the curve is extrapolated
        with the slope of the two highest visited bins (never downwards: latency does not
        fall with load); elsewhere the nearest visited bin stands in. Either way the
        uncertainty grows by EXTRAPOLATION_UNCERTAINTY per bin of distance.
        """
        if self.counts[bin_index] >= MIN_BIN_COUNT:
            return self.values[bin_index], 0.0
        visited = [i for i in range(N_BINS) if self.counts[i] >= MIN_BIN_COUNT]
        if not visited:
            return None
        top = visited[-1]
        if bin_index > top:
            slope = 0.0
            if len(visited) >= 2:
                below = visited[-2]
                slope = max(0.0, (self.values[top] - self.values[below]) / (top - below))
            distance = bin_index - top
            return self.values[top] + slope * distance, EXTRAPOLATION_UNCERTAINTY * distance
        nearest = min(visited, key=lambda i: (abs(i - bin_index), -i))
        return self.values[nearest], EXTRAPOLATION_UNCERTAINTY * abs(nearest - bin_index)

    def learn(self, bin_index: int, value: float, min_weight: float = CURVE_MIN_WEIGHT) -> None:
        self.counts[bin_index] += 1
        weight = max(1.0 / self.counts[bin_index], min_weight)
        self.values[bin_index] += weight * (value - self.values[bin_index])


class DeviceOffset:
    """How much slower (log) this device is than its class curve."""

    __slots__ = ("value", "count")

    def __init__(self) -> None:
        self.value = 0.0
        self.count = 0

    def learn(self, value: float, min_weight: float = OFFSET_MIN_WEIGHT) -> None:
        self.count += 1
        self.value += max(1.0 / self.count, min_weight) * (value - self.value)


def _interpolated(own: ClassCurve, iops: float, bin_index: int) -> float:
    """The own curve between bin centres: near saturation p99 climbs steeply within a bin."""
    position = BINS_PER_OCTAVE * math.log2(1.0 + max(iops, 0.0)) - 0.5  # 0 = centre of bin 0
    neighbour = bin_index + 1 if position >= bin_index else bin_index - 1
    if 0 <= neighbour < N_BINS and own.counts[neighbour] >= MIN_OWN_COUNT:
        weight = min(1.0, abs(position - bin_index))
        return (1.0 - weight) * own.values[bin_index] + weight * own.values[neighbour]
    below = bin_index - 1
    if neighbour > bin_index and below >= 0 and own.counts[below] >= MIN_OWN_COUNT:
        # Upper half of the highest visited bin: carry on the slope from the bin below
        # (never downwards), as the load climbs towards loads not yet seen.
        slope = max(0.0, own.values[bin_index] - own.values[below])
        return own.values[bin_index] + min(1.0, position - bin_index) * slope
    return own.values[bin_index]


def expected_log_p99(
    own: ClassCurve, curve: ClassCurve, offset: DeviceOffset, iops: float
) -> tuple[float, float] | None:
    """(expected log p99, uncertainty) for this device at this load; None before data.

    The device's own curve answers at a load the device has shown often enough; elsewhere
    the class curve plus the device's offset does, with the class curve's uncertainty.
    """
    bin_index = load_bin(iops)
    if own.counts[bin_index] >= MIN_OWN_COUNT:
        return _interpolated(own, iops, bin_index), 0.0
    if offset.count == 0:
        return None
    found = curve.at(bin_index)
    if found is None:
        return None
    value = found[0] + offset.value
    # The class curve is pooled from devices that each visited their own range of loads; the
    # offsets that join those ranges are only as good as their overlap, so where one device's
    # range meets another's the curve can step down. Latency does not fall with load: at a
    # load above any this device has shown often, expect at least what it showed at the
    # highest of them; below, at most what it showed at the lowest above.
    below = next((i for i in range(bin_index - 1, -1, -1) if own.counts[i] >= MIN_OWN_COUNT), None)
    above = next((i for i in range(bin_index + 1, N_BINS) if own.counts[i] >= MIN_OWN_COUNT), None)
    if below is not None:
        value = max(value, own.values[below])
    if above is not None:
        value = min(value, own.values[above])
    return value, max(found[1], OWN_MISS)


def learn(
    own: ClassCurve,
    curve: ClassCurve,
    offset: DeviceOffset,
    iops: float,
    log_p99: float,
    min_weight: float,
) -> None:
    """Teach one healthy sample to the device's curve and offset, then to the class curve.

    `min_weight` is the EWMA floor per sample: interval / time constant, so that a device
    sampled every second does not forget faster than one sampled every minute.
    """
    bin_index = load_bin(iops)
    own.learn(bin_index, log_p99, min_weight)
    found = curve.at(bin_index)
    level = 0.0 if found is None else found[0]  # the class's first sample: the offset takes it
    offset.learn(log_p99 - level, min_weight)
    curve.learn(bin_index, log_p99 - offset.value, min_weight)
