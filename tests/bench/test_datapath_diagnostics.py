"""The data-path harness's environment control and diagnostics, without fio or a mount:
DAMON pageout pausing and free page reporting holding against fake sysfs trees, the ceiling
sections of the report (write, cold and hot read, the copy layout) and their JSON round trip,
the container reader, the writeback passthrough surviving the kernel's calls on an unlinked
inode, and the threaded write-ceiling daemons storing the right bytes (their Operations driven
directly).
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pyfuse3
import pytest

from bench import copy_layout, damon, page_reporting
from bench.datapath import Run, Sample, load
from bench.datapath_report import render
from bench.fio_jobs import FioResult, MiB
from bench.passthrough import Passthrough
from bench.write_ceiling import ThreadedWriteback

pytestmark = pytest.mark.timeout(10)


def _kdamond(admin: Path, index: int, state: str, actions: list[str], aggr_us: int) -> Path:
    path = admin / "kdamonds" / str(index)
    context = path / "contexts" / "0"
    (context / "monitoring_attrs" / "intervals").mkdir(parents=True)
    (context / "monitoring_attrs" / "intervals" / "aggr_us").write_text(f"{aggr_us}\n")
    for number, action in enumerate(actions):
        scheme = context / "schemes" / str(number)
        (scheme / "access_pattern" / "age").mkdir(parents=True)
        (scheme / "action").write_text(f"{action}\n")
        (scheme / "access_pattern" / "age" / "min").write_text("6\n")
    (path / "state").write_text(f"{state}\n")
    return path / "state"


@pytest.fixture
def admin(tmp_path: Path) -> Path:
    """kdamond 0: on, pageout; 1: off, pageout; 2: on, stat only; 3: on, stat and pageout."""
    admin = tmp_path / "damon" / "admin"
    _kdamond(admin, 0, "on", ["pageout"], 5_000_000)
    _kdamond(admin, 1, "off", ["pageout"], 5_000_000)
    _kdamond(admin, 2, "on", ["stat"], 5_000_000)
    _kdamond(admin, 3, "on", ["stat", "pageout"], 100_000)
    (admin / "kdamonds" / "nr_kdamonds").write_text("4\n")
    return admin


def _states(admin: Path) -> list[str]:
    return [(admin / "kdamonds" / str(i) / "state").read_text().strip() for i in range(4)]


def test_damon_pauses_only_running_pageout_kdamonds_and_restores(admin: Path) -> None:
    with damon.paused_pageout(admin, root=True) as control:
        assert _states(admin) == ["off", "off", "on", "off"]
        assert [k.index for k in control.paused] == ["0", "3"]
    assert _states(admin) == ["on", "off", "on", "on"]
    assert control.note == (
        "kdamond 0 (pageout after 30 s idle), kdamond 3 (pageout after 0.6 s idle)"
        " paused during the run"
    )


def test_damon_restores_on_an_exception_and_on_system_exit(admin: Path) -> None:
    for error in (RuntimeError("fio died"), SystemExit(143)):
        with pytest.raises(type(error)):
            with damon.paused_pageout(admin, root=True):
                assert _states(admin)[0] == "off"
                raise error
        assert _states(admin) == ["on", "off", "on", "on"]


def test_damon_keep_not_root_and_missing_tree_touch_nothing(admin: Path, tmp_path: Path) -> None:
    with damon.paused_pageout(admin, keep=True, root=True) as control:
        assert _states(admin) == ["on", "off", "on", "on"]
    assert control.note.endswith("left running (--keep-damon)")
    with damon.paused_pageout(admin, root=False) as control:
        assert _states(admin) == ["on", "off", "on", "on"]
    assert control.note.endswith("left running (not root)")
    with damon.paused_pageout(tmp_path / "nothing", root=True) as control:
        pass
    assert control.note.startswith("no DAMON sysfs")
    (admin / "kdamonds" / "0" / "state").write_text("off\n")
    (admin / "kdamonds" / "3" / "state").write_text("off\n")
    with damon.paused_pageout(admin, root=True) as control:
        pass
    assert control.note == "none running" and _states(admin) == ["off", "off", "on", "off"]


def _reporting(tmp_path: Path, order: str) -> Path:
    parameters = tmp_path / "page_reporting" / "parameters"
    parameters.mkdir(parents=True)
    (parameters / "page_reporting_order").write_text(f"{order}\n")
    return parameters


def _order(parameters: Path) -> str:
    return (parameters / "page_reporting_order").read_text().strip()


def test_page_reporting_held_for_the_run_and_restored_even_on_system_exit(tmp_path: Path) -> None:
    parameters = _reporting(tmp_path, "9")
    with page_reporting.held_reporting(parameters, root=True, resident=0) as control:
        assert _order(parameters) == str(page_reporting.HELD_ORDER)
    assert _order(parameters) == "9"
    assert control.note.startswith("page_reporting_order 9 held at 11 during the run")
    with pytest.raises(SystemExit):
        with page_reporting.held_reporting(parameters, root=True, resident=0):
            assert _order(parameters) == "11"
            raise SystemExit(143)
    assert _order(parameters) == "9"


def test_page_reporting_keep_not_root_already_off_and_missing_touch_nothing(
    tmp_path: Path,
) -> None:
    parameters = _reporting(tmp_path, "9")
    for keep, root, why in ((True, True, "--keep-page-reporting"), (False, False, "not root")):
        with page_reporting.held_reporting(parameters, keep=keep, root=root) as control:
            assert _order(parameters) == "9"
        assert control.note == f"page_reporting_order 9 left on ({why})"
    (parameters / "page_reporting_order").write_text("11\n")
    with page_reporting.held_reporting(parameters, root=True) as control:
        pass
    assert control.note == "page_reporting_order 11: reports nothing already"
    with page_reporting.held_reporting(tmp_path / "none", root=True) as control:
        pass
    assert control.note.startswith("no free page reporting")


def test_make_resident_writes_the_memory_and_frees_it() -> None:
    assert page_reporting.make_resident(page_reporting.CHUNK) > 0
    assert page_reporting.make_resident(0) < 0.1


def _sample(
    target: str, round_: int, mib_s: float, cpu: float | None = None, job: str = "seqwrite-fsync"
) -> Sample:
    size = 256 * MiB
    result = FioResult(mib_s * MiB, mib_s, 1000.0, size, int(size / (mib_s * MiB) * 1000))
    return Sample(target, job, round_, result, daemon_cpu_s=cpu)


def _write_run() -> Run:
    run = Run("python -m bench.datapath", 256 * MiB, 5, 2, ["seqwrite-fsync"], ["native"])
    run.targets = ["native", "shadowfs"]
    run.machine["DAMON pageout"] = "kdamond 0 (pageout after 30 s idle) paused during the run"
    for round_, (native, shadow) in enumerate([(1000.0, 250.0), (1200.0, 310.0)]):
        run.samples += [_sample("native", round_, native), _sample("shadowfs", round_, shadow, 1)]
    rows = [(900, 300, 200, 250, 500), (1100, 400, 240, 330, 700)]
    for round_, (native, passthrough, threads, direct, null) in enumerate(rows):
        run.write_probe += [
            _sample("native", round_, native),
            _sample("passthrough-writeback", round_, passthrough, 0.25),
            _sample("writeback-4threads", round_, threads, 0.5),
            _sample("writeback-4threads-direct", round_, direct, 0.25),
            _sample("nullfs-writeback", round_, null, 0.125),
        ]
    run.write_probe.append(Sample("nullfs-writeback", "seqwrite-fsync", 2, error="fio died"))
    return run


def _read_run() -> Run:
    run = Run("python -m bench.datapath", 256 * MiB, 5, 2, ["seqread-cold"], ["native"])
    run.targets = ["native", "shadowfs"]
    for round_, (native, shadow) in enumerate([(1000.0, 500.0), (1400.0, 600.0)]):
        run.samples += [
            _sample("native", round_, native, job="seqread-cold"),
            _sample("shadowfs", round_, shadow, 0.5, job="seqread-cold"),
        ]
    for round_, (native, passthrough, null) in enumerate([(800, 400, 1600), (1200, 500, 2000)]):
        run.read_probe += [
            _sample("native", round_, native, job="seqread-cold"),
            _sample("passthrough-writeback", round_, passthrough, 0.25, job="seqread-cold"),
            _sample("nullfs-pagecache", round_, null, 0.125, job="seqread-cold"),
        ]
    return run


def test_report_renders_the_read_ceiling_and_the_verdict_names_it() -> None:
    report = render(_read_run(), "src")
    section = report.split("## Sequential cold read through a FUSE page cache")[1]
    assert "| native | 1,000 MiB/s | 1.00x | 800 MiB/s, 1,200 MiB/s | – |" in section
    assert "| passthrough, page-cache mode | 450 MiB/s | 0.45x |" in section
    assert "| nullfs, page-cache mode | 1,800 MiB/s | 1.80x |" in section
    assert "0.45x here, against shadowfs's 0.46x in the main run" in section
    assert (
        "| sequential 1 MiB read, cold >= 0.9x native | 0.46x | – | – | **missed** (ceiling "
        "0.45x: the page-cache passthrough's ratio in the read diagnostic below) |"
    ) in report


def test_shadowfs_in_the_read_probe_is_named_beside_the_ceilings() -> None:
    run = _read_run()
    assert "| shadowfs |" not in render(run, "src").split("## Sequential cold read")[1]
    run.jobs.append("seqread-hot")
    for round_, (cold, hot) in enumerate([(380.0, 8000.0), (460.0, 9000.0)]):
        run.read_probe += [
            _sample("shadowfs", round_, cold, 0.5, job="seqread-cold"),
            _sample("shadowfs", round_, hot, 0.0, job="seqread-hot"),
            _sample("native", round_, 10000.0, job="seqread-hot"),
            _sample("nullfs-pagecache", round_, 8600.0, 0.0, job="seqread-hot"),
        ]
        run.samples += [
            _sample("native", round_, 10000.0, job="seqread-hot"),
            _sample("shadowfs", round_, 7900.0, 0.0, job="seqread-hot"),
        ]
    report = render(run, "src")
    section = report.split("## Sequential cold read through a FUSE page cache")[1]
    assert "| shadowfs | 420 MiB/s | 0.42x | 380 MiB/s, 460 MiB/s |" in section
    assert "0.45x here, against shadowfs's 0.46x in the main run, where shadowfs reached " in (
        section
    )
    assert (
        "(ceiling 0.45x: the page-cache passthrough's ratio in the read diagnostic below, where "
        "shadowfs reached 0.42x in the same rounds)"
    ) in report
    assert "| shadowfs | 8,500 MiB/s | 0.85x |" in section.split("`seqread-hot` over")[1]
    assert (
        "no daemon involved, in the read diagnostic below, where shadowfs reached 0.85x in the "
        "same rounds)"
    ) in report


def test_hot_read_ceiling_is_the_page_cache_null_fs_and_folio_sizes_are_shown() -> None:
    run = _read_run()
    run.jobs.append("seqread-hot")
    for round_, (native, shadow, null) in enumerate([(10000.0, 8500.0, 8600.0)] * 2):
        run.samples += [
            _sample("native", round_, native, job="seqread-hot"),
            _sample("shadowfs", round_, shadow, 0.0, job="seqread-hot"),
        ]
        run.read_probe += [
            _sample("native", round_, native, job="seqread-hot"),
            _sample("nullfs-pagecache", round_, null, 0.0, job="seqread-hot"),
        ]
    run.target_facts = {
        "native": {"folios": "21.6 pages per folio (65,536 pages)"},
        "shadowfs": {"folios": "1.0 pages per folio (65,536 pages)"},
    }
    report = render(run, "src")
    assert (
        "| sequential 1 MiB read, hot >= 0.9x native | 0.85x | – | – | **missed** (ceiling "
        "0.86x: the null fs's hot read through its page cache, no daemon involved, in the read "
        "diagnostic below) |"
    ) in report
    section = report.split("`seqread-hot` over the same targets")[1]
    assert "| nullfs, page-cache mode | 8,600 MiB/s | 0.86x |" in section
    assert "native: 21.6 pages per folio (65,536 pages); shadowfs: 1.0 pages per folio" in section
    assert "| 1.0 pages per folio (65,536 pages) |" in report  # the targets table


def test_layout_probe_section_and_round_trip(tmp_path: Path) -> None:
    run = _read_run()
    for round_, (native, copies) in enumerate([(1500.0, 1200.0), (1700.0, 1400.0)]):
        run.layout_probe += [
            _sample("native", round_, native, job="seqread-cold"),
            _sample("shadowfs-copies", round_, copies, job="seqread-cold"),
        ]
    report = render(run, "src")
    section = report.split("## The data file read straight off the disk (diagnostic)")[1]
    assert "| shadowfs's container | 1,300 MiB/s | 0.81x | 1,200 MiB/s, 1,400 MiB/s |" in section
    assert "came off the disk at 0.81x of native's file" in section
    assert "reached 0.46x in the main run" in section
    raw = tmp_path / "run.json"
    raw.write_text(json.dumps(asdict(run)))
    assert load(raw) == run


def test_copy_layout_reads_the_container_of_the_data_file(tmp_path: Path) -> None:
    path = copy_layout.container_path(tmp_path, 0x1234)
    assert path.relative_to(tmp_path).as_posix() == "extents/34/1234-0"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x" * (3 * MiB + 5))
    assert copy_layout.read_file(path) > 0
    assert copy_layout.read_through(path) == 3 * MiB + 5
    assert copy_layout.read_through(path, MiB) == MiB  # the harness's warm-up stops there
    with pytest.raises(FileNotFoundError):
        copy_layout.read_file(tmp_path / "missing")


def test_report_renders_the_write_ceiling_and_the_verdict_names_it() -> None:
    report = render(_write_run(), "src")
    section = report.split("## Sequential write ending in fsync through the writeback cache")[1]
    assert "| native | 1,000 MiB/s | 1.00x | 900 MiB/s, 1,100 MiB/s | – |" in section
    # 350/1000; CPU 0.25 s per 0.25 GiB, over 300 or 400 MiB at 256 MiB per run.
    assert "| passthrough `--writeback` | 350 MiB/s | 0.35x | 300 MiB/s, 400 MiB/s | 1.00 (" in (
        section
    )
    assert "| nullfs `--writeback` | 600 MiB/s | 0.60x | 500 MiB/s, 700 MiB/s (1 failed) |" in (
        section
    )
    assert "| passthrough `--writeback`, writes in 4 threads | 220 MiB/s | 0.22x |" in section
    assert "| passthrough `--writeback`, writes in 4 threads, O_DIRECT | 290 MiB/s | 0.29x |" in (
        section
    )
    assert "the best of them (passthrough `--writeback`) reached 0.35x" in section
    assert "shadowfs reached 0.25x in the main run" in section
    assert (
        "| sequential 1 MiB write ending in fsync >= 0.8x native | 0.25x | – | – | **missed** "
        "(transport ceiling 0.60x: the null fs with the writeback cache that the issue asks "
        "for, nothing stored, in the write diagnostic below) (ceiling 0.35x: the best storing "
        "daemon's ratio in the write diagnostic below, passthrough `--writeback`) |"
    ) in report
    assert "| DAMON pageout | kdamond 0 (pageout after 30 s idle) paused during the run |" in report


def test_a_ceiling_above_the_goal_adds_nothing_to_the_verdict() -> None:
    run = _write_run()
    for sample in run.write_probe:  # any storing daemon above the goal lifts the ceiling
        if sample.target in ("writeback-4threads-direct", "nullfs-writeback") and sample.result:
            sample.result = FioResult(1000.0 * MiB, 1, 1, sample.result.io_bytes, 1000)
    report = render(run, "src")
    assert "| 0.25x | – | – | **missed** |" in report
    assert "the best of them (passthrough `--writeback`, writes in 4 threads, O_DIRECT)" in report


def test_saved_run_round_trips_with_its_probes(tmp_path: Path) -> None:
    run = _write_run()
    run.read_probe = _read_run().read_probe
    raw = tmp_path / "run.json"
    raw.write_text(json.dumps(asdict(run)))
    loaded = load(raw)
    assert loaded == run
    assert render(loaded, "src") == render(run, "src")
    record = json.loads(raw.read_text())
    del record["write_probe"], record["read_probe"]  # runs saved before the probes still load
    raw.write_text(json.dumps(record))
    assert load(raw).write_probe == [] and load(raw).read_probe == []


def _fields(**updates: bool) -> SimpleNamespace:
    names = ("atime", "mtime", "ctime", "mode", "uid", "gid", "size")
    return SimpleNamespace(**{f"update_{name}": updates.get(name, False) for name in names})


async def test_writeback_passthrough_survives_setattr_and_getattr_after_unlink(
    tmp_path: Path,
) -> None:
    ops = Passthrough(str(tmp_path), writeback=True)
    assert ops.enable_writeback_cache
    info, attr = await ops.create(pyfuse3.ROOT_INODE, b"f", 0o644, os.O_WRONLY, None)
    assert not info.direct_io and info.keep_cache
    inode, fh = attr.st_ino, info.fh
    assert await ops.write(fh, 0, b"x" * 8192) == 8192
    assert await ops.read(fh, 0, 4) == b"xxxx"  # write-only opens become read-write
    await ops.unlink(pyfuse3.ROOT_INODE, b"f", None)
    assert not (tmp_path / "f").exists()

    # The kernel flushes mtime with the open fh, and may ask for attributes, after the unlink.
    times = pyfuse3.EntryAttributes()
    times.st_mtime_ns = 1_000_000_000_123
    got = await ops.setattr(inode, times, _fields(mtime=True), fh, None)
    assert got.st_mtime_ns == 1_000_000_000_123 and got.st_nlink == 0
    size = pyfuse3.EntryAttributes()
    size.st_size = 4096
    assert (await ops.setattr(inode, size, _fields(size=True), fh, None)).st_size == 4096
    assert (await ops.getattr(inode)).st_size == 4096
    assert await ops.read(fh, 0, 8192) == b"x" * 4096

    # Without an fh, and once the file is closed, the inode is simply gone: ENOENT, no KeyError.
    async def no_fh() -> object:
        return await ops.setattr(inode, times, _fields(mtime=True), None, None)

    async def closed() -> object:
        await ops.release(fh)
        return await ops.getattr(inode)

    for call in (
        no_fh,
        closed,
        lambda: ops.open(inode, os.O_RDONLY, None),
        lambda: ops.lookup(pyfuse3.ROOT_INODE, b"f"),
    ):
        with pytest.raises(pyfuse3.FUSEError) as error:
            await call()
        assert error.value.errno == errno.ENOENT

    # A new file under the old name is a new inode.
    info, attr = await ops.create(pyfuse3.ROOT_INODE, b"f", 0o644, os.O_RDWR, None)
    assert attr.st_ino != inode and attr.st_size == 0
    await ops.release(info.fh)


async def test_default_passthrough_still_opens_direct_io(tmp_path: Path) -> None:
    ops = Passthrough(str(tmp_path))
    assert not ops.enable_writeback_cache
    info, attr = await ops.create(pyfuse3.ROOT_INODE, b"g", 0o644, os.O_WRONLY, None)
    assert info.direct_io
    with pytest.raises(pyfuse3.FUSEError) as error:
        await ops.read(info.fh, 0, 1)  # write-only stays write-only without the writeback cache
    assert error.value.errno == errno.EBADF
    await ops.release(info.fh)
    assert (await ops.lookup(pyfuse3.ROOT_INODE, b"g")).st_ino == attr.st_ino


@pytest.mark.parametrize("direct", [False, True])
async def test_threaded_write_ceiling_daemons_store_the_bytes(tmp_path: Path, direct: bool) -> None:
    ops = ThreadedWriteback(str(tmp_path), threads=2, direct=direct)
    assert ops.enable_writeback_cache
    info, _ = await ops.create(pyfuse3.ROOT_INODE, b"w", 0o644, os.O_WRONLY, None)
    model = bytearray(3 * MiB)
    for offset, data in [
        (0, os.urandom(MiB)),  # aligned: O_DIRECT when asked for
        (MiB + 100, os.urandom(5000)),  # unaligned: through the page cache either way
        (2 * MiB, os.urandom(MiB)),
        (4096, os.urandom(8192)),  # over what an O_DIRECT write put on the disk
    ]:
        assert await ops.write(info.fh, offset, data) == len(data)
        model[offset : offset + len(data)] = data
    await ops.fsync(info.fh, False)
    await ops.release(info.fh)
    assert (tmp_path / "w").read_bytes() == bytes(model)
    assert not ops._direct_fds  # the O_DIRECT descriptor went with the file
