"""Driving the filesystem in-process, without /dev/fuse (as S3QL's tests do).

``FsHarness`` builds a Filesystem from a config on a temporary directory and exposes the FUSE
operations with a fake request context. ``remount`` closes cleanly and opens again;
``crash`` drops everything without the final flush or the clean mark (what kill -9 leaves,
as far as the daemon's own state goes) and opens again, which runs mount recovery.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyfuse3

from shadowfs.config import Config, parse_config
from shadowfs.daemon import Filesystem, open_filesystem
from shadowfs.fsck import check


@dataclass
class Ctx:
    uid: int = 0
    gid: int = 0
    pid: int = os.getpid()
    umask: int = 0o022


CTX = Ctx()


@dataclass
class Fields:
    """Stands in for pyfuse3.SetattrFields, whose attributes Python cannot set."""

    update_atime: bool = False
    update_mtime: bool = False
    update_ctime: bool = False
    update_mode: bool = False
    update_uid: bool = False
    update_gid: bool = False
    update_size: bool = False


def make_config(
    root: Path,
    capacity: str = "1 GiB",
    extent_size: str = "1 MiB",
    extra: str = "",
    xattrs: bool = True,
) -> Config:
    dev = root / "hdd0"
    dev.mkdir(parents=True, exist_ok=True)
    text = (
        f'backing = "hdd0"\nextent_size = "{extent_size}"\n'
        f"xattrs = {str(xattrs).lower()}\n{extra}\n"
        f'[[devices]]\nname = "hdd0"\npath = "{dev}"\nclass = "hdd"\ncapacity = "{capacity}"\n'
    )
    return parse_config(text, source=str(root / "test.toml"))


class FsHarness:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.fs: Filesystem = open_filesystem(config)

    @property
    def ops(self):  # type: ignore[no-untyped-def]
        return self.fs.ops

    async def remount(self) -> None:
        await self.fs.close()
        self.fs = open_filesystem(self.config)

    def crash(self) -> None:
        self.fs.stack.close()
        self.fs = open_filesystem(self.config)

    async def close(self) -> None:
        await self.fs.close()

    async def fsck_findings(self) -> list[str]:
        """fsck of the live filesystem after a flush (unflushed work is not a finding)."""
        await self.fs.data.sync(None, durable=False)
        return check(self.fs.store, self.fs.devices, repair=False).findings

    # -- conveniences that read like the syscalls they stand for

    async def create(self, name: bytes, parent: int = pyfuse3.ROOT_INODE, mode: int = 0o644):  # type: ignore[no-untyped-def]
        fi, attr = await self.ops.create(parent, name, mode, os.O_RDWR, CTX)
        return fi.fh, attr.st_ino

    async def lookup(self, name: bytes, parent: int = pyfuse3.ROOT_INODE) -> int:
        return int((await self.ops.lookup(parent, name, CTX)).st_ino)

    async def open(self, ino: int, flags: int = os.O_RDWR) -> int:
        return int((await self.ops.open(ino, flags, CTX)).fh)

    async def listdir(self, ino: int = pyfuse3.ROOT_INODE) -> list[bytes]:
        return [e.name for e in self.fs.namespace.readdir(ino, 0)]
