"""Watching the rules file for saves, the way editors and Kubernetes really write files.

Editors save by writing a temporary file and renaming it over the original, and Kubernetes
swaps a `..data` symlink in the directory of a mounted ConfigMap, so the *directory* is
watched (and, when the rules file is a symlink, its target's directory too), filtered to the
names that matter. Changes are grouped for a moment (`STEP_MS`, at most `DEBOUNCE_MS`), so a
save made of several writes is read once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from watchfiles import Change, awatch

log = logging.getLogger("automationd.watch")

STEP_MS = 50
DEBOUNCE_MS = 300


def _watched(path: Path) -> tuple[list[Path], set[str]]:
    target = path.resolve()
    return sorted({path.parent.absolute(), target.parent}), {path.name, target.name, "..data"}


async def start_watching(
    path: Path, on_change: Callable[[], Awaitable[object]], stop: asyncio.Event
) -> asyncio.Task[None]:
    """Start calling `on_change` after each save of `path` until `stop` is set; returns once
    the watches are in place, so a save right after this is seen."""
    directories, names = _watched(path)
    task = asyncio.create_task(
        _watch(directories, names, on_change, stop), name="automationd-watch"
    )
    await asyncio.sleep(0)  # the task's first step registers the inotify watches
    log.info("watching %s for changes", ", ".join(map(str, directories)))
    return task


async def _watch(
    directories: list[Path],
    names: set[str],
    on_change: Callable[[], Awaitable[object]],
    stop: asyncio.Event,
) -> None:
    def relevant(change: Change, changed: str) -> bool:
        return Path(changed).name in names

    async for _ in awatch(
        *directories,
        watch_filter=relevant,
        stop_event=stop,
        step=STEP_MS,
        debounce=DEBOUNCE_MS,
        recursive=False,
    ):
        try:
            await on_change()
        except Exception:
            log.exception("reloading after a change in %s failed", ", ".join(map(str, directories)))
