"""Fixtures of the mounted end-to-end tests; the machinery is in mountfs.py."""

from __future__ import annotations

import os
import subprocess
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

    def make(
        options: list[str] | None = None, tmpfs_device: str | None = None, **kwargs: Any
    ) -> ShadowMount:
        """``tmpfs_device="16m"`` puts the device on its own small tmpfs (a real filesystem
        that fills up), with the state directory outside it."""
        root = tmp_path / f"fs{len(mounts)}"
        root.mkdir()
        state_dir = None
        if tmpfs_device is not None:
            (root / "dev0").mkdir()
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={tmpfs_device}", "e2e", str(root / "dev0")],
                check=True,
                timeout=10,
            )
            tmpfs.append(root / "dev0")
            state_dir = kwargs["state_dir"] = root / "state"
        config, device = write_config(root, **kwargs)
        mnt = root / "mnt"
        mnt.mkdir()
        fs = ShadowMount(
            root=root,
            config=config,
            device=device,
            mnt=mnt,
            state_dir=state_dir or device / ".shadowfs-state",
            options=list(options or []),
        )
        mounts.append(fs)
        fs.start()
        return fs

    failed: list[str] = []
    tmpfs: list[Path] = []
    try:
        yield make
    finally:
        for fs in mounts:
            fs.cleanup()
            if is_mounted(fs.mnt):
                failed.append(f"{fs.mnt} is still mounted after cleanup")
        for path in tmpfs:
            if subprocess.run(["umount", str(path)], timeout=30).returncode != 0:
                subprocess.run(["umount", "-l", str(path)], timeout=30)
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
