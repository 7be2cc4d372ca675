"""tiers.kernel_stats against a fake /sys tree, plus the real one when it has a block device."""

import math
import os
from pathlib import Path

import pytest

from tiers.kernel_stats import (
    DiskStat,
    KernelStatsCollector,
    difference,
    parse_stat,
    resolve_path,
    resolve_st_dev,
)

STAT_LINE = (
    "39007 11452 3749290 13749 9278 49282 3605624 8270 3 6536 22445 5336 42 337600 384 948 41"
)


def make_sys(root: Path) -> Path:
    """A /sys with vda (+ partition vda1, vda2) and loop0 backed by a file."""
    vda = root / "devices/pci0000:00/virtio1/block/vda"
    for part in ("vda1", "vda2"):
        (vda / part).mkdir(parents=True)
        (vda / part / "partition").write_text("1\n")
        (vda / part / "stat").write_text(STAT_LINE)
    (vda / "stat").write_text(STAT_LINE)
    loop = root / "devices/virtual/block/loop0"
    (loop / "loop").mkdir(parents=True)
    (loop / "loop" / "backing_file").write_text("/var/images/hdd0.img\n")
    (loop / "stat").write_text(STAT_LINE)
    links = root / "dev/block"
    links.mkdir(parents=True)
    os.symlink(vda, links / "254:0")
    os.symlink(vda / "vda1", links / "254:1")
    os.symlink(vda / "vda2", links / "254:2")
    os.symlink(loop, links / "7:0")
    return root


def test_parse_stat_all_and_old_kernel_fields() -> None:
    full = parse_stat(STAT_LINE)
    assert full.read_ios == 39007 and full.in_flight == 3 and full.flush_ticks_ms == 41
    old = parse_stat(" ".join(STAT_LINE.split()[:11]))
    assert old.time_in_queue_ms == 22445 and old.discard_ios == 0
    with pytest.raises(ValueError):
        parse_stat("1 2 3")


def test_resolve_partition_loop_and_virtual(tmp_path: Path) -> None:
    root = str(make_sys(tmp_path))
    part = resolve_st_dev(os.makedev(254, 1), root).block_device
    assert part is not None and part.is_partition and part.whole_disk == "vda"
    disk = resolve_st_dev(os.makedev(254, 0), root).block_device
    assert disk is not None and not disk.is_partition and disk.whole_disk == "vda"
    loop = resolve_st_dev(os.makedev(7, 0), root).block_device
    assert loop is not None and loop.loop_backing_file == "/var/images/hdd0.img"
    overlay = resolve_st_dev(os.makedev(0, 52), root)
    assert not overlay.available and "not a block device" in overlay.reason
    missing = resolve_st_dev(os.makedev(8, 16), root)
    assert not missing.available


def test_difference_rates_and_reset() -> None:
    before = DiskStat(
        read_ios=100,
        read_sectors=800,
        read_ticks_ms=50,
        io_ticks_ms=1000,
        time_in_queue_ms=2000,
        in_flight=1,
    )
    after = DiskStat(
        read_ios=300,
        read_sectors=2400,
        read_ticks_ms=250,
        io_ticks_ms=1500,
        time_in_queue_ms=3000,
        in_flight=4,
    )
    sample = difference("ssd0", before, after, 2.0, 12.0)
    assert sample.read_iops == 100.0
    assert sample.read_bytes_per_s == 1600 * 512 / 2
    assert sample.read_await_ms == 1.0
    assert sample.utilisation == 0.25 and sample.avg_queue_depth == 0.5
    assert sample.in_flight == 4 and not sample.reset
    assert math.isnan(sample.write_await_ms)
    # counters went down: device re-created; count from the new values, never negative
    restarted = DiskStat(read_ios=10, read_sectors=80, io_ticks_ms=100)
    reset = difference("ssd0", after, restarted, 2.0, 14.0)
    assert reset.reset and reset.read_iops == 5.0 and reset.utilisation == 0.05


def test_collector_primes_then_differences_and_flags_sharing(tmp_path: Path, monkeypatch) -> None:
    root = make_sys(tmp_path / "sys")
    dirs = {}
    for name in ("ssd0", "ssd1", "hdd0", "ram0"):
        dirs[name] = str(tmp_path / name)
        os.mkdir(dirs[name])
    fake_dev = {"ssd0": (254, 1), "ssd1": (254, 2), "hdd0": (7, 0), "ram0": (0, 40)}
    real_stat = os.stat

    def fake_stat(path, *args, **kwargs):
        for name, (major, minor) in fake_dev.items():
            if str(path) == dirs[name]:
                result = real_stat(path)
                values = list(result)
                values[2] = os.makedev(major, minor)  # st_dev
                return os.stat_result(values)
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", fake_stat)
    collector = KernelStatsCollector(dirs, sys_root=str(root))
    assert collector.shared_block_devices() == {"vda": ["ssd0", "ssd1"]}
    assert not collector.resolution("ram0").available
    first = collector.sample(10.0)
    assert all(value is None for value in first.values())
    stat_file = root / "devices/pci0000:00/virtio1/block/vda/vda1/stat"
    fields = STAT_LINE.split()
    fields[0] = str(int(fields[0]) + 500)
    stat_file.write_text(" ".join(fields))
    second = collector.sample(15.0)
    assert second["ssd0"] is not None and second["ssd0"].read_iops == 100.0
    assert second["ssd1"] is not None and second["ssd1"].read_iops == 0.0
    assert second["ram0"] is None


def test_real_system_resolution_does_not_raise() -> None:
    # Whatever this machine's root is (ext4 on a disk, overlay in a container), the answer
    # is a resolution, never an exception.
    resolution = resolve_path("/")
    if resolution.available:
        assert resolution.block_device is not None
        assert Path(resolution.block_device.sys_path, "stat").exists()
    else:
        assert resolution.reason
