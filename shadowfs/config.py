"""The shadowfs configuration: its TOML schema, validation and defaults.

This module owns reading a config file (or the embedded demo config) into a frozen `Config`,
and every check that can be made on it before anything is touched on disk: unknown keys, wrong
types, sizes, device names, classes, duplicate or nested device paths, the backing device,
the extent size and (optionally) whether the device directories exist and are writable.
A mistake raises `ConfigError`, whose text is one line naming the key and the problem.

It never creates, writes or locks anything, except `demo_config`, which creates the demo's
device directories.  Ownership of the devices (labels, the lock) lives in
`shadowfs.ownership`.  docs/configuration.md documents every key.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import math
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

__all__ = [
    "DEMO_CONFIG_TOML",
    "DEFAULT_EXTENT_SIZE",
    "DEFAULT_STATE_DIR_NAME",
    "EMBEDDED_SOURCE",
    "MAX_EXTENT_SIZE",
    "MIN_EXTENT_SIZE",
    "CacheConfig",
    "Config",
    "ConfigError",
    "DeviceClass",
    "DeviceConfig",
    "IOConfig",
    "MetadataConfig",
    "TelemetryConfig",
    "demo_config",
    "format_size",
    "load_config",
    "parse_config",
    "parse_size",
]

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

DEFAULT_EXTENT_SIZE = 1 * MiB
# Below 64 KiB the per-extent metadata outweighs the data it tracks; above 64 MiB one hot
# block drags a huge extent onto the fast tiers.  Both bounds are powers of two.
MIN_EXTENT_SIZE = 64 * KiB
MAX_EXTENT_SIZE = 64 * MiB

DEFAULT_STATE_DIR_NAME = ".shadowfs-state"
EMBEDDED_SOURCE = "<embedded default>"

# Names a device root reserves for shadowfs itself (ownership.LABEL_FILE, the extent store's
# directory) and for the filesystem below it; a state_dir directly inside a device must not
# take one of them.
_RESERVED_DEVICE_ROOT_NAMES = frozenset({"shadowfs.label", "extents", "lost+found"})

_DEVICE_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class DeviceClass(enum.Enum):
    """The declared speed class of a device; tiers are ordered by it, fastest first."""

    NVME = "nvme"
    SSD = "ssd"
    HDD = "hdd"

    @property
    def rank(self) -> int:
        """0 for the fastest class; sorting devices by rank orders the tiers."""
        return _CLASS_RANK[self]


_CLASS_RANK = {DeviceClass.NVME: 0, DeviceClass.SSD: 1, DeviceClass.HDD: 2}


class ConfigError(Exception):
    """A mistake in the configuration.  str(e) is one line: "<key>: <problem>".

    `key` is the dotted key as the user wrote it ("devices[1].capacity", "io.deadline_s"),
    or the config file's path for errors about the file as a whole.
    """

    def __init__(self, key: str, problem: str) -> None:
        # Both parts in args, so that the error survives pickling (multiprocessing, trio
        # worker processes) with its key intact.
        super().__init__(key, problem)
        self.key = key
        self.problem = problem

    def __str__(self) -> str:
        return f"{self.key}: {self.problem}"


@dataclass(frozen=True)
class DeviceConfig:
    """One device: a directory on one physical device, with its class and budget."""

    name: str
    path: Path  # absolute and resolved (symlinks followed)
    device_class: DeviceClass
    capacity: int  # bytes shadowfs may use there
    compress: bool = False


@dataclass(frozen=True)
class IOConfig:
    """How device I/O is bounded and when a device leaves the inline fast path."""

    deadline_s: float = 30.0  # one device I/O longer than this counts as failed
    threads_per_device: int = 8
    slow_threshold_ms: float = 50.0  # a device I/O slower than this sends the device threaded
    clean_period_s: float = 60.0  # clean time before a threaded device may go inline again
    error_threshold: int = 1  # I/O errors that force a device into threaded mode
    inline_miss_us: float = 500.0  # page-cache misses run inline while the device answers faster


@dataclass(frozen=True)
class MetadataConfig:
    """How often metadata is made durable."""

    flush_interval_s: float = 2.0  # periodic ordered flush: device data first, then metadata
    checkpoint_interval_s: float = 30.0


@dataclass(frozen=True)
class CacheConfig:
    """The kernel caches shadowfs asks for (it is the only writer of its files)."""

    attr_timeout_s: float = 3600.0
    entry_timeout_s: float = 3600.0
    readahead_kib: int = 4096
    writeback_cache: bool = True


# SMART queries can stall a busy disk for a moment and its attributes move over days: never
# more often than every 10 minutes (tiers.smart.DEFAULT_MIN_INTERVAL_S).
MIN_SMART_INTERVAL_S = 600.0


@dataclass(frozen=True)
class TelemetryConfig:
    """Device health measurement: the per-I/O recorder, the health loop, SMART polling."""

    enabled: bool = True  # off: no per-I/O recording, no health loop, no failure score
    smart: bool = True  # poll smartctl for each device's block device (when installed)
    smart_interval_s: float = MIN_SMART_INTERVAL_S


@dataclass(frozen=True)
class Config:
    """A validated configuration."""

    backing: str
    extent_size: int
    state_dir: Path
    devices: tuple[DeviceConfig, ...]
    io: IOConfig
    metadata: MetadataConfig
    cache: CacheConfig
    telemetry: TelemetryConfig = TelemetryConfig()
    log_level: str = "INFO"
    source: str = EMBEDDED_SOURCE  # the config file's path, or "<embedded default>"
    # Extended attributes cost every write a getxattr("security.capability") round trip
    # through FUSE (the kernel asks before each write whether privileges must be dropped, and
    # caches the answer only when the filesystem says it has no xattrs at all): off by default.
    xattrs: bool = False

    def device(self, name: str) -> DeviceConfig:
        """The device called `name`; KeyError if the config has none."""
        for device in self.devices:
            if device.name == name:
                return device
        raise KeyError(name)

    @property
    def backing_device(self) -> DeviceConfig:
        return self.device(self.backing)


# --------------------------------------------------------------------------------------------
# Sizes

# Case-insensitive: nobody budgets storage in bits, so "Mb" means megabytes here.
_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": 1024**2,
    "mib": 1024**2,
    "mb": 1000**2,
    "g": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
    "t": 1024**4,
    "tib": 1024**4,
    "tb": 1000**4,
    "p": 1024**5,
    "pib": 1024**5,
    "pb": 1000**5,
}
_SIZE_RE = re.compile(r"\s*(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?P<unit>[A-Za-z]*)\s*")
_SIZE_HINT = "use e.g. '8 GiB' or 8589934592"


def parse_size(value: object, key: str) -> int:
    """A positive whole number of bytes from an integer or a string such as "1.5 GiB".

    Units (case-insensitive): B; KiB, MiB, GiB, TiB, PiB and the short K, M, G, T, P are
    powers of 1024; KB, MB, GB, TB, PB are powers of 1000.  A bare number is bytes.
    Raises ConfigError naming `key` for anything else, zero, negatives and fractional bytes.
    """
    if isinstance(value, bool):
        raise ConfigError(key, f"expected a size, got a boolean; {_SIZE_HINT}")
    if isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(key, f"{value!r} is not a size; {_SIZE_HINT}")
        amount = Decimal(value)
    elif isinstance(value, str):
        match = _SIZE_RE.fullmatch(value)
        if match is None:
            if value.strip().startswith("-"):
                raise ConfigError(key, f"{value!r} is negative; a size must be greater than zero")
            raise ConfigError(key, f"{value!r} is not a size; {_SIZE_HINT}")
        unit = match["unit"]
        multiplier = _SIZE_UNITS.get(unit.lower())
        if multiplier is None:
            raise ConfigError(
                key,
                f"{value!r} is not a size: unknown unit {unit!r} (KiB/MiB/GiB/TiB or K/M/G/T are "
                f"powers of 1024, KB/MB/GB/TB powers of 1000); {_SIZE_HINT}",
            )
        try:
            amount = Decimal(match["number"]) * multiplier
        except InvalidOperation:  # pragma: no cover - the regex admits only decimals
            raise ConfigError(key, f"{value!r} is not a size; {_SIZE_HINT}") from None
    else:
        raise ConfigError(key, f"expected a size, got {_describe_type(value)}; {_SIZE_HINT}")
    if amount != amount.to_integral_value():
        raise ConfigError(key, f"{value!r} is not a whole number of bytes")
    size = int(amount)
    if size < 0:
        raise ConfigError(key, f"{value!r} is negative; a size must be greater than zero")
    if size == 0:
        raise ConfigError(key, f"{value!r} is zero; a size must be greater than zero")
    return size


def format_size(size: int) -> str:
    """`size` in the largest binary unit that divides it exactly, e.g. "1 MiB"."""
    if size == 0:
        return "0 bytes"
    for unit, multiplier in (("TiB", 1024**4), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if size % multiplier == 0:
            return f"{size // multiplier} {unit}"
    return f"{size} bytes"


# --------------------------------------------------------------------------------------------
# Typed readers: each takes the raw TOML value and the key to name in an error.


def _describe_type(value: object) -> str:
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a date/time ({value})"


def _check_keys(table: Mapping[str, Any], known: tuple[str, ...], prefix: str) -> None:
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"{prefix}{key}", f"unknown key; {hint}known keys: {', '.join(sorted(known))}"
            )


def _string(value: object, key: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, f"expected a string, got {_describe_type(value)}")
    if not value.strip():
        raise ConfigError(key, "must not be empty")
    return value


def _bool(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, f"expected true or false, got {_describe_type(value)}")
    return value


def _int(value: object, key: str, *, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"expected an integer, got {_describe_type(value)}")
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"at least {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise ConfigError(key, f"{value} is out of range; must be {bounds}")
    return value


def _seconds(value: object, key: str, *, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(key, f"expected a number, got {_describe_type(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(key, f"{value!r} is not a finite number")
    if number < 0 or (number == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "greater than zero"
        raise ConfigError(key, f"{value!r} is out of range; must be {bound}")
    return number


def _table(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(key, f"expected a table ([{key}]), got {_describe_type(value)}")
    return value


def _resolve(value: object, key: str, base_dir: Path) -> Path:
    text = _string(value, key)
    if "\0" in text:
        raise ConfigError(key, "must not contain a NUL character")
    try:
        path = Path(text).expanduser()
    except RuntimeError:  # "~nosuchuser/..."
        raise ConfigError(key, f"{text!r}: cannot expand the user's home directory") from None
    if not path.is_absolute():
        path = base_dir / path
    try:
        return path.resolve()
    except (OSError, RuntimeError) as error:  # a symlink loop, an unreadable parent
        raise ConfigError(key, f"{path}: cannot resolve the path ({error})") from None


# --------------------------------------------------------------------------------------------
# Sections


def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(field.name for field in dataclasses.fields(cls))


def _field(table: Mapping[str, Any], defaults: object, prefix: str, key: str) -> tuple[Any, str]:
    """A table's value for ``key`` (its dataclass default when absent) and the key's full name
    for error messages, so that each key is spelled once."""
    return table.get(key, getattr(defaults, key)), f"{prefix}{key}"


def _parse_io(table: Mapping[str, Any]) -> IOConfig:
    _check_keys(table, _field_names(IOConfig), "io.")
    defaults = IOConfig()
    return IOConfig(
        deadline_s=_seconds(*_field(table, defaults, "io.", "deadline_s"), allow_zero=False),
        threads_per_device=_int(
            *_field(table, defaults, "io.", "threads_per_device"),
            minimum=1,
            maximum=256,
        ),
        slow_threshold_ms=_seconds(
            *_field(table, defaults, "io.", "slow_threshold_ms"),
            allow_zero=False,
        ),
        clean_period_s=_seconds(
            *_field(table, defaults, "io.", "clean_period_s"),
            allow_zero=True,
        ),
        error_threshold=_int(
            *_field(table, defaults, "io.", "error_threshold"),
            minimum=1,
        ),
        inline_miss_us=_seconds(
            *_field(table, defaults, "io.", "inline_miss_us"),
            allow_zero=True,
        ),
    )


def _parse_metadata(table: Mapping[str, Any]) -> MetadataConfig:
    _check_keys(table, _field_names(MetadataConfig), "metadata.")
    defaults = MetadataConfig()
    return MetadataConfig(
        flush_interval_s=_seconds(
            *_field(table, defaults, "metadata.", "flush_interval_s"),
            allow_zero=False,
        ),
        checkpoint_interval_s=_seconds(
            *_field(table, defaults, "metadata.", "checkpoint_interval_s"),
            allow_zero=False,
        ),
    )


def _parse_cache(table: Mapping[str, Any]) -> CacheConfig:
    _check_keys(table, _field_names(CacheConfig), "cache.")
    defaults = CacheConfig()
    return CacheConfig(
        attr_timeout_s=_seconds(
            *_field(table, defaults, "cache.", "attr_timeout_s"),
            allow_zero=True,
        ),
        entry_timeout_s=_seconds(
            *_field(table, defaults, "cache.", "entry_timeout_s"),
            allow_zero=True,
        ),
        readahead_kib=_int(
            *_field(table, defaults, "cache.", "readahead_kib"),
            minimum=0,
            maximum=1024 * 1024,
        ),
        writeback_cache=_bool(*_field(table, defaults, "cache.", "writeback_cache")),
    )


def _parse_telemetry(table: Mapping[str, Any]) -> TelemetryConfig:
    _check_keys(table, _field_names(TelemetryConfig), "telemetry.")
    defaults = TelemetryConfig()
    interval, key = _field(table, defaults, "telemetry.", "smart_interval_s")
    smart_interval_s = _seconds(interval, key, allow_zero=False)
    if smart_interval_s < MIN_SMART_INTERVAL_S:
        raise ConfigError(
            key,
            f"{interval!r} is out of range; SMART is polled at most every "
            f"{MIN_SMART_INTERVAL_S:g} s (10 minutes): use {MIN_SMART_INTERVAL_S:g} or more",
        )
    return TelemetryConfig(
        enabled=_bool(*_field(table, defaults, "telemetry.", "enabled")),
        smart=_bool(*_field(table, defaults, "telemetry.", "smart")),
        smart_interval_s=smart_interval_s,
    )


_DEVICE_KEYS = ("name", "path", "class", "capacity", "compress")
_TOP_LEVEL_KEYS = (
    "backing",
    "xattrs",
    "extent_size",
    "state_dir",
    "log_level",
    "devices",
    "io",
    "metadata",
    "cache",
    "telemetry",
)


def _parse_extent_size(raw: Mapping[str, Any]) -> int:
    if "extent_size" not in raw:
        return DEFAULT_EXTENT_SIZE
    size = parse_size(raw["extent_size"], "extent_size")
    if size & (size - 1):
        raise ConfigError(
            "extent_size", f"{raw['extent_size']!r} ({size} bytes) is not a power of two"
        )
    if not MIN_EXTENT_SIZE <= size <= MAX_EXTENT_SIZE:
        raise ConfigError(
            "extent_size",
            f"{raw['extent_size']!r} is out of range; must be from "
            f"{format_size(MIN_EXTENT_SIZE)} to {format_size(MAX_EXTENT_SIZE)}",
        )
    return size


def _parse_device(raw: object, index: int, extent_size: int, base_dir: Path) -> DeviceConfig:
    """One [[devices]] entry."""
    prefix = f"devices[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(prefix, f"expected a table, got {_describe_type(raw)}")
    _check_keys(raw, _DEVICE_KEYS, f"{prefix}.")
    for key in ("name", "path", "class", "capacity"):
        if key not in raw:
            raise ConfigError(f"{prefix}.{key}", "missing; every device needs it")

    name = _string(raw["name"], f"{prefix}.name")
    if not _DEVICE_NAME_RE.fullmatch(name) or name in (".", ".."):
        raise ConfigError(
            f"{prefix}.name",
            f"{name!r} is not a valid device name; use 1 to 64 letters, digits, '_', '.' or '-'",
        )

    class_text = _string(raw["class"], f"{prefix}.class")
    try:
        device_class = DeviceClass(class_text.lower())
    except ValueError:
        choices = " | ".join(member.value for member in DeviceClass)
        raise ConfigError(
            f"{prefix}.class", f"unknown device class {class_text!r}; use one of {choices}"
        ) from None

    capacity = parse_size(raw["capacity"], f"{prefix}.capacity")
    if capacity < extent_size:
        raise ConfigError(
            f"{prefix}.capacity",
            f"{raw['capacity']!r} is smaller than one extent ({format_size(extent_size)})",
        )

    compress = _bool(raw.get("compress", False), f"{prefix}.compress")
    path = _resolve(raw["path"], f"{prefix}.path", base_dir)
    return DeviceConfig(
        name=name, path=path, device_class=device_class, capacity=capacity, compress=compress
    )


def _parse_devices(raw: Mapping[str, Any], extent_size: int, base_dir: Path) -> list[DeviceConfig]:
    if "devices" not in raw:
        raise ConfigError("devices", "no devices; declare at least one [[devices]] table")
    entries = raw["devices"]
    if not isinstance(entries, list):
        raise ConfigError(
            "devices", f"expected an array of tables ([[devices]]), got {_describe_type(entries)}"
        )
    if not entries:
        raise ConfigError("devices", "no devices; declare at least one [[devices]] table")

    devices: list[DeviceConfig] = []
    for index, entry in enumerate(entries):
        device = _parse_device(entry, index, extent_size, base_dir)
        for other_index, other in enumerate(devices):
            where = f"devices[{other_index}]"
            if device.name == other.name:
                raise ConfigError(
                    f"devices[{index}].name",
                    f"duplicate device name {device.name!r} (also {where}.name)",
                )
            if device.path == other.path:
                raise ConfigError(
                    f"devices[{index}].path",
                    f"{device.path} is also the path of {where} ({other.name}); "
                    "each device needs its own directory",
                )
            if device.path.is_relative_to(other.path) or other.path.is_relative_to(device.path):
                inner, outer = (
                    (device, other) if device.path.is_relative_to(other.path) else (other, device)
                )
                raise ConfigError(
                    f"devices[{index}].path",
                    f"{inner.path} ({inner.name}) is inside {outer.path} ({outer.name}); "
                    "device directories must not nest",
                )
        devices.append(device)
    return devices


def _parse_state_dir(
    raw: Mapping[str, Any], devices: list[DeviceConfig], backing: DeviceConfig, base_dir: Path
) -> Path:
    if "state_dir" not in raw:
        return backing.path / DEFAULT_STATE_DIR_NAME
    state_dir = _resolve(raw["state_dir"], "state_dir", base_dir)
    for device in devices:
        if state_dir == device.path or device.path.is_relative_to(state_dir):
            raise ConfigError(
                "state_dir",
                f"{state_dir} contains device {device.name} ({device.path}); put the state "
                "directory beside the devices or directly inside one of them",
            )
        if state_dir.is_relative_to(device.path):
            # The state dir may live directly in a device's root, where ownership knows its
            # name and the emptiness check ignores it; deeper, it would hide in an unknown
            # subdirectory that makes the device look non-empty and not ours.
            if state_dir.parent != device.path:
                raise ConfigError(
                    "state_dir",
                    f"{state_dir} is inside device {device.name} but not directly in its root; "
                    f"use {device.path / state_dir.name} or a path outside the devices",
                )
            if state_dir.name in _RESERVED_DEVICE_ROOT_NAMES:
                raise ConfigError(
                    "state_dir",
                    f"{state_dir.name!r} is reserved at a device root; choose another name "
                    f"such as {DEFAULT_STATE_DIR_NAME!r}",
                )
    return state_dir


def _parse_log_level(raw: Mapping[str, Any]) -> str:
    if "log_level" not in raw:
        return "INFO"
    level = _string(raw["log_level"], "log_level").upper()
    if level not in _LOG_LEVELS:
        raise ConfigError(
            "log_level", f"unknown level {raw['log_level']!r}; use one of {', '.join(_LOG_LEVELS)}"
        )
    return level


# --------------------------------------------------------------------------------------------
# Checks against the filesystem (read-only)


def _path_kind(path: Path, key: str) -> str:
    """What is at `path`: "missing", "dir" or "other".

    A path we may not even look at (EACCES on a parent) is an error right here, since
    shadowfs could not use it either.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing"
    except NotADirectoryError:
        return "other"
    except OSError as error:
        raise ConfigError(key, f"{path}: cannot look at it ({error.strerror})") from None
    return "dir" if stat.S_ISDIR(st.st_mode) else "other"


def _check_directory(path: Path, key: str, what: str) -> None:
    kind = _path_kind(path, key)
    if kind == "missing":
        raise ConfigError(
            key,
            f"{path} does not exist; create the directory (on the disk meant for {what}) "
            "or fix the path",
        )
    if kind != "dir":
        raise ConfigError(key, f"{path} is not a directory")
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise ConfigError(
            key,
            f"{path} is not readable and writable by this user (uid {os.geteuid()}); "
            "fix its owner or mode, or run shadowfs as a user that may write there",
        )


def _check_paths(devices: list[DeviceConfig], state_dir: Path) -> None:
    for index, device in enumerate(devices):
        _check_directory(device.path, f"devices[{index}].path", f"device {device.name}")
    if _path_kind(state_dir, "state_dir") != "missing":
        _check_directory(state_dir, "state_dir", "the state directory")
        return
    # Created at mount; its parent must be there already, so that a typo does not grow a
    # directory tree somewhere unexpected.
    if _path_kind(state_dir.parent, "state_dir") != "dir":
        raise ConfigError(
            "state_dir",
            f"{state_dir} does not exist and neither does its parent {state_dir.parent}; "
            "create the parent or fix the path",
        )
    _check_directory(state_dir.parent, "state_dir", "the state directory")


# --------------------------------------------------------------------------------------------
# Entry points


def _base_dir(source: str) -> Path:
    """Relative paths are relative to the config file; an embedded config has no file."""
    if source.startswith("<"):
        return Path.cwd()
    return Path(source).expanduser().absolute().parent


def parse_config(text: str, *, source: str, check_paths: bool = True) -> Config:
    """Validate a config given as TOML text.

    `source` is the file the text came from (relative paths in the config are resolved
    against its directory) or a name in angle brackets such as "<embedded default>" (relative
    paths then resolve against the current directory).  With `check_paths`, every device
    directory must exist and be writable, and the state_dir or its parent must.  Nothing is
    created or modified.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(source, f"not valid TOML: {error}") from None

    base_dir = _base_dir(source)
    _check_keys(raw, _TOP_LEVEL_KEYS, "")
    extent_size = _parse_extent_size(raw)
    devices = _parse_devices(raw, extent_size, base_dir)

    names = [device.name for device in devices]
    if "backing" not in raw:
        raise ConfigError(
            "backing",
            f"missing; name the device that holds the primary copies (one of {', '.join(names)})",
        )
    backing = _string(raw["backing"], "backing")
    if backing not in names:
        raise ConfigError(
            "backing", f"unknown device {backing!r}; the devices are {', '.join(names)}"
        )
    backing_device = devices[names.index(backing)]

    state_dir = _parse_state_dir(raw, devices, backing_device, base_dir)
    io = _parse_io(_table(raw, "io"))
    metadata = _parse_metadata(_table(raw, "metadata"))
    cache = _parse_cache(_table(raw, "cache"))
    telemetry = _parse_telemetry(_table(raw, "telemetry"))
    log_level = _parse_log_level(raw)
    xattrs = _bool(raw.get("xattrs", False), "xattrs")

    if check_paths:
        _check_paths(devices, state_dir)

    return Config(
        backing=backing,
        extent_size=extent_size,
        state_dir=state_dir,
        devices=tuple(devices),
        io=io,
        metadata=metadata,
        cache=cache,
        telemetry=telemetry,
        log_level=log_level,
        source=source,
        xattrs=xattrs,
    )


def load_config(path: str | Path) -> Config:
    """Read and validate the config file at `path`."""
    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(str(path), "config file not found") from None
    except IsADirectoryError:
        raise ConfigError(str(path), "is a directory, not a config file") from None
    except OSError as error:
        raise ConfigError(str(path), f"cannot read the config file: {error.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            str(path), f"not valid TOML: not UTF-8 (byte offset {error.start})"
        ) from None
    return parse_config(text, source=str(path))


# The demo's devices are plain directories under one state folder.  {root} is replaced by the
# state folder's path, escaped for a TOML basic string.
DEMO_CONFIG_TOML = """\
# The embedded demo configuration: three devices, one per class, as directories.
backing = "hdd0"
extent_size = "1 MiB"

[[devices]]
name = "nvme0"
path = "{root}/devices/nvme0"
class = "nvme"
capacity = "1 GiB"

[[devices]]
name = "ssd0"
path = "{root}/devices/ssd0"
class = "ssd"
capacity = "2 GiB"

[[devices]]
name = "hdd0"
path = "{root}/devices/hdd0"
class = "hdd"
capacity = "4 GiB"
"""


def _toml_basic_string_body(text: str) -> str:
    """`text` escaped for the inside of a TOML basic string ("...")."""
    escaped = []
    for char in text:
        if char in ('"', "\\"):
            escaped.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\u{ord(char):04X}")
        else:
            escaped.append(char)
    return "".join(escaped)


def demo_config(state_root: Path) -> Config:
    """The embedded default config with its devices under `state_root`/devices/<name>.

    Creates the device directories (and `state_root`) if they are missing.
    """
    root = Path(state_root).expanduser().absolute()
    text = DEMO_CONFIG_TOML.replace("{root}", _toml_basic_string_body(str(root)))
    # Validate before creating anything, so a bad state_root leaves no half-made tree.
    config = parse_config(text, source=EMBEDDED_SOURCE, check_paths=False)
    for device in config.devices:
        device.path.mkdir(parents=True, exist_ok=True)
    return parse_config(text, source=EMBEDDED_SOURCE, check_paths=True)
