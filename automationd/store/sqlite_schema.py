"""The SQLite store's tables, and how a database made by an earlier version is brought up to them.

Up to issue 17 one generic `flags` table (name -> text, the name a `\\x1f`-separated prefix
and key) stood in for cooldowns, the flow SLAs' definitions, failing agent SLAs, the Prefect
position and two write probes, and a deadline's kind was the prefix of its key. `upgrade`
moves those rows into their own tables in the same transaction that creates the schema, so
an upgrade is all or nothing, and a second run finds nothing left to move.
"""

from __future__ import annotations

import sqlite3

from automationd.store.sqlite_base import table_names, transaction

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS deadlines (
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        due REAL NOT NULL,
        payload TEXT NOT NULL,
        PRIMARY KEY (kind, key)
    )""",
    """CREATE TABLE IF NOT EXISTS heartbeats (
        agent_config_id TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        seen REAL NOT NULL,
        PRIMARY KEY (agent_config_id, agent_id)
    )""",
    """CREATE TABLE IF NOT EXISTS agent_sla_failing (
        agent_config_id TEXT PRIMARY KEY,
        since TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS flow_sla_fingerprints (
        sla_id TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS cooldowns (
        automation TEXT NOT NULL,
        key TEXT NOT NULL,
        until REAL NOT NULL,
        PRIMARY KEY (automation, key)
    )""",
    """CREATE TABLE IF NOT EXISTS prefect_position (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        stamp TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS journal_synced (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS readyz_probe (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        at REAL NOT NULL
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

KINDS_OF_PREFIXES = {"flow": "flow_sla", "agent": "agent_sla", "agentcheck": "agent_sla"}
"""The kind of a deadline whose key began with one of these prefixes. An agent SLA's check
(keyed by its agent config id) and its agents' heartbeats (`config id \\x1f agent id`) share a
kind; ids holding \\x1f (a YAML escape can write one) could make two old keys meet, and
the upgrade then keeps the first rather than failing."""


def upgrade(db: sqlite3.Connection) -> None:
    """Create what is missing and move an earlier version's rows into this schema, in one
    transaction."""
    with transaction(db, "BEGIN IMMEDIATE"):
        tables = table_names(db)
        keyed = "deadlines" in tables and "kind" not in _columns(db, "deadlines")
        if keyed:
            db.execute("ALTER TABLE deadlines RENAME TO deadlines_keyed")
        for statement in SCHEMA:
            db.execute(statement)
        if keyed:
            _move_keyed_deadlines(db)
        if "flags" in tables:
            _move_flags(db)
        if "attempts" not in _columns(db, "dead_letters"):  # a store from before attempts
            # were counted: its letters' attempts are unknown (null), not 0
            db.execute("ALTER TABLE dead_letters ADD COLUMN attempts INTEGER")


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {str(row[1]) for row in db.execute(f"PRAGMA table_info({table})")}


def _kind_and_key(old_key: str) -> tuple[str, str]:
    prefix, _, key = old_key.partition("\x1f")
    return KINDS_OF_PREFIXES.get(prefix, prefix), key


def _move_keyed_deadlines(db: sqlite3.Connection) -> None:
    """Deadlines keyed `prefix \\x1f key` get the kind their prefix named."""
    rows = db.execute("SELECT key, due, payload FROM deadlines_keyed").fetchall()
    db.executemany(
        "INSERT INTO deadlines (kind, key, due, payload) VALUES (?, ?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        [(*_kind_and_key(str(key)), due, payload) for key, due, payload in rows],
    )
    db.execute("DROP TABLE deadlines_keyed")


def _move_flags(db: sqlite3.Connection) -> None:
    """Each flag into its own table; the two write probes (`journal.synced`, `readyz.probe`)
    held nothing anyone reads."""
    cooldowns, fingerprints, failing, position = [], [], [], []
    for name, value in db.execute("SELECT name, value FROM flags").fetchall():
        kind, _, rest = str(name).partition("\x1f")
        if kind == "cooldown":
            automation, _, key = rest.partition("\x1f")  # an automation's name has no \x1f
            try:
                cooldowns.append((automation, key, float(value)))
            except ValueError:  # never written so; a cooldown nobody can read has ended
                continue
        elif kind == "flow_sla":
            fingerprints.append((rest, str(value)))
        elif kind == "agent_sla_failing":
            failing.append((rest, str(value)))
        elif name == "prefect.last_seen":
            position.append((str(value),))
    db.executemany(
        "INSERT INTO cooldowns (automation, key, until) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        cooldowns,
    )
    db.executemany(
        "INSERT INTO flow_sla_fingerprints (sla_id, fingerprint) VALUES (?, ?) "
        "ON CONFLICT DO NOTHING",
        fingerprints,
    )
    db.executemany(
        "INSERT INTO agent_sla_failing (agent_config_id, since) VALUES (?, ?) "
        "ON CONFLICT DO NOTHING",
        failing,
    )
    db.executemany(
        "INSERT INTO prefect_position (id, stamp) VALUES (1, ?) ON CONFLICT DO NOTHING", position
    )
    db.execute("DROP TABLE flags")
