"""The journal: accepted events made durable before the daemon answers 202.

Accepted events are appended to a segment file beside the state database
(`state.db-events/NNNNNNNN.log`, one JSON line per event) and fdatasynced; each request's 202
is sent only after the fdatasync that covers its events. Requests arriving while one is on
its way wait for the next, and all of them share it (group commit): under load, one fdatasync
covers many events. A thread of its own does this, back to back, without waiting for the
event loop to start each one.

Duplicates are decided before the append: an id accepted within `dedup_window` is a duplicate
whether it is still in memory (appended, not yet in the database) or already in the store.
The store keeps every event for the dedup window (and `retention`) and the progress of each
(which automations fired, each action's outcome, done). The thread writes the events and the
progress queued since the last write in one transaction every FLUSH_SECONDS, through a
connection of its own (`Store.journal_writer`), not per request: one write of each database
page for many events. Those commits are not synced: they survive the process being killed,
and the segment files cover a power loss. About once a second (SYNC_SECONDS) a fully synced
commit makes everything before it durable in the database, and the segments it covers are
deleted. On start, the segments left over are written into the database again (an event
already there keeps its row), so an event whose 202 was sent is never lost; the progress of
the last moments before a crash may be, and those actions run again (at least once).

When the journal cannot be written (disk full, read-only), `append` raises JournalError and
the daemon answers 503: it never answers 202 for an event it could not make durable. What was
written for the failed step is cut off the segment again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from automationd import jsontext
from automationd.store import (
    JournaledEvent,
    JournalError,
    JournalWriter,
    Matched,
    Outcome,
    Progress,
    Store,
    StoreError,
)

log = logging.getLogger("automationd.journal")

FLUSH_SECONDS = 0.05
"""How long events and progress wait in memory before they are written to the database."""
SYNC_SECONDS = 1.0
"""How often a fully synced commit lets the segments before it go."""
SEGMENT_BYTES = 64 << 20
"""A segment larger than this is closed and a new one begun, even within SYNC_SECONDS."""
MAX_UNWRITTEN = 200_000
"""Events kept in memory while the database cannot be written; beyond, appends fail."""


class _Segment:
    """One append-only segment file of the journal."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.number = int(path.stem)
        self.size = 0
        self.opened = time.monotonic()
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            _sync_directory(path.parent)  # the new name survives a power loss too
        except OSError:
            os.close(self._fd)
            raise

    def append(self, data: bytes) -> None:
        """Write `data` and fdatasync it; on failure, cut the segment back and raise."""
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
            os.fdatasync(self._fd)
        except OSError:
            self._cut(self.size)
            raise
        self.size += len(data)

    def _cut(self, size: int) -> None:
        try:
            os.ftruncate(self._fd, size)
            os.fdatasync(self._fd)
        except OSError as exc:
            log.error("cannot cut %s back after a failed write: %s", self.path, exc)

    def close(self) -> None:
        os.close(self._fd)


def _sync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _record(event_id: str, accepted: float, body: str) -> bytes:
    """One journal line: `[id, accepted, event]`, the event being the body's JSON as is."""
    return f"{jsontext.dumps([event_id, accepted])[:-1]},{body}]\n".encode()


def _records(path: Path) -> list[tuple[str, float, str]]:
    """The events of one segment; a line that does not parse (torn by a crash) is skipped."""
    rows = []
    for number, line in enumerate(path.read_bytes().split(b"\n"), 1):
        if not line:
            continue
        try:
            event_id, accepted, event = json.loads(line)
            body = jsontext.dumps(event)
            rows.append((str(event_id), float(accepted), body))
        except (ValueError, TypeError):
            log.warning("%s:%d: skipped a journal line that does not parse", path, number)
    return rows


class _Append(NamedTuple):
    rows: list[tuple[str, float, str]]
    future: asyncio.Future[list[bool]]


class _Done(NamedTuple):
    event_id: str


class Journal:
    """Group-committed, fdatasynced appends of accepted events, with duplicate detection."""

    def __init__(
        self,
        store: Store,
        path: Path,
        *,
        dedup_window: float,
        on_commit: Callable[[int], None] | None = None,
    ) -> None:
        self.path = path
        self._store = store
        self._on_commit = on_commit
        self.dedup_window = dedup_window
        self.healthy = False
        self._writer: JournalWriter | None = None
        self._inbox: queue.SimpleQueue[_Append | Progress | _Done | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._segment: _Segment | None = None
        # what the thread has not written to the database yet: appended events by id
        # (accepted, body), progress, finished event ids; since when
        self._unwritten: dict[str, tuple[float, str]] = {}
        self._notes: list[Progress] = []
        self._done: set[str] = set()
        self._waiting_since: float | None = None

    @property
    def directory(self) -> Path:
        """Where the segment files are: beside the database, `state.db-events/`."""
        return self.path.with_name(self.path.name + "-events")

    @property
    def _open_writer(self) -> JournalWriter:
        """The journal's own connection to the store."""
        if self._writer is None:
            raise StoreError("the journal is closed")
        return self._writer

    def open(self) -> None:
        """Open the journal's own connection to the store, write the segments a crash or
        power loss left into it, and start the journal thread. Raises StoreError saying why
        it cannot."""
        try:
            self._writer = self._store.journal_writer(self.dedup_window)
            self.directory.mkdir(exist_ok=True)
            left = sorted(p for p in self.directory.glob("*.log") if p.stem.isdigit())
            replayed = self._replay(left)
            last = max((int(p.stem) for p in left), default=0)
            self._segment = _Segment(self.directory / f"{last + 1:08d}.log")
        except (OSError, StoreError) as exc:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            raise StoreError(f"cannot open the journal {self.directory}: {exc}") from None
        if replayed:
            log.info("recovered %d events from the journal's segment files", replayed)
        self.healthy = True
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="automationd-journal", daemon=True)
        self._thread.start()

    def _replay(self, segments: list[Path]) -> int:
        """Write the events of `segments` into the database, sync, delete the segments."""
        rows = [row for path in segments for row in _records(path)]
        self._open_writer.write(
            [JournaledEvent(i, at, body, False) for i, at, body in rows], [], []
        )
        self._open_writer.sync()
        for path in segments:
            path.unlink()
        return len(rows)

    async def close(self) -> None:
        """Write what is still queued (the last progress too), sync, then close."""
        if self._thread is not None:
            self._inbox.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        if self._segment is not None:
            self._segment.close()
            self._segment = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    async def append(self, events: list[tuple[str, str]], now: float) -> list[bool]:
        """Make `events` ((id, JSON body) pairs) durable; for each, True when new, False when
        a duplicate id. Returns only after the fdatasync covering them; raises JournalError
        when it failed."""
        if self._thread is None or not self._thread.is_alive():
            raise JournalError("the journal is not running")
        done: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        self._inbox.put(_Append([(event_id, now, body) for event_id, body in events], done))
        return await done

    # Progress (which automations fired, an action's outcome) is queued for the journal
    # thread: its connection is the only writer of events, so the event loop never waits for
    # its lock, and progress rides on the writes events make anyway.

    def set_matched(self, event_id: str, automations: list[str], *, done: bool) -> None:
        if done and not automations:  # the common case: usually written with the event
            self._inbox.put(_Done(event_id))
            return
        self._inbox.put(Matched(event_id, tuple(automations), done))

    def set_outcome(self, event_id: str, automation: str, index: int, outcome: str) -> None:
        self._inbox.put(Outcome(event_id, automation, index, outcome))

    def set_done(self, event_id: str) -> None:
        self._inbox.put(_Done(event_id))

    # --- the journal thread

    def _run(self) -> None:
        """Take everything queued since the last step: append the new events (one
        fdatasync), answer their requests, and write to the database when it is due."""
        closing = False
        while not closing:
            work = self._take(self._sleep())
            appends: list[_Append] = []
            for item in work:
                if item is None:
                    closing = True
                elif isinstance(item, _Append):
                    appends.append(item)
                elif isinstance(item, Matched | Outcome):
                    self._notes.append(item)
                else:
                    self._done.add(item.event_id)
            if appends:
                try:
                    outcome: list[list[bool]] | Exception = self._append(appends)
                except Exception as exc:  # the thread must go on; the 503 says why
                    log.error("cannot write the journal %s: %s", self.directory, exc)
                    outcome = exc
                self._settle_threadsafe(appends, outcome)
            if (self._notes or self._done) and self._waiting_since is None:
                self._waiting_since = time.monotonic()
            self._write_when_due(force=closing)

    def _take(self, timeout: float | None) -> list[_Append | Progress | _Done | None]:
        try:
            work = [self._inbox.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                work.append(self._inbox.get_nowait())
            except queue.Empty:
                return work

    def _sleep(self) -> float | None:
        """How long the thread may wait for work before a write or sync is due."""
        now = time.monotonic()
        due = []
        if self._waiting_since is not None:
            due.append(self._waiting_since + FLUSH_SECONDS)
        if self._segment is not None and self._segment.size:
            due.append(self._segment.opened + SYNC_SECONDS)
        return max(0.0, min(due) - now) if due else None

    def _append(self, appends: list[_Append]) -> list[list[bool]]:
        """Decide duplicates, append the new events to the segment and fdatasync it."""
        if len(self._unwritten) > MAX_UNWRITTEN:
            raise JournalError("the state database has not been writable for a while")
        rows = [row for append in appends for row in append.rows]
        known = self._open_writer.accepted_at({event_id for event_id, _, _ in rows})
        window = self.dedup_window
        fresh: list[bool] = []
        new: dict[str, tuple[float, str]] = {}
        for event_id, at, body in rows:
            before = new.get(event_id) or self._unwritten.get(event_id)
            earlier = before[0] if before is not None else known.get(event_id)
            is_new = earlier is None or earlier < at - window
            fresh.append(is_new)
            if is_new:
                new[event_id] = (at, body)
        if new:
            assert self._segment is not None
            self._segment.append(b"".join(_record(i, at, body) for i, (at, body) in new.items()))
            if self._waiting_since is None:
                self._waiting_since = time.monotonic()
            self._unwritten.update(new)
        results = []
        for append in appends:
            results.append(fresh[: len(append.rows)])
            fresh = fresh[len(append.rows) :]
        return results

    def _settle_threadsafe(
        self, appends: list[_Append], outcome: list[list[bool]] | Exception
    ) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._settle, appends, outcome)

    def _settle(self, appends: list[_Append], outcome: list[list[bool]] | Exception) -> None:
        """On the event loop: answer the requests an append covered."""
        if isinstance(outcome, Exception):
            self.healthy = False
            for append in appends:
                if not append.future.done():
                    append.future.set_exception(JournalError(str(outcome)))
            return
        self.healthy = True
        written = sum(sum(result) for result in outcome)
        if self._on_commit is not None and written:
            self._on_commit(written)
        for append, result in zip(appends, outcome, strict=True):
            if not append.future.done():
                append.future.set_result(result)

    def _write_when_due(self, *, force: bool) -> None:
        """Write events and progress to the database every FLUSH_SECONDS; sync it and let
        the segments go every SYNC_SECONDS (both at once when closing)."""
        now = time.monotonic()
        segment = self._segment
        if segment is None:
            return
        sync = (
            force
            or segment.size > SEGMENT_BYTES
            or (segment.size > 0 and now - segment.opened > SYNC_SECONDS)
        )
        since = self._waiting_since
        try:
            if since is not None and (force or sync or now - since >= FLUSH_SECONDS):
                self._write_pending()
            if sync:
                self._rotate(closing=force)
        except Exception as exc:  # kept in memory and segments; tried again
            log.error("cannot write the journal's database %s: %s", self.path, exc)
            if self._waiting_since is not None:
                self._waiting_since = now
            segment.opened = now  # no busy retrying: the next try is a while away

    def _write_pending(self) -> None:
        """Write what waits in memory to the database, in one transaction (not synced)."""
        done = self._done
        noted = {note.event_id for note in self._notes}
        # an event finished before it is written goes in finished, and without its body
        # (nothing reads it again: only its id, for duplicates); one with progress notes is
        # marked finished after them, as they set `done` too
        rows = [
            JournaledEvent(i, at, "", True)
            if i in done and i not in noted
            else JournaledEvent(i, at, body, False)
            for i, (at, body) in self._unwritten.items()
        ]
        finished = [i for i in done if i in noted or i not in self._unwritten]
        self._open_writer.write(rows, self._notes, finished)
        self._unwritten = {}
        self._notes = []
        self._done = set()
        self._waiting_since = None

    def _rotate(self, *, closing: bool = False) -> None:
        """Begin a new segment (none when closing), make the database durable, delete the
        segments it covers (every event in them has been written to the database)."""
        old = self._segment
        assert old is not None
        self._segment = None if closing else _Segment(self.directory / f"{old.number + 1:08d}.log")
        old.close()
        self._open_writer.sync()
        for path in self.directory.glob("*.log"):
            if path.stem.isdigit() and (
                self._segment is None or int(path.stem) < self._segment.number
            ):
                path.unlink()
