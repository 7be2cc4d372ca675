"""Hold the VM's free page reporting for a benchmark run, with free memory made host-resident.

Why: this machine is a virtual machine whose kernel reports free memory to the host
(virtio-balloon free page reporting, `/sys/module/page_reporting/parameters`), and the host
takes the reported pages back. The next time the guest uses such a page, the host must fault
it in again, and the guest CPU that first writes to it waits. Measured here (2026-11-23):
writing 1 GiB of fresh anonymous memory took 0.8 s when the host still held the pages and
2.5-2.7 s when they had been reported, and after `drop_caches` the host took back 768 MiB
within seconds.

That cost does not fall on every target alike. A native read fills the page cache by DMA, so
the host's I/O thread takes the faults; a FUSE read fills the FUSE page cache with the daemon's
memcpy, so the daemon's CPU takes them. With reporting on, cold sequential reads through a
FUSE daemon were bimodal: the same passthrough, backing file cached, read at 2,000-2,700 MiB/s
with 0.3 s of daemon CPU per GiB, or at 400-750 MiB/s with 1.3-2.4 s, 79% of it in the memcpy
into the FUSE page cache (perf). With reporting held and free memory made resident first, five
of five runs were fast.

So the harness, like `drop_caches` and the DAMON pause, controls the environment for every
target alike: it raises `page_reporting_order` above the largest page order (no free block is
then large enough to report), writes once to most of the free memory so that the host backs it
again, and puts the order it found back afterwards, whatever ends the run. Not root, no such
parameters, or `--keep-page-reporting`: nothing is done and the note says so.
"""

from __future__ import annotations

import mmap
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PARAMETERS = Path("/sys/module/page_reporting/parameters")
HELD_ORDER = 11  # above MAX_PAGE_ORDER (10 on x86-64): no free block is large enough
KEEP_FREE = 2 << 30  # what the warm-up leaves free, so that nothing is reclaimed for it
CHUNK = 1 << 30
MADV_POPULATE_WRITE = 23  # linux/mman.h; Python 3.11's mmap module does not name it


@dataclass
class ReportingControl:
    """What was found and done; `note` is the machine fact the report records."""

    note: str
    held_from: str | None = None  # the order found, to be put back


def _order(parameters: Path) -> str:
    return (parameters / "page_reporting_order").read_text().strip()


def _set_order(parameters: Path, order: str) -> None:
    (parameters / "page_reporting_order").write_text(f"{order}\n")


def free_bytes(meminfo: Path = Path("/proc/meminfo")) -> int:
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemFree:"):
            return int(line.split()[1]) * 1024
    return 0


def make_resident(nbytes: int) -> float:
    """Write to *nbytes* of fresh anonymous memory, 1 GiB at a time, then free it all; returns
    the seconds it took. The pages come off the free lists, so the host backs them again;
    freed, they go back to the free lists, where held reporting leaves them to the page cache."""
    started = time.perf_counter()
    chunks = []
    try:
        for _ in range(nbytes // CHUNK):
            chunk = mmap.mmap(-1, CHUNK)
            chunks.append(chunk)
            try:
                chunk.madvise(MADV_POPULATE_WRITE)  # one call faults in every page
            except OSError:  # a kernel before 5.14
                for offset in range(0, CHUNK, mmap.PAGESIZE):
                    chunk[offset] = 1
    finally:
        for chunk in chunks:
            chunk.close()
    return time.perf_counter() - started


@contextmanager
def held_reporting(
    parameters: Path = PARAMETERS,
    keep: bool = False,
    root: bool | None = None,
    resident: int | None = None,
) -> Iterator[ReportingControl]:
    """Hold free page reporting and make free memory resident; on the way out, put it back.

    *keep* (`--keep-page-reporting`) only records the setting. *root* defaults to our euid
    being 0. *resident* is how much memory to make resident (default: all that is free but
    `KEEP_FREE`)."""
    if root is None:
        root = os.geteuid() == 0
    if not (parameters / "page_reporting_order").is_file():
        yield ReportingControl(f"no free page reporting ({parameters}): nothing to hold")
        return
    found = _order(parameters)
    if int(found) >= HELD_ORDER:
        yield ReportingControl(f"page_reporting_order {found}: reports nothing already")
        return
    if keep or not root:
        why = "--keep-page-reporting" if keep else "not root"
        yield ReportingControl(f"page_reporting_order {found} left on ({why})")
        return
    control = ReportingControl("")
    try:
        try:
            _set_order(parameters, str(HELD_ORDER))
        except OSError as exc:
            control.note = f"page_reporting_order {found} could not be held: {exc}"
            print(f"warning: {control.note}", file=sys.stderr)
        else:
            control.held_from = found
            size = max(0, free_bytes() - KEEP_FREE) if resident is None else resident
            seconds = make_resident(size)
            control.note = (
                f"page_reporting_order {found} held at {HELD_ORDER} during the run; "
                f"{size / CHUNK:.0f} GiB of free memory made resident first ({seconds:.0f} s)"
            )
        yield control
    finally:
        _restore(parameters, control)


def _restore(parameters: Path, control: ReportingControl) -> None:
    """Put the order found back, with SIGTERM and SIGINT held until it is done."""
    if control.held_from is None:
        return
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    try:
        _set_order(parameters, control.held_from)
    except OSError as exc:
        control.note += f"; NOT restored to {control.held_from}: {exc}"
        print(f"warning: page_reporting_order not restored: {exc}", file=sys.stderr)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
