"""Deadlines as the store keeps them: named by kind and key, re-armed in place, listed by
kind (and a key prefix) soonest first, and all of them at start."""

from __future__ import annotations

from automationd.store import Deadline, Store


def test_a_deadline_is_armed_read_rearmed_and_deleted(store: Store) -> None:
    assert store.deadline("flow_sla", "s\x1frun") is None
    store.put_deadline(Deadline("flow_sla", "s\x1frun", 100.5, {"sla": "s", "n": [1, 2]}))
    assert store.deadline("flow_sla", "s\x1frun") == Deadline(
        "flow_sla", "s\x1frun", 100.5, {"sla": "s", "n": [1, 2]}
    )
    store.put_deadline(Deadline("flow_sla", "s\x1frun", 200.0, {"sla": "s"}))
    assert store.deadline("flow_sla", "s\x1frun") == Deadline(
        "flow_sla", "s\x1frun", 200.0, {"sla": "s"}
    )
    store.delete_deadline("flow_sla", "s\x1frun")
    assert store.deadline("flow_sla", "s\x1frun") is None
    store.delete_deadline("flow_sla", "never")  # nothing to delete: no error


def test_the_same_key_under_two_kinds_is_two_deadlines(store: Store) -> None:
    store.put_deadline(Deadline("flow_sla", "k", 1.0, {"of": "flow"}))
    store.put_deadline(Deadline("agent_sla", "k", 2.0, {"of": "agent"}))
    store.delete_deadline("flow_sla", "k")
    assert store.deadline("flow_sla", "k") is None
    assert store.deadline("agent_sla", "k") == Deadline("agent_sla", "k", 2.0, {"of": "agent"})


def test_deadlines_of_a_kind_come_soonest_first_and_by_key_prefix(store: Store) -> None:
    """Listed by kind, soonest first; a prefix selects the keys starting with it, whatever
    follows (a separator, letters beyond ASCII), and nothing of another kind."""
    store.put_deadlines(
        [
            Deadline("flow_sla", "a\x1frun-2", 30.0, {"i": 2}),
            Deadline("flow_sla", "a\x1frun-1", 10.0, {"i": 1}),
            Deadline("flow_sla", "a\x1fé", 20.0, {"i": 3}),
            Deadline("flow_sla", "ab\x1frun", 5.0, {"i": 4}),
            Deadline("agent_sla", "a\x1fx", 1.0, {"i": 5}),
        ]
    )
    assert [(d.key, d.due, d.payload) for d in store.deadlines("flow_sla", "a\x1f")] == [
        ("a\x1frun-1", 10.0, {"i": 1}),
        ("a\x1fé", 20.0, {"i": 3}),
        ("a\x1frun-2", 30.0, {"i": 2}),
    ]
    assert [d.key for d in store.deadlines("flow_sla")] == [
        "ab\x1frun",
        "a\x1frun-1",
        "a\x1fé",
        "a\x1frun-2",
    ]
    assert list(store.deadlines("agent_sla")) == [Deadline("agent_sla", "a\x1fx", 1.0, {"i": 5})]
    assert list(store.deadlines("other")) == []


def test_every_deadline_time_for_the_schedule(store: Store) -> None:
    assert list(store.deadline_times()) == []
    store.put_deadlines(
        [Deadline("flow_sla", "f", 3.0, {}), Deadline("agent_sla", "c", 1.5, {"big": "x" * 999})]
    )
    store.put_deadline(Deadline("agent_sla", "c", 2.5, {}))
    assert sorted(store.deadline_times()) == [("agent_sla", "c", 2.5), ("flow_sla", "f", 3.0)]


def test_many_deadlines_armed_at_once_are_each_kept(store: Store) -> None:
    store.put_deadlines(
        [Deadline("flow_sla", f"k{i:04d}", float(i), {"i": i}) for i in range(1500)]
    )
    store.put_deadlines([Deadline("flow_sla", "k0007", 9999.0, {"moved": True})])
    listed = list(store.deadlines("flow_sla"))
    assert len(listed) == 1500
    assert listed[-1] == Deadline("flow_sla", "k0007", 9999.0, {"moved": True})
    assert listed[0] == Deadline("flow_sla", "k0000", 0.0, {"i": 0})
    store.put_deadlines([])  # nothing to arm: no error
    assert len(list(store.deadline_times())) == 1500
