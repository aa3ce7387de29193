"""The store in SQLite (`state.url: sqlite:///state.db`), the default and today the only one.

WAL mode with `synchronous=NORMAL`: every write is committed at once and survives the
process being killed; only a power loss can take the last few commits (the journal's
segment files cover its events, and its `sync` makes everything before it durable). Every
connection but the backup's two is set up by `sqlite_base.connect`: the store's own, used on
the event loop, and the journal thread's (`sqlite_journal`), so neither waits for the
other's transactions. The tables, and the upgrade of a database made by an earlier version,
are in `sqlite_schema`.
The statements are SQLite's own (GLOB, RETURNING, a key range ending in U+10FFFF): another
backend writes its own behind the same methods.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path

from automationd.store import (
    BrokenCopy,
    Deadline,
    Holdings,
    LetterFilter,
    StoreError,
    Unfinished,
)
from automationd.store.sqlite_base import (
    connect,
    driver_errors,
    room_for_a_frame,
    table_names,
    takes_a_write,
    transaction,
    translated,
)
from automationd.store.sqlite_journal import SqliteJournalWriter
from automationd.store.sqlite_schema import upgrade

DEADLINE_UPSERT = (
    "INSERT INTO deadlines (kind, key, due, payload) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (kind, key) DO UPDATE SET due = excluded.due, payload = excluded.payload"
)
LETTER_COLUMNS = (
    "id",
    "event_id",
    "automation",
    "action_index",
    "action",
    "error",
    "failed_at",
    "tries",
    "attempts",
)
LETTER_FIELDS = (*LETTER_COLUMNS[:-2], "runs", "attempts")
"""What a dead letter is called outside: `tries` is how often the action ran."""


PROBE_EVERY = 1.0
"""Seconds a successful write probe stands for (GET /readyz)."""


def _letters_where(which: LetterFilter) -> tuple[str, tuple[object, ...]]:
    """The WHERE conditions (each after an AND) selecting `which`, and their values."""
    where, values = "", tuple[object, ...]()
    if which.ids:
        where += f" AND id IN ({', '.join('?' * len(which.ids))})"
        values += which.ids
    if which.automation is not None:
        where += " AND automation GLOB ?"
        values += (which.automation,)
    if which.action is not None:
        where += " AND action = ?"
        values += (which.action,)
    if which.before is not None:
        where += " AND failed_at < ?"
        values += (which.before,)
    return where, values


def _deadline_row(deadline: Deadline) -> tuple[str, str, float, str]:
    payload = json.dumps(deadline.payload, separators=(",", ":"))
    return deadline.kind, deadline.key, deadline.due, payload


class SqliteStore:
    """The store in one SQLite file at `path` (see `Store` for what each method promises)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._probed_at = -PROBE_EVERY
        self._probe_ok = False

    def open(self) -> None:
        db = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = connect(self.path)
            upgrade(db)
        except (OSError, sqlite3.Error) as exc:
            if db is not None:
                db.close()
            raise StoreError(f"cannot open the state database {self.path}: {exc}") from None
        self._db = db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        self._probed_at, self._probe_ok = -PROBE_EVERY, False

    def writable(self) -> bool:
        """Rewrites one row and looks for free space: a row rewritten can land in pages the
        write-ahead log already holds, so it still succeeds on a full disk. A success stands
        for a second (a probe per /readyz would contend with the journal's commits); a
        failure is looked at again on the next call, so recovery shows at once."""
        if self._db is None:
            return False
        now = time.monotonic()
        if self._probe_ok and now - self._probed_at < PROBE_EVERY:
            return True
        self._probed_at, self._probe_ok = (
            now,
            takes_a_write(self._db) and room_for_a_frame(self.path.parent),
        )
        return self._probe_ok

    @property
    def db(self) -> sqlite3.Connection:
        """The open connection (for the tests, which read the tables as they are)."""
        if self._db is None:
            raise StoreError("the state store is not open")
        return self._db

    # --- the journal and the progress of journaled events

    def journal_writer(self, dedup_window: float) -> SqliteJournalWriter:
        with driver_errors():
            return SqliteJournalWriter(connect(self.path), dedup_window)

    def unfinished(self) -> Iterator[Unfinished]:
        with driver_errors():
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
                yield Unfinished(json.loads(body), fired, finished, float(accepted))

    @translated
    def prune(self, before: float) -> int:
        with transaction(self.db) as db:
            db.execute(
                "DELETE FROM action_outcomes WHERE event_id IN "
                "(SELECT id FROM events WHERE done = 1 AND accepted < ?)",
                (before,),
            )
            count = db.execute(
                "DELETE FROM events WHERE done = 1 AND accepted < ?", (before,)
            ).rowcount
        return int(count)

    # --- deadlines

    @translated
    def put_deadline(self, deadline: Deadline) -> None:
        self.db.execute(DEADLINE_UPSERT, _deadline_row(deadline))

    @translated
    def put_deadlines(self, deadlines: Sequence[Deadline]) -> None:
        with transaction(self.db) as db:
            db.executemany(DEADLINE_UPSERT, [_deadline_row(d) for d in deadlines])

    @translated
    def delete_deadline(self, kind: str, key: str) -> None:
        self.db.execute("DELETE FROM deadlines WHERE kind = ? AND key = ?", (kind, key))

    @translated
    def deadline(self, kind: str, key: str) -> Deadline | None:
        row = self.db.execute(
            "SELECT due, payload FROM deadlines WHERE kind = ? AND key = ?", (kind, key)
        ).fetchone()
        return None if row is None else Deadline(kind, key, float(row[0]), json.loads(row[1]))

    def deadline_times(self) -> Iterator[tuple[str, str, float]]:
        with driver_errors():
            for kind, key, due in self.db.execute("SELECT kind, key, due FROM deadlines"):
                yield str(kind), str(key), float(due)

    def deadlines(self, kind: str, prefix: str = "") -> Iterator[Deadline]:
        with driver_errors():
            rows = self.db.execute(
                "SELECT key, due, payload FROM deadlines "
                "WHERE kind = ? AND key >= ? AND key < ? ORDER BY due",
                (kind, prefix, prefix + "\U0010ffff"),
            )
            for key, due, payload in rows:
                yield Deadline(kind, str(key), float(due), json.loads(payload))

    # --- cooldowns

    @translated
    def cooldown_until(self, automation: str, key: str) -> float | None:
        row = self.db.execute(
            "SELECT until FROM cooldowns WHERE automation = ? AND key = ?", (automation, key)
        ).fetchone()
        return None if row is None else float(row[0])

    @translated
    def set_cooldown(self, automation: str, key: str, until: float) -> None:
        self.db.execute(
            "INSERT INTO cooldowns (automation, key, until) VALUES (?, ?, ?) "
            "ON CONFLICT (automation, key) DO UPDATE SET until = excluded.until",
            (automation, key, until),
        )

    @translated
    def prune_cooldowns(self, before: float) -> int:
        return int(self.db.execute("DELETE FROM cooldowns WHERE until < ?", (before,)).rowcount)

    # --- dead letters

    @translated
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

    @translated
    def dead_letters(
        self, which: LetterFilter | None = None, *, after: int = 0, limit: int = -1
    ) -> list[dict[str, object]]:
        where, values = _letters_where(which or LetterFilter())
        # `where` is made of fixed conditions; every value is a parameter
        columns = ", ".join(LETTER_COLUMNS)
        query = f"SELECT {columns} FROM dead_letters WHERE id > ?{where} ORDER BY id LIMIT ?"  # noqa: S608
        rows = self.db.execute(query, (after, *values, limit))
        return [dict(zip(LETTER_FIELDS, row, strict=True)) for row in rows]

    @translated
    def count_dead_letters(self, which: LetterFilter | None = None) -> int:
        where, values = _letters_where(which or LetterFilter())
        query = f"SELECT count(*) FROM dead_letters WHERE 1{where}"  # noqa: S608
        return int(self.db.execute(query, values).fetchone()[0])

    @translated
    def drop_dead_letters(self, which: LetterFilter, *, limit: int) -> list[tuple[int, str, str]]:
        where, values = _letters_where(which)
        oldest = f"SELECT id FROM dead_letters WHERE 1{where} ORDER BY id LIMIT ?"  # noqa: S608
        with transaction(self.db) as db:
            dropped = db.execute(
                f"DELETE FROM dead_letters WHERE id IN ({oldest}) "  # noqa: S608
                "RETURNING id, event_id, automation",
                (*values, limit),
            ).fetchall()
        return sorted((int(i), str(e), str(a)) for i, e, a in dropped)

    @translated
    def dead_letter(self, letter_id: int) -> tuple[dict[str, object], str, int] | None:
        row = self.db.execute(
            "SELECT event, automation, action_index FROM dead_letters WHERE id = ?", (letter_id,)
        ).fetchone()
        return None if row is None else (dict(json.loads(row[0])), str(row[1]), int(row[2]))

    @translated
    def retried_dead_letter(self, letter_id: int, error: str | None, attempts: int) -> None:
        if error is None:
            self.db.execute("DELETE FROM dead_letters WHERE id = ?", (letter_id,))
        else:
            self.db.execute(
                "UPDATE dead_letters SET tries = tries + 1, attempts = attempts + ?, error = ? "
                "WHERE id = ?",
                (attempts, error, letter_id),
            )

    # --- agents and SLAs

    @translated
    def put_heartbeat(self, agent_config_id: str, agent_id: str, seen: float) -> None:
        self.db.execute(
            "INSERT INTO heartbeats (agent_config_id, agent_id, seen) VALUES (?, ?, ?) "
            "ON CONFLICT (agent_config_id, agent_id) DO UPDATE SET seen = excluded.seen",
            (agent_config_id, agent_id, seen),
        )

    @translated
    def heartbeats(self, agent_config_id: str) -> dict[str, float]:
        rows = self.db.execute(
            "SELECT agent_id, seen FROM heartbeats WHERE agent_config_id = ?", (agent_config_id,)
        )
        return {str(agent): float(seen) for agent, seen in rows}

    @translated
    def agent_sla_failing(self, agent_config_id: str) -> str | None:
        row = self.db.execute(
            "SELECT since FROM agent_sla_failing WHERE agent_config_id = ?", (agent_config_id,)
        ).fetchone()
        return None if row is None else str(row[0])

    @translated
    def set_agent_sla_failing(self, agent_config_id: str, since: str | None) -> None:
        if since is None:
            self.db.execute(
                "DELETE FROM agent_sla_failing WHERE agent_config_id = ?", (agent_config_id,)
            )
        else:
            self.db.execute(
                "INSERT INTO agent_sla_failing (agent_config_id, since) VALUES (?, ?) "
                "ON CONFLICT (agent_config_id) DO UPDATE SET since = excluded.since",
                (agent_config_id, since),
            )

    @translated
    def flow_sla_fingerprints(self) -> dict[str, str]:
        rows = self.db.execute("SELECT sla_id, fingerprint FROM flow_sla_fingerprints")
        return {str(sla_id): str(fingerprint) for sla_id, fingerprint in rows}

    @translated
    def set_flow_sla_fingerprint(self, sla_id: str, fingerprint: str | None) -> None:
        if fingerprint is None:
            self.db.execute("DELETE FROM flow_sla_fingerprints WHERE sla_id = ?", (sla_id,))
        else:
            self.db.execute(
                "INSERT INTO flow_sla_fingerprints (sla_id, fingerprint) VALUES (?, ?) "
                "ON CONFLICT (sla_id) DO UPDATE SET fingerprint = excluded.fingerprint",
                (sla_id, fingerprint),
            )

    # --- the Prefect subscription

    @translated
    def prefect_position(self) -> str | None:
        row = self.db.execute("SELECT stamp FROM prefect_position WHERE id = 1").fetchone()
        return None if row is None else str(row[0])

    @translated
    def set_prefect_position(self, stamp: str) -> None:
        self.db.execute(
            "INSERT INTO prefect_position (id, stamp) VALUES (1, ?) "
            "ON CONFLICT (id) DO UPDATE SET stamp = excluded.stamp",
            (stamp,),
        )

    # --- backup

    @translated
    def copy_to(self, target: Path) -> Holdings:
        """SQLite's online backup in one step: one read transaction, a snapshot of one
        moment, while the daemon goes on writing; checked, and counted in the copy."""
        # not mode=ro: a read-only connection to a stopped daemon's database would leave -wal
        # and -shm files behind (owned by whoever ran the backup); query_only keeps it a reader
        uri = f"file:{urllib.parse.quote(str(self.path.resolve()))}?mode=rw"
        live = sqlite3.connect(uri, uri=True)
        try:
            live.execute("PRAGMA query_only=1")
            live.execute("PRAGMA busy_timeout=5000")
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
            copy = sqlite3.connect(target)
            try:
                live.backup(copy)  # pages=-1: every page in one step, one read transaction
                (check,) = copy.execute("PRAGMA quick_check").fetchone()
                if check != "ok":
                    raise BrokenCopy(f"the copy fails SQLite's check: {check}")
                return _holdings(copy)
            finally:
                copy.close()
        finally:
            live.close()


def _holdings(db: sqlite3.Connection) -> Holdings:
    tables = table_names(db)

    def count(table: str, where: str = "") -> int:
        if table not in tables:
            return 0
        return int(db.execute(f"SELECT count(*) FROM {table} {where}").fetchone()[0])  # noqa: S608

    return Holdings(
        events=count("events"),
        unfinished=count("events", "WHERE done = 0"),
        dead_letters=count("dead_letters"),
        deadlines=count("deadlines"),
    )
