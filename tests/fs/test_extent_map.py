"""The extent map's in-memory records: the primary copy kept beside the copies, and the
pending sets a write leaves for the flusher."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shadowfs.extent_map import Copy, CopyRole, Extent, ExtentMap
from shadowfs.metadata import MetadataStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MetadataStore]:
    store = MetadataStore(tmp_path)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def extents(store: MetadataStore) -> ExtentMap:
    return ExtentMap(store)


def _flush(store: MetadataStore, extents: ExtentMap) -> None:
    with store.transaction():
        extents.write_batch(extents.take_batch())


def test_the_primary_is_found_without_searching_and_survives_a_reload(
    store: MetadataStore, extents: ExtentMap
) -> None:
    extent = extents.add(5, 2, "hdd0")
    assert extent.primary() is extent.main is extent.copies["hdd0"]
    extent.put(Copy("nvme0", 0, 0, CopyRole.SHADOW))  # a shadow does not take its place
    assert extent.primary() is extent.copies["hdd0"]
    extent.main.length = 4096
    _flush(store, extents)
    extents.evict(5)
    assert 5 not in extents.files
    loaded = extents.of(5)[2]
    assert loaded is not extent
    assert loaded.main is loaded.copies["hdd0"] and loaded.main.length == 4096
    assert loaded.copies["nvme0"].role is CopyRole.SHADOW


def test_an_extent_without_a_primary_says_so() -> None:
    extent = Extent(3, 0)
    extent.put(Copy("ssd0", 0, 0, CopyRole.SHADOW))
    assert extent.main is None
    with pytest.raises(LookupError, match="extent 3 has no primary copy"):
        extent.primary()
    extent.put(Copy("hdd0", 0, 0, CopyRole.PRIMARY))
    assert extent.primary() is extent.copies["hdd0"]
    extent.put(Copy("hdd0", 1, 0, CopyRole.SHADOW))  # replaces the primary on its device
    assert extent.main is None and set(extent.copies) == {"ssd0", "hdd0"}


def test_writes_leave_each_extent_pending_once_per_device(
    store: MetadataStore, extents: ExtentMap
) -> None:
    extents.add(5, 0, "hdd0")
    _flush(store, extents)
    assert not extents.has_pending(5)
    for _ in range(3):
        extents.mark_written(5, 0, "hdd0")
    extents.mark_written(5, 1, "hdd0")
    assert extents.has_pending(5)
    # Only overwritten in place: the frequent flush leaves them for a later one...
    assert not extents.take_batch([5], overwrites=False).unsynced
    batch = extents.take_batch([5], overwrites=True)  # ...which takes them all
    assert {device: sorted(k.index for k in keys) for device, keys in batch.unsynced.items()} == {
        "hdd0": [0, 1]
    }
    assert not extents.has_pending(5)
