"""Reading the audit trail: `automationd audit` filters, tells one event's story, follows.

Rotated files (`audit.jsonl.1`, `audit.jsonl.2`, ...; compressed ones are skipped) are read
oldest first, then the live file; `--follow` keeps reading the live file and reopens it when
logrotate moves it away (its inode changes) or truncates it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

from automationd.events import parse_timestamp

FAILED_KINDS = frozenset(
    {
        "action.failed",
        "action.dead_lettered",
        "automation.error",
        "config.rejected",
        "event.duplicate",
        "event.rejected",
    }
)
"""What --failed shows (with failed attempts)."""

Record = dict[str, object]


@dataclass(frozen=True, slots=True)
class Filter:
    """Which records to show."""

    event: str | None = None
    automation: str | None = None
    kind: str | None = None
    since: datetime | None = None
    failed: bool = False

    def __call__(self, record: Record) -> bool:
        if self.event is not None and record.get("event_id") != self.event:
            return False
        if self.automation is not None and record.get("automation") != self.automation:
            return False
        kind = str(record.get("kind", ""))
        if self.kind is not None and kind != self.kind and not kind.startswith(self.kind + "."):
            return False
        if (
            self.failed
            and kind not in FAILED_KINDS
            and not (kind == "action.attempt" and record.get("ok") is False)
        ):
            return False
        if self.since is not None:
            stamp = record.get("time")
            try:
                return isinstance(stamp, str) and parse_timestamp(stamp) >= self.since
            except ValueError:
                return False
        return True


def trail_files(path: Path) -> list[Path]:
    """The rotated files, oldest first, then the live one."""
    rotated = []
    for candidate in path.parent.glob(path.name + ".*"):
        suffix = candidate.name[len(path.name) + 1 :]
        if suffix.isdigit():
            rotated.append((int(suffix), candidate))
    return [p for _, p in sorted(rotated, reverse=True)] + ([path] if path.exists() else [])


def _records(stream: TextIO) -> Iterator[Record]:
    for line in stream:
        if not line.endswith("\n"):
            return  # still being written
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            yield record


def read(path: Path, keep: Filter, *, live: bool = True) -> Iterator[Record]:
    """Every record of the trail (rotated files first; the live file too unless `live` is
    false) that the filter keeps."""
    for file in trail_files(path):
        if file == path and not live:
            continue
        with file.open(encoding="utf-8", errors="replace") as stream:
            yield from (r for r in _records(stream) if keep(r))


MIN_PREFIX = 4
"""The fewest characters of an event id that `--event` takes as a prefix: shorter ones
match too much to mean one event, and are taken as whole ids only."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """An event an `--event` id (or prefix) names: its id, when it was first recorded, and
    its type (from its `event.accepted` record)."""

    event_id: str
    time: str
    type: str


def find_events(path: Path, wanted: str) -> list[Candidate]:
    """The events of the trail, in the order first seen, whose id is `wanted`, or else starts
    with it (a prefix of at least MIN_PREFIX characters): a whole id wins over longer ids it
    begins, so a short id stays reachable."""
    found: dict[str, Candidate] = {}
    plain = json.dumps(wanted)[1:-1] == wanted  # written in the trail as it is
    prefix = len(wanted) >= MIN_PREFIX
    for file in trail_files(path):
        with file.open(encoding="utf-8", errors="replace") as stream:
            for line in stream:
                if plain and wanted not in line:
                    continue  # most lines: no JSON to parse
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                event_id = record.get("event_id") if isinstance(record, dict) else None
                if not isinstance(event_id, str) or not (
                    event_id == wanted or (prefix and event_id.startswith(wanted))
                ):
                    continue
                event = record.get("event")
                kind = event.get("type") if isinstance(event, dict) else None
                seen = found.get(event_id)
                if seen is None or (not seen.type and isinstance(kind, str)):
                    time = seen.time if seen else str(record.get("time", ""))
                    found[event_id] = Candidate(
                        event_id, time, kind if isinstance(kind, str) else ""
                    )
    if wanted in found:
        return [found[wanted]]
    return list(found.values())


def follow(
    path: Path, keep: Filter, *, stop: Callable[[], bool], poll: float = 0.2, from_end: bool = False
) -> Iterator[Record]:
    """The live file's records, then new ones as they come, across rotations and
    truncations (`from_end`: only the new ones)."""
    stream: TextIO | None = None
    inode = 0
    while not stop():
        try:
            stat = path.stat()
        except FileNotFoundError:
            stat = None
        moved = stat is None or stat.st_ino != inode
        if stream is not None and (moved or (stat is not None and stat.st_size < stream.tell())):
            yield from (r for r in _records(stream) if keep(r))  # what the old file still had
            stream.close()
            stream = None
        if stream is None:
            if stat is None:
                time.sleep(poll)
                continue
            stream = path.open(encoding="utf-8", errors="replace")
            inode = stat.st_ino
            if from_end:
                stream.seek(0, 2)
                from_end = False
        start = stream.tell()
        line = stream.readline()
        if not line.endswith("\n"):
            stream.seek(start)  # nothing new, or a line still being written
            time.sleep(poll)
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and keep(record):
            yield record
    if stream is not None:
        stream.close()


_DETAIL_KEYS = (
    "status",
    "attempt",
    "attempts",
    "error",
    "reason",
    "key",
    "sla",
    "sla_kind",
    "trigger",
    "problems",
)


def as_row(record: Record) -> str:
    """One readable line: time, kind, event, automation/action, and the detail that matters."""
    stamp = str(record.get("time", ""))[:23].replace("T", " ")
    kind = str(record.get("kind", ""))
    event = str(record.get("event_id") or "")
    who = str(record.get("automation") or "")
    if record.get("action") is not None:
        who += f" #{record.get('action_index')} {record.get('action')}"
    details = [f"{k}={record[k]}" for k in _DETAIL_KEYS if record.get(k) not in (None, "", [])]
    if kind == "event.accepted":
        inner = record.get("event")
        if isinstance(inner, dict):
            details.insert(0, f"type={inner.get('type')}")
    text = "  ".join(details)
    return re.sub(r"\s+", " ", f"{stamp}  {kind:<22} {event:<36} {who:<28} {text}").rstrip()


def since(duration_seconds: float, now: datetime | None = None) -> datetime:
    """The moment `duration_seconds` ago."""
    return (now or datetime.now(UTC)) - timedelta(seconds=duration_seconds)
