"""Tests for shadowfs.ownership: labels, every claim rule, and the state lock across processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shadowfs.config import Config, parse_config
from shadowfs.ownership import (
    EXTENTS_DIR,
    FORMAT_VERSION,
    LABEL_FILE,
    STATE_MARKERS,
    ClaimResult,
    FsIdentity,
    Label,
    LockError,
    OwnershipError,
    StateLock,
    claim_devices,
    device_markers,
    read_label,
    write_label,
)

MiB = 1024 * 1024
NAMES = ("nvme0", "ssd0", "hdd0")


def make_config(root: Path, *, head: str = "", devices: tuple[str, ...] = NAMES) -> Config:
    text = 'backing = "hdd0"\n' + head
    for name in devices:
        text += (
            f'[[devices]]\nname = "{name}"\npath = "{root / name}"\nclass = "{name[:-1][:4]}"\n'
            'capacity = "1 GiB"\n'
        )
    return parse_config(text, source=str(root / "shadowfs.toml"))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for name in NAMES:
        (tmp_path / name).mkdir()
    return tmp_path


@pytest.fixture
def config(root: Path) -> Config:
    return make_config(root)


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every entry under root: mode, mtime and (for files) content.  Byte-for-byte."""
    entries: dict[str, tuple[int, int, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            content = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
            entries[str(path.relative_to(root))] = (st.st_mode, st.st_mtime_ns, content)
    st = root.lstat()
    entries["."] = (st.st_mode, st.st_mtime_ns, b"")
    return entries


def refused(
    root: Path, config: Config, stored: FsIdentity | None, known: frozenset[str] = frozenset()
) -> str:
    """claim_devices must refuse and leave every directory exactly as it was."""
    before = snapshot(root)
    with pytest.raises(OwnershipError) as info:
        claim_devices(config, stored, known)
    assert snapshot(root) == before
    message = str(info.value)
    assert "\n" not in message
    return message


def new_filesystem(config: Config) -> ClaimResult:
    return claim_devices(config, None, frozenset())


# --- labels ----------------------------------------------------------------------------------


def a_label(**changes: object) -> Label:
    fields: dict[str, object] = {
        "fs_uuid": str(uuid.uuid4()),
        "extent_size": MiB,
        "device_name": "ssd0",
        "device_names": NAMES,
        "created_ns": 123,
    }
    fields.update(changes)
    return Label(**fields)  # type: ignore[arg-type]


def test_no_label_reads_as_none(tmp_path: Path) -> None:
    assert read_label(tmp_path) is None


def test_label_round_trip_leaves_no_temp_file(tmp_path: Path) -> None:
    label = a_label()
    write_label(tmp_path, label)
    assert read_label(tmp_path) == label
    assert os.listdir(tmp_path) == [LABEL_FILE]
    document = json.loads((tmp_path / LABEL_FILE).read_text())
    assert document["fs_uuid"] == label.fs_uuid
    assert document["device_names"] == list(NAMES)
    assert document["format_version"] == FORMAT_VERSION == 2


def test_write_label_is_temp_fsync_rename_fsync_dir(tmp_path: Path, monkeypatch) -> None:
    from shadowfs import ownership

    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        events.append(f"fsync {Path(target).name}")
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path) -> None:
        events.append(f"rename {Path(src).name} {Path(dst).name}")
        real_replace(src, dst)

    monkeypatch.setattr(ownership.os, "fsync", fsync)
    monkeypatch.setattr(ownership.os, "replace", replace)
    write_label(tmp_path, a_label())
    assert events == [
        f"fsync .{LABEL_FILE}.tmp",
        f"rename .{LABEL_FILE}.tmp {LABEL_FILE}",
        f"fsync {tmp_path.name}",
    ]


def test_write_label_replaces_the_old_one(tmp_path: Path) -> None:
    write_label(tmp_path, a_label(device_name="a"))
    write_label(tmp_path, a_label(device_name="b"))
    label = read_label(tmp_path)
    assert label is not None and label.device_name == "b"


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"fs_uuid": "x"}', "no format_version"),
        (b"", "not JSON"),
    ],
)
def test_corrupt_label(tmp_path: Path, content: bytes, fragment: str) -> None:
    (tmp_path / LABEL_FILE).write_bytes(content)
    with pytest.raises(OwnershipError) as info:
        read_label(tmp_path)
    assert str(tmp_path / LABEL_FILE) in str(info.value)
    assert "corrupt" in str(info.value)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("extent_size", "1 MiB", "extent_size is not an int"),
        ("extent_size", True, "extent_size is not an int"),
        ("extent_size", 0, "not positive"),
        ("fs_uuid", "not-a-uuid", "not a UUID"),
        ("device_names", "nvme0", "device_names is not a list"),
        ("device_names", [1, 2], "something other than names"),
        ("surprise", 1, "unknown fields surprise"),
    ],
)
def test_label_with_bad_fields(tmp_path: Path, field: str, value: object, fragment: str) -> None:
    write_label(tmp_path, a_label())
    document = json.loads((tmp_path / LABEL_FILE).read_text())
    document[field] = value
    (tmp_path / LABEL_FILE).write_text(json.dumps(document))
    with pytest.raises(OwnershipError) as info:
        read_label(tmp_path)
    assert fragment in str(info.value)


def test_label_from_a_newer_shadowfs(tmp_path: Path) -> None:
    write_label(tmp_path, a_label(format_version=FORMAT_VERSION + 1))
    with pytest.raises(OwnershipError) as info:
        read_label(tmp_path)
    assert "upgrade shadowfs" in str(info.value)


def test_label_from_the_one_file_per_copy_format_is_refused_naming_it(tmp_path: Path) -> None:
    write_label(tmp_path, a_label(format_version=1))
    with pytest.raises(OwnershipError) as info:
        read_label(tmp_path)
    assert "format version 1: that device stores one file per extent copy" in str(info.value)


def test_state_markers(config: Config, root: Path) -> None:
    assert {LABEL_FILE, EXTENTS_DIR} == STATE_MARKERS
    assert device_markers(config, config.device("hdd0")) == STATE_MARKERS | {".shadowfs-state"}
    assert device_markers(config, config.device("nvme0")) == STATE_MARKERS


# --- a new filesystem ------------------------------------------------------------------------


def test_new_filesystem_labels_every_device(config: Config) -> None:
    result = new_filesystem(config)
    assert uuid.UUID(result.identity.fs_uuid).version == 4
    assert result.identity.extent_size == MiB
    assert result.initialised == NAMES
    assert result.relabelled == ()
    for device in config.devices:
        label = read_label(device.path)
        assert label == Label(
            result.identity.fs_uuid, MiB, device.name, NAMES, label.created_ns if label else 0
        )


def test_new_filesystems_get_different_uuids(root: Path, tmp_path_factory) -> None:
    other_root = tmp_path_factory.mktemp("other")
    for name in NAMES:
        (other_root / name).mkdir()
    first = new_filesystem(make_config(root))
    second = new_filesystem(make_config(other_root))
    assert first.identity.fs_uuid != second.identity.fs_uuid


def test_new_filesystem_ignores_lost_found_and_the_state_dir(config: Config) -> None:
    (config.device("ssd0").path / "lost+found").mkdir()
    config.state_dir.mkdir()
    (config.state_dir / "metadata.db").write_text("")
    assert new_filesystem(config).initialised == NAMES


def test_state_dir_inside_a_fast_device_is_ignored_there(root: Path) -> None:
    config = make_config(root, head=f'state_dir = "{root / "nvme0" / "meta"}"\n')
    config.state_dir.mkdir()
    assert new_filesystem(config).initialised == NAMES


def test_new_filesystem_refuses_a_device_with_a_label(config: Config, root: Path) -> None:
    write_label(config.device("ssd0").path, a_label())
    message = refused(root, config, None)
    assert message == (
        f"metadata is missing but device ssd0 at {root / 'ssd0'} holds shadowfs data (label): "
        "restore the state dir or run fsck --rebuild"
    )


def test_new_filesystem_refuses_a_device_with_extents(config: Config, root: Path) -> None:
    (root / "hdd0" / EXTENTS_DIR / "00").mkdir(parents=True)
    (root / "hdd0" / EXTENTS_DIR / "00" / "1.0").write_bytes(b"data")
    message = refused(root, config, None)
    assert message.startswith(f"metadata is missing but device hdd0 at {root / 'hdd0'}")
    assert "(extents)" in message
    assert "fsck --rebuild" in message


def test_new_filesystem_refuses_a_non_empty_directory(config: Config, root: Path) -> None:
    (root / "nvme0" / "photos").mkdir()
    (root / "nvme0" / "notes.txt").write_text("mine")
    message = refused(root, config, None)
    assert message.startswith(
        f"device nvme0 at {root / 'nvme0'} is not empty and not labelled: is this the right path?"
    )
    assert "'notes.txt', 'photos'" in message


def test_new_filesystem_refuses_hidden_files_too(config: Config, root: Path) -> None:
    (root / "ssd0" / ".hidden").write_text("")
    assert "device ssd0" in refused(root, config, None)


def test_corrupt_label_on_a_device_names_the_device(root: Path, config: Config) -> None:
    (root / "ssd0" / LABEL_FILE).write_text("{")
    message = refused(root, config, None)
    assert message.startswith(f"device ssd0: label {root / 'ssd0' / LABEL_FILE} is corrupt")


def test_data_is_reported_before_mere_clutter(config: Config, root: Path) -> None:
    (root / "nvme0" / "clutter").write_text("")
    write_label(root / "hdd0", a_label(device_name="hdd0"))
    assert refused(root, config, None).startswith("metadata is missing but device hdd0")


# --- an existing filesystem ------------------------------------------------------------------


@pytest.fixture
def existing(config: Config) -> FsIdentity:
    return new_filesystem(config).identity


def test_existing_filesystem_mounts_unchanged(root: Path, config: Config, existing) -> None:
    (root / "hdd0" / EXTENTS_DIR).mkdir()
    (root / "nvme0" / EXTENTS_DIR).mkdir()
    before = snapshot(root)
    result = claim_devices(config, existing, frozenset(NAMES))
    assert result.identity == existing
    assert result.initialised == ()
    assert result.relabelled == ()
    assert snapshot(root) == before


def test_changed_extent_size_is_refused(root: Path, existing: FsIdentity) -> None:
    config = make_config(root, head='extent_size = "4 MiB"\n')
    message = refused(root, config, existing, frozenset(NAMES))
    assert "extent_size is 4 MiB" in message
    assert "created with 1 MiB" in message
    assert existing.fs_uuid in message


def test_label_of_another_filesystem_is_refused(root: Path, config: Config, existing) -> None:
    stranger = str(uuid.uuid4())
    write_label(root / "ssd0", a_label(fs_uuid=stranger))
    message = refused(root, config, existing, frozenset(NAMES))
    assert message.startswith(
        f"device ssd0 at {root / 'ssd0'} belongs to another shadowfs filesystem {stranger}"
    )


def test_swapped_device_paths_are_refused(root: Path, existing: FsIdentity) -> None:
    # nvme0 and ssd0 exchange directories in the config.
    text = (
        f'backing = "hdd0"\n[[devices]]\nname = "nvme0"\npath = "{root / "ssd0"}"\n'
        'class = "nvme"\ncapacity = "1 GiB"\n'
        f'[[devices]]\nname = "ssd0"\npath = "{root / "nvme0"}"\nclass = "ssd"\n'
        'capacity = "1 GiB"\n'
        f'[[devices]]\nname = "hdd0"\npath = "{root / "hdd0"}"\nclass = "hdd"\n'
        'capacity = "1 GiB"\n'
    )
    config = parse_config(text, source="<t>")
    message = refused(root, config, existing, frozenset(NAMES))
    assert message.startswith(
        f"device nvme0 at {root / 'ssd0'} is labelled as device 'ssd0' of this filesystem"
    )


def test_label_with_a_different_extent_size_is_refused(
    root: Path, config: Config, existing: FsIdentity
) -> None:
    write_label(root / "ssd0", a_label(fs_uuid=existing.fs_uuid, extent_size=4 * MiB))
    assert "run fsck" in refused(root, config, existing, frozenset(NAMES))


def test_unlabelled_non_empty_device_is_refused(root: Path, config: Config, existing) -> None:
    (root / "ssd0" / LABEL_FILE).unlink()
    (root / "ssd0" / "home").mkdir()
    message = refused(root, config, existing, frozenset(NAMES))
    assert message.startswith(
        f"device ssd0 at {root / 'ssd0'} is not empty and not labelled: is this the right path?"
    )


def test_unlabelled_device_with_extents_is_refused(root: Path, config: Config, existing) -> None:
    (root / "ssd0" / LABEL_FILE).unlink()
    (root / "ssd0" / EXTENTS_DIR).mkdir()
    assert "not empty and not labelled" in refused(root, config, existing, frozenset())


def test_empty_directory_of_a_known_device_is_refused(root: Path, config: Config, existing) -> None:
    # The classic trap: the disk failed to mount at boot and left an empty directory on /.
    (root / "ssd0" / LABEL_FILE).unlink()
    message = refused(root, config, existing, frozenset({"ssd0", "hdd0"}))
    assert message == (
        f"device ssd0 is known to hold data but {root / 'ssd0'} is empty: is its disk mounted?"
    )


def test_empty_new_device_is_initialised(root: Path, existing: FsIdentity) -> None:
    (root / "ssd1").mkdir()
    config = make_config(root, devices=(*NAMES, "ssd1"))
    result = claim_devices(config, existing, frozenset(NAMES))
    assert result.identity == existing
    assert result.initialised == ("ssd1",)
    # The others learn the new list of devices, and keep their creation time.
    assert result.relabelled == NAMES
    names = (*NAMES, "ssd1")
    for name in names:
        label = read_label(root / name)
        assert label is not None
        assert (label.fs_uuid, label.device_name, label.device_names) == (
            existing.fs_uuid,
            name,
            names,
        )


def test_relabelling_keeps_created_ns(root: Path, existing: FsIdentity) -> None:
    before = read_label(root / "hdd0")
    (root / "ssd1").mkdir()
    claim_devices(make_config(root, devices=(*NAMES, "ssd1")), existing, frozenset(NAMES))
    after = read_label(root / "hdd0")
    assert before is not None and after is not None
    assert after.created_ns == before.created_ns


def test_device_missing_from_the_config_is_a_warning(root: Path, existing: FsIdentity) -> None:
    config = make_config(root, devices=("ssd0", "hdd0"))
    result = claim_devices(config, existing, frozenset(NAMES))
    assert any("device nvme0 holds data according to the metadata" in w for w in result.warnings)
    assert result.relabelled == ("ssd0", "hdd0")


def test_refusal_writes_no_label_even_to_devices_that_passed(
    root: Path, existing: FsIdentity
) -> None:
    (root / "ssd1").mkdir()
    (root / "hdd9").mkdir()
    (root / "hdd9" / "stuff").write_text("")
    config = make_config(root, devices=(*NAMES, "ssd1", "hdd9"))
    refused(root, config, existing, frozenset(NAMES))
    assert read_label(root / "ssd1") is None


def test_a_failed_label_write_rolls_back_new_labels(
    config: Config, root: Path, monkeypatch
) -> None:
    from shadowfs import ownership

    real_write = ownership.write_label

    def failing_write(path: Path, label: Label) -> None:
        if path == root / "hdd0":
            raise OSError(28, "No space left on device")
        real_write(path, label)

    monkeypatch.setattr(ownership, "write_label", failing_write)
    with pytest.raises(OwnershipError) as info:
        new_filesystem(config)
    assert "device hdd0" in str(info.value)
    assert "No space left on device" in str(info.value)
    for name in NAMES:
        assert os.listdir(root / name) == []
    monkeypatch.setattr(ownership, "write_label", real_write)
    assert new_filesystem(config).initialised == NAMES  # a retry is not refused


def test_devices_on_one_filesystem_get_a_warning(config: Config) -> None:
    result = new_filesystem(config)
    assert len(result.warnings) == 1
    warning = result.warnings[0]
    assert "devices nvme0, ssd0, hdd0 share one filesystem" in warning
    assert "budgets and redundancy are not independent" in warning


@pytest.mark.skipif(
    not Path("/dev/shm").is_dir() or os.stat("/dev/shm").st_dev == os.stat("/tmp").st_dev,
    reason="needs a second filesystem at /dev/shm",
)
def test_devices_on_separate_filesystems_get_no_warning(root: Path, tmp_path_factory) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(dir="/dev/shm") as shm:
        text = (
            f'backing = "hdd0"\n[[devices]]\nname = "nvme0"\npath = "{shm}"\nclass = "nvme"\n'
            f'capacity = "1 GiB"\n[[devices]]\nname = "hdd0"\npath = "{root / "hdd0"}"\n'
            'class = "hdd"\ncapacity = "1 GiB"\n'
        )
        result = new_filesystem(parse_config(text, source="<t>"))
        assert result.warnings == ()


# --- the state lock --------------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from shadowfs.ownership import StateLock
    lock = StateLock(Path(sys.argv[1]), sys.argv[2])
    lock.acquire()
    print("held", flush=True)
    time.sleep(60)
    """
)


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[Callable[[str], subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start(purpose: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(tmp_path / "state"), purpose],
            stdout=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        assert process.stdout is not None
        assert process.stdout.readline() == "held\n"
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def test_lock_refuses_a_second_process(tmp_path: Path, holder) -> None:
    process = holder("mount")
    with pytest.raises(LockError) as info:
        StateLock(tmp_path / "state", "fsck").acquire()
    assert str(info.value) == (
        f"filesystem at {tmp_path / 'state'} is in use by pid {process.pid} (mount): "
        "unmount it first"
    )


def test_lock_held_by_fsck_says_so(tmp_path: Path, holder) -> None:
    process = holder("fsck")
    with pytest.raises(LockError) as info:
        StateLock(tmp_path / "state", "mount").acquire()
    assert f"in use by pid {process.pid} (fsck): wait for it to finish" in str(info.value)


def test_lock_is_free_again_when_the_holder_dies(tmp_path: Path, holder) -> None:
    process = holder("mount")
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    with StateLock(tmp_path / "state", "mount") as lock:
        assert lock.held
        assert (tmp_path / "state" / "lock").read_text() == f"{os.getpid()} mount\n"


def test_lock_refuses_a_second_holder_in_the_same_process(tmp_path: Path) -> None:
    with StateLock(tmp_path / "state", "mount"):
        with pytest.raises(LockError):
            StateLock(tmp_path / "state", "mount").acquire()
    # released by the context manager
    with StateLock(tmp_path / "state", "fsck"):
        pass


def test_lock_creates_a_private_state_dir_and_release_is_idempotent(tmp_path: Path) -> None:
    lock = StateLock(tmp_path / "state", "mount")
    lock.acquire()
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "state" / "lock").stat().st_mode & 0o777 == 0o600
    lock.release()
    lock.release()
    assert not lock.held
    assert (tmp_path / "state" / "lock").read_text() == ""


def test_lock_without_a_parent_directory(tmp_path: Path) -> None:
    with pytest.raises(LockError) as info:
        StateLock(tmp_path / "missing" / "state", "mount").acquire()
    assert "cannot create the lock" in str(info.value)


def test_acquiring_twice_is_a_bug(tmp_path: Path) -> None:
    with StateLock(tmp_path / "state", "mount") as lock:
        with pytest.raises(RuntimeError):
            lock.acquire()
