"""The state store: what the daemon must remember across restarts, behind one interface.

SQLite in WAL mode by default (`state.url: sqlite:///state.db`), with `synchronous=NORMAL`:
every write is committed at once and survives the process being killed; only a power loss
can take the last few commits. The SQL is kept portable (no SQLite-only syntax beyond the
pragmas), so a PostgreSQL store can stand behind the same methods later.

It holds the SLA deadlines (the scheduler's job store keeps its rows here), the agents' last
heartbeats, cooldowns, dead letters, and the journaled events with their progress (written by
the journal through its own connection; its segment files cover a power loss).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS deadlines (
        key TEXT PRIMARY KEY,
        due REAL NOT NULL,
        payload TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS heartbeats (
        agent_config_id TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        seen REAL NOT NULL,
        PRIMARY KEY (agent_config_id, agent_id)
    )""",
    """CREATE TABLE IF NOT EXISTS flags (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS events (
        id TEXT PRIMARY KEY,
        accepted REAL NOT NULL,
        body TEXT NOT NULL,
        matched TEXT,
        done INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS events_unfinished ON events (done, accepted)",
    """CREATE TABLE IF NOT EXISTS action_outcomes (
        event_id TEXT NOT NULL,
        automation TEXT NOT NULL,
        action_index INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        PRIMARY KEY (event_id, automation, action_index)
    )""",
    """CREATE TABLE IF NOT EXISTS dead_letters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL,
        automation TEXT NOT NULL,
        action_index INTEGER NOT NULL,
        action TEXT NOT NULL,
        error TEXT NOT NULL,
        failed_at REAL NOT NULL,
        tries INTEGER NOT NULL DEFAULT 1,
        event TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0
    )""",
)


class StateError(Exception):
    """The state store cannot be opened or written."""


@dataclass(frozen=True, slots=True)
class LetterFilter:
    """Which dead letters an operator means: by id, automation (a glob), action kind and
    failing before a time (Unix seconds); every field given must hold."""

    ids: tuple[int, ...] = ()
    automation: str | None = None
    action: str | None = None
    before: float | None = None

    def sql(self) -> tuple[str, tuple[object, ...]]:
        """The WHERE conditions (each after an AND) and their values."""
        where, values = "", tuple[object, ...]()
        if self.ids:
            where += f" AND id IN ({', '.join('?' * len(self.ids))})"
            values += self.ids
        if self.automation is not None:
            where += " AND automation GLOB ?"
            values += (self.automation,)
        if self.action is not None:
            where += " AND action = ?"
            values += (self.action,)
        if self.before is not None:
            where += " AND failed_at < ?"
            values += (self.before,)
        return where, values


class StateStore:
    """SQLite-backed state. All methods are quick (one indexed statement, committed at once)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        """Open (and create) the database; raises StateError saying why it cannot."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            for statement in SCHEMA:
                db.execute(statement)
            columns = {row[1] for row in db.execute("PRAGMA table_info(dead_letters)")}
            if "attempts" not in columns:  # a store from before attempts were counted:
                # its letters' attempts are unknown (null), not 0
                db.execute("ALTER TABLE dead_letters ADD COLUMN attempts INTEGER")
        except (OSError, sqlite3.Error) as exc:
            raise StateError(f"cannot open the state database {self.path}: {exc}") from None
        self._db = db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def healthy(self) -> bool:
        """Whether the store is open and takes a write (GET /readyz's `state_writable`): one
        small row is rewritten, since a full disk, a read-only file system or an I/O error
        refuses writes while reads still answer."""
        if self._db is None:
            return False
        try:
            self._db.execute(
                "INSERT INTO flags (name, value) VALUES ('readyz.probe', ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (repr(time.time()),),
            )
        except sqlite3.Error:
            return False
        return True

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StateError("the state store is not open")
        return self._db

    # --- deadlines

    def put_deadline(self, key: str, due: float, payload: dict[str, object]) -> None:
        """Arm or re-arm one deadline."""
        self.db.execute(
            "INSERT INTO deadlines (key, due, payload) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET due = excluded.due, payload = excluded.payload",
            (key, due, json.dumps(payload, separators=(",", ":"))),
        )

    def put_deadlines(self, rows: list[tuple[str, float, dict[str, object]]]) -> None:
        """Arm many deadlines in one transaction."""
        db = self.db
        db.execute("BEGIN")
        try:
            db.executemany(
                "INSERT INTO deadlines (key, due, payload) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET due = excluded.due, payload = excluded.payload",
                [(k, d, json.dumps(p, separators=(",", ":"))) for k, d, p in rows],
            )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def delete_deadline(self, key: str) -> None:
        self.db.execute("DELETE FROM deadlines WHERE key = ?", (key,))

    def deadline(self, key: str) -> tuple[float, dict[str, object]] | None:
        """The due time and payload of one deadline, if armed."""
        row = self.db.execute("SELECT due, payload FROM deadlines WHERE key = ?", (key,)).fetchone()
        return None if row is None else (float(row[0]), json.loads(row[1]))

    def deadline_times(self) -> Iterator[tuple[str, float]]:
        """Every armed deadline's key and due time (for rebuilding the schedule on start)."""
        yield from self.db.execute("SELECT key, due FROM deadlines")

    def deadlines(self, prefix: str = "") -> Iterator[tuple[str, float, dict[str, object]]]:
        """Every armed deadline (whose key starts with `prefix`) with its payload, soonest
        first. The prefix is a range on the primary key, so it reads only those rows."""
        rows = self.db.execute(
            "SELECT key, due, payload FROM deadlines WHERE key >= ? AND key < ? ORDER BY due",
            (prefix, prefix + "\U0010ffff"),
        )
        for key, due, payload in rows:
            yield key, float(due), json.loads(payload)

    # --- progress of journaled events (the journal itself writes through its own connection)

    def unfinished(
        self,
    ) -> Iterator[tuple[dict[str, object], list[str] | None, set[tuple[str, int]], float]]:
        """Journaled events whose actions are not all finished, oldest first: the event, the
        automations it fired (None when it was never matched), the actions already done and
        when it was accepted (Unix time)."""
        rows = self.db.execute(
            "SELECT id, body, matched, accepted FROM events WHERE done = 0 ORDER BY accepted"
        ).fetchall()
        for event_id, body, matched, accepted in rows:
            finished = {
                (str(automation), int(index))
                for automation, index in self.db.execute(
                    "SELECT automation, action_index FROM action_outcomes WHERE event_id = ?",
                    (event_id,),
                )
            }
            fired = None if matched is None else json.loads(matched)
            yield json.loads(body), fired, finished, float(accepted)

    def prune(self, before: float) -> int:
        """Forget finished events accepted before `before` (and their outcomes)."""
        db = self.db
        db.execute("BEGIN")
        try:
            db.execute(
                "DELETE FROM action_outcomes WHERE event_id IN "
                "(SELECT id FROM events WHERE done = 1 AND accepted < ?)",
                (before,),
            )
            count = db.execute(
                "DELETE FROM events WHERE done = 1 AND accepted < ?", (before,)
            ).rowcount
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return int(count)

    # --- dead letters

    def add_dead_letter(
        self,
        event: dict[str, object],
        automation: str,
        index: int,
        action: str,
        error: str,
        at: float,
        attempts: int,
    ) -> int:
        cursor = self.db.execute(
            "INSERT INTO dead_letters "
            "(event_id, automation, action_index, action, error, failed_at, event, attempts) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (str(event["id"]), automation, index, action, error, at, json.dumps(event), attempts),
        )
        return int(cursor.lastrowid or 0)

    def dead_letters(
        self, which: LetterFilter | None = None, *, after: int = 0, limit: int = -1
    ) -> list[dict[str, object]]:
        """Dead letters with an id above `after` (and selected by `which`), oldest first, at
        most `limit` (-1: all). `runs` counts how often the action ran (1 + retries), and
        `attempts` its attempts over all runs, as the audit trail's records add up."""
        where, values = (which or LetterFilter()).sql()
        # `where` is made of fixed conditions; every value is a parameter
        head = "SELECT id, event_id, automation, action_index, action, error, failed_at, tries"
        query = f"{head}, attempts FROM dead_letters WHERE id > ?{where} ORDER BY id LIMIT ?"
        rows = self.db.execute(query, (after, *values, limit))
        names = (
            "id",
            "event_id",
            "automation",
            "action_index",
            "action",
            "error",
            "failed_at",
            "runs",
            "attempts",
        )
        return [dict(zip(names, row, strict=True)) for row in rows]

    def count_dead_letters(self, which: LetterFilter | None = None) -> int:
        """How many dead letters are kept (selected by `which`)."""
        where, values = (which or LetterFilter()).sql()
        query = f"SELECT count(*) FROM dead_letters WHERE 1{where}"  # noqa: S608
        return int(self.db.execute(query, values).fetchone()[0])

    def drop_dead_letters(self, which: LetterFilter, *, limit: int) -> list[tuple[int, str, str]]:
        """Forget the oldest `limit` dead letters `which` selects; their id, event id and
        automation."""
        where, values = which.sql()
        db = self.db
        db.execute("BEGIN")
        try:
            oldest = f"SELECT id FROM dead_letters WHERE 1{where} ORDER BY id LIMIT ?"  # noqa: S608
            dropped = db.execute(
                f"DELETE FROM dead_letters WHERE id IN ({oldest}) "  # noqa: S608
                "RETURNING id, event_id, automation",
                (*values, limit),
            ).fetchall()
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return sorted((int(i), str(e), str(a)) for i, e, a in dropped)

    def dead_letter(self, letter_id: int) -> tuple[dict[str, object], str, int] | None:
        """The event, automation and action index of one dead letter."""
        row = self.db.execute(
            "SELECT event, automation, action_index FROM dead_letters WHERE id = ?", (letter_id,)
        ).fetchone()
        return None if row is None else (dict(json.loads(row[0])), str(row[1]), int(row[2]))

    def retried_dead_letter(self, letter_id: int, error: str | None, attempts: int) -> None:
        """A retry succeeded (error None: the letter goes) or failed again (counted, with
        its `attempts`)."""
        if error is None:
            self.db.execute("DELETE FROM dead_letters WHERE id = ?", (letter_id,))
        else:
            self.db.execute(
                "UPDATE dead_letters SET tries = tries + 1, attempts = attempts + ?, error = ? "
                "WHERE id = ?",
                (attempts, error, letter_id),
            )

    # --- agent heartbeats and flags

    def put_heartbeat(self, agent_config_id: str, agent_id: str, seen: float) -> None:
        self.db.execute(
            "INSERT INTO heartbeats (agent_config_id, agent_id, seen) VALUES (?, ?, ?) "
            "ON CONFLICT (agent_config_id, agent_id) DO UPDATE SET seen = excluded.seen",
            (agent_config_id, agent_id, seen),
        )

    def heartbeats(self, agent_config_id: str) -> dict[str, float]:
        """Agent id -> time of its last heartbeat, for one agent config."""
        rows = self.db.execute(
            "SELECT agent_id, seen FROM heartbeats WHERE agent_config_id = ?", (agent_config_id,)
        )
        return {agent: float(seen) for agent, seen in rows}

    def flags(self, prefix: str) -> dict[str, str]:
        """Every flag whose name starts with `prefix`, by name."""
        rows = self.db.execute(
            "SELECT name, value FROM flags WHERE name >= ? AND name < ?",
            (prefix, prefix + "\U0010ffff"),
        )
        return {str(name): str(value) for name, value in rows}

    def prune_flags(self, prefix: str, before: float) -> int:
        """Forget flags under `prefix` whose value (a Unix time) is before `before`."""
        cursor = self.db.execute(
            "DELETE FROM flags WHERE name >= ? AND name < ? AND CAST(value AS REAL) < ?",
            (prefix, prefix + "\U0010ffff", before),
        )
        return int(cursor.rowcount)

    def flag(self, name: str) -> str | None:
        row = self.db.execute("SELECT value FROM flags WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def set_flag(self, name: str, value: str | None) -> None:
        if value is None:
            self.db.execute("DELETE FROM flags WHERE name = ?", (name,))
        else:
            self.db.execute(
                "INSERT INTO flags (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (name, value),
            )
