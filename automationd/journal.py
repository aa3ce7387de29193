"""The journal: accepted events made durable before the daemon answers 202.

Events are appended to the `events` table of the state store through a connection of their
own with `synchronous=FULL`, so each commit is fsynced. Requests arriving while a commit is
on its way wait for the next one, and all of them share it (group commit): under load, one
fsync covers many events, and each request's 202 is sent only after the fsync that covers its
events. The same insert decides duplicates: an id accepted within `dedup_window` is not
inserted again and is reported as a duplicate.

When the journal cannot be written (disk full, read-only), `append` raises JournalError and
the daemon answers 503: it never answers 202 for an event it could not make durable.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

log = logging.getLogger("automationd.journal")

UPSERT_TAIL = (
    " ON CONFLICT (id) DO UPDATE SET accepted = excluded.accepted, body = excluded.body, "
    "matched = NULL, done = 0 WHERE events.accepted < ?"
)
UPSERT = "INSERT INTO events (id, accepted, body) VALUES (?, ?, ?)" + UPSERT_TAIL  # noqa: S608
"""Insert, or take the id over when its earlier use is older than the dedup window; a
conflict inside the window changes no row: a duplicate."""
CHUNK = 500
"""Rows per multi-row INSERT: one statement step (one release of the GIL) per chunk."""


def _upsert_many(rows: int) -> str:
    values = ", ".join(["(?, ?, ?)"] * rows)  # placeholders only: no data in the SQL text
    return f"INSERT INTO events (id, accepted, body) VALUES {values}" + UPSERT_TAIL  # noqa: S608


class JournalError(Exception):
    """The journal cannot be written: the events were not made durable."""


class Journal:
    """Group-committed, fsynced appends of accepted events, with duplicate detection."""

    def __init__(
        self, path: Path, *, dedup_window: float, on_commit: Callable[[int], None] | None = None
    ) -> None:
        self.path = path
        self._on_commit = on_commit
        self.dedup_window = dedup_window
        self.healthy = False
        self._db: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="automationd-journal")
        self._pending: list[tuple[list[tuple[str, float, str]], asyncio.Future[list[bool]]]] = []
        self._notes: list[tuple[str, tuple[object, ...]]] = []
        self._done: list[str] = []
        self._committer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def open(self) -> None:
        """Open the journal's own connection (the tables are the state store's)."""
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=5000")
        self._db = db
        self.healthy = True
        self._committer = asyncio.create_task(self._commit_forever(), name="automationd-journal")

    async def close(self) -> None:
        """Write the progress still queued, then close."""
        if self._committer is not None:
            self._committer.cancel()
            await asyncio.gather(self._committer, return_exceptions=True)
        if self._notes and self._db is not None:
            notes, self._notes = self._notes, []
            try:
                await asyncio.get_running_loop().run_in_executor(
                    self._thread, self._commit, [], notes
                )
            except (sqlite3.Error, OSError) as exc:
                log.error("cannot write the last progress to the journal: %s", exc)
        self._thread.shutdown(wait=True)
        if self._db is not None:
            self._db.close()
            self._db = None

    async def append(self, events: list[tuple[str, str]], now: float) -> list[bool]:
        """Make `events` ((id, JSON body) pairs) durable; for each, True when new, False when
        a duplicate id. Returns only after the fsync covering them; raises JournalError when
        it failed."""
        rows = [(event_id, now, body) for event_id, body in events]
        done: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        self._pending.append((rows, done))
        self._wake.set()
        return await done

    @staticmethod
    def _insert(
        db: sqlite3.Connection, rows: list[tuple[str, float, str]], window: float
    ) -> list[bool]:
        """Insert events; which were new. Multi-row statements keep the journal thread's
        trips through the GIL few. rowcount counts the rows inserted (or taken over after the
        window), not duplicates: when it falls short, undo and go row by row to learn which
        ids were duplicates (rare). Two copies of one id in `rows`: the second is the
        duplicate."""
        if not rows:
            return []
        db.execute("SAVEPOINT request")
        written = 0
        for start in range(0, len(rows), CHUNK):
            chunk = rows[start : start + CHUNK]
            flat = [value for event_id, at, body in chunk for value in (event_id, at, body)]
            written += db.execute(_upsert_many(len(chunk)), [*flat, chunk[0][1] - window]).rowcount
        if written == len(rows):
            db.execute("RELEASE request")
            return [True] * len(rows)
        db.execute("ROLLBACK TO request")
        db.execute("RELEASE request")
        return [
            db.execute(UPSERT, (i, at, body, at - window)).rowcount == 1 for i, at, body in rows
        ]

    def note(self, statement: str, *params: object) -> None:
        """Queue a progress write (which automations fired, an action's outcome) for the next
        commit: the journal's connection is the only writer of events, so the event loop
        never waits for its lock, and progress rides on the commits events make anyway."""
        self._notes.append((statement, params))
        self._wake.set()

    def set_matched(self, event_id: str, automations: list[str], *, done: bool) -> None:
        if done and not automations:  # the common case, written in bulk
            self._done.append(event_id)
            self._wake.set()
            return
        self.note(
            "UPDATE events SET matched = ?, done = ? WHERE id = ?",
            json.dumps(automations),
            int(done),
            event_id,
        )

    def set_outcome(self, event_id: str, automation: str, index: int, outcome: str) -> None:
        self.note(
            "INSERT INTO action_outcomes (event_id, automation, action_index, outcome) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (event_id, automation, action_index) "
            "DO UPDATE SET outcome = excluded.outcome",
            event_id,
            automation,
            index,
            outcome,
        )

    def set_done(self, event_id: str) -> None:
        self._done.append(event_id)
        self._wake.set()

    async def _commit_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            notes, self._notes = self._notes, []
            done, self._done = self._done, []
            if not batch and not notes and not done:
                continue
            try:
                results = await loop.run_in_executor(self._thread, self._commit, batch, notes, done)
            except (sqlite3.Error, OSError) as exc:
                self.healthy = False
                log.error("cannot write the journal %s: %s", self.path, exc)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(JournalError(str(exc)))
                continue
            self.healthy = True
            if self._on_commit is not None:
                self._on_commit(sum(len(rows) for rows, _ in batch))
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    def _commit(
        self,
        batch: list[tuple[list[tuple[str, float, str]], asyncio.Future[list[bool]]]],
        notes: list[tuple[str, tuple[object, ...]]],
        done: list[str] | None = None,
    ) -> list[list[bool]]:
        """One transaction, one fsync, for every request of the batch (in the journal thread)."""
        db = self._db
        if db is None:
            raise sqlite3.OperationalError("the journal is closed")
        window = self.dedup_window
        db.execute("BEGIN IMMEDIATE")
        try:
            # every request's rows in as few statements as possible: each statement is a
            # trip through the GIL, which the busy event loop makes slow to get back
            fresh = self._insert(db, [row for rows, _ in batch for row in rows], window)
            results: list[list[bool]] = []
            for rows, _ in batch:
                results.append(fresh[: len(rows)])
                fresh = fresh[len(rows) :]
            for statement, values in notes:
                db.execute(statement, values)
            for start in range(0, len(done or []), CHUNK):
                ids = (done or [])[start : start + CHUNK]
                marks = ", ".join(["?"] * len(ids))
                db.execute(f"UPDATE events SET done = 1 WHERE id IN ({marks})", ids)  # noqa: S608
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return results
