"""Several clients at once through one mount, against a model: random creates, writes (buffered
and O_DIRECT), truncates, renames, links, unlinks and readdirs for a few seconds. Afterwards the
files match the model, before and after a remount, the daemon logged no error, and fsck finds
nothing to repair."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from mountfs import ShadowMount, run_cli

pytestmark = [pytest.mark.mount, pytest.mark.timeout(120)]

SEED = int(os.environ.get("SHADOWFS_E2E_SEED", "0"))  # fixed unless asked, for reruns
KiB = 1 << 10
MiB = 1 << 20


class Client:
    def __init__(self, root: Path, seed: int) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.files: dict[str, bytearray] = {}
        self.ops = 0
        self.n = 0
        self.history: list[tuple[Any, ...]] = []

    def _name(self) -> str:
        return self.rng.choice(sorted(self.files))

    def step(self) -> None:
        rng, root = self.rng, self.root
        op = rng.choice(
            ["create", "write", "write", "write", "direct", "truncate", "rename", "link"]
            + ["unlink", "readdir", "read", "read", "append"]
        )
        if op == "create" or not self.files:
            name = f"f{self.n}"
            self.n += 1
            data = os.urandom(rng.randrange(0, 300 * KiB))
            (root / name).write_bytes(data)
            self.files[name] = bytearray(data)
            self.history.append(("create", name, len(data)))
        elif op in ("write", "direct"):
            name = self._name()
            model = self.files[name]
            off = rng.randrange(0, len(model) + 2 * MiB)
            data = os.urandom(rng.randrange(1, 200 * KiB))
            flags = os.O_WRONLY | (os.O_DIRECT if op == "direct" else 0)
            fd = os.open(root / name, flags)
            try:
                os.pwrite(fd, data, off)
                if rng.random() < 0.2:
                    os.fdatasync(fd)
            finally:
                os.close(fd)
            if off > len(model):
                model.extend(bytes(off - len(model)))
            model[off : off + len(data)] = data
            self.history.append((op, name, off, len(data), id(model)))
        elif op == "truncate":
            name = self._name()
            model = self.files[name]
            size = rng.randrange(0, len(model) + MiB)
            os.truncate(root / name, size)
            self.history.append(("truncate", name, size, len(model), id(model)))
            del model[size:]
            model.extend(bytes(size - len(model)))
        elif op == "rename":
            src = self._name()
            dst = self._name() if rng.random() < 0.5 else f"f{self.n}"
            self.n += 1
            os.rename(root / src, root / dst)
            self.history.append(("rename", src, dst))
            if self.files.get(dst) is not self.files[src]:  # two links of one file: no-op
                self.files[dst] = self.files.pop(src)
        elif op == "link":  # the model's names share one bytearray, as the links share data
            src = self._name()
            dst = f"f{self.n}"
            self.n += 1
            os.link(root / src, root / dst)
            self.files[dst] = self.files[src]
            self.history.append(("link", src, dst))
        elif op == "append":
            name = self._name()
            data = os.urandom(rng.randrange(1, 100 * KiB))
            with open(root / name, "ab") as f:
                f.write(data)
            self.history.append(("append", name, len(self.files[name]), len(data)))
            self.files[name].extend(data)
        elif op == "unlink":
            name = self._name()
            os.unlink(root / name)
            self.history.append(("unlink", name))
            del self.files[name]
        elif op == "readdir":
            assert sorted(os.listdir(root)) == sorted(self.files)
        else:
            name = self._name()
            got = (root / name).read_bytes()
            if got != self.files[name]:
                raise AssertionError(self.explain(name, got))
            nlink = sum(1 for m in self.files.values() if m is self.files[name])
            assert os.stat(root / name).st_nlink == nlink, name
        self.ops += 1

    def explain(self, name: str, got: bytes) -> str:
        want = bytes(self.files[name])
        n = min(len(got), len(want))
        diffs = [i for i in range(n) if got[i] != want[i]]
        where = f"bytes {diffs[0]}..{diffs[-1]} differ" if diffs else "a common prefix"
        recent = "\n".join(map(str, self.history[-30:]))
        return f"{name}: read {len(got)} bytes, model {len(want)}; {where}\n{recent}"

    def verify(self) -> None:
        assert sorted(os.listdir(self.root)) == sorted(self.files)
        for name, model in self.files.items():
            got = (self.root / name).read_bytes()
            assert got == bytes(model), self.explain(name, got)


def test_concurrent_clients_against_a_model(shadowfs_mount: Any) -> None:
    fs: ShadowMount = shadowfs_mount(
        extent_size="256 KiB", extra="[metadata]\nflush_interval_s = 0.2\n"
    )
    clients = []
    for k in range(4):
        (fs.mnt / f"c{k}").mkdir()
        clients.append(Client(fs.mnt / f"c{k}", seed=SEED + k))
    errors: list[BaseException] = []
    deadline = time.monotonic() + 3.5

    def run(client: Client) -> None:
        try:
            while time.monotonic() < deadline:
                client.step()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]  # whole, with the client's recent history
    assert sum(c.ops for c in clients) >= 100
    for c in clients:
        c.verify()
    fs.umount()
    fs.start()
    for c in clients:
        c.verify()
    fs.umount()
    result = run_cli("fsck", "--no-repair", str(fs.config))
    assert result.returncode == 0 and "fsck: 0 findings" in result.stdout, result.stdout


def test_kill9_under_concurrent_clients_recovers_without_loss(shadowfs_mount: Any) -> None:
    """The same clients, killed mid-flight: recovery finds nothing it must call data loss,
    and after it fsck finds nothing at all."""
    import errno

    fs: ShadowMount = shadowfs_mount(
        extent_size="256 KiB", extra="[metadata]\nflush_interval_s = 0.2\n"
    )
    fs.expect_log(r"WARNING shadowfs.daemon: (last shutdown was not clean|recovery)")
    clients = []
    for k in range(4):
        (fs.mnt / f"c{k}").mkdir()
        clients.append(Client(fs.mnt / f"c{k}", seed=SEED + 100 + k))
    errors: list[BaseException] = []
    stop = threading.Event()

    def run(client: Client) -> None:
        try:
            while not stop.is_set():
                client.step()
        except OSError as exc:  # the dead connection; EIO: writeback that could not happen
            if exc.errno not in (errno.ENOTCONN, errno.ECONNABORTED, errno.EIO):
                errors.append(exc)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    time.sleep(2.5)
    fs.kill9(detach=False)
    stop.set()
    for t in threads:
        t.join(30)
    fs.detach()
    if errors:
        raise errors[0]
    assert sum(c.ops for c in clients) >= 50
    fs.start()
    recovery = fs.status()["recovery"]
    assert recovery["data_loss"] == [], recovery
    fs.umount()
    result = run_cli("fsck", "--no-repair", str(fs.config))
    assert result.returncode == 0 and "fsck: 0 findings" in result.stdout, result.stdout
