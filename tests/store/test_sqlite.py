"""What only the SQLite store does: the connection settings every part shares, the open
error, and bringing a database made by an earlier version up to this schema (the generic
`flags` table and deadlines keyed by a prefix before issue 17; dead letters without
attempts before that)."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest

from automationd.store import Deadline, StoreError, Unfinished
from automationd.store.sqlite import PROBE_EVERY, SqliteStore
from automationd.store.sqlite_base import connect, table_names
from automationd.store.sqlite_schema import KINDS_OF_PREFIXES
from automationd.triggers.agent_sla import AGENT_SLA, agent_key
from automationd.triggers.flow_sla import FLOW_SLA, flow_key

OLD_SCHEMA = (  # automationd/state.py's SCHEMA before issue 17, as it was
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
FLOW_PAYLOAD: dict[str, object] = {
    "sla": "start",
    "kind": "SCHEDULED_NOT_STARTED",
    "flow_run_id": "run-1",
}
FLAGS = [  # one of each kind the earlier version wrote, values as it wrote them
    ("cooldown\x1fpage\x1fdb-1", "1764244800.25"),
    ("cooldown\x1fpage\x1fkey\x1fwith a separator", "1764244900.0"),
    ("flow_sla\x1fstart", '["SCHEDULED_NOT_STARTED", 60.0, []]'),
    ("agent_sla_failing\x1fprod", "2026-11-27T12:00:00Z"),
    ("prefect.last_seen", "2026-11-27T12:00:05.123456Z"),
    ("journal.synced", "1764244801.5"),
    ("readyz.probe", "1764244802.5"),
]


def old_database(path: Path) -> None:
    """A state database as the version before issue 17 left it, with one row of each kind."""
    with closing(sqlite3.connect(path)) as db, db:
        for statement in OLD_SCHEMA:
            db.execute(statement)
        db.executemany("INSERT INTO flags (name, value) VALUES (?, ?)", FLAGS)
        db.executemany(
            "INSERT INTO deadlines (key, due, payload) VALUES (?, ?, ?)",
            [
                ("flow\x1fstart\x1frun-1", 100.0, json.dumps(FLOW_PAYLOAD)),
                ("agent\x1fprod\x1fa1", 200.0, '{"agent_config_id": "prod", "agent_id": "a1"}'),
                ("agentcheck\x1fprod", 300.0, '{"agent_config_id": "prod"}'),
            ],
        )
        db.execute("INSERT INTO heartbeats VALUES ('prod', 'a1', 150.0)")
        db.execute(
            "INSERT INTO events (id, accepted, body, matched) "
            """VALUES ('e1', 10.0, '{"id": "e1"}', '["page"]')"""
        )
        db.execute("INSERT INTO action_outcomes VALUES ('e1', 'page', 0, 'succeeded')")
        db.execute(
            "INSERT INTO dead_letters (event_id, automation, action_index, action, error, "
            """failed_at, event, attempts) VALUES ('e1', 'page', 1, 'email', 'refused', 11.0, """
            """'{"id": "e1"}', 2)"""
        )


def tables(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as db:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def assert_upgraded(store: SqliteStore) -> None:
    """Every value the earlier version kept, found through the typed methods."""
    assert store.cooldown_until("page", "db-1") == 1764244800.25
    assert store.cooldown_until("page", "key\x1fwith a separator") == 1764244900.0
    assert store.flow_sla_fingerprints() == {"start": '["SCHEDULED_NOT_STARTED", 60.0, []]'}
    assert store.agent_sla_failing("prod") == "2026-11-27T12:00:00Z"
    assert store.prefect_position() == "2026-11-27T12:00:05.123456Z"
    assert store.deadline(FLOW_SLA, flow_key("start", "run-1")) == Deadline(
        FLOW_SLA, "start\x1frun-1", 100.0, FLOW_PAYLOAD
    )
    assert list(store.deadlines(AGENT_SLA)) == [
        Deadline(
            AGENT_SLA, agent_key("prod", "a1"), 200.0, {"agent_config_id": "prod", "agent_id": "a1"}
        ),
        Deadline(AGENT_SLA, "prod", 300.0, {"agent_config_id": "prod"}),
    ]
    assert sorted(store.deadline_times()) == [
        (AGENT_SLA, "prod", 300.0),
        (AGENT_SLA, "prod\x1fa1", 200.0),
        (FLOW_SLA, "start\x1frun-1", 100.0),
    ]
    assert store.heartbeats("prod") == {"a1": 150.0}
    assert list(store.unfinished()) == [Unfinished({"id": "e1"}, ["page"], {("page", 0)}, 10.0)]
    assert [(x["event_id"], x["action_index"], x["attempts"]) for x in store.dead_letters()] == [
        ("e1", 1, 2)
    ]


def test_a_database_of_the_flags_era_opens_with_every_value_in_its_own_table(
    tmp_path: Path,
) -> None:
    """Cooldowns, SLA fingerprints, failing agent SLAs, the Prefect position and deadlines
    keyed `flow|agent|agentcheck \\x1f ...` move to their own tables (the deadlines under the
    kind and key the SLA logic now uses); `flags` goes, the write probes' rows with it; the
    rest stays. Opening again (a restart) finds the same."""
    path = tmp_path / "state.db"
    old_database(path)
    for _ in range(2):
        store = SqliteStore(path)
        store.open()
        try:
            assert_upgraded(store)
            assert store.writable() is True
        finally:
            store.close()
    assert "flags" not in tables(path)
    assert "deadlines_keyed" not in tables(path)


def test_an_upgrade_that_fails_halfway_leaves_the_database_as_it_was(tmp_path: Path) -> None:
    """The upgrade is one transaction: when a step fails (here a stray `cooldowns` table of
    another shape refuses the cooldowns), the open fails and nothing has moved; once the
    obstacle is gone, the next open upgrades it all."""
    path = tmp_path / "state.db"
    old_database(path)
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE cooldowns (stray TEXT)")
    store = SqliteStore(path)
    with pytest.raises(StoreError, match=f"cannot open the state database {path}: "):
        store.open()
    assert store.writable() is False
    with closing(sqlite3.connect(path)) as db:
        assert sorted(db.execute("SELECT name, value FROM flags")) == sorted(FLAGS)
        columns = [row[1] for row in db.execute("PRAGMA table_info(deadlines)")]
        assert columns == ["key", "due", "payload"]
    assert tables(path) == {
        "deadlines",
        "heartbeats",
        "flags",
        "events",
        "action_outcomes",
        "dead_letters",
        "sqlite_sequence",
        "cooldowns",
    }
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("DROP TABLE cooldowns")
    store.open()
    try:
        assert_upgraded(store)
    finally:
        store.close()


def test_the_store_says_which_database_it_cannot_open(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    store = SqliteStore(tmp_path / "file" / "state.db")
    with pytest.raises(
        StoreError, match=f"cannot open the state database {tmp_path}/file/state.db: "
    ):
        store.open()
    with pytest.raises(StoreError, match="the state store is not open"):
        _ = store.db


def test_every_connection_is_set_up_alike(tmp_path: Path) -> None:
    """The store's connection and the journal thread's (made by one `connect`): WAL,
    synchronous=NORMAL, a 5 s wait for a lock, each statement committed at once."""
    store = SqliteStore(tmp_path / "state.db")
    store.open()
    try:
        writer_db = connect(tmp_path / "state.db")
        for db in (store.db, writer_db):
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert db.execute("PRAGMA synchronous").fetchone() == (1,)
            assert db.execute("PRAGMA busy_timeout").fetchone() == (5000,)
            assert db.isolation_level is None
        writer_db.close()
    finally:
        store.close()


def test_the_tables_listed_are_the_tables_only(tmp_path: Path) -> None:
    """What the upgrade and the backup's counts look at: tables, not indexes."""
    with closing(connect(tmp_path / "state.db")) as db:
        assert table_names(db) == set()
        db.execute("CREATE TABLE events (id TEXT PRIMARY KEY, done INTEGER)")
        db.execute("CREATE INDEX events_done ON events (done)")
        db.execute("CREATE TABLE flags (name TEXT)")
        assert table_names(db) == {"events", "flags"}


def test_letters_of_a_store_from_before_attempts_were_counted_read_null(tmp_path: Path) -> None:
    """A state database made by an earlier version (no attempts column) opens, and its
    letters say their attempts are unknown rather than 0; new letters count them."""
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as old:
        old.execute(
            "CREATE TABLE dead_letters (id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT "
            "NOT NULL, automation TEXT NOT NULL, action_index INTEGER NOT NULL, action TEXT NOT "
            "NULL, error TEXT NOT NULL, failed_at REAL NOT NULL, tries INTEGER NOT NULL DEFAULT "
            "1, event TEXT NOT NULL)"
        )
        old.execute(
            "INSERT INTO dead_letters (event_id, automation, action_index, action, error, "
            "failed_at, event) VALUES ('e1', 'a', 0, 'webhook', 'answered 500', 1.0, "
            """'{"id": "e1", "type": "x"}')"""
        )
    old.close()
    store = SqliteStore(path)
    store.open()
    try:
        store.add_dead_letter({"id": "e2", "type": "x"}, "a", 0, "webhook", "boom", 2.0, 3)
        store.retried_dead_letter(1, "answered 500 again", 2)
        letters = store.dead_letters()
        assert [(x["event_id"], x["runs"], x["attempts"]) for x in letters] == [
            ("e1", 2, None),
            ("e2", 1, 3),
        ]
    finally:
        store.close()


def test_the_upgrade_names_only_the_kinds_the_slas_use() -> None:
    """The old key prefixes map to the kinds the SLA triggers arm their deadlines under (the two are
    written in two places; this ties them)."""
    assert set(KINDS_OF_PREFIXES.values()) == {FLOW_SLA, AGENT_SLA}


def test_the_write_probe_counts_a_busy_database_as_writable_at_once(tmp_path: Path) -> None:
    """Another connection holding the write lock makes the probe's write fail with
    SQLITE_BUSY: that is a busy database, not a broken disk, and the probe does not wait the
    5 s a lock is otherwise waited for (it runs on the event loop)."""
    store = SqliteStore(tmp_path / "state.db")
    store.open()
    holder = connect(tmp_path / "state.db")
    try:
        holder.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        assert store.writable() is True
        assert time.monotonic() - started < 1.0
        assert store.db.execute("PRAGMA busy_timeout").fetchone() == (5000,)  # put back
        holder.execute("ROLLBACK")
    finally:
        holder.close()
        store.close()


def test_a_failed_probe_is_asked_again_a_success_stands_a_second(tmp_path: Path) -> None:
    """A failure is not cached, so recovery shows on the next /readyz; a success stands for
    PROBE_EVERY, so a probe per request does not contend with the journal's commits."""
    store = SqliteStore(tmp_path / "state.db")
    store.open()
    try:
        assert store.writable() is True
        store.db.execute("DROP TABLE readyz_probe")  # every probe's write now fails
        assert store.writable() is True  # the success still stands
        store._probed_at -= PROBE_EVERY  # a second later
        assert store.writable() is False
        assert store.writable() is False  # asked again, not cached: still failing
        store.db.execute("CREATE TABLE readyz_probe (id INTEGER PRIMARY KEY, at REAL NOT NULL)")
        assert store.writable() is True  # recovered on the very next call
    finally:
        store.close()
    assert store.writable() is False  # closed


def test_the_probe_wants_room_for_a_frame_of_the_write_ahead_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Free space is read from statvfs, counting only the blocks anyone may use: a file
    system whose free blocks are all reserved (f_bavail 0, f_bfree > 0) is full for the
    daemon even as root. statvfs is replaced here: no file system on this machine can be
    made to report exactly these counts without root and a mount."""
    store = SqliteStore(tmp_path / "state.db")
    store.open()
    real = os.statvfs(tmp_path)

    def reporting(bavail: int, bfree: int) -> None:
        fields = dict(zip(STATVFS_FIELDS, real, strict=False))
        fields.update(f_bavail=bavail, f_bfree=bfree, f_frsize=4096)
        fake = os.statvfs_result(tuple(fields[name] for name in STATVFS_FIELDS))
        monkeypatch.setattr(os, "statvfs", lambda path: fake)
        store._probed_at, store._probe_ok = -PROBE_EVERY, False

    try:
        reporting(bavail=0, bfree=1000)
        assert store.writable() is False
        reporting(bavail=1, bfree=1000)  # one block of 4 KiB: less than two pages
        assert store.writable() is False
        reporting(bavail=2, bfree=2)
        assert store.writable() is True
    finally:
        store.close()


STATVFS_FIELDS = (
    "f_bsize",
    "f_frsize",
    "f_blocks",
    "f_bfree",
    "f_bavail",
    "f_files",
    "f_ffree",
    "f_favail",
    "f_flag",
    "f_namemax",
)
