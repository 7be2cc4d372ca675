"""`shadowfs predict TRACE.csv`: replay a telemetry trace through the daemon's scorer.

Owns the subcommand: read the trace, infer its interval, feed it tick by tick to
predictor.scorer.StreamingScorer (the very class the daemon runs, so the score at t uses
only rows up to t), and print per device when it first reached `act`, its highest score,
and the reason. Exit codes: 0 done, 2 unreadable or invalid trace.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from typing import Any

EXIT_OK = 0
EXIT_BAD_INPUT = 2


def add_subcommands(subparsers: Any) -> None:
    """Register `predict` on an argparse subparsers object."""
    parser = subparsers.add_parser(
        "predict",
        help="replay a telemetry trace (CSV) through the failure predictor",
        description=(
            "Replay TRACE.csv (columns time_s,device,read_p99_ms,write_p99_ms,read_iops,"
            "write_iops,errors[,class]) through the streaming failure scorer."
        ),
    )
    parser.add_argument("trace", metavar="TRACE.csv", help="trace file, '-' for stdin")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--warn", type=float, default=None, help="warn threshold (default 50)")
    parser.add_argument("--act", type=float, default=None, help="act threshold (default 80)")
    parser.set_defaults(func=run_predict)


def replay(text: str, warn: float | None = None, act: float | None = None) -> dict[str, Any]:
    """Score a trace; returns {device: {"alarm_at", "max_score", "reason", ...}}."""
    # The replay fits ARIMA in-process; single-threaded BLAS is several times faster here.
    for key in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(key, "1")
    from predictor.score import HealthState, ScoreConfig
    from predictor.scorer import StreamingScorer
    from predictor.trace import group_by_time, infer_interval, parse_trace

    samples = parse_trace(text)
    interval = infer_interval(samples)
    config = ScoreConfig()
    if warn is not None:
        config = dataclasses.replace(config, warn=warn)
    if act is not None:
        config = dataclasses.replace(config, act=act)
    if not 0 <= config.warn <= config.act <= 100:
        raise ValueError(f"need 0 <= warn ({config.warn}) <= act ({config.act}) <= 100")
    scorer = StreamingScorer(interval, config)
    out: dict[str, dict[str, Any]] = {}
    for time_s, tick in group_by_time(samples):
        for score in scorer.observe(time_s, tick):
            entry = out.setdefault(
                score.device,
                {
                    "alarm_at": None,
                    "max_score": 0.0,
                    "reason": None,
                    "silent_at": None,
                    "alarm_reason": None,
                },
            )
            if score.state is HealthState.SILENT:
                entry["silent_at"] = score.time_s
                continue
            entry["silent_at"] = None
            # The reason shown is that of the highest score; among equals, the latest one
            # past the warm-up (so a quiet device says "no signal", not "learning").
            if (
                score.score > entry["max_score"]
                or entry["reason"] is None
                or (score.score == entry["max_score"] and score.state is not HealthState.WARMING_UP)
            ):
                entry["max_score"] = score.score
                entry["reason"] = score.reason.as_dict()
            if entry["alarm_at"] is None and score.score >= config.act:
                entry["alarm_at"] = score.time_s
                entry["alarm_reason"] = score.reason.as_dict()
    # A device whose rows stopped before the end of the trace went silent.
    end = samples[-1].time_s if samples else 0.0
    for name, entry in out.items():
        last_seen = scorer.series(name).raw.latest_time()
        if entry["silent_at"] is None and end - last_seen > 3 * interval:
            entry["silent_at"] = last_seen
    for entry in out.values():
        entry["max_score"] = round(entry["max_score"], 1)
    return dict(sorted(out.items()))


def _format_table(result: dict[str, Any]) -> str:
    lines = [f"{'device':<16} {'alarm_at':>10} {'max':>6}  reason"]
    for device, entry in result.items():
        alarm = "-" if entry["alarm_at"] is None else f"{entry['alarm_at']:.0f}"
        reason = entry["alarm_reason"] or entry["reason"] or {}
        text = reason.get("text", "")
        if entry["silent_at"] is not None:
            text += f" (silent from {entry['silent_at']:.0f})"
        lines.append(f"{device:<16} {alarm:>10} {entry['max_score']:>6.1f}  {text}")
    return "\n".join(lines)


def run_predict(args: argparse.Namespace) -> int:
    from predictor.trace import TraceError

    try:
        if args.trace == "-":
            text = sys.stdin.read()
        else:
            with open(args.trace, encoding="utf-8") as handle:
                text = handle.read()
    except OSError as error:
        print(f"shadowfs predict: cannot read {args.trace}: {error.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        result = replay(text, args.warn, args.act)
    except (TraceError, ValueError) as error:
        print(f"shadowfs predict: {args.trace}: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.json:
        json.dump(result, sys.stdout, indent=2, allow_nan=False, default=_json_default)
        sys.stdout.write("\n")
    else:
        print(_format_table(result))
    return EXIT_OK


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
