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
    )
    # 10,000 IOPS for 5 s = 50,000 ops; 2.0 s of CPU = 40 µs/op off, 41 µs/op on (+2.5%).
    for r, (on_iops, off_iops) in enumerate([(9800, 10000), (10100, 10000), (9000, 10000)]):
        run.samples.append(sample(ON, "randread-direct-qd16", r, on_iops, on_iops * 5 * 41e-6))
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


def test_verdict_judges_cpu_per_op_against_three_percent() -> None:
    rows = figures(made_up_run())
    text = verdict(rows)
    assert text.startswith("**CPU per operation (primary): within 3%.**")
    assert "+2.5%" in text and "randread-direct-qd16" in text
    assert "largest median loss is 2.0% (randread-direct-qd16)" in text
    assert "up to 11 points" in text
    rows[0].cpu_ratio = 1.05
    assert "ABOVE 3%" in verdict(rows)


def test_section_is_written_between_markers_and_replaced(tmp_path: Path) -> None:
    doc = tmp_path / "telemetry.md"
    doc.write_text("# Telemetry\n\nIntro.\n\n## Later\n\nkept\n")
    section = render_section(made_up_run())
    assert section.startswith(BEGIN) and section.rstrip().endswith(END)
    assert "`python -m bench.telemetry_cost --rounds 3`" in section
    assert "UTC (10 min)" in section
    assert "| 4 KiB random read, O_DIRECT, QD16 (libaio) | 9,800 | 10,000 | 0.980" in section
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
