"""The store side of the journal: events written in batches by the journal thread's own
connection, duplicate ids within the dedup window, each event's progress, resuming what is
unfinished, and pruning what is finished."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from automationd.store import (
    JournaledEvent,
    JournalWriter,
    Matched,
    Outcome,
    Store,
    StoreError,
    Unfinished,
)
from tests.store.conftest import Backend

WINDOW = 60.0


def body(event_id: str) -> str:
    return json.dumps({"id": event_id, "type": "job_done"}, separators=(",", ":"))


def event(event_id: str, accepted: float, *, done: bool = False) -> JournaledEvent:
    return JournaledEvent(event_id, accepted, "" if done else body(event_id), done)


@pytest.fixture
def writer(store: Store) -> Iterator[JournalWriter]:
    opened = store.journal_writer(WINDOW)
    yield opened
    opened.close()


def test_written_events_are_known_by_id_with_their_acceptance(
    store: Store, writer: JournalWriter
) -> None:
    """`accepted_at` answers for the ids stored, and only those."""
    assert writer.accepted_at({"a", "b"}) == {}
    writer.write([event("a", 100.0), event("b", 101.5)], [], [])
    assert writer.accepted_at({"a", "b", "c"}) == {"a": 100.0, "b": 101.5}
    assert writer.accepted_at([]) == {}


def test_many_ids_are_looked_up_and_finished_at_once(store: Store, writer: JournalWriter) -> None:
    """More ids than one `IN (...)` list holds: every one is found, and every one finished."""
    ids = [f"e{i:04d}" for i in range(1234)]
    writer.write([event(i, float(n)) for n, i in enumerate(ids)], [], [])
    assert writer.accepted_at(set(ids)) == {i: float(n) for n, i in enumerate(ids)}
    assert len(list(store.unfinished())) == 1234
    writer.write([], [], ids)
    assert list(store.unfinished()) == []


def test_an_id_within_the_dedup_window_keeps_its_row_and_an_older_one_is_taken_over(
    store: Store, writer: JournalWriter
) -> None:
    """A second write of an id accepted less than the window before changes nothing (the
    journal decided it is a duplicate); past the window the id is a new event, its progress
    starting over."""
    writer.write([event("e", 100.0)], [Matched("e", ("forward",), False)], [])
    writer.write([JournaledEvent("e", 100.0 + WINDOW - 1, '{"id":"e","v":2}', False)], [], [])
    assert writer.accepted_at({"e"}) == {"e": 100.0}
    assert list(store.unfinished()) == [
        Unfinished(json.loads(body("e")), ["forward"], set(), 100.0)
    ]
    writer.write([JournaledEvent("e", 100.0 + WINDOW + 1, '{"id":"e","v":3}', False)], [], [])
    assert writer.accepted_at({"e"}) == {"e": 100.0 + WINDOW + 1}
    assert list(store.unfinished()) == [Unfinished({"id": "e", "v": 3}, None, set(), 161.0)]


def test_progress_is_applied_in_order_and_resumes_as_written(
    store: Store, writer: JournalWriter
) -> None:
    """What fired (the last word counts), the actions finished (an outcome written twice is
    one), and events finished before or with their progress."""
    writer.write(
        [event("fired", 10.0), event("quiet", 11.0, done=True), event("later", 12.0)],
        [
            Matched("fired", ("a",), False),
            Matched("fired", ("a", "b"), False),
            Outcome("fired", "a", 0, "failed"),
            Outcome("fired", "a", 0, "succeeded"),
            Outcome("fired", "b", 1, "succeeded"),
        ],
        [],
    )
    assert list(store.unfinished()) == [
        Unfinished(json.loads(body("fired")), ["a", "b"], {("a", 0), ("b", 1)}, 10.0),
        Unfinished(json.loads(body("later")), None, set(), 12.0),
    ]
    writer.write([], [Matched("later", (), True)], ["fired"])
    assert list(store.unfinished()) == []


def test_unfinished_events_come_oldest_first(store: Store, writer: JournalWriter) -> None:
    writer.write([event("new", 30.0), event("old", 10.0), event("mid", 20.0)], [], [])
    assert [u.event["id"] for u in store.unfinished()] == ["old", "mid", "new"]


def test_prune_forgets_finished_events_accepted_before_a_time(
    store: Store, writer: JournalWriter
) -> None:
    """Only finished events older than `before` go (with their outcomes); an unfinished one
    stays whatever its age, and pruning again finds nothing."""
    writer.write(
        [event("old-done", 10.0), event("new-done", 50.0), event("old-open", 10.0)],
        [Outcome("old-done", "a", 0, "succeeded"), Outcome("old-open", "a", 0, "succeeded")],
        ["old-done", "new-done"],
    )
    assert store.prune(50.0) == 1
    assert store.prune(50.0) == 0
    assert writer.accepted_at({"old-done", "new-done", "old-open"}) == {
        "new-done": 50.0,
        "old-open": 10.0,
    }
    assert list(store.unfinished()) == [
        Unfinished(json.loads(body("old-open")), None, {("a", 0)}, 10.0)
    ]


def test_a_synced_write_is_there_for_the_next_store(backend: Backend, store: Store) -> None:
    """After `sync`, a store opened anew (as after a restart) reads what was written."""
    writer = store.journal_writer(WINDOW)
    writer.write([event("kept", 5.0)], [Matched("kept", ("a",), False)], [])
    writer.sync()
    writer.close()
    store.close()
    again = backend.new()
    again.open()
    try:
        assert list(again.unfinished()) == [Unfinished(json.loads(body("kept")), ["a"], set(), 5.0)]
    finally:
        again.close()


def test_a_failed_batch_writes_nothing(store: Store, writer: JournalWriter) -> None:
    """The events, progress and finished ids of one write go in together or not at all."""
    writer.write([event("there", 1.0)], [], [])
    broken = Outcome("there", "a", object(), "succeeded")  # type: ignore[arg-type]
    with pytest.raises(StoreError):  # the index cannot be stored
        writer.write([event("new", 2.0)], [Matched("there", ("a",), False), broken], ["there"])
    assert writer.accepted_at({"there", "new"}) == {"there": 1.0}
    assert list(store.unfinished()) == [Unfinished(json.loads(body("there")), None, set(), 1.0)]
    writer.write([event("new", 2.0)], [], [])  # the connection is usable again
    assert writer.accepted_at({"new"}) == {"new": 2.0}
