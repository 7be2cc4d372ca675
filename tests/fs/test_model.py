"""A Hypothesis stateful test: the filesystem against an in-memory model of its files.

100 examples x 100 steps = 10,000 operations: writes across small extents, truncates that cut
and extend, holes, renames over existing files, unlinks of open files, reopen, fsync, clean
remounts and crashes after a sync (where the model is exact: everything was acknowledged).
Every read must equal the model; every remount ends with an fsck that finds nothing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import hypothesis.strategies as st
import pyfuse3
import pytest
import trio
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.fs.harness import CTX, Fields, FsHarness, make_config

ROOT = pyfuse3.ROOT_INODE
EXTENT = 64 * 1024
NAMES = [b"a", b"b", b"c", b"d"]
names = st.sampled_from(NAMES)
offsets = st.one_of(st.integers(0, 4 * EXTENT), st.integers(0, 40 * EXTENT))
sizes = st.one_of(st.integers(1, 300), st.integers(1, 3 * EXTENT))


def run(fn, *args):  # type: ignore[no-untyped-def]
    return trio.run(fn, *args)


class FilesystemModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="shadowfs-model-"))
        self.h = FsHarness(make_config(self.tmp, extent_size="64 KiB"))
        self.files: dict[bytes, bytearray] = {}
        self.handles: dict[bytes, int] = {}
        self.ghosts: list[tuple[int, bytearray]] = []  # open handles of unlinked files
        self.lookups: dict[int, int] = {}

    # -------------------------------------------------------------- helpers

    async def _open(self, name: bytes) -> int:
        entry = await self.h.ops.lookup(ROOT, name, CTX)
        self.lookups[entry.st_ino] = self.lookups.get(entry.st_ino, 0) + 1
        return int((await self.h.ops.open(entry.st_ino, os.O_RDWR, CTX)).fh)

    async def _forget_all(self) -> None:
        await self.h.ops.forget(list(self.lookups.items()))
        self.lookups.clear()

    async def _release_all(self) -> None:
        for fh in self.handles.values():
            await self.h.ops.release(fh)
        for fh, _ in self.ghosts:
            await self.h.ops.release(fh)
        self.handles.clear()
        self.ghosts.clear()
        await self._forget_all()

    # -------------------------------------------------------------- rules

    @rule(name=names)
    def create(self, name: bytes) -> None:
        if name in self.files:
            return

        async def go() -> None:
            fi, attr = await self.h.ops.create(ROOT, name, 0o644, os.O_RDWR, CTX)
            self.lookups[attr.st_ino] = self.lookups.get(attr.st_ino, 0) + 1
            self.handles[name] = fi.fh

        run(go)
        self.files[name] = bytearray()

    @precondition(lambda self: self.handles)
    @rule(data=st.data(), offset=offsets, size=sizes)
    def write(self, data: st.DataObject, offset: int, size: int) -> None:
        name = data.draw(st.sampled_from(sorted(self.handles)))
        payload = os.urandom(size)
        run(self.h.ops.write, self.handles[name], offset, payload)
        model = self.files[name]
        if len(model) < offset + size:
            model.extend(bytes(offset + size - len(model)))
        model[offset : offset + size] = payload

    @precondition(lambda self: self.handles)
    @rule(data=st.data(), size=st.one_of(st.integers(0, 4 * EXTENT), st.integers(0, 50 * EXTENT)))
    def truncate(self, data: st.DataObject, size: int) -> None:
        name = data.draw(st.sampled_from(sorted(self.handles)))
        attr = pyfuse3.EntryAttributes()
        attr.st_size = size

        async def go() -> None:
            ino = (await self.h.ops.lookup(ROOT, name, CTX)).st_ino
            self.lookups[ino] = self.lookups.get(ino, 0) + 1
            await self.h.ops.setattr(ino, attr, Fields(update_size=True), None, CTX)

        run(go)
        model = self.files[name]
        if size < len(model):
            del model[size:]
        else:
            model.extend(bytes(size - len(model)))

    @precondition(lambda self: self.handles)
    @rule(data=st.data(), offset=offsets, size=sizes)
    def read(self, data: st.DataObject, offset: int, size: int) -> None:
        name = data.draw(st.sampled_from(sorted(self.handles)))
        got = bytes(run(self.h.ops.read, self.handles[name], offset, size))
        assert got == bytes(self.files[name][offset : offset + size])

    @precondition(lambda self: self.ghosts)
    @rule(offset=offsets, size=sizes)
    def read_ghost(self, offset: int, size: int) -> None:
        fh, model = self.ghosts[-1]
        got = bytes(run(self.h.ops.read, fh, offset, size))
        assert got == bytes(model[offset : offset + size])

    @precondition(lambda self: self.files)
    @rule(data=st.data(), new=names)
    def rename(self, data: st.DataObject, new: bytes) -> None:
        old = data.draw(st.sampled_from(sorted(self.files)))
        run(self.h.ops.rename, ROOT, old, ROOT, new, 0, CTX)
        if old == new:
            return
        if new in self.files:
            replaced = self.handles.pop(new, None)
            if replaced is not None:
                self.ghosts.append((replaced, self.files[new]))
        self.files[new] = self.files.pop(old)
        if old in self.handles:
            self.handles[new] = self.handles.pop(old)

    @precondition(lambda self: self.files)
    @rule(data=st.data())
    def unlink(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.files)))
        run(self.h.ops.unlink, ROOT, name, CTX)
        model = self.files.pop(name)
        fh = self.handles.pop(name, None)
        if fh is not None:
            self.ghosts.append((fh, model))

    @precondition(lambda self: self.files)
    @rule(data=st.data())
    def reopen(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.files)))

        async def go() -> None:
            if name in self.handles:
                await self.h.ops.release(self.handles.pop(name))
            self.handles[name] = await self._open(name)

        run(go)

    @precondition(lambda self: self.handles)
    @rule(data=st.data())
    def fsync(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.handles)))
        run(self.h.ops.fsync, self.handles[name], False)

    @rule()
    def remount(self) -> None:
        async def go() -> None:
            await self._release_all()
            await self.h.remount()
            assert await self.h.fsck_findings() == []
            for name in self.files:
                self.handles[name] = await self._open(name)

        run(go)

    @rule()
    def crash_after_sync(self) -> None:
        async def go() -> None:
            await self.h.fs.data.sync(None, durable=True)

        run(go)
        self.handles.clear()
        self.ghosts.clear()  # the crash closes them; recovery frees their inodes
        self.lookups.clear()
        self.h.crash()
        assert not self.h.fs.last_shutdown_clean

        async def reopen() -> None:
            assert await self.h.fsck_findings() == []
            for name in self.files:
                self.handles[name] = await self._open(name)

        run(reopen)

    @invariant()
    def sizes_match(self) -> None:
        for name, model in self.files.items():
            inode = self.h.fs.namespace.lookup(ROOT, name)
            assert inode.size == len(model), name

    def teardown(self) -> None:
        try:
            run(self._release_all)
            findings = run(self.h.fsck_findings)
            assert findings == []
            run(self.h.close)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


FilesystemModel.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
TestFilesystemModel = pytest.mark.timeout(900)(FilesystemModel.TestCase)
