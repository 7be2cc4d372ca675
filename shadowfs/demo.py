"""The demo: mount the embedded default config, serve a workload, show status, unmount.

Devices are directories under a local state folder (nvme0, ssd0, hdd0; hdd0 backs the
primaries). The workload writes a volume of random data through the mount, fsyncs it, reads it
back and compares checksums, then runs a short fio random read/write job with verification
when fio is installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import xxhash

from shadowfs.config import DEMO_CONFIG_TOML, _toml_basic_string_body, demo_config


def _shadowfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shadowfs", *args], text=True, capture_output=True)


def run_demo(state: Path, size_mib: int) -> int:
    state = state.resolve()
    demo_config(state)  # validates and creates the device directories
    config_path = state / "demo.toml"
    config_path.write_text(DEMO_CONFIG_TOML.replace("{root}", _toml_basic_string_body(str(state))))
    mnt = state / "mnt"
    mnt.mkdir(parents=True, exist_ok=True)
    print(f"== mounting the demo config ({config_path}) on {mnt}")
    r = _shadowfs("mount", str(config_path), str(mnt))
    print(r.stdout.strip() or r.stderr.strip())
    if r.returncode != 0:
        return r.returncode
    try:
        volume = mnt / "volume.img"
        print(f"== writing a {size_mib} MiB volume, fsync, reading it back")
        digest = xxhash.xxh3_64()
        chunk = 1 << 20
        t0 = time.perf_counter()
        with open(volume, "wb") as f:
            for _ in range(size_mib):
                block = os.urandom(chunk)
                digest.update(block)
                f.write(block)
            f.flush()
            os.fsync(f.fileno())
        t1 = time.perf_counter()
        check = xxhash.xxh3_64()
        with open(volume, "rb") as f:
            while block := f.read(chunk):
                check.update(block)
        t2 = time.perf_counter()
        ok = check.hexdigest() == digest.hexdigest()
        print(
            f"   write+fsync {size_mib / (t1 - t0):.0f} MiB/s, read {size_mib / (t2 - t1):.0f}"
            f" MiB/s, checksums {'match' if ok else 'DIFFER'}"
        )
        if shutil.which("fio"):
            print("== fio: 4 KiB random read/write with verification, 10 s")
            fio = subprocess.run(
                [
                    "fio",
                    "--name=demo",
                    f"--filename={mnt / 'fio.img'}",
                    "--size=64M",
                    "--rw=randrw",
                    "--bs=4k",
                    "--ioengine=psync",
                    "--runtime=10",
                    "--time_based",
                    "--verify=crc32c",
                    "--do_verify=1",
                    "--output-format=json",
                ],
                capture_output=True,
                text=True,
            )
            if fio.returncode == 0:
                job = json.loads(fio.stdout)["jobs"][0]
                print(
                    f"   read {job['read']['iops']:.0f} IOPS, write {job['write']['iops']:.0f}"
                    f" IOPS, verify errors: {job.get('error', 0)}"
                )
            else:
                print(f"   fio failed: {fio.stderr.strip()[:400]}")
                ok = False
        print("== status")
        status = _shadowfs("status", str(mnt))
        print(status.stdout.rstrip() or status.stderr.strip())
    finally:
        print("== unmounting")
        r = _shadowfs("umount", str(mnt))
        print(r.stdout.strip() or r.stderr.strip())
    return 0 if ok and r.returncode == 0 else 1
