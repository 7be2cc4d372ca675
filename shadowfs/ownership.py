"""Which devices belong to which shadowfs filesystem, and who may use the filesystem now.

This module owns two things:

* **Labels.** A filesystem has an identity (a UUID and its extent size).  Every device root
  holds a small JSON label (`shadowfs.label`) naming that identity, the device's own name
  and the names of all devices.  `claim_devices` compares the config, the identity the
  metadata database holds and the labels on disk, and refuses, naming the device, anything
  that looks like the wrong directory: a disk that failed to mount and left an empty
  directory behind, a directory of another filesystem, extent data without metadata, a
  changed extent size.  Only when every check has passed does it write labels, so a refusal
  leaves every directory as it was.
* **The state lock.** `StateLock` holds an exclusive `flock` on `<state_dir>/lock` for as
  long as a mount or an fsck runs, so that a second mount, or an fsck of a mounted
  filesystem, fails with a clear error.  The kernel drops the lock when its holder dies, so a
  crashed daemon never leaves a stale lock behind.

docs/configuration.md ("Devices and ownership") describes the rules for operators.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from shadowfs.config import Config, DeviceConfig, format_size

__all__ = [
    "EXTENTS_DIR",
    "FORMAT_VERSION",
    "LABEL_FILE",
    "LOCK_FILE",
    "STATE_MARKERS",
    "ClaimResult",
    "FsIdentity",
    "Label",
    "LockError",
    "OwnershipError",
    "StateLock",
    "claim_devices",
    "device_markers",
    "read_label",
    "write_label",
]

LABEL_FILE = "shadowfs.label"
EXTENTS_DIR = "extents"  # the extent store's directory at a device root
LOCK_FILE = "lock"
FORMAT_VERSION = 2  # 2: copies in container files per inode (1: one file per copy)

# The names at a device root that are always ours.  A state_dir directly inside a device adds
# its basename for that device: see device_markers().
STATE_MARKERS = frozenset({LABEL_FILE, EXTENTS_DIR})

# A crash inside write_label can leave its temp file behind; it is ours and harmless (the next
# write_label replaces it), so it neither makes a device "non-empty" nor counts as data.
_LABEL_TEMP = f".{LABEL_FILE}.tmp"
# mkfs puts lost+found at the root of ext2/3/4; a device directory that is a mount point
# has one without being in use.
_LOST_AND_FOUND = "lost+found"

_LABEL_FIELDS: dict[str, type] = {
    "format_version": int,
    "fs_uuid": str,
    "extent_size": int,
    "device_name": str,
    "device_names": list,
    "created_ns": int,
}


class OwnershipError(Exception):
    """A device that must not be used as configured.  One line: device, path, what to do."""


class LockError(Exception):
    """The filesystem is in use by another process (a mount or an fsck)."""


@dataclass(frozen=True)
class Label:
    """The label at a device root: which filesystem and which device this directory is."""

    fs_uuid: str
    extent_size: int
    device_name: str
    device_names: tuple[str, ...]  # every device of the filesystem when the label was written
    created_ns: int  # when this device joined the filesystem (kept when the label is rewritten)
    format_version: int = FORMAT_VERSION


@dataclass(frozen=True)
class FsIdentity:
    """The identity the metadata database records for the filesystem."""

    fs_uuid: str
    extent_size: int


@dataclass(frozen=True)
class ClaimResult:
    """What claim_devices found and did."""

    identity: FsIdentity
    initialised: tuple[str, ...]  # devices that were empty and are now labelled
    warnings: tuple[str, ...]  # for the mount to log and print; none stops the mount
    relabelled: tuple[str, ...] = ()  # labelled devices whose list of device names was updated


# --------------------------------------------------------------------------------------------
# Labels


def _label_to_json(label: Label) -> bytes:
    document = {
        "format_version": label.format_version,
        "fs_uuid": label.fs_uuid,
        "extent_size": label.extent_size,
        "device_name": label.device_name,
        "device_names": list(label.device_names),
        "created_ns": label.created_ns,
    }
    return (json.dumps(document, indent=2) + "\n").encode()


def _label_from_json(data: bytes, path: Path) -> Label:
    def corrupt(problem: str) -> OwnershipError:
        return OwnershipError(
            f"label {path} is corrupt ({problem}): restore it from another device's label "
            "(same fs_uuid, this device's name) or run fsck"
        )

    try:
        document: Any = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise corrupt(f"not JSON: {error}") from None
    if not isinstance(document, dict):
        raise corrupt("not a JSON object")
    version = document.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise OwnershipError(
            f"label {path} has format version {version}, newer than this shadowfs understands "
            f"({FORMAT_VERSION}): upgrade shadowfs"
        )
    if isinstance(version, int) and not isinstance(version, bool) and version < FORMAT_VERSION:
        raise OwnershipError(
            f"label {path} has format version {version}: that device stores one file per "
            f"extent copy, which this shadowfs (format {FORMAT_VERSION}, container files per "
            "inode) cannot read; copy the files out with the shadowfs that wrote them"
        )
    for field, kind in _LABEL_FIELDS.items():
        value = document.get(field)
        if value is None:
            raise corrupt(f"no {field}")
        if not isinstance(value, kind) or isinstance(value, bool):
            raise corrupt(f"{field} is not a{'n' if kind is int else ''} {kind.__name__}")
    unknown = sorted(set(document) - set(_LABEL_FIELDS))
    if unknown:
        raise corrupt(f"unknown fields {', '.join(unknown)}")
    names = document["device_names"]
    if not all(isinstance(name, str) for name in names):
        raise corrupt("device_names holds something other than names")
    try:
        uuid.UUID(document["fs_uuid"])
    except ValueError:
        raise corrupt(f"fs_uuid {document['fs_uuid']!r} is not a UUID") from None
    if document["extent_size"] <= 0:
        raise corrupt(f"extent_size {document['extent_size']} is not positive")
    return Label(
        fs_uuid=document["fs_uuid"],
        extent_size=document["extent_size"],
        device_name=document["device_name"],
        device_names=tuple(names),
        created_ns=document["created_ns"],
        format_version=document["format_version"],
    )


def read_label(device_path: Path) -> Label | None:
    """The label at `device_path`, or None if it has none.  OwnershipError if it is corrupt."""
    path = Path(device_path) / LABEL_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise OwnershipError(
            f"cannot read label {path}: {error.strerror}: check the device's disk and permissions"
        ) from None
    return _label_from_json(data, path)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_label(device_path: Path, label: Label) -> None:
    """Write `label` at `device_path` atomically and durably.

    Temp file, fsync, rename over the label, fsync the directory: after a crash the device
    holds either the old label or the new one, never a torn one.
    """
    device_path = Path(device_path)
    temp = device_path / _LABEL_TEMP
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        data = _label_to_json(label)
        written = 0
        while written < len(data):
            written += os.write(fd, data[written:])
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, device_path / LABEL_FILE)
    _fsync_directory(device_path)


# --------------------------------------------------------------------------------------------
# Claiming the devices


def device_markers(config: Config, device: DeviceConfig) -> frozenset[str]:
    """The names at `device`'s root that are ours: STATE_MARKERS plus the state dir's name
    when the state dir sits directly inside this device."""
    if config.state_dir.parent == device.path:
        return STATE_MARKERS | {config.state_dir.name}
    return STATE_MARKERS


@dataclass(frozen=True)
class _Survey:
    """What one device root holds, read before any decision (and before any write)."""

    device: DeviceConfig
    label: Label | None
    has_extents: bool
    foreign: tuple[str, ...]  # entries that are neither ours nor ignorable, sorted
    st_dev: int


def _survey(config: Config, device: DeviceConfig) -> _Survey:
    try:
        st_dev = os.stat(device.path).st_dev
        entries = sorted(os.listdir(device.path))
    except OSError as error:
        raise OwnershipError(
            f"device {device.name} at {device.path}: cannot list it ({error.strerror}): "
            "check that its disk is mounted and readable"
        ) from None
    ignorable = {_LOST_AND_FOUND, _LABEL_TEMP}
    if config.state_dir.parent == device.path:
        ignorable.add(config.state_dir.name)
    foreign = tuple(name for name in entries if name not in ignorable | STATE_MARKERS)
    try:
        label = read_label(device.path) if LABEL_FILE in entries else None
    except OwnershipError as error:
        raise OwnershipError(f"device {device.name}: {error}") from None
    return _Survey(device, label, EXTENTS_DIR in entries, foreign, st_dev)


def _listing(names: Iterable[str], limit: int = 3) -> str:
    names = list(names)
    shown = ", ".join(repr(name) for name in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _not_empty(survey: _Survey) -> OwnershipError:
    found = list(survey.foreign) + ([EXTENTS_DIR] if survey.has_extents else [])
    return OwnershipError(
        f"device {survey.device.name} at {survey.device.path} is not empty and not labelled: "
        f"is this the right path? (found {_listing(sorted(found))}; shadowfs only takes "
        "empty directories)"
    )


def _check_new_filesystem(surveys: list[_Survey]) -> None:
    # Data first: a label or extents without metadata is the serious case (a lost state dir),
    # and the message must say so rather than "not empty".
    for survey in surveys:
        held = [
            what
            for what, present in (("label", survey.label), ("extents", survey.has_extents))
            if present
        ]
        if held:
            raise OwnershipError(
                f"metadata is missing but device {survey.device.name} at {survey.device.path} "
                f"holds shadowfs data ({'/'.join(held)}): restore the state dir or run "
                "fsck --rebuild"
            )
    for survey in surveys:
        if survey.foreign:
            raise _not_empty(survey)


def _check_existing_filesystem(
    config: Config, stored: FsIdentity, surveys: list[_Survey], known_devices: frozenset[str]
) -> None:
    if config.extent_size != stored.extent_size:
        raise OwnershipError(
            f"extent_size is {format_size(config.extent_size)} in {config.source} but "
            f"filesystem {stored.fs_uuid} was created with {format_size(stored.extent_size)}: "
            f"extent_size is fixed once the filesystem exists; set extent_size = "
            f'"{format_size(stored.extent_size)}"'
        )
    for survey in surveys:
        device, label = survey.device, survey.label
        where = f"device {device.name} at {device.path}"
        if label is not None:
            if label.fs_uuid != stored.fs_uuid:
                raise OwnershipError(
                    f"{where} belongs to another shadowfs filesystem {label.fs_uuid} "
                    f"(this one is {stored.fs_uuid}): fix the path in {config.source}"
                )
            if label.device_name != device.name:
                raise OwnershipError(
                    f"{where} is labelled as device {label.device_name!r} of this filesystem: "
                    f"the config names or paths are swapped; fix {config.source}"
                )
            if label.extent_size != stored.extent_size:
                raise OwnershipError(
                    f"{where} has a label with extent size {format_size(label.extent_size)} "
                    f"but the metadata says {format_size(stored.extent_size)}: run fsck"
                )
        elif survey.foreign or survey.has_extents:
            raise _not_empty(survey)
        elif device.name in known_devices:
            raise OwnershipError(
                f"device {device.name} is known to hold data but {device.path} is empty: "
                "is its disk mounted?"
            )


def _shared_filesystem_warnings(surveys: list[_Survey]) -> list[str]:
    by_dev: dict[int, list[str]] = {}
    for survey in surveys:
        by_dev.setdefault(survey.st_dev, []).append(survey.device.name)
    return [
        f"devices {', '.join(names)} share one filesystem (st_dev {dev:#x}): budgets and "
        "redundancy are not independent"
        for dev, names in by_dev.items()
        if len(names) > 1
    ]


def _write_labels(writes: list[tuple[DeviceConfig, Label, bool]]) -> None:
    """Write every label; on a failure remove the labels this call created, then raise.

    Rolling back the new labels matters: a half-labelled new filesystem would otherwise be
    refused on the next try as "metadata is missing but ... holds a label".
    """
    created: list[DeviceConfig] = []
    for device, label, is_new in writes:
        try:
            write_label(device.path, label)
        except OSError as error:
            for done in created:
                with contextlib.suppress(OSError):
                    (done.path / LABEL_FILE).unlink()
            with contextlib.suppress(OSError):
                (device.path / _LABEL_TEMP).unlink()
            raise OwnershipError(
                f"device {device.name} at {device.path}: cannot write its label "
                f"({error.strerror}): check the disk's free space and permissions"
            ) from None
        if is_new:
            created.append(device)


def claim_devices(
    config: Config, stored: FsIdentity | None, known_devices: frozenset[str]
) -> ClaimResult:
    """Check that every configured device belongs to this filesystem; label the new ones.

    `stored` is the identity in the metadata database (None when there is no metadata yet:
    a new filesystem); `known_devices` the devices the metadata records as holding data.
    Raises OwnershipError, with nothing written anywhere, when a device must not be used.
    """
    surveys = [_survey(config, device) for device in config.devices]
    warnings = _shared_filesystem_warnings(surveys)
    names = tuple(device.name for device in config.devices)
    now = time.time_ns()

    if stored is None:
        _check_new_filesystem(surveys)
        identity = FsIdentity(fs_uuid=str(uuid.uuid4()), extent_size=config.extent_size)
    else:
        _check_existing_filesystem(config, stored, surveys, known_devices)
        identity = stored
        # A device dropped from the config (say, a dead disk) is allowed: its extents are
        # served from other copies where they exist.  The mount must know, though.
        for name in sorted(known_devices - set(names)):
            warnings.append(
                f"device {name} holds data according to the metadata but is not in "
                f"{config.source}: its extents are served from other copies, or are lost"
            )

    writes: list[tuple[DeviceConfig, Label, bool]] = []
    initialised: list[str] = []
    relabelled: list[str] = []
    for survey in surveys:
        device, label = survey.device, survey.label
        if label is None:
            new = Label(identity.fs_uuid, identity.extent_size, device.name, names, now)
            writes.append((device, new, True))
            initialised.append(device.name)
        elif label.device_names != names:
            # Keep every label's list of devices current, so that any one device tells
            # fsck --rebuild what the whole filesystem was.
            updated = Label(label.fs_uuid, label.extent_size, device.name, names, label.created_ns)
            writes.append((device, updated, False))
            relabelled.append(device.name)
    # New labels first: if one fails, they are rolled back before any existing label changed.
    writes.sort(key=lambda write: not write[2])
    _write_labels(writes)
    return ClaimResult(identity, tuple(initialised), tuple(warnings), tuple(relabelled))


# --------------------------------------------------------------------------------------------
# The state lock


class StateLock:
    """An exclusive lock on a filesystem's state directory, held by one mount or one fsck.

    `flock` on `<state_dir>/lock`; the holder writes "<pid> <purpose>" into the file so that
    a refused process can say who holds it.  The lock belongs to the open file description:
    it survives a fork (a daemonising mount keeps it; call `record_holder` in the child to
    show the daemon's pid) and vanishes when the last holder exits, even by kill -9.
    """

    def __init__(self, state_dir: Path, purpose: str) -> None:
        self.state_dir = Path(state_dir)
        self.purpose = purpose
        self.path = self.state_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, creating the state dir (mode 0700) if needed; LockError if in use."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this StateLock")
        try:
            self.state_dir.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as error:
            raise LockError(
                f"cannot create the lock {self.path} ({error.strerror}): check state_dir"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = _read_holder(fd)
            os.close(fd)
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise LockError(f"cannot lock {self.path}: {error.strerror}") from None
            raise LockError(_in_use_message(self.state_dir, holder)) from None
        self._fd = fd
        self.record_holder()

    def record_holder(self) -> None:
        """Write this process's pid and the purpose into the lock file."""
        if self._fd is None:
            raise RuntimeError(f"{self.path} is not held")
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()} {self.purpose}\n".encode(), 0)

    def release(self) -> None:
        """Drop the lock (idempotent).  The lock file stays: unlinking it would let two
        processes lock two different inodes of the same name."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> StateLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def _read_holder(fd: int) -> tuple[int, str] | None:
    """(pid, purpose) as the holder recorded them, or None while it has not written yet."""
    try:
        text = os.pread(fd, 256, 0).decode("ascii", "replace")
        pid_text, _, purpose = text.strip().partition(" ")
        return int(pid_text), purpose or "unknown"
    except (OSError, ValueError):
        return None


def _in_use_message(state_dir: Path, holder: tuple[int, str] | None) -> str:
    if holder is None:
        return f"filesystem at {state_dir} is in use by another process: unmount it first"
    pid, purpose = holder
    advice = "wait for it to finish" if purpose == "fsck" else "unmount it first"
    return f"filesystem at {state_dir} is in use by pid {pid} ({purpose}): {advice}"
