"""The small things the store remembers, each under its own methods: cooldowns, the agents'
heartbeats and failing agent SLAs, the flow SLAs' fingerprints and the Prefect position."""

from __future__ import annotations

from automationd.store import Store


def test_a_cooldown_is_kept_per_automation_and_key(store: Store) -> None:
    assert store.cooldown_until("page", "db-1") is None
    store.set_cooldown("page", "db-1", 1000.25)
    store.set_cooldown("page", "db-2", 2000.0)
    store.set_cooldown("mail", "db-1", 3000.0)
    assert store.cooldown_until("page", "db-1") == 1000.25
    assert store.cooldown_until("page", "db-2") == 2000.0
    assert store.cooldown_until("mail", "db-1") == 3000.0
    store.set_cooldown("page", "db-1", 1500.0)  # a new firing after it ended
    assert store.cooldown_until("page", "db-1") == 1500.0
    assert store.cooldown_until("page", "db-3") is None


def test_a_cooldown_key_may_hold_anything(store: Store) -> None:
    """A rendered key comes from an event: a separator or a quote in it is just text."""
    store.set_cooldown("page", "a\x1fb'\"; --", 1.5)
    store.set_cooldown("page", "a", 2.5)
    assert store.cooldown_until("page", "a\x1fb'\"; --") == 1.5
    assert store.cooldown_until("page", "a") == 2.5


def test_prune_forgets_the_cooldowns_that_ended_before_a_time(store: Store) -> None:
    store.set_cooldown("page", "ended", 99.0)
    store.set_cooldown("page", "ends-now", 100.0)
    store.set_cooldown("mail", "later", 101.0)
    assert store.prune_cooldowns(100.0) == 1
    assert store.prune_cooldowns(100.0) == 0
    assert store.cooldown_until("page", "ended") is None
    assert store.cooldown_until("page", "ends-now") == 100.0
    assert store.cooldown_until("mail", "later") == 101.0


def test_heartbeats_are_kept_per_agent_config_and_agent(store: Store) -> None:
    assert store.heartbeats("prod") == {}
    store.put_heartbeat("prod", "a1", 10.0)
    store.put_heartbeat("prod", "a2", 11.0)
    store.put_heartbeat("staging", "a1", 12.0)
    store.put_heartbeat("prod", "a1", 20.5)
    assert store.heartbeats("prod") == {"a1": 20.5, "a2": 11.0}
    assert store.heartbeats("staging") == {"a1": 12.0}
    assert store.heartbeats("none") == {}


def test_a_failing_agent_sla_is_remembered_until_it_recovers(store: Store) -> None:
    assert store.agent_sla_failing("prod") is None
    store.set_agent_sla_failing("prod", "2026-11-27T12:00:00Z")
    store.set_agent_sla_failing("staging", "2026-11-27T13:00:00Z")
    assert store.agent_sla_failing("prod") == "2026-11-27T12:00:00Z"
    store.set_agent_sla_failing("prod", None)
    assert store.agent_sla_failing("prod") is None
    assert store.agent_sla_failing("staging") == "2026-11-27T13:00:00Z"
    store.set_agent_sla_failing("prod", None)  # recovering twice: no error


def test_flow_sla_fingerprints_are_set_replaced_and_removed(store: Store) -> None:
    assert store.flow_sla_fingerprints() == {}
    store.set_flow_sla_fingerprint("start", '["SCHEDULED_NOT_STARTED", 60.0, []]')
    store.set_flow_sla_fingerprint("finish", '["STARTED_NOT_FINISHED", 3600.0, []]')
    store.set_flow_sla_fingerprint("start", '["SCHEDULED_NOT_STARTED", 120.0, []]')
    assert store.flow_sla_fingerprints() == {
        "start": '["SCHEDULED_NOT_STARTED", 120.0, []]',
        "finish": '["STARTED_NOT_FINISHED", 3600.0, []]',
    }
    store.set_flow_sla_fingerprint("finish", None)
    store.set_flow_sla_fingerprint("never", None)
    assert store.flow_sla_fingerprints() == {"start": '["SCHEDULED_NOT_STARTED", 120.0, []]'}


def test_the_prefect_position_is_one_value_moved_forward(store: Store) -> None:
    assert store.prefect_position() is None
    store.set_prefect_position("2026-11-27T12:00:00.000000Z")
    store.set_prefect_position("2026-11-27T12:00:01.500000Z")
    assert store.prefect_position() == "2026-11-27T12:00:01.500000Z"
