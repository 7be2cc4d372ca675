"""The ``shadowfs`` command: mount, umount, status, fsck, demo (and predict, from predictor).

User errors are one clear line on stderr and a documented exit code (docs/cli.md); unexpected
errors keep their traceback. Exit codes:

0  success
1  unexpected internal error (a bug: the traceback is printed)
2  bad input: usage, config, path or argument
3  refused: ownership check, lock held, filesystem in use
4  no daemon answers on the mountpoint's control socket
5  the mount failed or the daemon died before answering (the log's path is printed)
6  fsck found problems it could not repair, or data was lost
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_BUG, EXIT_INPUT, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_MOUNT, EXIT_FSCK = range(7)


class CliError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shadowfs", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("mount", help="mount a filesystem (a daemon unless --foreground)")
    m.add_argument("config", type=Path)
    m.add_argument("mountpoint", type=Path)
    m.add_argument("--foreground", "-f", action="store_true")
    m.add_argument(
        "-o",
        dest="options",
        action="append",
        default=[],
        help="FUSE options, comma separated (e.g. allow_other)",
    )
    m.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for the mount to answer"
    )

    u = sub.add_parser("umount", help="flush, unmount and mark the filesystem clean")
    u.add_argument("mountpoint", type=Path)
    u.add_argument("--timeout", type=float, default=120.0)

    s = sub.add_parser("status", help="devices, usage and health of a mounted filesystem")
    s.add_argument("mountpoint", type=Path)
    s.add_argument("--json", action="store_true")

    f = sub.add_parser("fsck", help="check (and repair) the extent map against the devices")
    f.add_argument("config", type=Path)
    f.add_argument("--no-repair", action="store_true")
    f.add_argument("--json", action="store_true")

    t = sub.add_parser("telemetry", help="a mounted filesystem's device telemetry and health")
    t.add_argument("mountpoint", type=Path)
    t.add_argument(
        "--csv",
        action="store_true",
        help="the recorded trace (last hour) in the format `shadowfs predict` reads",
    )
    t.add_argument("--json", action="store_true")

    d = sub.add_parser("demo", help="mount the embedded demo config, run a workload, unmount")
    d.add_argument(
        "--state",
        type=Path,
        default=Path("state"),
        help="folder for the demo's devices and mountpoint (default ./state)",
    )
    d.add_argument("--size-mib", type=int, default=256)

    predict_cli = _predict_cli()
    if predict_cli is not None:
        predict_cli.add_subcommands(sub)
    return p


def _predict_cli() -> Any:
    """The predictor's subcommands (shadowfs/predict_cli.py), when present."""
    try:
        return importlib.import_module("shadowfs.predict_cli")
    except ModuleNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(_dispatch(args))
    except CliError as exc:
        print(f"shadowfs {args.command}: {exc.message}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    from shadowfs.config import ConfigError
    from shadowfs.ownership import LockError, OwnershipError

    try:
        if args.command == "mount":
            return cmd_mount(args)
        if args.command == "umount":
            return cmd_umount(args)
        if args.command == "status":
            return cmd_status(args)
        if args.command == "fsck":
            return cmd_fsck(args)
        if args.command == "demo":
            from shadowfs.demo import run_demo

            return run_demo(args.state, args.size_mib)
        if args.command == "telemetry":
            return cmd_telemetry(args)
        predict_cli = _predict_cli()
        if predict_cli is not None and args.command == "predict":
            return int(getattr(predict_cli, f"run_{args.command}")(args))
    except ConfigError as exc:
        raise CliError(EXIT_INPUT, str(exc)) from None
    except (OwnershipError, LockError) as exc:
        raise CliError(EXIT_REFUSED, str(exc)) from None
    raise CliError(EXIT_INPUT, f"unknown command {args.command}")


# ---------------------------------------------------------------- mount


def _check_mountpoint(mountpoint: Path) -> Path:
    if not mountpoint.is_dir():
        raise CliError(EXIT_INPUT, f"mountpoint {mountpoint} is not a directory")
    if _is_mounted(mountpoint):
        raise CliError(EXIT_REFUSED, f"{mountpoint} is already a mountpoint")
    return mountpoint.resolve()


def _is_mounted(mountpoint: Path) -> bool:
    from tiers.mounts import find_mount

    return find_mount(os.path.abspath(mountpoint)) is not None


def _fuse_options(raw: list[str]) -> list[str]:
    options = [o.strip() for item in raw for o in item.split(",") if o.strip()]
    for o in options:
        if not all(c.isalnum() or c in "_=.-/:" for c in o):
            raise CliError(EXIT_INPUT, f"-o {o!r}: not a FUSE option")
    return options


def cmd_mount(args: argparse.Namespace) -> int:
    from shadowfs.config import load_config

    config = load_config(args.config)
    mountpoint = _check_mountpoint(args.mountpoint)
    options = _fuse_options(args.options)
    if args.foreground:
        return _run_foreground(config, mountpoint, options)
    return _spawn_daemon(args, config, mountpoint)


def _setup_logging(state_dir: Path, level: str, to_stderr: bool) -> Path:
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = state_dir / "daemon.log"
    handlers: list[logging.Handler] = [logging.FileHandler(path)]
    if to_stderr:
        handlers.append(logging.StreamHandler())
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    return path


def _run_foreground(config: Any, mountpoint: Path, options: list[str]) -> int:
    import trio

    from shadowfs.daemon import open_filesystem, serve

    _setup_logging(config.state_dir, config.log_level, to_stderr=False)
    fs = open_filesystem(config)
    try:
        trio.run(serve, fs, mountpoint, options)
    except BaseException:
        logging.getLogger("shadowfs").exception("daemon failed")
        raise
    return EXIT_OK


def _spawn_daemon(args: argparse.Namespace, config: Any, mountpoint: Path) -> int:
    from shadowfs.control import DaemonUnreachable, MountRecord, call

    cmd = [
        sys.executable,
        "-m",
        "shadowfs",
        "mount",
        "--foreground",
        str(args.config.resolve()),
        str(mountpoint),
    ]
    for o in args.options:
        cmd += ["-o", o]
    config.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    log_path = config.state_dir / "daemon.log"
    with open(config.state_dir / "daemon.stderr", "ab") as err:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            tail = _tail(config.state_dir / "daemon.stderr") or _tail(log_path)
            raise CliError(
                EXIT_MOUNT if code != EXIT_REFUSED else EXIT_REFUSED,
                f"the daemon exited ({code}) before the mount answered: {tail} (log: {log_path})",
            )
        record = MountRecord.find(mountpoint)
        if record is not None and record.pid == proc.pid and _is_mounted(mountpoint):
            try:
                call(record.socket, "GET", "/status", timeout=5)
            except DaemonUnreachable:
                pass
            else:
                print(f"shadowfs mounted on {mountpoint} (pid {proc.pid}, log {log_path})")
                return EXIT_OK
        time.sleep(0.05)
    proc.terminate()
    raise CliError(
        EXIT_MOUNT, f"the mount did not answer within {args.timeout:g} s (log: {log_path})"
    )


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return ""
    return " | ".join(text[-lines:])


# ---------------------------------------------------------------- umount, status


def _record(mountpoint: Path) -> Any:
    from shadowfs.control import MountRecord

    record = MountRecord.find(mountpoint)
    if record is None:
        raise CliError(EXIT_UNREACHABLE, f"no shadowfs daemon is registered for {mountpoint}")
    return record


def _api(
    mountpoint: Path,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    timeout: float = 30.0,
) -> dict[str, Any]:
    from shadowfs.control import DaemonUnreachable, call

    record = _record(mountpoint)
    try:
        status, payload = call(record.socket, method, path, body, timeout=timeout)
    except DaemonUnreachable as exc:
        raise CliError(EXIT_UNREACHABLE, f"{exc} (is the daemon pid {record.pid} alive?)") from None
    if status != 200:
        raise CliError(EXIT_INPUT, f"{method} {path}: {payload.get('error', status)}")
    return payload


def cmd_umount(args: argparse.Namespace) -> int:
    record = _record(args.mountpoint)
    if not _pid_alive(record.pid) and not _is_mounted(args.mountpoint):
        # a registry entry left by a daemon that was killed, its mount already gone
        raise CliError(
            EXIT_UNREACHABLE,
            f"no shadowfs daemon answers on {args.mountpoint}: nothing is mounted there"
            f" (is the daemon pid {record.pid} alive?)",
        )
    result = subprocess.run(
        ["fusermount3", "-u", str(args.mountpoint)], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise CliError(EXIT_REFUSED, f"unmount refused: {result.stderr.strip()}")
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if not _pid_alive(record.pid):
            print(f"unmounted {args.mountpoint}")
            return EXIT_OK
        time.sleep(0.05)
    raise CliError(
        EXIT_MOUNT, f"daemon pid {record.pid} still running after unmount (log: {record.log})"
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of ours counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def cmd_status(args: argparse.Namespace) -> int:
    payload = _api(args.mountpoint, "GET", "/status")
    if args.json:
        print(json.dumps(payload, indent=2))
        return EXIT_OK
    print_status(payload)
    return EXIT_OK


def print_status(payload: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from shadowfs.config import format_size

    console = Console()
    clean = "clean" if payload["last_shutdown_clean"] else "UNCLEAN (recovered at mount)"
    console.print(
        f"[bold]shadowfs[/bold] {payload['fs_uuid']} on {payload['mountpoint']} "
        f"(pid {payload['pid']}, up {payload['uptime_s']} s); last shutdown: {clean}"
    )
    table = Table()
    columns = ("device", "class", "role", "used / budget", "available", "extents", "io", "health")
    for col in columns:
        table.add_column(col)
    for d in payload["devices"]:
        health = "-" if d.get("health") is None else f"{d['health']} ({d['failure_score']:.0f})"
        table.add_row(
            d["name"],
            d["class"],
            "backing" if d["backing"] else "tier",
            f"{format_size(d['used'])} / {format_size(d['budget'])}",
            format_size(d["available"]),
            str(d["extents"]),
            d["io_mode"],
            health,
        )
    console.print(table)
    for w in payload.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {w}")


def cmd_telemetry(args: argparse.Namespace) -> int:
    if args.csv:
        sys.stdout.write(_api(args.mountpoint, "GET", "/telemetry")["csv"])
        return EXIT_OK
    payload = _api(args.mountpoint, "GET", "/health")
    if args.json:
        print(json.dumps(payload, indent=2))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"health, every {payload['interval_s']} s")
    for col in (
        "device",
        "score",
        "state",
        "reason",
        "read p99 ms",
        "write p99 ms",
        "IOPS r/w",
        "block device",
    ):
        table.add_column(col)
    for name, h in payload["devices"].items():
        last = h["last_interval"] or {}
        table.add_row(
            name,
            str(h["failure_score"]),
            str(h["state"]),
            str(h["reason"]),
            str(last.get("read_p99_ms")),
            str(last.get("write_p99_ms")),
            f"{last.get('read_iops', 0):.0f}/{last.get('write_iops', 0):.0f}",
            h["block_device"],
        )
    Console().print(table)
    return EXIT_OK


# ---------------------------------------------------------------- fsck


def cmd_fsck(args: argparse.Namespace) -> int:
    from shadowfs import fsck
    from shadowfs.config import load_config
    from shadowfs.daemon import open_filesystem

    config = load_config(args.config)
    repair = not args.no_repair
    fs = open_filesystem(config, purpose="fsck", recover=False)
    try:
        report = fsck.check(fs.store, fs.devices, repair=repair)
        if repair:
            fs.store.set_info("clean", "1")
            fs.store.sync_files()
    finally:
        fs.stack.close()
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        for finding in report.findings:
            print(finding)
        print(
            f"fsck: {len(report.findings)} findings, {report.repaired} repaired,"
            f" {len(report.data_loss)} with data loss"
        )
    if report.data_loss or (args.no_repair and report.findings):
        return EXIT_FSCK
    return EXIT_OK
