"""A store's life: it opens empty, takes writes (the `/readyz` probe), keeps everything across
a restart, refuses work with StoreError once closed, and copies itself for a backup."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from automationd.store import (
    Deadline,
    Holdings,
    JournaledEvent,
    LetterFilter,
    Matched,
    Store,
    StoreError,
    Unfinished,
)
from tests.store.conftest import Backend


def remember_one_of_each(store: Store) -> None:
    writer = store.journal_writer(60.0)
    writer.write(
        [
            JournaledEvent("open", 1.0, '{"id":"open"}', False),
            JournaledEvent("done", 2.0, "", True),
        ],
        [Matched("open", ("a",), False)],
        [],
    )
    writer.sync()
    writer.close()
    store.put_deadline(Deadline("flow_sla", "s\x1fr", 50.0, {"sla": "s"}))
    store.put_deadline(Deadline("agent_sla", "prod", 60.0, {"agent_config_id": "prod"}))
    store.set_cooldown("page", "db-1", 70.0)
    store.add_dead_letter({"id": "e", "type": "x"}, "page", 0, "webhook", "500", 3.0, 2)
    store.put_heartbeat("prod", "a1", 4.0)
    store.set_agent_sla_failing("prod", "2026-11-27T12:00:00Z")
    store.set_flow_sla_fingerprint("s", "[1]")
    store.set_prefect_position("2026-11-27T12:00:05.000000Z")


def test_a_new_store_opens_empty(store: Store) -> None:
    assert list(store.unfinished()) == []
    assert list(store.deadline_times()) == []
    assert store.dead_letters() == []
    assert store.count_dead_letters() == 0
    assert store.flow_sla_fingerprints() == {}
    assert store.prefect_position() is None


def test_everything_is_kept_across_a_restart(backend: Backend, store: Store) -> None:
    remember_one_of_each(store)
    store.close()
    again = backend.new()
    again.open()
    try:
        assert list(again.unfinished()) == [Unfinished({"id": "open"}, ["a"], set(), 1.0)]
        assert sorted(again.deadline_times()) == [
            ("agent_sla", "prod", 60.0),
            ("flow_sla", "s\x1fr", 50.0),
        ]
        assert again.deadline("flow_sla", "s\x1fr") == Deadline(
            "flow_sla", "s\x1fr", 50.0, {"sla": "s"}
        )
        assert again.cooldown_until("page", "db-1") == 70.0
        assert [x["event_id"] for x in again.dead_letters()] == ["e"]
        assert again.heartbeats("prod") == {"a1": 4.0}
        assert again.agent_sla_failing("prod") == "2026-11-27T12:00:00Z"
        assert again.flow_sla_fingerprints() == {"s": "[1]"}
        assert again.prefect_position() == "2026-11-27T12:00:05.000000Z"
    finally:
        again.close()


def test_opening_twice_is_harmless(backend: Backend, store: Store) -> None:
    """Opening a store already made (a second open of the same database, as by a restart
    while the first is still closing) changes nothing in it."""
    store.set_cooldown("page", "k", 5.0)
    second = backend.new()
    second.open()
    try:
        assert second.cooldown_until("page", "k") == 5.0
    finally:
        second.close()
    assert store.cooldown_until("page", "k") == 5.0


def test_an_open_store_takes_writes_and_a_closed_one_does_not(backend: Backend) -> None:
    store = backend.new()
    assert store.writable() is False  # not opened yet
    store.open()
    assert store.writable() is True
    assert store.writable() is True  # the probe rewrites the same row
    store.close()
    assert store.writable() is False
    store.close()  # closing twice: no error


def test_a_closed_store_refuses_work_with_store_error(backend: Backend) -> None:
    store = backend.new()
    store.open()
    store.close()
    with pytest.raises(StoreError):
        store.cooldown_until("page", "k")
    with pytest.raises(StoreError):
        store.set_prefect_position("2026-11-27T12:00:00Z")
    with pytest.raises(StoreError):
        store.add_dead_letter({"id": "e"}, "a", 0, "webhook", "x", 1.0, 1)
    with pytest.raises(StoreError):
        store.drop_dead_letters(LetterFilter(), limit=1)
    with pytest.raises(StoreError):
        list(store.deadlines("flow_sla"))
    with pytest.raises(StoreError):
        list(store.deadline_times())
    with pytest.raises(StoreError):
        list(store.unfinished())
    with pytest.raises(StoreError):
        store.prune(1.0)


def test_a_copy_holds_the_store_at_one_moment(backend: Backend, tmp_path: Path) -> None:
    """`copy_to` works beside a running store (this one stays open and writable), counts what
    the copy holds, and the copy opens as a store of its own with the same contents."""
    store = backend.new()
    store.open()
    try:
        remember_one_of_each(store)
        target = tmp_path / "copy" / "state.db"
        target.parent.mkdir()
        held = backend.new().copy_to(target)  # a store that was never opened copies too
        assert held == Holdings(events=2, unfinished=1, dead_letters=1, deadlines=2)
        store.set_cooldown("page", "after", 1.0)
        assert store.writable() is True
    finally:
        store.close()
    copy = backend.make(target)
    copy.open()
    try:
        assert list(copy.unfinished()) == [
            Unfinished(json.loads('{"id":"open"}'), ["a"], set(), 1.0)
        ]
        assert copy.cooldown_until("page", "db-1") == 70.0
        assert copy.cooldown_until("page", "after") is None
        assert copy.prefect_position() == "2026-11-27T12:00:05.000000Z"
    finally:
        copy.close()
