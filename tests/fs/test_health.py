"""The live health path (device recorder -> telemetry -> scorer) and a replay of its exported
trace through `shadowfs predict` give the same alarms and scores."""

from __future__ import annotations

import math
import random
from pathlib import Path

from predictor.arima import ArimaEngine
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
