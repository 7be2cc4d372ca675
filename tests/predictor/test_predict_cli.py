"""shadowfs predict: the CLI glue over the streaming scorer."""

import argparse
import json
from pathlib import Path

import pytest

from predictor.generator import Kind, generate_fleet
from predictor.trace import format_trace
from shadowfs.predict_cli import EXIT_BAD_INPUT, EXIT_OK, add_subcommands, replay


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="shadowfs")
    add_subcommands(parser.add_subparsers())
    return parser.parse_args(argv)


@pytest.fixture(scope="module")
def trace_text() -> str:
    kinds = (Kind.FAIL_SLOW, Kind.SUDDEN_DEATH, Kind.HEALTHY, Kind.HEALTHY)
    fleet = generate_fleet(21, kinds=kinds, duration_s=8 * 3600.0, interval_s=30.0, surge_all=False)
    return format_trace(fleet.samples, with_class=False)


def test_predict_json(tmp_path: Path, trace_text: str, capsys) -> None:
    path = tmp_path / "trace.csv"
    path.write_text(trace_text)
    args = parse(["predict", str(path), "--json"])
    assert args.func(args) == EXIT_OK
    result = json.loads(capsys.readouterr().out)
    assert len(result) == 4
    for entry in result.values():
        assert set(entry) >= {"alarm_at", "max_score", "reason"}
        assert 0 <= entry["max_score"] <= 100
        assert entry["reason"]["text"]
    fail_slow = [e for e in result.values() if e["alarm_at"] is not None]
    assert len(fail_slow) == 1 and fail_slow[0]["max_score"] >= 80
    silent = [name for name, e in result.items() if e["silent_at"] is not None]
    assert len(silent) == 1  # the sudden death: silent, not predicted
    assert result[silent[0]]["alarm_at"] is None


def test_act_override_changes_alarms(trace_text: str) -> None:
    strict = replay(trace_text, act=100.0, warn=100.0)
    default = replay(trace_text)
    assert sum(e["alarm_at"] is not None for e in default.values()) >= sum(
        e["alarm_at"] is not None for e in strict.values()
    )
    with pytest.raises(ValueError):
        replay(trace_text, warn=90, act=80)


def test_table_output_and_bad_input(tmp_path: Path, trace_text: str, capsys) -> None:
    path = tmp_path / "trace.csv"
    path.write_text(trace_text)
    args = parse(["predict", str(path)])
    assert args.func(args) == EXIT_OK
    assert "alarm_at" in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    bad.write_text("time_s,device\n1,a\n")
    args = parse(["predict", str(bad)])
    assert args.func(args) == EXIT_BAD_INPUT
    assert "header lacks" in capsys.readouterr().err
    args = parse(["predict", str(tmp_path / "missing.csv")])
    assert args.func(args) == EXIT_BAD_INPUT
