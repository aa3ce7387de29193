"""The journal thread's own connection to the SQLite store (see `JournalWriter`): duplicate
ids looked up, and events with their progress written in one transaction per batch."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Collection, Sequence

from automationd.store import JournaledEvent, Matched, Progress
from automationd.store.sqlite_base import transaction, translated

CHUNK = 500
"""Ids per `IN (...)` list."""
UPSERT = (
    "INSERT INTO events (id, accepted, body, done) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET accepted = excluded.accepted, body = excluded.body, "
    "matched = NULL, done = excluded.done WHERE events.accepted < excluded.accepted - {window!r}"
)
"""Insert, or take the id over when its earlier use is older than the dedup window (the
journal decided so); an id already there within the window keeps its row. The window (a
float) is written into the statement: one parameter less per row."""


class SqliteJournalWriter:
    """The journal thread's connection (see `JournalWriter`)."""

    def __init__(self, db: sqlite3.Connection, dedup_window: float) -> None:
        self._db = db
        self._upsert = UPSERT.format(window=float(dedup_window))

    @translated
    def accepted_at(self, ids: Collection[str]) -> dict[str, float]:
        known: dict[str, float] = {}
        listed = list(ids)
        for start in range(0, len(listed), CHUNK):
            chunk = listed[start : start + CHUNK]
            marks = ", ".join(["?"] * len(chunk))
            query = f"SELECT id, accepted FROM events WHERE id IN ({marks})"  # noqa: S608
            known.update(self._db.execute(query, chunk).fetchall())
        return known

    @translated
    def write(
        self, events: Sequence[JournaledEvent], progress: Sequence[Progress], done: Sequence[str]
    ) -> None:
        with transaction(self._db, "BEGIN IMMEDIATE") as db:
            db.executemany(self._upsert, events)
            for step in progress:
                if isinstance(step, Matched):
                    db.execute(
                        "UPDATE events SET matched = ?, done = ? WHERE id = ?",
                        (json.dumps(list(step.automations)), int(step.done), step.event_id),
                    )
                else:
                    db.execute(
                        "INSERT INTO action_outcomes (event_id, automation, action_index, "
                        "outcome) VALUES (?, ?, ?, ?) ON CONFLICT (event_id, automation, "
                        "action_index) DO UPDATE SET outcome = excluded.outcome",
                        (step.event_id, step.automation, step.index, step.outcome),
                    )
            for start in range(0, len(done), CHUNK):
                ids = done[start : start + CHUNK]
                marks = ", ".join(["?"] * len(ids))
                db.execute(f"UPDATE events SET done = 1 WHERE id IN ({marks})", ids)  # noqa: S608

    @translated
    def sync(self) -> None:
        db = self._db
        db.execute("PRAGMA synchronous=FULL")
        try:
            db.execute(
                "INSERT INTO journal_synced (id, at) VALUES (1, ?) "
                "ON CONFLICT (id) DO UPDATE SET at = excluded.at",
                (time.time(),),
            )
        finally:
            db.execute("PRAGMA synchronous=NORMAL")

    def close(self) -> None:
        self._db.close()
