"""The live health path (device recorder -> telemetry -> scorer) and a replay of its exported
trace through `shadowfs predict` give the same alarms and scores."""

from __future__ import annotations

import math
import random
from pathlib import Path

from predictor.arima import ArimaEngine
from predictor.trace import DeviceClass
from shadowfs.health import HealthMonitor
from shadowfs.predict_cli import replay
from tiers.local_device import LocalDevice

INTERVAL = 10.0


def test_live_scores_match_a_replay_of_the_exported_trace(tmp_path: Path) -> None:
    names = {"hdd0": "hdd", "hdd1": "hdd", "ssd0": "ssd"}
    devices = {}
    for name in names:
        (tmp_path / name).mkdir()
        devices[name] = LocalDevice(name, tmp_path / name, 1 << 30)
    monitor = HealthMonitor(
        devices, names, interval_s=INTERVAL, engine=ArimaEngine(), keep_s=4 * 3600
    )
    rng = random.Random(7)
    live: dict[str, dict[str, float | None]] = {n: {"alarm_at": None, "max": 0.0} for n in names}
    now = 0.0
    for step in range(1, 3 * 360 + 1):  # three hours at 10 s
        t = step * INTERVAL
        for name in names:
            base = 8.0 if name.startswith("hdd") else 0.4
            if name == "hdd1" and t > 5400:  # creeps to 12x its baseline over 1.5 h
                base *= 1 + 11 * (t - 5400) / 5400
            record = devices[name].recorder
            assert record is not None
            for _ in range(40):
                latency = base * math.exp(rng.gauss(0, 0.25)) / 1000
                record("read", latency, 4096, True)
            record("read", 0.00001, 4096, False)  # a page-cache hit: not device latency
        now += INTERVAL
        samples = monitor.tick(now, t)
        for score in monitor.scorer.observe(t, samples):
            entry = live[score.device]
            entry["max"] = max(float(entry["max"] or 0.0), score.score)
            if entry["alarm_at"] is None and score.score >= 80:
                entry["alarm_at"] = t
    replayed = replay(monitor.trace_csv())
    for name in names:
        assert replayed[name]["alarm_at"] == live[name]["alarm_at"], name
        assert replayed[name]["max_score"] == round(float(live[name]["max"] or 0.0), 1), name
    assert live["hdd1"]["alarm_at"] is not None  # the creeping device was caught
    assert live["hdd0"]["alarm_at"] is None and live["ssd0"]["alarm_at"] is None
    assert monitor.last_sample["hdd0"].cache_hits == 1


async def test_ticks_that_arrive_while_scoring_are_scored_in_order(tmp_path: Path) -> None:
    import time as _time

    import trio

    (tmp_path / "hdd0").mkdir()
    device = LocalDevice("hdd0", tmp_path / "hdd0", 1 << 30)
    monitor = HealthMonitor({"hdd0": device}, {"hdd0": "hdd"}, interval_s=0.01)
    seen: list[float] = []
    real_observe = monitor.scorer.observe

    def slow_observe(time_s, samples):  # type: ignore[no-untyped-def]
        _time.sleep(0.03)  # a forecast round trip; meanwhile the loop keeps ticking
        seen.append(time_s)
        return real_observe(time_s, samples)

    monitor.scorer.observe = slow_observe  # type: ignore[method-assign]
    with trio.move_on_after(1.0):
        await monitor.run()
    ticks = [s.time_s for s in monitor.trace["hdd0"]]
    assert len(ticks) > len(seen) > 10  # scoring fell behind the ticks...
    assert seen == ticks[: len(seen)]  # ...and still saw every tick, in order


# ------------------------------------------------------------------ SMART and evacuation

FIXTURES = Path(__file__).parent.parent / "fixtures" / "smart"


def _monitor(tmp_path: Path, **kwargs):  # type: ignore[no-untyped-def]
    (tmp_path / "hdd0").mkdir(parents=True, exist_ok=True)
    device = LocalDevice("hdd0", tmp_path / "hdd0", 1 << 30)
    return HealthMonitor({"hdd0": device}, {"hdd0": "hdd"}, **kwargs)


def test_smart_targets_say_why_a_device_has_no_smart() -> None:
    from shadowfs.health import smart_target
    from tiers.kernel_stats import BlockDevice, Resolution

    overlay = Resolution(None, "0:44 is not a block device (virtual filesystem)")
    assert smart_target(overlay) == (None, "0:44 is not a block device (virtual filesystem)")
    loop = BlockDevice(7, 0, "loop0", "/sys/x", "loop0", False, "/var/tmp/disk.img")
    path, why = smart_target(Resolution(loop))
    assert path is None and "loop device" in why and "/var/tmp/disk.img" in why
    part = BlockDevice(8, 1, "sda1", "/sys/y", "sda", True, None)
    assert smart_target(Resolution(part)) == ("/dev/sda", "")  # the whole disk is asked


async def test_smart_is_polled_in_a_thread_every_interval_and_fed_to_the_score(
    tmp_path: Path, monkeypatch
) -> None:
    import time as _time

    import trio

    from tiers.smart import SmartPoller

    monkeypatch.setattr("shadowfs.health.smart_target", lambda resolution: ("/dev/sdq", ""))
    answers = ["ata_healthy.json", "ata_healthy.json", "ata_failing.json"]
    calls: list[list[str]] = []

    def runner(argv: list[str], timeout_s: float) -> str:
        calls.append(argv)
        _time.sleep(0.2)  # smartctl is slow; the loop must keep ticking meanwhile
        return (FIXTURES / answers[min(len(calls), len(answers)) - 1]).read_text()

    poller = SmartPoller(smartctl="/usr/sbin/smartctl", runner=runner, min_interval_s=0.5)
    monitor = _monitor(tmp_path, interval_s=0.01, smart=poller, smart_interval_s=0.5)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(monitor.run)
            while monitor.smart_polls < 3:
                await trio.sleep(0.01)
            # The next scoring pass applies the evidence in the scoring thread.
            while monitor.scorer.external("hdd0") != {"smart": 0.95}:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert [argv[-1] for argv in calls] == ["/dev/sdq"] * 3  # at 0, ~0.7 and ~1.4 s
    assert monitor.ticks > 60  # ticking went on while each poll blocked its thread 0.2 s
    report = monitor.device_health("hdd0")["smart"]
    assert report["status"] == "warning" and report["passed"] is False
    assert report["reallocated_sectors"] == 3912
    assert report["evidence"]["probability"] == 0.95


async def test_smart_unavailable_is_reported_not_raised(tmp_path: Path, monkeypatch) -> None:
    import trio

    from tiers.smart import SmartPoller

    monitor = _monitor(tmp_path, smart=SmartPoller(smartctl=None))
    monkeypatch.setattr("shadowfs.health.smart_target", lambda resolution: ("/dev/sdq", ""))
    with trio.move_on_after(0.2):
        await monitor._smart_loop()
    assert monitor.device_health("hdd0")["smart"] == {
        "status": "unavailable: smartctl not installed"
    }
    monkeypatch.setattr(
        "shadowfs.health.smart_target", lambda resolution: (None, "loop0 is a loop device")
    )
    looped = _monitor(tmp_path / "b", smart=SmartPoller(smartctl="/usr/sbin/smartctl"))
    with trio.move_on_after(0.2):
        await looped._smart_loop()
    assert looped.device_health("hdd0")["smart"]["status"] == "unavailable: loop0 is a loop device"
    off = _monitor(tmp_path / "c")
    assert off.device_health("hdd0")["smart"]["status"].startswith("off")


def test_smart_evidence_raises_the_score(tmp_path: Path) -> None:
    from tiers.smart import SmartHealth

    monitor = _monitor(tmp_path, interval_s=10.0)
    failing = SmartHealth("/dev/sdq", 0.0, available=True, passed=False)
    monitor.record_smart(["hdd0"], failing, 0.0)
    monitor.apply_updates()
    score = None
    for step in range(1, 4):
        record = monitor.devices["hdd0"].recorder
        assert record is not None
        record("read", 0.008, 4096, True)
        (score,) = monitor.scorer.observe(step * 10.0, monitor.tick(step * 10.0, step * 10.0))
    assert score is not None and score.score >= 80 and "smart" in score.reason.text()


def test_evacuation_time_from_stored_bytes_and_class_default(tmp_path: Path) -> None:
    from shadowfs.health import DEFAULT_THROUGHPUT

    stored = {"hdd0": 50 * DEFAULT_THROUGHPUT[DeviceClass.HDD]}  # 50 s at 100 MiB/s
    monitor = _monitor(tmp_path, stored_bytes=stored.__getitem__)
    monitor.refresh_evacuation()
    assert monitor.evacuation_report("hdd0") == {
        "seconds": 50.0,
        "stored_bytes": stored["hdd0"],
        "throughput_bytes_per_s": 100 << 20,
        "throughput_source": "class default",
        "measured_bytes_per_s": None,
    }
    monitor.apply_updates()
    assert monitor.scorer._devices["hdd0"].evacuation_s == 50.0
    assert monitor.device_health("hdd0")["evacuation"]["seconds"] == 50.0


def test_evacuation_uses_a_measured_sustained_minute_when_faster(tmp_path: Path) -> None:
    stored = {"hdd0": 3 << 30}
    monitor = _monitor(tmp_path, interval_s=1.0, stored_bytes=stored.__getitem__)
    record = monitor.devices["hdd0"].recorder
    assert record is not None
    t = 0.0
    for _ in range(59):  # 59 s at 300 MiB/s: not yet a whole minute
        t += 1.0
        for _ in range(300):
            record("read", 0.002, 1 << 20, True)
            record("read", 0.00001, 1 << 20, False)  # cache hits are not device throughput
        monitor.tick(t, t)
    monitor.refresh_evacuation()
    assert monitor.evacuation["hdd0"].source == "class default"
    t += 1.0
    for _ in range(300):
        record("read", 0.002, 1 << 20, True)
    monitor.tick(t, t)
    monitor.refresh_evacuation()
    estimate = monitor.evacuation["hdd0"]
    assert estimate.source == "measured"
    assert estimate.throughput_bytes_per_s == 300 << 20
    assert estimate.seconds == (3 << 30) / (300 << 20)


def test_throughput_meter_needs_enough_bytes_and_forgets_after_an_hour() -> None:
    from shadowfs.health import MIN_MEASURED_BYTES, ThroughputMeter

    meter = ThroughputMeter(interval_s=10.0)
    for _ in range(6):
        meter.add(MIN_MEASURED_BYTES / 6 - 1)  # a minute just short of the minimum
    assert meter.best() is None
    for _ in range(6):
        meter.add(MIN_MEASURED_BYTES)  # 6x the minimum in one minute
    assert meter.best() == 6 * MIN_MEASURED_BYTES / 60.0
    meter.close()
    for _ in range(59):  # 59 quiet minutes: still remembered
        for _ in range(6):
            meter.add(0)
        meter.close()
    assert meter.best() == 6 * MIN_MEASURED_BYTES / 60.0
    meter.close()  # an hour after it: forgotten; the window rolling out of it is next
    assert meter.best() == 5 * MIN_MEASURED_BYTES / 60.0
    meter.close()
    assert meter.best() is None


async def test_run_hands_the_evacuation_time_to_the_scorer(tmp_path: Path) -> None:
    import trio

    monitor = _monitor(
        tmp_path, interval_s=0.01, stored_bytes=lambda name: 400 << 20, evacuation_every_s=0.05
    )
    with trio.move_on_after(0.3):
        await monitor.run()
    assert monitor.scorer._devices["hdd0"].evacuation_s == 4.0  # 400 MiB at 100 MiB/s


async def test_telemetry_off_means_no_recorder_no_monitor_and_says_so(tmp_path: Path) -> None:
    import pytest

    from shadowfs.control import ApiError
    from shadowfs.daemon import _routes, health_monitor, status
    from shadowfs.flusher import Flusher
    from tests.fs.harness import FsHarness, make_config

    off = FsHarness(make_config(tmp_path / "off", extra="[telemetry]\nenabled = false\n"))
    try:
        off.fs.health = health_monitor(off.fs, None)
        assert off.fs.health is None
        assert all(device.recorder is None for device in off.fs.devices.values())
        report = status(off.fs)
        assert report["telemetry"] == "off"
        assert report["devices"][0]["health_reason"] == "telemetry off"
        routes = _routes(off.fs, "/mnt", Flusher(off.fs.data, off.fs.store, 2.0, 30.0))
        for path in ("/health", "/telemetry"):
            with pytest.raises(ApiError, match="telemetry is off") as info:
                await routes[("GET", path)]({})
            assert info.value.status == 409
    finally:
        await off.close()

    on = FsHarness(make_config(tmp_path / "on"))
    try:
        on.fs.health = health_monitor(on.fs, None)
        assert on.fs.health is not None
        assert all(device.recorder is not None for device in on.fs.devices.values())
        on.fs.health.refresh_evacuation()
        device = status(on.fs)["devices"][0]
        assert device["evacuation"]["throughput_source"] == "class default"
        assert device["smart"] == {"status": "not polled yet"}
        routes = _routes(on.fs, "/mnt", Flusher(on.fs.data, on.fs.store, 2.0, 30.0))
        telemetry = await routes[("GET", "/telemetry")]({})
        assert telemetry["smart"] == {"hdd0": {"status": "not polled yet"}}
    finally:
        await on.close()


async def test_two_devices_on_one_disk_share_one_smart_query(tmp_path: Path, monkeypatch) -> None:
    import trio

    from tiers.smart import SmartPoller

    monkeypatch.setattr("shadowfs.health.smart_target", lambda resolution: ("/dev/sdq", ""))
    calls: list[str] = []

    def runner(argv: list[str], timeout_s: float) -> str:
        calls.append(argv[-1])
        return (FIXTURES / "ata_healthy.json").read_text()

    devices = {}
    for name in ("hdd0", "hdd1"):
        (tmp_path / name).mkdir()
        devices[name] = LocalDevice(name, tmp_path / name, 1 << 30)
    monitor = HealthMonitor(
        devices,
        {"hdd0": "hdd", "hdd1": "hdd"},
        smart=SmartPoller(smartctl="/usr/sbin/smartctl", runner=runner),
    )
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(monitor._smart_loop)
            while monitor.smart_polls < 1:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert calls == ["/dev/sdq"]
    for name in devices:
        assert monitor.smart_report(name)["status"] == "ok"
        assert monitor.smart_report(name)["evidence"] == {"probability": 0.0, "reason": ""}
