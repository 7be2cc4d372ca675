"""Pause DAMON's page-out schemes for the length of a benchmark run, then put them back.

Why: this machine runs a DAMON kdamond (physical-address operations) with a scheme whose
action is "pageout": it reclaims page-cache pages that DAMON has seen idle for a while
(here 6 aggregation intervals of 5 s, so about 30 s), including pages a 4 KiB random-read job
is using, because it touches them too sparsely for DAMON's sampling to see. The benchmark's
"hot" and "as left" cache states assume the page cache keeps what was put in it; with a
pageout scheme running they depend on how long ago a file was warmed, that is on timing.
Pausing the scheme is environment control like drop_caches: it applies to every target alike.

Only kdamonds that are "on" and have a "pageout" scheme are touched: each is turned "off" by
writing its sysfs `state` file, and turned back "on" afterwards whatever happened (the caller
uses `paused_pageout` as a context manager, so an exception or a SIGTERM turned into
SystemExit restores too). A restarted kdamond starts its monitoring afresh: it re-reads its
sysfs parameters, but the ages it had accumulated are gone. Not root, or no DAMON sysfs tree:
nothing is done and the note says so.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ADMIN = Path("/sys/kernel/mm/damon/admin")


@dataclass(frozen=True)
class Kdamond:
    """One kdamond's sysfs directory, its state and its pageout schemes' minimum idle age."""

    index: str
    path: Path
    state: str
    pageout_min_age_s: list[float]  # one per pageout scheme; empty: no pageout scheme

    def describe(self) -> str:
        ages = ", ".join(f"{age:g} s" for age in self.pageout_min_age_s)
        return f"kdamond {self.index} (pageout after {ages} idle)"


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _int(path: Path) -> int:
    try:
        return int(_read(path))
    except ValueError:
        return 0


def kdamonds(admin: Path = ADMIN) -> list[Kdamond]:
    """Every kdamond under *admin*, with the minimum age of each of its pageout schemes."""
    found = []
    root = admin / "kdamonds"
    for index in range(_int(root / "nr_kdamonds")):
        path = root / str(index)
        ages = []
        for context in sorted((path / "contexts").glob("[0-9]*")):
            aggr_us = _int(context / "monitoring_attrs" / "intervals" / "aggr_us")
            for scheme in sorted((context / "schemes").glob("[0-9]*")):
                if _read(scheme / "action") == "pageout":
                    age = _int(scheme / "access_pattern" / "age" / "min")
                    ages.append(age * aggr_us / 1e6)
        found.append(Kdamond(str(index), path, _read(path / "state"), ages))
    return found


@dataclass
class DamonControl:
    """What was found and done; `note` is the machine fact the report records."""

    note: str
    paused: list[Kdamond] = field(default_factory=list)


def _set_state(kdamond: Kdamond, state: str) -> None:
    (kdamond.path / "state").write_text(f"{state}\n")


@contextmanager
def paused_pageout(
    admin: Path = ADMIN, keep: bool = False, root: bool | None = None
) -> Iterator[DamonControl]:
    """Turn off every running kdamond with a pageout scheme; on the way out, turn them back on.

    *keep* (`--keep-damon`) only records what is running. *root* defaults to our euid being 0.
    """
    if root is None:
        root = os.geteuid() == 0
    if not (admin / "kdamonds").is_dir():
        yield DamonControl(f"no DAMON sysfs ({admin}): nothing to pause")
        return
    running = [k for k in kdamonds(admin) if k.state == "on" and k.pageout_min_age_s]
    names = ", ".join(k.describe() for k in running)
    if not running:
        yield DamonControl("none running")
        return
    if keep:
        yield DamonControl(f"{names} left running (--keep-damon)")
        return
    if not root:
        yield DamonControl(f"{names} left running (not root)")
        return
    control = DamonControl("")
    try:
        for kdamond in running:
            try:
                _set_state(kdamond, "off")
            except OSError as exc:
                print(
                    f"warning: could not pause DAMON {kdamond.describe()}: {exc}", file=sys.stderr
                )
                continue
            control.paused.append(kdamond)
        left = [k.describe() for k in running if k not in control.paused]
        control.note = (
            ", ".join(k.describe() for k in control.paused) + " paused during the run"
            if control.paused
            else "none paused"
        ) + ("; " + ", ".join(left) + " could not be paused" if left else "")
        yield control
    finally:
        _restore(control)


def _restore(control: DamonControl) -> None:
    """Turn back on what we turned off, with SIGTERM and SIGINT held until it is done."""
    if not control.paused:
        return
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    try:
        for kdamond in control.paused:
            try:
                _set_state(kdamond, kdamond.state)
            except OSError as exc:
                control.note += f"; {kdamond.describe()} NOT restored: {exc}"
                print(
                    f"warning: could not restore DAMON {kdamond.describe()} to "
                    f"{kdamond.state!r}: {exc}",
                    file=sys.stderr,
                )
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
