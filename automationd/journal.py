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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

log = logging.getLogger("automationd.journal")

UPSERT = (
    "INSERT INTO events (id, accepted, body) VALUES (?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET accepted = excluded.accepted, body = excluded.body, "
    "matched = NULL, done = 0 WHERE events.accepted < ?"
)
"""Insert, or take the id over when its earlier use is older than the dedup window; a
conflict inside the window changes no row: a duplicate."""


class JournalError(Exception):
    """The journal cannot be written: the events were not made durable."""


class Journal:
    """Group-committed, fsynced appends of accepted events, with duplicate detection."""

    def __init__(self, path: Path, *, dedup_window: float) -> None:
        self.path = path
        self.dedup_window = dedup_window
        self.healthy = False
        self.commits = 0
        self.events_committed = 0
        self._db: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="automationd-journal")
        self._pending: list[tuple[list[tuple[str, float, str]], asyncio.Future[list[bool]]]] = []
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
        if self._committer is not None:
            self._committer.cancel()
            await asyncio.gather(self._committer, return_exceptions=True)
        self._thread.shutdown(wait=True)
        if self._db is not None:
            self._db.close()
            self._db = None

    async def append(self, events: list[dict[str, object]], now: float) -> list[bool]:
        """Make `events` durable; for each, True when new, False when a duplicate id.

        Returns only after the fsync covering them; raises JournalError when it failed."""
        rows = [
            (str(e["id"]), now, json.dumps(e, ensure_ascii=False, separators=(",", ":")))
            for e in events
        ]
        done: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        self._pending.append((rows, done))
        self._wake.set()
        return await done

    async def _commit_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            try:
                results = await loop.run_in_executor(self._thread, self._commit, batch)
            except (sqlite3.Error, OSError) as exc:
                self.healthy = False
                log.error("cannot write the journal %s: %s", self.path, exc)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(JournalError(str(exc)))
                continue
            self.healthy = True
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    def _commit(
        self, batch: list[tuple[list[tuple[str, float, str]], asyncio.Future[list[bool]]]]
    ) -> list[list[bool]]:
        """One transaction, one fsync, for every request of the batch (in the journal thread)."""
        db = self._db
        if db is None:
            raise sqlite3.OperationalError("the journal is closed")
        results: list[list[bool]] = []
        db.execute("BEGIN IMMEDIATE")
        try:
            for rows, _ in batch:
                fresh = []
                for event_id, accepted, body in rows:
                    cursor = db.execute(
                        UPSERT, (event_id, accepted, body, accepted - self.dedup_window)
                    )
                    fresh.append(cursor.rowcount == 1)
                results.append(fresh)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        self.commits += 1
        self.events_committed += sum(len(rows) for rows, _ in batch)
        return results
