"""The journal in-process, on real files: what the state store holds after progress arrives
before the first database write (all of it within FLUSH_SECONDS, as under load), segments a
crash left written into the store at open (an event already there keeping its row),
duplicates decided in memory and in the store and never appended again, appends waiting
while an fdatasync is on its way sharing the next one, a segment that cannot be written cut
back, segments deleted once the database is synced, and no append without a running
journal. (The store's side of it: tests/store/test_events.py.)"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from automationd import journal as journal_module
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


@asynccontextmanager
async def running_journal(
    tmp_path: Path, on_commit: Callable[[int], None] | None = None
) -> AsyncIterator[tuple[SqliteStore, Journal]]:
    """A store in `tmp_path` and its journal (dedup window 60 s), open for the block."""
    store = SqliteStore(tmp_path / "state.db")
    store.open()
    journal = Journal(store, store.path, dedup_window=60, on_commit=on_commit)
    journal.open()
    try:
        yield store, journal
    finally:
        await journal.close()
        store.close()


def segment_lines(tmp_path: Path) -> list[bytes]:
    """The lines of every segment file, in order."""
    segments = sorted((tmp_path / "state.db-events").glob("*.log"))
    return [line for path in segments for line in path.read_bytes().splitlines()]


async def test_appends_waiting_for_an_fdatasync_share_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group commit: while the first append's fdatasync is on its way (held here until the
    others are queued), 20 more appends arrive; they are all covered by one more fdatasync
    and answered by one commit."""
    entered, release = threading.Event(), threading.Event()
    syncs: list[int] = []
    fdatasync = os.fdatasync

    def held_fdatasync(fd: int) -> None:
        syncs.append(fd)
        entered.set()
        release.wait(10)
        fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", held_fdatasync)
    commits: list[int] = []
    async with running_journal(tmp_path, on_commit=commits.append) as (_store, journal):
        at = time.time()
        first = asyncio.create_task(journal.append([("e0", body("e0"))], at))
        assert await asyncio.to_thread(entered.wait, 10)
        rest = [
            asyncio.create_task(journal.append([(f"e{n}", body(f"e{n}"))], at))
            for n in range(1, 21)
        ]
        await asyncio.sleep(0.1)  # each task queues its append at its first step
        release.set()
        assert await asyncio.gather(first, *rest) == [[True]] * 21
        assert len(syncs) == 2
        assert commits == [1, 20]
        assert len(segment_lines(tmp_path)) == 21


async def test_a_duplicate_is_answered_without_being_appended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An id accepted within the dedup window is answered False and not written to the
    segment again (the segment is kept for the test: no sync is due)."""
    monkeypatch.setattr(journal_module, "SYNC_SECONDS", 60.0)
    async with running_journal(tmp_path) as (_store, journal):
        at = time.time()
        assert await journal.append([("e1", body("e1"))], at) == [True]
        assert await journal.append([("e1", body("e1")), ("e2", body("e2"))], at + 1) == [
            False,
            True,
        ]
        assert [json.loads(line)[0] for line in segment_lines(tmp_path)] == ["e1", "e2"]


def file_size_limit(size: int) -> Callable[[], None]:
    """Lower this process's file size limit to `size` bytes (writes beyond it fail with
    EFBIG: Python ignores SIGXFSZ); the function that puts the limit back."""
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, limits[1]))
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, limits)


async def test_a_segment_that_cannot_be_written_is_cut_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An append the segment cannot take (here: past the file size limit, after part of it
    was written) raises JournalError and leaves the segment as it was; the journal is
    unhealthy until an append succeeds again."""
    monkeypatch.setattr(journal_module, "SYNC_SECONDS", 60.0)
    async with running_journal(tmp_path) as (_store, journal):
        at = time.time()
        assert await journal.append([("before", body("before"))], at) == [True]
        kept = segment_lines(tmp_path)
        big = json.dumps({"id": "big", "type": "job_done", "pad": "x" * 20_000})
        restore = file_size_limit(4096)
        try:
            with pytest.raises(JournalError, match="File too large"):
                await journal.append([("big", big)], at)
        finally:
            restore()
        assert segment_lines(tmp_path) == kept
        assert not journal.healthy
        assert await journal.append([("after", body("after"))], at) == [True]
        assert journal.healthy
        assert [json.loads(line)[0] for line in segment_lines(tmp_path)] == ["before", "after"]


async def test_segments_are_deleted_once_the_database_is_synced(tmp_path: Path) -> None:
    """About SYNC_SECONDS after a segment was begun, the database is synced, the segment
    deleted and a new one begun; its events are in the store, with the journal still open."""
    segments = tmp_path / "state.db-events"
    async with running_journal(tmp_path) as (store, journal):
        assert await journal.append([("e1", body("e1"))], time.time()) == [True]
        assert [p.name for p in segments.iterdir()] == ["00000001.log"]
        async with asyncio.timeout(15):
            while (segments / "00000001.log").exists():  # noqa: ASYNC110 - a file
                await asyncio.sleep(0.05)
        assert [p.name for p in segments.iterdir()] == ["00000002.log"]
        assert (segments / "00000002.log").read_bytes() == b""
        assert [u.event["id"] for u in store.unfinished()] == ["e1"]


async def test_a_replayed_event_the_store_has_keeps_its_row(tmp_path: Path) -> None:
    """A segment holding an event the database already has (here finished) leaves its row
    as it is at open; only the others become unfinished events."""
    store = SqliteStore(tmp_path / "state.db")
    store.open()
    journal = Journal(store, store.path, dedup_window=3600)
    journal.open()
    at = round(time.time()) - 10.5
    assert await journal.append([("done", body("done"))], at) == [True]
    journal.set_matched("done", [], done=True)
    await journal.close()
    segments = tmp_path / "state.db-events"
    (segments / "00000009.log").write_text(
        f'["done",{at},{body("done")}]\n["new",{at + 1},{body("new")}]\n'
    )
    journal = Journal(store, store.path, dedup_window=3600)
    journal.open()
    try:
        assert [u.event["id"] for u in store.unfinished()] == ["new"]
        rows = store.db.execute("SELECT id, done, body FROM events ORDER BY id").fetchall()
        assert rows == [("done", 1, ""), ("new", 0, body("new"))]
        assert sorted(p.name for p in segments.iterdir()) == ["00000010.log"]
    finally:
        await journal.close()
        store.close()
