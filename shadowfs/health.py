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
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

import trio

from predictor.arima import Forecast, ForecastRequest
from predictor.score import DeviceScore
from predictor.scorer import StreamingScorer
from predictor.trace import DeviceClass, Sample, format_trace
from tiers.kernel_stats import KernelSample, KernelStatsCollector
from tiers.local_device import LocalDevice
from tiers.telemetry import DeviceTelemetry, TelemetrySample

log = logging.getLogger(__name__)


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
    ) -> None:
        self.devices = dict(devices)
        self.interval_s = interval_s
        now = time.monotonic()
        self.classes = {name: DeviceClass(classes[name]) for name in self.devices}
        self.telemetry = {name: DeviceTelemetry(name, now) for name in self.devices}
        for name, device in self.devices.items():
            device.recorder = self._recorder(self.telemetry[name])
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
        self.ticks = 0
        self.scored_ticks = 0

    @staticmethod
    def _recorder(telemetry: DeviceTelemetry) -> Any:
        record_read, record_write = telemetry.record_read, telemetry.record_write

        def record(op: str, latency_s: float, nbytes: int, reached_device: bool) -> None:
            if op == "read":
                record_read(latency_s, nbytes, reached_device)
            elif op == "write":
                record_write(latency_s, nbytes)
            elif op == "timeout":
                telemetry.record_timeout()
            elif op.endswith("_error"):
                telemetry.record_error()
            # open, fsync and statvfs are not the device's read/write latency: an fsync's
            # time grows with the dirty data it writes back, whatever the device's health

        return record

    async def run(self) -> None:
        # trio's clock: monotonic, and a test's autojump clock drives the loop through hours
        started = trio.current_time()
        for telemetry in self.telemetry.values():
            telemetry.snapshot(started)  # start the first interval on this clock
        async with trio.open_nursery() as nursery:
            while True:
                await trio.sleep(self.interval_s)
                now = trio.current_time()
                self._queue.append(self.tick(now, now - started))
                if not self._scoring:
                    self._scoring = True
                    nursery.start_soon(self._score_queued)

    def tick(self, now: float, time_s: float) -> list[Sample]:
        """Close every device's interval; keep the samples; return them for scoring."""
        self.ticks += 1
        self.last_kernel = self.kernel.sample(now)
        samples = []
        for name, telemetry in self.telemetry.items():
            snap = telemetry.snapshot(now)
            self.last_sample[name] = snap
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
            while self._queue:
                ticks, self._queue = self._queue, []
                try:
                    results = await trio.to_thread.run_sync(self._observe_all, ticks)
                except Exception:
                    log.exception("failure scoring failed; telemetry continues")
                    continue
                for scores in results:
                    self._publish(scores)
        finally:
            self._scoring = False

    def _observe_all(self, ticks: list[list[Sample]]) -> list[list[DeviceScore]]:
        """In a worker thread: only this thread touches the scorer while it runs."""
        return [self.scorer.observe(samples[0].time_s, samples) for samples in ticks]

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
        }

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
