"""Fixtures of the mounted end-to-end tests; the machinery is in mountfs.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mountfs import ShadowMount, is_mounted, write_config


@pytest.fixture
def shadowfs_mount(tmp_path: Path) -> Iterator[Any]:
    """Factory: ``shadowfs_mount(capacity=..., extent_size=..., extra=TOML, options=[...])``
    mounts a fresh one-device filesystem under tmp_path and returns its ShadowMount."""
    mounts: list[ShadowMount] = []
    if not os.path.exists("/dev/fuse"):
        pytest.skip("no /dev/fuse")

    def make(options: list[str] | None = None, **kwargs: Any) -> ShadowMount:
        root = tmp_path / f"fs{len(mounts)}"
        root.mkdir()
        config, device = write_config(root, **kwargs)
        mnt = root / "mnt"
        mnt.mkdir()
        fs = ShadowMount(
            root=root,
            config=config,
            device=device,
            mnt=mnt,
            state_dir=device / ".shadowfs-state",
            options=list(options or []),
        )
        mounts.append(fs)
        fs.start()
        return fs

    failed: list[str] = []
    try:
        yield make
    finally:
        for fs in mounts:
            fs.cleanup()
            if is_mounted(fs.mnt):
                failed.append(f"{fs.mnt} is still mounted after cleanup")
    for fs in mounts:
        bad = fs.unexpected_log_lines()
        if bad:
            failed.append(f"unexpected lines in {fs.log_path}:\n" + "\n".join(bad))
    if failed:
        pytest.fail("\n".join(failed), pytrace=False)


@pytest.fixture
def fs(shadowfs_mount: Any) -> ShadowMount:
    """A mounted one-device filesystem with default settings."""
    return shadowfs_mount()  # type: ignore[no-any-return]
