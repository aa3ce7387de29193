"""A consistent copy of the live state, taken while the daemon runs.

The state database is SQLite in WAL mode: the newest commits live in `state.db-wal` until a
checkpoint moves them into `state.db`, so copying the files with `cp` can give a database
that misses them or is torn. The store makes the copy instead (`Store.copy_to`: SQLite's
online backup in one step, one read transaction, a snapshot of one moment, while the daemon
goes on writing).

Accepted events are first made durable in the journal's segment files
(`state.db-events/NNNNNNNN.log`), written into the database within 50 ms, and a segment is
deleted once a synced commit covers it. So the segments are copied *before* the database:
an event accepted before the backup began is either in a segment copied then or, when its
segment was already gone, in the database snapshot taken after. A restore puts both back;
at start the daemon writes the restored segments into the restored database (an event
already there keeps its row), as after a crash.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from automationd.store import BrokenCopy, StoreError
from automationd.store.sqlite import SqliteStore


class BackupError(Exception):
    """The backup cannot be made; the message says why."""


@dataclass(frozen=True, slots=True)
class BackupSummary:
    """What a backup holds, for the operator to see at a glance."""

    destination: Path
    events: int
    unfinished: int
    dead_letters: int
    deadlines: int
    segments: int
    segment_events: int

    def __str__(self) -> str:
        return (
            f"backed up {self.events} events ({self.unfinished} not finished), "
            f"{self.dead_letters} dead letters, {self.deadlines} deadlines and "
            f"{self.segments} journal segment(s) holding {self.segment_events} events "
            f"to {self.destination}"
        )


def segments_of(database: Path) -> Path:
    """The journal's folder beside the database: `state.db-events/`."""
    return database.with_name(database.name + "-events")


def backup(database: Path, destination: Path) -> BackupSummary:
    """Copy the live `database` and its journal segments into the new folder `destination`
    (`state.db` and `state.db-events/` under the same names). The folder appears only once
    the copy is complete and synced: until then it is `destination.partial`."""
    if not database.is_file():
        raise BackupError(f"there is no state database at {database}")
    if destination.exists():
        raise BackupError(f"{destination} already exists: name a new folder")
    partial = destination.with_name(destination.name + ".partial")
    if partial.exists():
        raise BackupError(f"{partial} is left from a failed backup: remove it first")
    try:
        partial.mkdir(mode=0o700, parents=True)
        copied = partial / segments_of(database).name
        copied.mkdir(mode=0o700)
        segments, segment_events = _copy_segments(segments_of(database), copied)
        held = SqliteStore(database).copy_to(partial / database.name)
        for path in [*copied.iterdir(), partial / database.name, copied, partial]:
            _sync(path)
        partial.rename(destination)
        _sync(destination.parent)
    except BrokenCopy as exc:
        raise BackupError(str(exc)) from None
    except (OSError, StoreError) as exc:
        raise BackupError(f"cannot back up {database} to {destination}: {exc}") from None
    return BackupSummary(
        destination,
        held.events,
        held.unfinished,
        held.dead_letters,
        held.deadlines,
        segments,
        segment_events,
    )


def _copy_segments(source: Path, target: Path) -> tuple[int, int]:
    """Copy every segment there is now (the last one up to its last whole line: the rest is
    an append still on its way, not yet answered); the number of files and of events."""
    files = events = 0
    if not source.is_dir():
        return 0, 0
    for path in sorted(source.glob("*.log")):
        if not path.stem.isdigit():
            continue
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue  # synced into the database meanwhile: the snapshot taken next holds it
        data = data[: data.rfind(b"\n") + 1]
        fd = os.open(target / path.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        files += 1
        events += data.count(b"\n")
    return files, events


def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
