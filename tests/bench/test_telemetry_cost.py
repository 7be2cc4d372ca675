"""bench.telemetry_cost without mounting: its figures, verdict, report section and config.

The measurement itself needs FUSE, fio and minutes; these check the arithmetic and the
document it writes, on made-up samples.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from bench import fio_jobs
from bench.datapath import Sample
from bench.fio_jobs import FioResult
from bench.telemetry_cost import (
    BEGIN,
    END,
    OFF,
    ON,
    CostRun,
    TelemetryTarget,
    block_size,
    cpu_us_per_op,
    evict_page_cache,
    figures,
    load,
    main,
    model_cost,
    render_section,
    verdict,
    write_section,
)
from shadowfs.config import parse_config


def result(iops: float, bs: int, seconds: float = 5.0) -> FioResult:
    ops = iops * seconds
    return FioResult(
        bw_bytes=ops * bs / seconds,
        iops=iops,
        p99_ns=100_000.0,
        io_bytes=int(ops * bs),
        runtime_ms=int(seconds * 1000),
    )


def sample(target: str, job: str, round_: int, iops: float, cpu_s: float) -> Sample:
    bs = block_size(fio_jobs.JOBS_BY_NAME[job])
    return Sample(target, job, round_, result=result(iops, bs), daemon_cpu_s=cpu_s)


def made_up_run() -> CostRun:
    run = CostRun(
        command="python -m bench.telemetry_cost --rounds 3",
        size=1 << 30,
        runtime=5.0,
        rounds=3,
        jobs=["randread-direct-qd16", "randread-cached-qd1"],
        started=1_763_850_000.0,
        finished=1_763_850_600.0,
        machine={"load average at start": "3.0 2.0 1.0", "load average at end": "2.0 2.0 1.0"},
        recorder_ns={"off": 150.0, "on": 550.0},  # +400 ns per device I/O
        idle_cpu={"on": [0.0030, 0.0020, 0.0025], "off": [0.0010, 0.0005, 0.0010]},
    )
    # 10,000 IOPS for 5 s = 50,000 ops; 2.0 s of CPU = 40 µs/op off, 41 µs/op on (+2.5%).
    for r, (on_iops, off_iops) in enumerate([(9800, 10000), (10100, 10000), (9000, 10000)]):
        on = sample(ON, "randread-direct-qd16", r, on_iops, on_iops * 5 * 41e-6)
        on.requests = {"device_ios": on_iops * 5}  # one device read per 4 KiB read
        run.samples.append(on)
        run.samples.append(sample(OFF, "randread-direct-qd16", r, off_iops, off_iops * 5 * 40e-6))
        run.samples.append(sample(ON, "randread-cached-qd1", r, 400_000, 0.03))
        run.samples.append(sample(OFF, "randread-cached-qd1", r, 401_000, 0.0))
    return run


def test_block_size_and_cpu_per_op() -> None:
    assert block_size(fio_jobs.JOBS_BY_NAME["randread-direct-qd16"]) == 4096
    assert block_size(fio_jobs.JOBS_BY_NAME["seqread-cold"]) == 1 << 20
    job = fio_jobs.JOBS_BY_NAME["randread-direct-qd16"]
    s = sample(OFF, job.name, 0, 10_000, 2.0)
    assert cpu_us_per_op(s, job) == 40.0
    assert cpu_us_per_op(Sample(OFF, job.name, 0, error="fio failed"), job) is None


def test_figures_pair_each_round_and_take_medians() -> None:
    direct, cached = figures(made_up_run())
    assert direct.rounds == 3 and direct.daemon_bound and direct.resolved
    assert direct.ratio == 0.98 and direct.ratio_range == (0.9, 1.01)
    assert abs((direct.cpu_ratio or 0) - 41 / 40) < 1e-9
    assert abs((direct.cpu_on_us or 0) - 41.0) < 1e-9
    assert not cached.daemon_bound  # page-cache hot: the daemon's CPU is not per-op cost
    assert cached.cpu_ratio is None  # 0 s of CPU off: no ratio


def test_telemetrys_share_from_its_measured_parts() -> None:
    # 400 ns per I/O + 1.5 ms/s of health loop over 10,000 ops/s = 0.55 µs on 40 µs/op.
    direct, cached = figures(made_up_run())
    assert direct.device_ios_per_op == 1.0
    assert abs((direct.model_cost or 0) - 0.55 / 40) < 1e-9
    assert cached.model_cost is None  # the kernel served it
    assert model_cost(400.0, 0.0015, 1.0, 10_000.0, 40.0) == direct.model_cost
    assert model_cost(None, 0.0015, 1.0, 10_000.0, 40.0) is None


def test_verdict_judges_against_three_percent() -> None:
    run = made_up_run()
    rows = figures(run)
    text = verdict(rows, run)
    assert text.startswith(
        "**Telemetry costs the data path at most 1.4% of the daemon's CPU per operation: "
        "within the 3% budget**"
    )
    assert "400 ns per device I/O" in text and "1.50 ms of CPU per second" in text
    assert "at most +2.5% in the median" in text and "consistent with the budget" in text
    assert "largest median loss is 2.0% (randread-direct-qd16)" in text
    assert "up to 11 points" in text
    rows[0].model_cost = 0.05
    assert "ABOVE the 3% budget" in verdict(rows, run)


def test_section_is_written_between_markers_and_replaced(tmp_path: Path) -> None:
    doc = tmp_path / "telemetry.md"
    doc.write_text("# Telemetry\n\nIntro.\n\n## Later\n\nkept\n")
    section = render_section(made_up_run())
    assert section.startswith(BEGIN) and section.rstrip().endswith(END)
    assert "`python -m bench.telemetry_cost --rounds 3`" in section
    assert "UTC (10 min)" in section
    assert "| 4 KiB random read, O_DIRECT, QD16 (libaio) | 9,800 | 10,000 | 0.980" in section
    assert "| 1.00 | 1.38% |" in section
    assert "(+400 ns per device I/O" in section
    write_section(doc, section)
    write_section(doc, section.replace("Measured", "Re-measured"))
    text = doc.read_text()
    assert text.count(BEGIN) == 1 and "Re-measured" in text and "\nkept\n" in text


def test_raw_json_round_trips_and_renders(tmp_path: Path) -> None:
    raw = tmp_path / "run.json"
    raw.write_text(json.dumps(asdict(made_up_run())))
    assert load(raw).samples == made_up_run().samples
    out = tmp_path / "doc.md"
    assert main(["--render", str(raw), "--out", str(out)]) == 0
    assert BEGIN in out.read_text()


def test_targets_write_configs_that_turn_telemetry_on_and_off(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    for enabled in (True, False):
        target = TelemetryTarget(tmp_path, enabled)
        assert target.name == (ON if enabled else OFF)
        assert target.mountpoint.parent == tmp_path
        target.write_config()
        config = parse_config(
            target.config.read_text(), source=str(target.config), check_paths=False
        )
        assert config.telemetry.enabled is enabled


def test_evicting_a_directory_from_the_page_cache(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_bytes(b"x" * 8192)
    assert evict_page_cache(tmp_path)
    assert (tmp_path / "a" / "f").read_bytes() == b"x" * 8192


def test_pairs_whose_io_modes_differ_are_left_out() -> None:
    run = made_up_run()
    for s in run.samples:
        if s.job == "randread-direct-qd16" and s.round == 2:
            ios = int((s.result.io_bytes if s.result else 0) / 4096)
            threaded = ios if s.target == ON else 0  # on went threaded, off stayed inline
            s.requests = {"device_ios": ios, "threaded_ops": threaded}
    direct = figures(run)[0]
    assert direct.mismatched == 1
    assert direct.ratio_range == (0.98, 1.01)  # round 3's 0.9 is gone
    assert "[1 pair(s) left out: I/O modes differed]" in render_section(run)
