"""The journal in-process, on real files: what the state store holds after progress arrives
before the first database write (all of it within FLUSH_SECONDS, as under load), segments a
crash left written into the store at open, duplicates decided in memory and in the store, and
no append without a running journal. (The store's side of it: tests/store/test_events.py.)"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from automationd.journal import Journal
from automationd.store import JournalError, StoreError, Unfinished
from automationd.store.sqlite import SqliteStore


def body(event_id: str) -> str:
    return json.dumps({"id": event_id, "type": "job_done"}, separators=(",", ":"))


async def test_progress_before_the_first_write_lands_in_order(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    store.open()
    journal = Journal(store, store.path, dedup_window=3600)
    journal.open()
    ids = ["fired", "quiet", "pending"]
    at = time.time()
    assert await journal.append([(i, body(i)) for i in ids], at) == [True] * 3
    journal.set_matched("fired", ["forward"], done=False)  # an automation fired...
    journal.set_outcome("fired", "forward", 0, "succeeded")
    journal.set_done("fired")  # ...and its action finished
    journal.set_matched("quiet", [], done=True)  # nothing fired
    journal.set_matched("pending", ["forward"], done=False)  # its action still runs
    assert await journal.append([("quiet", body("quiet"))], time.time()) == [False]
    await journal.close()  # writes what waits, in one transaction

    rows = store.db.execute("SELECT id, done, body, matched FROM events ORDER BY id").fetchall()
    assert rows == [
        ("fired", 1, body("fired"), '["forward"]'),
        ("pending", 0, body("pending"), '["forward"]'),
        ("quiet", 1, "", None),  # finished before it was written: its id is enough
    ]
    ((event, matched, finished, accepted),) = store.unfinished()
    assert (event, matched, finished) == (json.loads(body("pending")), ["forward"], set())
    assert accepted == at
    assert not list((tmp_path / "state.db-events").glob("*.log"))  # synced, segments gone
    store.close()


async def test_segments_left_by_a_crash_are_written_into_the_store_at_open(
    tmp_path: Path,
) -> None:
    """Events whose 202 was sent but which never reached the database are taken from the
    segment files at open (a line torn by the crash is skipped), the segments go, and a new
    one is begun after the last number."""
    store = SqliteStore(tmp_path / "state.db")
    store.open()
    segments = tmp_path / "state.db-events"
    segments.mkdir()
    at = round(time.time()) - 10.5  # accepted within the dedup window
    (segments / "00000004.log").write_text(f'["a",{at},{body("a")}]\n["b",{at + 1},{body("b")}]\n')
    (segments / "00000005.log").write_text(f'["c",{at + 2},{body("c")}]\n["d",{at + 3},{{"id":')
    journal = Journal(store, store.path, dedup_window=3600)
    journal.open()
    try:
        assert [(u.event["id"], u.accepted) for u in store.unfinished()] == [
            ("a", at),
            ("b", at + 1),
            ("c", at + 2),
        ]
        assert sorted(p.name for p in segments.iterdir()) == ["00000006.log"]
        assert await journal.append([("a", body("a"))], time.time()) == [False]
    finally:
        await journal.close()
        store.close()


async def test_duplicates_are_decided_in_memory_and_in_the_store(tmp_path: Path) -> None:
    """An id is a duplicate while it waits in memory, within one batch, and once in the
    store, also for a journal opened anew; past the dedup window it is new again."""
    store = SqliteStore(tmp_path / "state.db")
    store.open()
    journal = Journal(store, store.path, dedup_window=60)
    journal.open()
    at = time.time()
    assert await journal.append([("e1", body("e1"))], at) == [True]
    assert await journal.append([("e1", body("e1")), ("e2", body("e2"))], at) == [False, True]
    assert await journal.append([("e3", body("e3")), ("e3", body("e3"))], at) == [True, False]
    await journal.close()
    journal = Journal(store, store.path, dedup_window=60)
    journal.open()
    try:
        assert await journal.append([("e1", body("e1"))], at + 59) == [False]
        assert await journal.append([("e2", body("e2"))], at + 61) == [True]
    finally:
        await journal.close()
    assert list(store.unfinished()) == [
        Unfinished(json.loads(body("e1")), None, set(), at),
        Unfinished(json.loads(body("e3")), None, set(), at),
        Unfinished(json.loads(body("e2")), None, set(), at + 61),
    ]
    store.close()


async def test_no_append_without_a_running_journal(tmp_path: Path) -> None:
    """Before open and after close an append fails (the daemon answers 503); a journal
    whose database cannot be opened says which."""
    store = SqliteStore(tmp_path / "state.db")
    store.open()
    journal = Journal(store, store.path, dedup_window=60)
    with pytest.raises(JournalError, match="the journal is not running"):
        await journal.append([("e1", body("e1"))], time.time())
    journal.open()
    await journal.close()
    with pytest.raises(JournalError, match="the journal is not running"):
        await journal.append([("e1", body("e1"))], time.time())
    store.close()
    (tmp_path / "gone").mkdir()
    elsewhere = SqliteStore(tmp_path / "gone" / "state.db")
    (tmp_path / "gone").rmdir()
    with pytest.raises(
        StoreError, match=f"cannot open the journal {tmp_path}/gone/state.db-events: "
    ):
        Journal(elsewhere, elsewhere.path, dedup_window=60).open()
