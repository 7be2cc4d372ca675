"""Tests for shadowfs.config: the schema, every refusal (naming its key) and the demo config."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from shadowfs import config as config_module
from shadowfs.config import (
    DEFAULT_EXTENT_SIZE,
    DEMO_CONFIG_TOML,
    EMBEDDED_SOURCE,
    CacheConfig,
    ConfigError,
    DeviceClass,
    IOConfig,
    MetadataConfig,
    TelemetryConfig,
    demo_config,
    load_config,
    parse_config,
    parse_size,
)

MiB = 1024 * 1024
GiB = 1024 * MiB


def device_table(name: str, path: Path | str, cls: str = "hdd", capacity: str = "1 GiB") -> str:
    return (
        f'[[devices]]\nname = "{name}"\npath = "{path}"\nclass = "{cls}"\ncapacity = "{capacity}"\n'
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for name in ("nvme0", "ssd0", "hdd0"):
        (tmp_path / name).mkdir()
    return tmp_path


def three_devices(root: Path, head: str = 'backing = "hdd0"\n') -> str:
    return (
        head
        + device_table("nvme0", root / "nvme0", "nvme", "1 GiB")
        + device_table("ssd0", root / "ssd0", "ssd", "2 GiB")
        + device_table("hdd0", root / "hdd0", "hdd", "4 GiB")
    )


def error_of(text: str, root: Path, **kwargs: bool) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source=str(root / "shadowfs.toml"), **kwargs)
    message = str(info.value)
    assert "\n" not in message, "a config error is one line"
    return info.value


def snapshot(root: Path) -> list[tuple[str, int, int]]:
    """Every entry under root with its mode and size: enough to see that nothing changed."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            st = path.lstat()
            entries.append((str(path.relative_to(root)), st.st_mode, st.st_size))
    return sorted(entries)


# --- what a good config gives -------------------------------------------------------------


def test_minimal_config_gets_defaults(root: Path) -> None:
    config = parse_config(three_devices(root), source=str(root / "shadowfs.toml"))
    assert config.backing == "hdd0"
    assert config.extent_size == DEFAULT_EXTENT_SIZE == MiB
    assert config.state_dir == root / "hdd0" / ".shadowfs-state"
    assert config.io == IOConfig()
    assert config.metadata == MetadataConfig()
    assert config.cache == CacheConfig()
    assert config.telemetry == TelemetryConfig()
    assert config.telemetry.enabled is True and config.telemetry.smart is True
    assert config.telemetry.smart_interval_s == 600.0
    assert config.log_level == "INFO"
    assert config.source == str(root / "shadowfs.toml")
    assert [d.name for d in config.devices] == ["nvme0", "ssd0", "hdd0"]
    nvme = config.device("nvme0")
    assert nvme.path == root / "nvme0"
    assert nvme.path.is_absolute()
    assert nvme.device_class is DeviceClass.NVME
    assert nvme.capacity == GiB
    assert nvme.compress is False
    assert config.backing_device is config.device("hdd0")
    assert config.backing_device.capacity == 4 * GiB


def test_every_key_is_read(root: Path) -> None:
    text = (
        'backing = "ssd0"\nextent_size = "4 MiB"\nstate_dir = "state"\nlog_level = "debug"\n'
        + device_table("ssd0", root / "ssd0", "SSD", "10 GB")
        + "compress = true\n"
        + "[io]\ndeadline_s = 5\nthreads_per_device = 4\nslow_threshold_ms = 20.5\n"
        + "clean_period_s = 0\nerror_threshold = 3\n"
        + "[metadata]\nflush_interval_s = 0.5\ncheckpoint_interval_s = 10\n"
        + "[cache]\nattr_timeout_s = 0\nentry_timeout_s = 1.5\nreadahead_kib = 0\n"
        + "writeback_cache = false\n"
        + "[telemetry]\nenabled = false\nsmart = false\nsmart_interval_s = 3600\n"
    )
    config = parse_config(text, source=str(root / "shadowfs.toml"))
    assert config.extent_size == 4 * MiB
    assert config.state_dir == root / "state"  # relative to the config file's directory
    assert config.log_level == "DEBUG"
    assert config.device("ssd0").device_class is DeviceClass.SSD
    assert config.device("ssd0").capacity == 10 * 1000**3
    assert config.device("ssd0").compress is True
    assert config.io == IOConfig(5.0, 4, 20.5, 0.0, 3)
    assert config.metadata == MetadataConfig(0.5, 10.0)
    assert config.cache == CacheConfig(0.0, 1.5, 0, False)
    assert config.telemetry == TelemetryConfig(enabled=False, smart=False, smart_interval_s=3600.0)


def test_relative_paths_resolve_against_the_config_file(root: Path, monkeypatch) -> None:
    (root / "etc").mkdir()
    config_file = root / "etc" / "shadowfs.toml"
    config_file.write_text('backing = "hdd0"\n' + device_table("hdd0", "../hdd0"))
    monkeypatch.chdir("/")
    config = load_config(config_file)
    assert config.device("hdd0").path == root / "hdd0"
    assert config.source == str(config_file)


def test_symlinked_device_path_is_resolved(root: Path) -> None:
    (root / "link").symlink_to(root / "hdd0")
    text = 'backing = "hdd0"\n' + device_table("hdd0", root / "link")
    config = parse_config(text, source="<t>")
    assert config.device("hdd0").path == root / "hdd0"


def test_state_dir_may_sit_directly_in_a_device_or_outside(root: Path) -> None:
    inside = parse_config(
        f'state_dir = "{root / "nvme0" / "meta"}"\n' + three_devices(root), source="<t>"
    )
    assert inside.state_dir == root / "nvme0" / "meta"
    outside = parse_config(f'state_dir = "{root / "meta"}"\n' + three_devices(root), source="<t>")
    assert outside.state_dir == root / "meta"


def test_device_lookup_and_class_rank(root: Path) -> None:
    config = parse_config(three_devices(root), source="<t>")
    with pytest.raises(KeyError):
        config.device("nope")
    ranked = sorted(config.devices, key=lambda d: d.device_class.rank)
    assert [d.name for d in ranked] == ["nvme0", "ssd0", "hdd0"]
    assert DeviceClass.NVME.rank == 0 < DeviceClass.SSD.rank < DeviceClass.HDD.rank


def test_config_is_frozen(root: Path) -> None:
    config = parse_config(three_devices(root), source="<t>")
    with pytest.raises(AttributeError):
        config.backing = "nvme0"  # type: ignore[misc]


def test_check_paths_false_accepts_missing_directories(tmp_path: Path) -> None:
    text = 'backing = "a"\n' + device_table("a", tmp_path / "missing")
    config = parse_config(text, source="<t>", check_paths=False)
    assert config.device("a").path == tmp_path / "missing"
    assert not (tmp_path / "missing").exists()


# --- sizes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (4096, 4096),
        ("4096", 4096),
        ("1 MiB", MiB),
        ("8GiB", 8 * GiB),
        ("512 KiB", 512 * 1024),
        ("1.5 GiB", 3 * GiB // 2),
        ("1 KB", 1000),
        ("2 MB", 2_000_000),
        ("8 GB", 8_000_000_000),
        ("1 TB", 10**12),
        ("1 TiB", 1024**4),
        ("4K", 4096),
        ("4 k", 4096),
        ("3M", 3 * MiB),
        ("2G", 2 * GiB),
        ("1T", 1024**4),
        ("100 B", 100),
        (" 7 mib ", 7 * MiB),
        (1048576.0, MiB),
    ],
)
def test_parse_size_accepts(value: object, expected: int) -> None:
    assert parse_size(value, "k") == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (0, "zero"),
        ("0 GiB", "zero"),
        (-5, "negative"),
        ("-1 GiB", "negative"),
        (True, "boolean"),
        (1.5, "whole number of bytes"),
        ("1.5 B", "whole number of bytes"),
        ("0.3 KiB", "whole number of bytes"),
        (float("inf"), "not a size"),
        (float("nan"), "not a size"),
        ("8 GX", "unknown unit 'GX'"),
        ("lots", "not a size"),
        ("", "not a size"),
        ("1 2 GiB", "not a size"),
        ([1], "array"),
        ({"a": 1}, "table"),
    ],
)
def test_parse_size_rejects_naming_the_key(value: object, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_size(value, "devices[1].capacity")
    assert str(info.value).startswith("devices[1].capacity: ")
    assert fragment in str(info.value)
    assert info.value.key == "devices[1].capacity"


def test_config_error_survives_pickling() -> None:
    error = ConfigError("devices[0].path", "missing")
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == "devices[0].path: missing"
    assert copy.key == "devices[0].path"


# --- one test per refusal ------------------------------------------------------------------


def test_missing_device_path(root: Path) -> None:
    text = 'backing = "hdd0"\n' + device_table("hdd0", root / "nowhere")
    error = error_of(text, root)
    assert error.key == "devices[0].path"
    assert "does not exist" in str(error)
    assert str(root / "nowhere") in str(error)


def test_device_path_is_a_file(root: Path) -> None:
    (root / "file").write_text("x")
    error = error_of('backing = "hdd0"\n' + device_table("hdd0", root / "file"), root)
    assert error.key == "devices[0].path"
    assert "not a directory" in str(error)


def test_unwritable_device_path(root: Path, monkeypatch) -> None:
    # Root may write anywhere, so os.access is what decides; make it say no for one path.
    real_access = os.access
    denied = root / "ssd0"
    monkeypatch.setattr(
        config_module.os,
        "access",
        lambda path, mode, **kw: False if Path(path) == denied else real_access(path, mode),
    )
    error = error_of(three_devices(root), root)
    assert error.key == "devices[1].path"
    assert "not readable and writable" in str(error)
    assert "uid" in str(error)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to a mode 0555 directory")
def test_unwritable_device_path_for_real(root: Path) -> None:
    (root / "ssd0").chmod(0o555)
    try:
        error = error_of(three_devices(root), root)
    finally:
        (root / "ssd0").chmod(0o755)
    assert error.key == "devices[1].path"


def test_device_path_in_a_symlink_loop(root: Path) -> None:
    (root / "loop").symlink_to(root / "loop")
    error = error_of('backing = "hdd0"\n' + device_table("hdd0", root / "loop"), root)
    assert error.key == "devices[0].path"


def test_device_path_below_a_file(root: Path) -> None:
    (root / "file").write_text("x")
    error = error_of('backing = "hdd0"\n' + device_table("hdd0", root / "file" / "sub"), root)
    assert error.key == "devices[0].path"
    assert "not a directory" in str(error)


def test_duplicate_device_name(root: Path) -> None:
    text = (
        'backing = "hdd0"\n'
        + device_table("hdd0", root / "hdd0")
        + device_table("hdd0", root / "ssd0")
    )
    error = error_of(text, root)
    assert error.key == "devices[1].name"
    assert "duplicate device name 'hdd0'" in str(error)


def test_duplicate_device_path(root: Path) -> None:
    text = (
        'backing = "hdd0"\n'
        + device_table("hdd0", root / "hdd0")
        + device_table("ssd0", f"{root}/./hdd0/")
    )
    error = error_of(text, root)
    assert error.key == "devices[1].path"
    assert "also the path of devices[0] (hdd0)" in str(error)


def test_duplicate_device_path_through_a_symlink(root: Path) -> None:
    (root / "alias").symlink_to(root / "hdd0")
    text = (
        'backing = "hdd0"\n'
        + device_table("hdd0", root / "hdd0")
        + device_table("ssd0", root / "alias")
    )
    assert error_of(text, root).key == "devices[1].path"


def test_nested_device_paths(root: Path) -> None:
    (root / "hdd0" / "inner").mkdir()
    text = (
        'backing = "hdd0"\n'
        + device_table("hdd0", root / "hdd0")
        + device_table("ssd0", root / "hdd0" / "inner")
    )
    error = error_of(text, root)
    assert error.key == "devices[1].path"
    assert "must not nest" in str(error)
    assert "inside" in str(error)


def test_nested_device_paths_outer_declared_second(root: Path) -> None:
    (root / "hdd0" / "inner").mkdir()
    text = (
        'backing = "hdd0"\n'
        + device_table("ssd0", root / "hdd0" / "inner")
        + device_table("hdd0", root / "hdd0")
    )
    error = error_of(text, root)
    assert error.key == "devices[1].path"
    assert f"{root / 'hdd0' / 'inner'} (ssd0) is inside {root / 'hdd0'} (hdd0)" in str(error)


def test_bad_capacity_size(root: Path) -> None:
    text = three_devices(root).replace('capacity = "2 GiB"', 'capacity = "2 GX"')
    error = error_of(text, root)
    assert error.key == "devices[1].capacity"
    assert "'2 GX' is not a size" in str(error)


def test_capacity_smaller_than_one_extent(root: Path) -> None:
    text = three_devices(root).replace('capacity = "2 GiB"', 'capacity = "512 KiB"')
    error = error_of(text, root)
    assert error.key == "devices[1].capacity"
    assert "smaller than one extent (1 MiB)" in str(error)


def test_unknown_device_class(root: Path) -> None:
    error = error_of(three_devices(root).replace('class = "ssd"', 'class = "tape"'), root)
    assert error.key == "devices[1].class"
    assert "unknown device class 'tape'; use one of nvme | ssd | hdd" in str(error)


def test_unknown_top_level_key(root: Path) -> None:
    error = error_of("extent_sise = 65536\n" + three_devices(root), root)
    assert error.key == "extent_sise"
    assert "unknown key; did you mean 'extent_size'?" in str(error)
    assert "known keys: backing, cache, devices" in str(error)


def test_unknown_device_key(root: Path) -> None:
    error = error_of(three_devices(root).replace("capacity", "capasity", 1), root)
    assert str(error).startswith(
        "devices[0].capasity: unknown key; did you mean 'capacity'? "
        "known keys: capacity, class, compress, name, path"
    )


@pytest.mark.parametrize("table", ["io", "metadata", "cache", "telemetry"])
def test_unknown_key_in_a_section(root: Path, table: str) -> None:
    error = error_of(three_devices(root) + f"[{table}]\nbogus = 1\n", root)
    assert error.key == f"{table}.bogus"
    assert "unknown key" in str(error)


def test_missing_device_key(root: Path) -> None:
    text = 'backing = "hdd0"\n[[devices]]\nname = "hdd0"\nclass = "hdd"\ncapacity = "1 GiB"\n'
    error = error_of(text, root)
    assert error.key == "devices[0].path"
    assert "missing" in str(error)


@pytest.mark.parametrize(
    ("replace", "by", "key", "fragment"),
    [
        ('backing = "hdd0"', "backing = 3", "backing", "expected a string, got an integer"),
        ('name = "nvme0"', "name = 1", "devices[0].name", "expected a string"),
        ('class = "nvme"', "class = true", "devices[0].class", "expected a string"),
        (
            f'capacity = "1 GiB"\n{"[[devices]]"}',
            'capacity = "1 GiB"\ncompress = "yes"\n[[devices]]',
            "devices[0].compress",
            "expected true or false",
        ),
    ],
)
def test_wrong_types_in_devices(root: Path, replace: str, by: str, key: str, fragment: str) -> None:
    text = three_devices(root).replace(replace, by, 1)
    error = error_of(text, root)
    assert error.key == key
    assert fragment in str(error)


def test_device_path_of_wrong_type(root: Path) -> None:
    text = 'backing = "a"\n[[devices]]\nname = "a"\npath = 5\nclass = "hdd"\ncapacity = "1 GiB"\n'
    error = error_of(text, root)
    assert error.key == "devices[0].path"
    assert "expected a string" in str(error)


@pytest.mark.parametrize(
    ("section", "key", "value", "fragment"),
    [
        ("io", "deadline_s", '"30"', "expected a number, got a string"),
        ("io", "deadline_s", "0", "greater than zero"),
        ("io", "deadline_s", "nan", "not a finite number"),
        ("io", "threads_per_device", "2.5", "expected an integer"),
        ("io", "threads_per_device", "0", "from 1 to 256"),
        ("io", "slow_threshold_ms", "-1", "greater than zero"),
        ("io", "clean_period_s", "-1", "zero or more"),
        ("io", "error_threshold", "0", "at least 1"),
        ("io", "error_threshold", "true", "expected an integer, got a boolean"),
        ("metadata", "flush_interval_s", "0", "greater than zero"),
        ("metadata", "checkpoint_interval_s", "inf", "not a finite number"),
        ("cache", "attr_timeout_s", "-0.5", "zero or more"),
        ("cache", "entry_timeout_s", "[]", "expected a number, got an array"),
        ("cache", "readahead_kib", '"4 MiB"', "expected an integer"),
        ("cache", "writeback_cache", "1", "expected true or false"),
        ("telemetry", "enabled", '"no"', "expected true or false, got a string"),
        ("telemetry", "smart", "0", "expected true or false"),
        ("telemetry", "smart_interval_s", "60", "at most every 600 s (10 minutes)"),
        ("telemetry", "smart_interval_s", "inf", "not a finite number"),
        ("telemetry", "smart_interval_s", '"1h"', "expected a number, got a string"),
    ],
)
def test_wrong_values_in_sections(
    root: Path, section: str, key: str, value: str, fragment: str
) -> None:
    error = error_of(three_devices(root) + f"[{section}]\n{key} = {value}\n", root)
    assert error.key == f"{section}.{key}"
    assert fragment in str(error)


def test_section_that_is_not_a_table(root: Path) -> None:
    error = error_of("io = 5\n" + three_devices(root), root)
    assert error.key == "io"
    assert "expected a table" in str(error)


def test_no_devices_key(root: Path) -> None:
    error = error_of('backing = "hdd0"\n', root)
    assert error.key == "devices"
    assert "no devices" in str(error)


def test_empty_device_list(root: Path) -> None:
    error = error_of('backing = "hdd0"\ndevices = []\n', root)
    assert error.key == "devices"
    assert "no devices" in str(error)


def test_devices_as_a_single_table(root: Path) -> None:
    text = f'backing = "a"\n[devices]\nname = "a"\npath = "{root}"\n'
    error = error_of(text, root)
    assert error.key == "devices"
    assert "array of tables ([[devices]])" in str(error)


def test_device_entry_not_a_table(root: Path) -> None:
    error = error_of('backing = "a"\ndevices = [1]\n', root)
    assert error.key == "devices[0]"


def test_unknown_backing_device(root: Path) -> None:
    error = error_of(three_devices(root, 'backing = "hdd9"\n'), root)
    assert error.key == "backing"
    assert "unknown device 'hdd9'; the devices are nvme0, ssd0, hdd0" in str(error)


def test_missing_backing(root: Path) -> None:
    error = error_of(three_devices(root, ""), root)
    assert error.key == "backing"
    assert "missing" in str(error)


@pytest.mark.parametrize("size", ['"3 MiB"', "100000", '"96 KiB"'])
def test_extent_size_not_a_power_of_two(root: Path, size: str) -> None:
    error = error_of(f"extent_size = {size}\n" + three_devices(root), root)
    assert error.key == "extent_size"
    assert "not a power of two" in str(error)


@pytest.mark.parametrize("size", ['"32 KiB"', '"128 MiB"', "4096"])
def test_extent_size_out_of_range(root: Path, size: str) -> None:
    error = error_of(f"extent_size = {size}\n" + three_devices(root), root)
    assert error.key == "extent_size"
    assert "must be from 64 KiB to 64 MiB" in str(error)


def test_extent_size_bad_size(root: Path) -> None:
    error = error_of('extent_size = "big"\n' + three_devices(root), root)
    assert error.key == "extent_size"
    assert "not a size" in str(error)


@pytest.mark.parametrize("name", ["", "has space", "a/b", "x" * 65, ".", "..", "dé", "a:b"])
def test_invalid_device_name(root: Path, name: str) -> None:
    text = f'backing = "{name}"\n' + device_table(name, root / "hdd0")
    error = error_of(text, root)
    assert error.key == "devices[0].name"
    assert "valid device name" in str(error) or "must not be empty" in str(error)


@pytest.mark.parametrize("name", ["a", "nvme-0.fast_1", "X" * 64])
def test_valid_device_names(root: Path, name: str) -> None:
    config = parse_config(f'backing = "{name}"\n' + device_table(name, root / "hdd0"), source="<t>")
    assert config.backing == name


def test_state_dir_deep_inside_a_device(root: Path) -> None:
    error = error_of(f'state_dir = "{root / "ssd0" / "a" / "b"}"\n' + three_devices(root), root)
    assert error.key == "state_dir"
    assert "not directly in its root" in str(error)


def test_state_dir_containing_a_device(root: Path) -> None:
    error = error_of(f'state_dir = "{root}"\n' + three_devices(root), root)
    assert error.key == "state_dir"
    assert "contains device nvme0" in str(error)


def test_state_dir_equal_to_a_device(root: Path) -> None:
    error = error_of(f'state_dir = "{root / "ssd0"}"\n' + three_devices(root), root)
    assert error.key == "state_dir"


@pytest.mark.parametrize("name", ["extents", "shadowfs.label", "lost+found"])
def test_state_dir_with_a_reserved_name(root: Path, name: str) -> None:
    error = error_of(f'state_dir = "{root / "hdd0" / name}"\n' + three_devices(root), root)
    assert error.key == "state_dir"
    assert "reserved" in str(error)


def test_state_dir_without_a_parent(root: Path) -> None:
    error = error_of(f'state_dir = "{root / "no" / "state"}"\n' + three_devices(root), root)
    assert error.key == "state_dir"
    assert "neither does its parent" in str(error)


def test_state_dir_that_is_a_file(root: Path) -> None:
    (root / "statefile").write_text("")
    error = error_of(f'state_dir = "{root / "statefile"}"\n' + three_devices(root), root)
    assert error.key == "state_dir"
    assert "not a directory" in str(error)


def test_bad_log_level(root: Path) -> None:
    error = error_of('log_level = "LOUD"\n' + three_devices(root), root)
    assert error.key == "log_level"
    assert "DEBUG, INFO, WARNING, ERROR, CRITICAL" in str(error)


def test_invalid_toml_names_the_line(root: Path) -> None:
    error = error_of(three_devices(root) + "oops here\n", root)
    assert error.key == str(root / "shadowfs.toml")
    assert "not valid TOML" in str(error)
    assert "line 17" in str(error)


def test_load_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.toml")
    assert str(info.value) == f"{tmp_path / 'absent.toml'}: config file not found"


def test_load_config_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert "is a directory" in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may read a mode 0000 file")
def test_load_config_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("")
    path.chmod(0)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "cannot read" in str(info.value)


def test_load_config_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(b'backing = "\xff"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "not UTF-8" in str(info.value)


def test_load_config_bad_toml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('backing = "a"\n\n[[devices]\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: not valid TOML:")
    assert "line 3" in str(info.value)


@pytest.mark.parametrize(
    "mistake",
    [
        lambda r: three_devices(r).replace('capacity = "2 GiB"', 'capacity = "2 GX"'),
        lambda r: three_devices(r, 'backing = "nope"\n'),
        lambda r: (
            f'state_dir = "{r / "hdd0" / "new-state"}"\n'
            + three_devices(r).replace(str(r / "ssd0"), str(r / "missing"))
        ),
        lambda r: "[io]\nfoo = 1\n" + three_devices(r),
        lambda r: "extent_size = 3\n" + three_devices(r),
    ],
)
def test_a_failing_parse_creates_nothing(root: Path, mistake) -> None:
    before = snapshot(root)
    with pytest.raises(ConfigError):
        parse_config(mistake(root), source=str(root / "shadowfs.toml"))
    assert snapshot(root) == before


def test_a_good_parse_creates_nothing_either(root: Path) -> None:
    before = snapshot(root)
    parse_config(three_devices(root), source=str(root / "shadowfs.toml"))
    assert snapshot(root) == before
    assert not (root / "hdd0" / ".shadowfs-state").exists()


# --- the embedded demo config --------------------------------------------------------------


def test_demo_config(tmp_path: Path) -> None:
    state_root = tmp_path / "state"
    config = demo_config(state_root)
    assert config.source == EMBEDDED_SOURCE
    assert [(d.name, d.device_class, d.capacity) for d in config.devices] == [
        ("nvme0", DeviceClass.NVME, GiB),
        ("ssd0", DeviceClass.SSD, 2 * GiB),
        ("hdd0", DeviceClass.HDD, 4 * GiB),
    ]
    assert config.backing == "hdd0"
    for device in config.devices:
        assert device.path == state_root / "devices" / device.name
        assert device.path.is_dir()
    assert config.state_dir == state_root / "devices" / "hdd0" / ".shadowfs-state"
    assert not config.state_dir.exists()
    assert demo_config(state_root) == config  # idempotent


def test_demo_config_text_has_a_root_placeholder() -> None:
    assert "{root}" in DEMO_CONFIG_TOML


def test_demo_config_with_awkward_characters_in_the_root(tmp_path: Path) -> None:
    state_root = tmp_path / 'we"ird\\ root'
    config = demo_config(state_root)
    assert config.device("hdd0").path == state_root / "devices" / "hdd0"
