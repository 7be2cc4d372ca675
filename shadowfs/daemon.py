"""Assembling a filesystem from its config, serving it on a mountpoint, and closing it cleanly.

``open_filesystem`` does everything that must happen before the mount answers, in order:
lock the state dir, open the metadata, check device ownership (refusing the wrong directory
before touching anything), initialise new devices, recover from an unclean shutdown (fsck with
repair, logged), mark the filesystem in use. ``serve`` mounts it and runs the engines in one
nursery; ``close`` makes everything durable and marks the shutdown clean. Each resource is
registered on an exit stack right after it is created, so any failure unwinds in reverse.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import resource
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyfuse3
import trio

from predictor.worker import ForecastWorker
from shadowfs import fsck
from shadowfs.config import Config
from shadowfs.control import SOCKET_NAME, ApiError, ControlServer, MountRecord, Route
from shadowfs.datapath import DataPath
from shadowfs.errors import FsError
from shadowfs.extent_map import ExtentMap
from shadowfs.flusher import Flusher
from shadowfs.health import HealthMonitor
from shadowfs.metadata import FORMAT_VERSION, MetadataStore
from shadowfs.namespace import Namespace
from shadowfs.operations import ShadowOperations, Timeouts
from shadowfs.ownership import FsIdentity, OwnershipError, StateLock, claim_devices
from tiers.local_device import IOPolicy, LocalDevice
from tiers.mounts import find_mount
from tiers.smart import SmartPoller

log = logging.getLogger(__name__)

LOG_NAME = "daemon.log"
PID_NAME = "daemon.pid"
MAX_FUSE_TASKS = 512


@dataclass
class Filesystem:
    config: Config
    store: MetadataStore
    namespace: Namespace
    extents: ExtentMap
    devices: dict[str, LocalDevice]
    data: DataPath
    ops: ShadowOperations
    fs_uuid: str
    last_shutdown_clean: bool
    recovery: fsck.FsckReport | None
    initialised_devices: tuple[str, ...]
    warnings: tuple[str, ...]
    stack: contextlib.ExitStack = field(repr=False)
    started: float = field(default_factory=time.time)
    health: HealthMonitor | None = None

    async def close(self) -> None:
        """Durable flush, clean mark, checkpoint; then release everything."""
        try:
            # After unmount nobody can reach an unlinked inode any more, whatever lookups
            # the kernel did not forget: free them now rather than leave orphans.
            for inode in [i for i in self.namespace.inodes.values() if i.nlink == 0]:
                await self.data.free(inode)
            try:
                await self.data.sync(None, durable=True)
            except FsError as exc:
                # Data a device failed to store: leave the filesystem marked unclean so that
                # the next mount verifies it (fsck) instead of trusting it.
                log.error("closing with unsynced data (%s): the next mount will recover", exc)
                return
            self.store.set_info("clean", "1")
            self.store.checkpoint_truncate()
            self.store.sync_files()
            log.info("filesystem %s closed cleanly", self.fs_uuid)
        finally:
            self.stack.close()


def open_filesystem(config: Config, purpose: str = "mount", recover: bool = True) -> Filesystem:
    """``recover=False`` (fsck --no-repair) leaves an unclean filesystem as it found it."""
    stack = contextlib.ExitStack()
    try:
        return _open(config, purpose, stack, recover)
    except BaseException:
        stack.close()
        raise


def _open(config: Config, purpose: str, stack: contextlib.ExitStack, recover: bool) -> Filesystem:
    lock = StateLock(config.state_dir, purpose)
    lock.acquire()
    stack.callback(lock.release)
    # The metadata names every file and holds xattrs: only root may read it.
    os.chmod(config.state_dir, 0o700)
    store = MetadataStore(config.state_dir)
    stack.callback(store.close)

    stored = _stored_identity(store)
    if stored is None and purpose == "fsck":
        raise OwnershipError(f"no shadowfs metadata in {config.state_dir}: nothing to check")
    version = store.info("format_version")
    if stored is not None and version != str(FORMAT_VERSION):
        raise OwnershipError(
            f"metadata in {config.state_dir} has format version {version}: this shadowfs "
            f"(format {FORMAT_VERSION}, container files per inode on each device) cannot "
            "read a filesystem whose devices hold one file per extent copy; copy the files out "
            "with the shadowfs that wrote them"
        )
    known = frozenset(r[0] for r in store.db.execute("SELECT name FROM devices"))
    claim = claim_devices(config, stored, known)
    for warning in claim.warnings:
        log.warning("%s", warning)
    if stored is None:
        log.info("new filesystem %s (extent size %d)", claim.identity.fs_uuid, config.extent_size)
        with store.transaction():
            store.set_info("fs_uuid", claim.identity.fs_uuid)
            store.set_info("extent_size", str(config.extent_size))
            store.set_info("format_version", str(FORMAT_VERSION))
            store.set_info("created_ns", str(time.time_ns()))
            store.set_info("clean", "1")
        Namespace(store).create_root(os.getuid(), os.getgid())
    for name in claim.initialised:
        log.info("device %s initialised at %s", name, config.device(name).path)

    policy = IOPolicy(
        deadline_s=config.io.deadline_s,
        threads=config.io.threads_per_device,
        slow_threshold_s=config.io.slow_threshold_ms / 1000.0,
        clean_period_s=config.io.clean_period_s,
        error_threshold=config.io.error_threshold,
        inline_miss_s=config.io.inline_miss_us / 1e6,
        max_open_files=_fd_budget_per_device(len(config.devices)),
    )
    devices: dict[str, LocalDevice] = {}
    for dev in config.devices:
        device = LocalDevice(
            dev.name, dev.path, dev.capacity, policy, extent_size=config.extent_size
        )
        device.initialise()
        stack.callback(device.close)
        devices[dev.name] = device
        store.db.execute(
            "INSERT OR IGNORE INTO devices (name, class, path, first_seen_ns) VALUES (?, ?, ?, ?)",
            (dev.name, dev.device_class.value, str(dev.path), time.time_ns()),
        )

    clean = store.info("clean") == "1"
    recovery = None
    if not clean and recover:
        log.warning("last shutdown was not clean: recovering before the mount answers")
        recovery = fsck.check(store, devices, repair=True)
        for finding in recovery.findings:
            log.warning("recovery: %s", finding)
        log.warning(
            "recovery done: %d findings, %d repaired", len(recovery.findings), recovery.repaired
        )
    if recover:
        store.set_info("clean", "0")
        store.sync_files()

    namespace = Namespace(store)
    extents = ExtentMap(store)
    data = DataPath(store, namespace, extents, devices, config.backing, config.extent_size)
    ops = ShadowOperations(
        namespace,
        data,
        Timeouts(attr=config.cache.attr_timeout_s, entry=config.cache.entry_timeout_s),
        xattrs=config.xattrs,
    )
    ops.enable_writeback_cache = config.cache.writeback_cache
    assert stored is not None or claim.identity is not None
    return Filesystem(
        config=config,
        store=store,
        namespace=namespace,
        extents=extents,
        devices=devices,
        data=data,
        ops=ops,
        fs_uuid=claim.identity.fs_uuid,
        last_shutdown_clean=clean,
        recovery=recovery,
        initialised_devices=claim.initialised,
        warnings=claim.warnings,
        stack=stack,
    )


MALLOC_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
MALLOC_MMAP_THRESHOLD = -3


def keep_freed_buffers(mmap_below: int = 32 << 20, keep: int = 64 << 20) -> bool:
    """Have glibc keep freed read buffers for the next request instead of handing the memory
    back to the kernel. Every large read allocates its reply buffer (1 MiB for a sequential
    read) and frees it once the reply is sent; by default glibc returns such memory, and the
    next buffer is faulted in and zeroed again, page by page. Measured, cold 1 GiB sequential
    reads, alternating: 0.77-0.81 s of daemon CPU per GiB with these settings, 0.85-0.98 s
    without. At most *keep* bytes of freed memory stay with the daemon. False where the C
    library has no mallopt (not glibc)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(MALLOC_MMAP_THRESHOLD, mmap_below) and mallopt(MALLOC_TRIM_THRESHOLD, keep))


def _fd_budget_per_device(devices: int) -> int:
    """Open container files (one per inode) each device may keep. An fd cache smaller than
    the files in use turns every random read into an open and a close (measured with one file
    per extent copy: 2.5x the CPU per 4 KiB read on a 1 GiB file with 512 fds), so raise the
    soft limit to the hard one and share it out, keeping room for SQLite, sockets and FUSE."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    target = min(target, 1 << 20)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return max(64, min(65536, (soft - 256) // max(1, devices)))


def _stored_identity(store: MetadataStore) -> FsIdentity | None:
    fs_uuid = store.info("fs_uuid")
    if fs_uuid is None:
        return None
    return FsIdentity(fs_uuid=fs_uuid, extent_size=int(store.info("extent_size") or 0))


# ---------------------------------------------------------------- status


def status(fs: Filesystem, mountpoint: str | None = None) -> dict[str, Any]:
    devices = []
    for name, device in fs.devices.items():
        cfg = fs.config.device(name)
        usage = fs.data.usage[name]
        cap = device.capacity(usage.bytes)
        devices.append(
            {
                "name": name,
                "class": cfg.device_class.value,
                "path": str(cfg.path),
                "backing": name == fs.config.backing,
                "budget": cap.budget,
                "used": cap.used,
                "available": cap.available,
                "fs_free": cap.fs_free,
                "extents": usage.copies,
                "io_mode": device.mode.value,
                "fs_type": device.fs_type,
                "inline_capable": device.inline_capable,
                "counters": device.counters.__dict__,
                **_health_summary(fs, name),
            }
        )
    return {
        "fs_uuid": fs.fs_uuid,
        "mountpoint": mountpoint,
        "pid": os.getpid(),
        "state_dir": str(fs.config.state_dir),
        "extent_size": fs.config.extent_size,
        "last_shutdown_clean": fs.last_shutdown_clean,
        "recovery": None if fs.recovery is None else fs.recovery.as_dict(),
        "uptime_s": round(time.time() - fs.started, 1),
        "inodes": fs.namespace.count_inodes(),
        "devices": devices,
        "requests": dict(sorted(fs.ops.request_counts.items())),
        "telemetry": "on" if fs.health is not None else "off",
        "warnings": list(fs.warnings),
    }


def _health_summary(fs: Filesystem, name: str) -> dict[str, Any]:
    if fs.health is None:
        return {
            "failure_score": None,
            "health": None,
            "health_reason": "telemetry off" if not fs.config.telemetry.enabled else None,
            "smart": None,
            "evacuation": None,
        }
    h = fs.health.device_health(name)
    return {
        "failure_score": h["failure_score"],
        "health": h["state"],
        "health_reason": h["reason"],
        "smart": h["smart"],
        "evacuation": h["evacuation"],
    }


# ---------------------------------------------------------------- serving


def mount_options(extra: list[str]) -> set[str]:
    options = set(pyfuse3.default_options)
    options |= {"fsname=shadowfs", "subtype=shadowfs", "default_permissions"}
    options |= set(extra)
    return options


def _bdi_of(mountpoint: Path) -> str | None:
    """major:minor of the FUSE connection at ``mountpoint``, from mountinfo (a stat of the
    mountpoint would ask this very daemon, which is not serving yet)."""
    entry = find_mount(os.path.abspath(mountpoint))
    if entry is None or not entry.fs_type.startswith("fuse"):
        return None
    return entry.major_minor


def raise_readahead(mountpoint: Path, kib: int) -> int | None:
    bdi = _bdi_of(mountpoint)
    if bdi is None:
        return None
    path = Path(f"/sys/class/bdi/{bdi}/read_ahead_kb")
    try:
        path.write_text(str(kib))
        return int(path.read_text())
    except OSError as exc:
        log.warning("could not raise the FUSE readahead to %d KiB: %s", kib, exc)
        return None


async def serve(
    fs: Filesystem,
    mountpoint: Path,
    extra_options: list[str],
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Mount, serve until unmounted or signalled, then close the filesystem."""
    config = fs.config
    flusher = Flusher(
        fs.data, fs.store, config.metadata.flush_interval_s, config.metadata.checkpoint_interval_s
    )
    socket_path = config.state_dir / SOCKET_NAME
    record = MountRecord(
        mountpoint=os.path.abspath(mountpoint),
        socket=str(socket_path),
        pid=os.getpid(),
        state_dir=str(config.state_dir),
        log=str(config.state_dir / LOG_NAME),
    )
    # The forecast worker starts before the mount exists, so it holds no /dev/fuse descriptor.
    telemetry = config.telemetry
    worker = _start_forecast_worker() if telemetry.enabled else None
    try:
        fs.health = health_monitor(fs, worker)
        routes = _routes(fs, record.mountpoint, flusher)
        # What is loaded by now (modules, the config, the devices) lives as long as the mount:
        # out of the collector's generations, no full collection walks it while requests wait.
        # Before init, not after: a collection while the mount exists but does not answer yet
        # stalls whoever looks at it first (and an unmount meanwhile says EBUSY).
        gc.collect()
        gc.freeze()
        keep_freed_buffers()
        pyfuse3.init(fs.ops, str(mountpoint), mount_options(extra_options))
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(ControlServer(socket_path, routes).serve)
                nursery.start_soon(flusher.run)
                if fs.health is not None:
                    nursery.start_soon(fs.health.run)
                for device in fs.devices.values():
                    nursery.start_soon(_watch_capacity, device)
                nursery.start_soon(_on_signals, mountpoint)

                async def announce() -> None:
                    # Only once the kernel has had INIT answered (the stat returns) is the
                    # mount ready: announced earlier, a prompt unmount would meet that stat
                    # still in flight and fail with EBUSY.
                    await _raise_readahead_after_init(mountpoint, config.cache.readahead_kib)
                    record.write()
                    (config.state_dir / PID_NAME).write_text(str(os.getpid()))
                    log.info("mounted %s on %s", fs.fs_uuid, mountpoint)
                    if on_ready is not None:
                        on_ready()

                nursery.start_soon(announce)
                # More request tasks than pyfuse3's default 99, so that requests waiting on a
                # slow device do not leave none free for the rest of the mount.
                await pyfuse3.main(max_tasks=MAX_FUSE_TASKS)
                nursery.cancel_scope.cancel()
        finally:
            record.remove()
            with contextlib.suppress(FileNotFoundError):
                (config.state_dir / PID_NAME).unlink()
            pyfuse3.close(unmount=True)
    finally:
        try:
            await fs.close()
        finally:
            if worker is not None:
                worker.close()


def health_monitor(fs: Filesystem, worker: Any) -> HealthMonitor | None:
    """The health loop for ``fs``, which sets every device's recorder; None with telemetry
    off, leaving the recorders unset (no per-I/O cost at all)."""
    telemetry = fs.config.telemetry
    if not telemetry.enabled:
        log.info("telemetry off (telemetry.enabled = false): no health loop, no score")
        return None
    return HealthMonitor(
        fs.devices,
        {d.name: d.device_class.value for d in fs.config.devices},
        engine=worker,
        stored_bytes=lambda name: fs.data.usage[name].bytes,
        smart=SmartPoller(min_interval_s=telemetry.smart_interval_s) if telemetry.smart else None,
        smart_interval_s=telemetry.smart_interval_s,
    )


def _start_forecast_worker() -> ForecastWorker | None:
    worker = ForecastWorker()
    try:
        worker.start()
    except Exception as exc:  # forecasting is optional; the mount is not
        log.warning("forecast worker did not start (%s): scoring without forecasts", exc)
        return None
    log.info("forecast worker started (pid %s)", worker.pid)
    return worker


async def _raise_readahead_after_init(mountpoint: Path, kib: int) -> None:
    """The kernel sets the mount's readahead from the FUSE INIT reply, after pyfuse3.init
    returns; a value written before that is overwritten. A stat of the mountpoint (from a
    thread: it is served by this very loop) returns only once INIT is done."""
    try:
        await trio.to_thread.run_sync(os.stat, mountpoint)
    except OSError as exc:
        log.warning("FUSE readahead left as the kernel set it: stat of %s: %s", mountpoint, exc)
        return
    ra = raise_readahead(mountpoint, kib)
    log.info("FUSE readahead of %s set to %s KiB", mountpoint, ra)


async def _watch_capacity(device: LocalDevice, interval: float = 1.0) -> None:
    """Keep each device's free-space figure fresh without ever statting it on the loop."""
    while True:
        await device.refresh_capacity()
        await trio.sleep(interval)


async def request_unmount(mountpoint: Path) -> None:
    """Unmount from outside the FUSE loop, so the kernel can still send us the dirty pages it
    writes back during umount; pyfuse3.main returns once the kernel lets go."""
    result = await trio.run_process(
        ["fusermount3", "-u", str(mountpoint)], check=False, capture_stderr=True
    )
    if result.returncode != 0:
        log.warning("unmount refused (%s): detaching lazily", result.stderr.decode().strip())
        await trio.run_process(["fusermount3", "-uz", str(mountpoint)], check=False)


async def _on_signals(mountpoint: Path) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("signal %d: unmounting %s", signum, mountpoint)
            await request_unmount(mountpoint)


def _routes(fs: Filesystem, mountpoint: str, flusher: Flusher) -> dict[tuple[str, str], Route]:
    async def get_status(_: dict[str, Any]) -> dict[str, Any]:
        return status(fs, mountpoint)

    async def post_sync(_: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        await fs.data.sync(None, durable=True)
        return {"synced": True, "seconds": round(time.perf_counter() - started, 4)}

    async def post_unmount(_: dict[str, Any]) -> dict[str, Any]:
        trio.lowlevel.spawn_system_task(request_unmount, Path(mountpoint))
        return {"unmounting": True}

    def health() -> HealthMonitor:
        if fs.health is None:
            raise ApiError(409, "telemetry is off on this mount (telemetry.enabled = false)")
        return fs.health

    async def get_health(_: dict[str, Any]) -> dict[str, Any]:
        return health().report()

    async def get_telemetry(_: dict[str, Any]) -> dict[str, Any]:
        monitor = health()
        return {
            "format": "shadowfs trace v1",
            "csv": monitor.trace_csv(),
            "smart": {name: monitor.smart_report(name) for name in fs.devices},
        }

    return {
        ("GET", "/health"): get_health,
        ("GET", "/telemetry"): get_telemetry,
        ("GET", "/status"): get_status,
        ("POST", "/sync"): post_sync,
        ("POST", "/unmount"): post_unmount,
    }
