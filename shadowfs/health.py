"""The health loop: live telemetry per device, the streaming failure score, and its export.

Every interval (1 s) it closes each device's telemetry interval (tiers.telemetry, fed in-line
by the device's I/O recorder), reads the kernel's counters of the block device underneath
(tiers.kernel_stats), and feeds the samples to the same StreamingScorer that ``shadowfs
predict`` replays, so a live score and a replay of the exported trace agree. The scorer's
ARIMA forecasts run in the forecast worker process (predictor.worker); the scorer call blocks
on that round trip, so it runs in a thread, one at a time, and the loop never waits on it.
Ticks that arrive while a scoring call runs are queued and scored in order afterwards (the
scorer's state needs every tick, or live scores would drift from a replay).

The trace kept for export is bounded: the last ``keep_s`` seconds of samples per device.

Two more inputs of the score are refreshed here, never on the scoring path:

- **SMART** (tiers.smart), at most every ``smart_interval_s`` (10 min) per whole disk, in a
  worker thread with smartctl's timeout, so neither the loop nor the mount ever waits on it.
  Devices with no SMART (a directory on overlay or tmpfs, a loop device, no smartmontools)
  say "unavailable: reason". Each answer becomes standing evidence of the score
  (shadowfs.smart_evidence -> ``StreamingScorer.set_external(device, "smart", ...)``).
- **Evacuation time**, every ``evacuation_every_s`` (60 s): the bytes shadowfs stores on the
  device divided by a sustained read throughput, the larger of the class default
  (``DEFAULT_THROUGHPUT``) and the best one-minute mean of device reads in the last hour when
  that minute moved at least ``MIN_MEASURED_BYTES``. It sets the score's horizon
  (``StreamingScorer.set_evacuation_time``: max(1 h, 2x the evacuation time)).

Only the scoring thread touches the scorer while it runs: these updates are queued on the trio
thread and applied in that thread, before the ticks queued with them.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import trio

from predictor.arima import Forecast, ForecastRequest
from predictor.score import DeviceScore
from predictor.scorer import StreamingScorer
from predictor.trace import DeviceClass, Sample, format_trace
from shadowfs.smart_evidence import Evidence, SmartEvidence
from tiers.kernel_stats import KernelSample, KernelStatsCollector, Resolution
from tiers.local_device import LocalDevice
from tiers.smart import SmartHealth, SmartPoller
from tiers.telemetry import DeviceTelemetry, TelemetrySample

log = logging.getLogger(__name__)

MiB = 1 << 20
# Sustained sequential read rates that a healthy idle device of each class certainly reaches:
# conservative (low) on purpose, since an evacuation estimated too short shortens the score's
# horizon. A device that has shown more, for a whole minute, is credited with what it showed.
DEFAULT_THROUGHPUT = {
    DeviceClass.HDD: 100 * MiB,
    DeviceClass.SSD: 400 * MiB,
    DeviceClass.NVME: 1024 * MiB,
}
UNKNOWN_CLASS_THROUGHPUT = 100 * MiB
MIN_MEASURED_BYTES = 256 * MiB  # a minute of reads below this says more about the workload
MEASURE_WINDOW_S = 60.0
MEASURE_KEEP_S = 3600.0
EVACUATION_EVERY_S = 60.0
SMART_SOURCE = "smart"


@dataclass(frozen=True)
class EvacuationEstimate:
    """How long moving everything off a device would take, and from what."""

    seconds: float
    stored_bytes: int
    throughput_bytes_per_s: float
    source: str  # "measured" or "class default"
    measured_bytes_per_s: float | None  # the best qualifying minute, if any

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 1),
            "stored_bytes": self.stored_bytes,
            "throughput_bytes_per_s": round(self.throughput_bytes_per_s),
            "throughput_source": self.source,
            "measured_bytes_per_s": None
            if self.measured_bytes_per_s is None
            else round(self.measured_bytes_per_s),
        }


class ThroughputMeter:
    """The best one-minute mean of a device's reads over the last hour, O(1) per tick.

    Only reads that reached the device count (page-cache hits moved RAM). A minute is a
    rolling window of ticks; its rate qualifies when it moved at least ``min_bytes``.
    """

    def __init__(self, interval_s: float, min_bytes: int = MIN_MEASURED_BYTES) -> None:
        self.min_bytes = min_bytes
        ticks = max(1, round(MEASURE_WINDOW_S / interval_s))
        self.window_s = ticks * interval_s  # ~a minute, in whole ticks
        self._window: deque[float] = deque(maxlen=ticks)
        self._sum = 0.0
        self._minute_best = 0.0  # best qualifying rate since the last close()
        self._hour: deque[float] = deque(maxlen=max(1, round(MEASURE_KEEP_S / EVACUATION_EVERY_S)))

    def add(self, read_bytes: float) -> None:
        if len(self._window) == self._window.maxlen:
            self._sum -= self._window[0]
        self._window.append(read_bytes)
        self._sum += read_bytes
        if len(self._window) == self._window.maxlen and self._sum >= self.min_bytes:
            self._minute_best = max(self._minute_best, self._sum / self.window_s)

    def close(self) -> None:
        """Called every EVACUATION_EVERY_S: file the best rate seen since the last call."""
        self._hour.append(self._minute_best)
        self._minute_best = 0.0

    def best(self) -> float | None:
        best = max(max(self._hour, default=0.0), self._minute_best)
        return best if best > 0 else None


def estimate_evacuation(
    stored_bytes: int, device_class: DeviceClass, measured: float | None
) -> EvacuationEstimate:
    default = DEFAULT_THROUGHPUT.get(device_class, UNKNOWN_CLASS_THROUGHPUT)
    if measured is not None and measured > default:
        throughput, source = measured, "measured"
    else:
        throughput, source = float(default), "class default"
    return EvacuationEstimate(
        seconds=max(0, stored_bytes) / throughput,
        stored_bytes=stored_bytes,
        throughput_bytes_per_s=throughput,
        source=source,
        measured_bytes_per_s=measured,
    )


def smart_target(resolution: Resolution) -> tuple[str | None, str]:
    """The /dev path to ask smartctl about for a device directory, or None and why not."""
    block = resolution.block_device
    if block is None:
        return None, resolution.reason or "no block device"
    if block.loop_backing_file is not None:
        return None, (
            f"{block.name} is a loop device (its I/O lands on the disk holding "
            f"{block.loop_backing_file}); loop devices have no SMART"
        )
    return f"/dev/{block.whole_disk}", ""


def smart_view(health: SmartHealth | None, unavailable: str | None) -> dict[str, Any]:
    """The JSON shape of a device's SMART state in status, /health and /telemetry."""
    if health is None:
        return {"status": f"unavailable: {unavailable}" if unavailable else "not polled yet"}
    if not health.available:
        return {"status": f"unavailable: {health.error}", "device_path": health.device_path}
    # time_s is the loop's monotonic clock: status shows polled_at (wall clock) instead.
    fields = {k: v for k, v in dataclasses.asdict(health).items() if k not in ("error", "time_s")}
    return {
        "status": "ok" if not health.warnings else "warning",
        **fields,
        "warnings": list(health.warnings),
    }


class FallibleEngine:
    """Wraps the forecast worker: if it dies or errs, scoring goes on without forecasts (the
    reason says so) instead of every later tick failing half-way through the scorer."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.failures = 0

    def forecast(self, request: ForecastRequest) -> Forecast | None:
        if self.engine is None:
            return None
        try:
            return self.engine.forecast(request)  # type: ignore[no-any-return]
        except Exception as exc:
            self.failures += 1
            if self.failures == 1:
                log.error("forecast worker failed (%s): scoring continues without forecasts", exc)
            return None


class HealthMonitor:
    def __init__(
        self,
        devices: Mapping[str, LocalDevice],
        classes: Mapping[str, str],
        interval_s: float = 1.0,
        engine: Any = None,
        keep_s: float = 3600.0,
        stored_bytes: Callable[[str], int] | None = None,
        smart: SmartPoller | None = None,
        smart_interval_s: float = 600.0,
        evacuation_every_s: float = EVACUATION_EVERY_S,
    ) -> None:
        self.devices = dict(devices)
        self.interval_s = interval_s
        now = time.monotonic()
        self.classes = {name: DeviceClass(classes[name]) for name in self.devices}
        self.telemetry = {name: DeviceTelemetry(name, now) for name in self.devices}
        for name, device in self.devices.items():
            # One bound method per I/O, no closure in between: DeviceTelemetry.record sorts
            # reads, writes, errors and timeouts, and ignores opens, fsyncs and statvfs.
            device.recorder = self.telemetry[name].record
        self.kernel = KernelStatsCollector({n: str(d.root) for n, d in self.devices.items()})
        self.engine = FallibleEngine(engine)
        self.scorer = StreamingScorer(interval_s, engine=self.engine)
        rows = max(1, math.ceil(keep_s / interval_s))
        self.trace: dict[str, deque[Sample]] = {n: deque(maxlen=rows) for n in self.devices}
        self.last_sample: dict[str, TelemetrySample] = {}
        self.last_kernel: dict[str, KernelSample | None] = {}
        self.scores: dict[str, DeviceScore] = {}
        self._scoring = False
        self._queue: list[list[Sample]] = []
        # Scorer calls made on the trio thread, applied in the scoring thread before the ticks
        # queued after them (only that thread touches the scorer while it runs).
        self._updates: list[Callable[[StreamingScorer], None]] = []
        self.ticks = 0
        self.scored_ticks = 0
        # Evacuation time
        self.stored_bytes = stored_bytes
        self.evacuation_every_s = evacuation_every_s
        self.meters = {name: ThroughputMeter(interval_s) for name in self.devices}
        self.evacuation: dict[str, EvacuationEstimate] = {}
        # SMART
        self.smart = smart
        self.smart_interval_s = smart_interval_s
        self.smart_health: dict[str, SmartHealth] = {}
        self.smart_polled_at: dict[str, float] = {}  # wall clock, for status
        self.smart_unavailable: dict[str, str] = {}
        self.smart_evidence: dict[str, Evidence] = {}
        self._smart_memory: dict[str, SmartEvidence] = {}
        self.smart_polls = 0

    async def run(self) -> None:
        # trio's clock: monotonic, and a test's autojump clock drives the loop through hours
        started = trio.current_time()
        for telemetry in self.telemetry.values():
            telemetry.snapshot(started)  # start the first interval on this clock
        self.refresh_evacuation()
        next_evacuation = started + self.evacuation_every_s
        async with trio.open_nursery() as nursery:
            if self.smart is not None:
                nursery.start_soon(self._smart_loop)
            while True:
                await trio.sleep(self.interval_s)
                now = trio.current_time()
                self._queue.append(self.tick(now, now - started))
                if now >= next_evacuation:
                    for meter in self.meters.values():
                        meter.close()
                    self.refresh_evacuation()
                    next_evacuation = now + self.evacuation_every_s
                if not self._scoring:
                    self._scoring = True
                    nursery.start_soon(self._score_queued)

    # ------------------------------------------------------------ evacuation time

    def refresh_evacuation(self) -> None:
        """Re-estimate every device's evacuation time and hand it to the scorer."""
        if self.stored_bytes is None:
            return
        for name in self.devices:
            estimate = estimate_evacuation(
                self.stored_bytes(name), self.classes[name], self.meters[name].best()
            )
            previous = self.evacuation.get(name)
            self.evacuation[name] = estimate
            if previous is None or previous.seconds != estimate.seconds:
                self._update_scorer(
                    functools.partial(
                        StreamingScorer.set_evacuation_time, device=name, seconds=estimate.seconds
                    )
                )

    def _update_scorer(self, call: Callable[[StreamingScorer], None]) -> None:
        self._updates.append(call)

    # ------------------------------------------------------------ SMART

    def smart_targets(self) -> dict[str, list[str]]:
        """/dev path -> the devices on that disk; devices without SMART are noted as such."""
        targets: dict[str, list[str]] = {}
        for name in self.devices:
            path, why = smart_target(self.kernel.resolution(name))
            if path is None:
                self.smart_unavailable[name] = why
            else:
                targets.setdefault(path, []).append(name)
        return targets

    async def _smart_loop(self) -> None:
        assert self.smart is not None
        targets = self.smart_targets()
        for name, why in self.smart_unavailable.items():
            log.info("device %s: SMART unavailable: %s", name, why)
        if not targets:
            return
        if not self.smart.installed:
            for names in targets.values():
                for name in names:
                    self.smart_unavailable[name] = "smartctl not installed"
            log.info("SMART not polled: smartctl is not installed")
            return
        while True:
            for path, names in targets.items():
                # smartctl blocks up to its timeout: a thread, abandoned if we are cancelled.
                health = await trio.to_thread.run_sync(
                    self.smart.poll, path, trio.current_time(), abandon_on_cancel=True
                )
                self.record_smart(names, health, trio.current_time())
            await trio.sleep(self.smart_interval_s)

    def record_smart(self, names: list[str], health: SmartHealth, now: float) -> None:
        """One poll's answer for the devices on that disk: keep it, turn it into evidence."""
        self.smart_polls += 1
        for name in names:
            previous = self.smart_health.get(name)
            self.smart_health[name] = health
            self.smart_polled_at[name] = time.time()
            memory = self._smart_memory.setdefault(name, SmartEvidence())
            evidence = memory.update(health, now)
            before = self.smart_evidence.get(name)
            self.smart_evidence[name] = evidence
            if before != evidence:
                self._update_scorer(
                    functools.partial(
                        StreamingScorer.set_external,
                        device=name,
                        source=SMART_SOURCE,
                        probability=evidence.probability,
                        reason=evidence.reason,
                    )
                )
            if evidence.probability > 0 and before != evidence:
                log.warning(
                    "device %s SMART: %s (p=%.2f)", name, evidence.reason, evidence.probability
                )
            elif previous is None or previous.available != health.available:
                if health.available:
                    log.info("device %s SMART: %s", name, ", ".join(health.warnings) or "ok")
                else:
                    log.info("device %s SMART unavailable: %s", name, health.error)

    def tick(self, now: float, time_s: float) -> list[Sample]:
        """Close every device's interval; keep the samples; return them for scoring."""
        self.ticks += 1
        self.last_kernel = self.kernel.sample(now)
        samples = []
        for name, telemetry in self.telemetry.items():
            snap = telemetry.snapshot(now)
            self.last_sample[name] = snap
            self.meters[name].add(snap.read_bytes_per_s * snap.interval_s)
            fields = snap.trace_fields()
            sample = Sample(
                time_s=round(time_s, 3),
                device=name,
                read_p99_ms=float(fields["read_p99_ms"]),
                write_p99_ms=float(fields["write_p99_ms"]),
                read_iops=float(fields["read_iops"]),
                write_iops=float(fields["write_iops"]),
                errors=float(fields["errors"]),
                device_class=self.classes[name],
            )
            self.trace[name].append(sample)
            samples.append(sample)
        return samples

    async def _score_queued(self) -> None:
        try:
            while self._queue or self._updates:
                ticks, self._queue = self._queue, []
                updates, self._updates = self._updates, []
                try:
                    results = await trio.to_thread.run_sync(self._observe_all, ticks, updates)
                except Exception:
                    log.exception("failure scoring failed; telemetry continues")
                    continue
                for scores in results:
                    self._publish(scores)
        finally:
            self._scoring = False

    def _observe_all(
        self,
        ticks: list[list[Sample]],
        updates: list[Callable[[StreamingScorer], None]] | None = None,
    ) -> list[list[DeviceScore]]:
        """In a worker thread: only this thread touches the scorer while it runs."""
        for update in updates or ():
            try:
                update(self.scorer)
            except Exception:
                log.exception("updating the scorer failed; scoring continues")
        return [self.scorer.observe(samples[0].time_s, samples) for samples in ticks]

    def apply_updates(self) -> None:
        """Apply queued scorer updates now (for callers that drive ticks themselves)."""
        updates, self._updates = self._updates, []
        self._observe_all([], updates)

    def _publish(self, scores: list[DeviceScore]) -> None:
        self.scored_ticks += 1
        for score in scores:
            previous = self.scores.get(score.device)
            self.scores[score.device] = score
            if previous is None or previous.state != score.state:
                log.info(
                    "device %s health: %s (score %.0f: %s)",
                    score.device,
                    score.state.value,
                    score.score,
                    score.reason.text(),
                )

    # ------------------------------------------------------------ views

    def trace_csv(self) -> str:
        rows = sorted((s for d in self.trace.values() for s in d), key=lambda s: s.time_s)
        return format_trace(rows)

    def device_health(self, name: str) -> dict[str, Any]:
        score = self.scores.get(name)
        snap = self.last_sample.get(name)
        kernel = self.last_kernel.get(name)
        return {
            "failure_score": None if score is None else round(score.score, 1),
            "state": None if score is None else score.state.value,
            "reason": None if score is None else score.reason.text(),
            "last_interval": None if snap is None else _finite(snap.__dict__),
            "kernel": None if kernel is None else _finite(kernel.__dict__),
            "block_device": _block_name(self.kernel, name),
            "smart": self.smart_report(name),
            "evacuation": self.evacuation_report(name),
        }

    def smart_report(self, name: str) -> dict[str, Any]:
        if self.smart is None:
            return {"status": "off (telemetry.smart = false)"}
        view = smart_view(self.smart_health.get(name), self.smart_unavailable.get(name))
        if name in self.smart_polled_at:
            view["polled_at"] = round(self.smart_polled_at[name], 1)
        evidence = self.smart_evidence.get(name)
        if evidence is not None:
            view["evidence"] = {"probability": evidence.probability, "reason": evidence.reason}
        return view

    def evacuation_report(self, name: str) -> dict[str, Any] | None:
        estimate = self.evacuation.get(name)
        return None if estimate is None else estimate.as_dict()

    def report(self) -> dict[str, Any]:
        return {
            "interval_s": self.interval_s,
            "ticks": self.ticks,
            "scored_ticks": self.scored_ticks,
            "shared_block_devices": self.kernel.shared_block_devices(),
            "devices": {name: self.device_health(name) for name in self.devices},
        }


def _block_name(kernel: KernelStatsCollector, device: str) -> str:
    resolution = kernel.resolution(device)
    if resolution.block_device is None:
        return f"unavailable ({resolution.reason})"
    return resolution.block_device.name


def _finite(record: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN: an interval with no I/O reports null latencies."""
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()
    }
