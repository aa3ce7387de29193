"""Watching the rules file for saves, the way editors and Kubernetes really write files.

Editors save by writing a temporary file and renaming it over the original, and Kubernetes
swaps a `..data` symlink in the directory of a mounted ConfigMap, so the *directory* is
watched (and, when the rules file is a symlink, its target's directory too), filtered to the
names that matter. Changes are grouped for a moment (`STEP_MS`, at most `DEBOUNCE_MS`), so a
save made of several writes is read once.

A file that is a new one at the path (an editor's rename, a swapped symlink: another device
or inode than at the last read) is read at once: it was complete before it got its name. One
written in place (same inode) may be half written, and a truncated file can still be valid
rules, so it is read only once it has settled: its size, mtime and inode unchanged for
`reload.settle` seconds. A writer that pauses longer than that in mid-write is still read.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from watchfiles import Change, awatch

log = logging.getLogger("automationd.watch")

STEP_MS = 50
DEBOUNCE_MS = 300
POLL_SECONDS = 0.1
"""How often a file written in place is looked at while it settles."""

Signature = tuple[int, int, int, int]
"""Device, inode, size and mtime (ns) of the rules file."""


def _signature(path: Path) -> Signature | None:
    try:
        stat = os.stat(path)  # through symlinks: the file that would be read
    except OSError:
        return None
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


def _watched(path: Path) -> tuple[list[Path], set[str]]:
    target = path.resolve()
    return sorted({path.parent.absolute(), target.parent}), {path.name, target.name, "..data"}


async def start_watching(
    path: Path,
    on_change: Callable[[], Awaitable[object]],
    stop: asyncio.Event,
    settle: Callable[[], float] = lambda: 0.0,
) -> asyncio.Task[None]:
    """Start calling `on_change` after each save of `path` until `stop` is set; returns once
    the watches are in place, so a save right after this is seen. A change made in place is
    passed on once the file has not changed for `settle()` seconds (asked each time, so a
    reload can change it)."""
    directories, names = _watched(path)
    task = asyncio.create_task(
        _watch(path, directories, names, on_change, stop, settle), name="automationd-watch"
    )
    await asyncio.sleep(0)  # the task's first step registers the inotify watches
    log.info("watching %s for changes", ", ".join(map(str, directories)))
    return task


async def _watch(
    path: Path,
    directories: list[Path],
    names: set[str],
    on_change: Callable[[], Awaitable[object]],
    stop: asyncio.Event,
    settle: Callable[[], float],
) -> None:
    def relevant(change: Change, changed: str) -> bool:
        return Path(changed).name in names

    read = _signature(path)  # the file as the daemon read it at start

    async for _ in awatch(
        *directories,
        watch_filter=relevant,
        stop_event=stop,
        step=STEP_MS,
        debounce=DEBOUNCE_MS,
        recursive=False,
    ):
        now = _signature(path)
        # an unchanged signature: changes seen while it settled (the reload finds the same
        # sha256 and leaves the rules alone), or a write within the same mtime tick
        if now is not None and read is not None and now[:2] == read[:2] and now != read:
            quiet = settle()
            if quiet > 0:
                log.info("%s changed in place; reading it once unchanged for %g s", path, quiet)
                now = await _settled(path, now, quiet, stop)
                if stop.is_set():
                    return
        read = now
        try:
            await on_change()
        except Exception:
            log.exception("reloading after a change in %s failed", ", ".join(map(str, directories)))


async def _settled(
    path: Path, seen: Signature, quiet: float, stop: asyncio.Event
) -> Signature | None:
    """Wait until the file has not changed for `quiet` seconds, or another file took its
    place (read at once), or `stop` is set; the file's signature then."""
    current: Signature | None = seen
    since = time.monotonic()
    while (left := since + quiet - time.monotonic()) > 0:
        try:
            await asyncio.wait_for(stop.wait(), min(left, POLL_SECONDS))
        except TimeoutError:
            pass
        else:
            return current
        now = _signature(path)
        if now is None or current is None or now[:2] != current[:2]:
            return now  # renamed over or gone: the new state is whole
        if now != current:
            current, since = now, time.monotonic()
    return current
