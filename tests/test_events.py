"""Strict JSON intake and event normalisation."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from automationd.events import (
    BUILTIN_TYPES,
    DEFAULT_PHRASES,
    EventError,
    EventType,
    EventTypeResolver,
    format_timestamp,
    new_id,
    normalise,
)
from automationd.templating import Template
from automationd.wire import parse_json, split_batch

NOW = datetime(2026, 11, 27, 9, 30, 0, tzinfo=UTC)
RESOLVE = EventTypeResolver(
    {
        "deploy_finished": EventType(
            "deploy_finished",
            "Deploy finished",
            Template.parse("Deployed {app}"),
            {"app": "any JSON value"},
        )
    }
)


@pytest.mark.parametrize(
    ("body", "words", "field"),
    [
        (b"", "empty", None),
        (b"   ", "empty", None),
        (b"{", "malformed JSON", None),
        (b'{"type": "a",}', "malformed JSON", None),
        (b'{"type": "a", "x": NaN}', "NaN is not valid JSON", None),
        (b'{"type": "a", "x": -Infinity}', "-Infinity is not valid JSON", None),
        (b'{"type": "a", "x": 1e999}', "out of range", None),
        (b'{"type": "a", "type": "b"}', "duplicate key 'type'", "type"),
        (b'{"type": "a", "x": "\\ud800"}', "lone UTF-16 surrogate", "x"),
        (b'{"type": "a", "\\udfff": 1}', "lone UTF-16 surrogate", "\ufffd"),
        (b'{"type": "a", "x": "\xff"}', "not valid UTF-8", None),
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper than 32", None),
        (b'{"type": "a", "x": ' + b"[" * 40 + b"]" * 40 + b"}", "nested deeper than 32", None),
        (b'{"type": "a", "n": 1' + b"0" * 5000 + b"}", "malformed JSON", None),
    ],
)
def test_malformed_bodies_are_event_errors(body: bytes, words: str, field: str | None) -> None:
    with pytest.raises(EventError) as caught:
        parse_json(body)
    assert words in caught.value.message
    if field is not None:
        assert caught.value.field == field


def test_valid_surrogate_pairs_and_moderate_nesting_pass() -> None:
    value = parse_json(b'{"type": "a", "emoji": "\\ud83d\\ude00", "x": [[[[1]]]]}')
    assert value == {"type": "a", "emoji": "\U0001f600", "x": [[[[1]]]]}


def test_batches() -> None:
    assert split_batch([{"type": "a"}]) == ([{"type": "a"}], True)
    assert split_batch({"type": "a"}) == ([{"type": "a"}], False)
    with pytest.raises(EventError, match="empty"):
        split_batch([])


def test_normalise_fills_defaults_and_renders_the_default_message() -> None:
    event = normalise(
        {
            "type": "flow_run_state_change",
            "flow_name": "etl",
            "flow_run_name": "brave-otter",
            "state": "Failed",
            "state_message": "exit 1",
            "flow_run_link": "http://ui/runs/1",
        },
        RESOLVE,
        NOW,
    )
    assert len(str(event["id"])) == 36
    assert event["timestamp"] == "2026-11-27T09:30:00Z"
    assert event["event_name"] == "Flow run state change"
    assert event["message"] == (
        "Run brave-otter of flow etl entered state Failed with message exit 1. "
        "See http://ui/runs/1 for more details."
    )
    assert event["tenant_id"] is None
    assert event["flow_id"] is None  # contract attributes are always present


def test_normalise_keeps_what_the_sender_gave() -> None:
    event = normalise(
        {"type": "x", "id": "abc", "timestamp": "2026-01-02T03:04:05+02:00", "message": "hi"},
        RESOLVE,
        NOW,
    )
    assert event["id"] == "abc"
    assert event["timestamp"] == "2026-01-02T01:04:05Z"
    assert event["message"] == "hi"
    assert event["event_name"] == "X"


def test_custom_and_declared_types() -> None:
    assert normalise({"type": "backup_done"}, RESOLVE, NOW)["message"] == "backup_done"
    assert normalise({"type": "backup_done"}, RESOLVE, NOW)["event_name"] == "Backup done"
    declared = normalise({"type": "deploy_finished", "app": "web"}, RESOLVE, NOW)
    assert declared["message"] == "Deployed web"


def test_agent_sla_failure_message_joins_the_agent_ids() -> None:
    event = normalise(
        {
            "type": "agent_sla_failure",
            "agent_config_id": "prod",
            "sla_min_healthy": 2,
            "agent_ids": ["a1", "a2"],
        },
        RESOLVE,
        NOW,
    )
    assert event["message"] == (
        "Agents sharing the config prod have failed the minimum healthy count of 2. "
        "The following agents are unhealthy: a1, a2"
    )


@pytest.mark.parametrize(
    ("raw", "words", "field"),
    [
        ([1], "must be a JSON object, got a list", None),
        ("text", "must be a JSON object, got a string", None),
        ({}, "has no 'type'", "type"),
        ({"type": None}, "has no 'type'", "type"),
        ({"type": 5}, "'type' must be a string, got an integer", "type"),
        ({"type": ""}, "'type' must be 1 to 200", "type"),
        ({"type": "a" * 201}, "'type' must be 1 to 200", "type"),
        ({"type": "a", "id": 7}, "'id' must be a non-empty string", "id"),
        ({"type": "a", "id": ""}, "'id' must be a non-empty string", "id"),
        ({"type": "a", "timestamp": 7}, "'timestamp' must be an RFC 3339 string", "timestamp"),
        ({"type": "a", "timestamp": "yesterday"}, "'timestamp' is not RFC 3339", "timestamp"),
        ({"type": "a", "timestamp": "2026-01-01T00:00:00"}, "no time zone", "timestamp"),
        ({"type": "a", "message": ["x"]}, "'message' must be a string, got a list", "message"),
        (
            {"type": "flow_run_state_change", "state": 3},
            "'state' must be a string, got an integer",
            "state",
        ),
        (
            {"type": "flow_sla_failure", "duration_seconds": "60"},
            "must be a number",
            "duration_seconds",
        ),
        (
            {"type": "flow_sla_failure", "duration_seconds": True},
            "must be a number, got a boolean",
            "duration_seconds",
        ),
        ({"type": "agent_sla_failure", "agent_ids": "a1"}, "must be a list", "agent_ids"),
    ],
)
def test_contract_violations_name_the_field(raw: object, words: str, field: str | None) -> None:
    with pytest.raises(EventError) as caught:
        normalise(raw, RESOLVE, NOW)
    assert words in caught.value.message
    assert caught.value.field == field


def test_generated_ids_are_time_ordered_version_7_uuids() -> None:
    before = time.time_ns() // 1_000_000
    ids = [new_id() for _ in range(2000)]
    after = time.time_ns() // 1_000_000
    parsed = [uuid.UUID(i) for i in ids]
    assert {(u.version, u.variant) for u in parsed} == {(7, uuid.RFC_4122)}
    stamps = [u.int >> 80 for u in parsed]
    assert before <= min(stamps) <= max(stamps) <= after
    assert stamps == sorted(stamps)  # made one after another: in time order
    assert len(set(ids)) == len(ids)


def test_a_batch_is_checked_for_depth_by_its_brackets_and_the_deep_event_is_named() -> None:
    shallow = [{"type": "a", "s": "[[[[{{{{" * 10, "x": {"y": [1, {"z": 2}]}} for _ in range(100)]
    assert parse_json(json.dumps(shallow).encode()) == shallow  # brackets in strings: text
    deep: object = 1
    for _ in range(33):
        deep = {"a": deep}
    batch = [*shallow[:57], {"type": "a", "n": deep}, *shallow[:3]]
    with pytest.raises(EventError, match="nested deeper than 32") as raised:
        parse_json(json.dumps(batch).encode())
    assert raised.value.field == "[57].n" + ".a" * 31


@pytest.mark.parametrize("event_type", ["flow_run_state_change", "flow_sla_failure"])
def test_flow_run_events_carry_tags_deployment_and_work_pool(event_type: str) -> None:
    event = normalise(
        {
            "type": event_type,
            "tags": ["prod", "team-a"],
            "deployment_id": "d1",
            "deployment_name": "nightly",
            "work_pool_name": "k8s",
        },
        RESOLVE,
        NOW,
    )
    assert (event["tags"], event["deployment_name"], event["work_queue_name"]) == (
        ["prod", "team-a"],
        "nightly",
        None,  # known attributes are always present
    )
    with pytest.raises(EventError) as caught:
        normalise({"type": event_type, "tags": "prod"}, RESOLVE, NOW)
    assert (caught.value.message, caught.value.field) == (
        "'tags' must be a list, got a string",
        "tags",
    )
    with pytest.raises(EventError, match="'work_pool_name' must be a string"):
        normalise({"type": event_type, "work_pool_name": 1}, RESOLVE, NOW)


FULL_RUN = {
    "type": "flow_run_state_change",
    "flow_id": "f-1",
    "flow_name": "nightly-etl",
    "flow_group_id": "d-1",
    "flow_link": "http://ui/flows/f-1",
    "flow_run_id": "r-1",
    "flow_run_name": "brave-otter",
    "state": "Failed",
    "state_message": "exit code 1",
    "flow_run_link": "http://ui/runs/r-1",
}


def message_of(raw: object) -> object:
    return normalise(raw, RESOLVE, NOW)["message"]


def test_a_default_message_with_every_field_is_the_contracts_sentence() -> None:
    assert message_of(FULL_RUN) == (
        "Run brave-otter of flow nightly-etl entered state Failed with message exit code 1. "
        "See http://ui/runs/r-1 for more details."
    )


def test_a_default_message_leaves_out_what_the_event_does_not_say() -> None:
    assert message_of({"type": "flow_run_state_change", "state": "Failed"}) == (
        "A flow run entered state Failed."
    )
    # Prefect often sends an empty state message: "" reads like a missing one
    partial = {
        "type": "flow_run_state_change",
        "flow_name": "nightly-etl",
        "state": "Completed",
        "state_message": "",
    }
    assert message_of(partial) == "A run of flow nightly-etl entered state Completed."
    assert message_of({**partial, "flow_run_name": "brave-otter", "flow_run_link": "http://u"}) == (
        "Run brave-otter of flow nightly-etl entered state Completed. See http://u for more details."
    )
    assert message_of({"type": "flow_run_state_change"}) == "A flow run changed state."


def test_the_other_built_in_default_messages_leave_out_missing_fields_too() -> None:
    sla = {
        "type": "flow_sla_failure",
        "flow_run_id": "r-1",
        "kind": "STARTED_NOT_FINISHED",
        "flow_sla_config_id": "nightly-runtime",
        "duration_seconds": 7200,
    }
    assert message_of(sla) == (
        "Run r-1 failed STARTED_NOT_FINISHED SLA (nightly-runtime) after 7200 seconds."
    )
    assert message_of({**sla, "flow_run_name": "brave-otter", "flow_name": "etl"}) == (
        "Run brave-otter (r-1) of flow etl failed STARTED_NOT_FINISHED SLA (nightly-runtime) "
        "after 7200 seconds."
    )
    assert message_of({"type": "agent_sla_failure", "sla_min_healthy": 0, "agent_ids": []}) == (
        "Agents sharing a config have failed the minimum healthy count of 0."
    )
    assert message_of({"type": "agent_sla_recovered", "agent_config_id": "prod"}) == (
        "Agents sharing the config prod are healthy again."
    )
    assert message_of({"type": "agent_heartbeat", "agent_id": "a1"}) == (
        "Agent a1 is polling for work."
    )


def test_declared_messages_are_user_templates_where_a_missing_field_is_empty() -> None:
    assert message_of({"type": "deploy_finished"}) == "Deployed "


@pytest.mark.parametrize("event_type", sorted(BUILTIN_TYPES))
def test_the_phrases_of_a_default_message_make_up_its_contract_sentence(event_type: str) -> None:
    phrases = DEFAULT_PHRASES[event_type]
    assert "".join(choices[0].source for choices in phrases) == (
        BUILTIN_TYPES[event_type].message.source
    )
    assert all(not choices[-1].fields() for choices in phrases)  # something always reads


def test_timestamps_are_written_in_utc_with_a_z() -> None:
    """One format for every timestamp the daemon writes (events, audit, Prefect filters)."""
    assert format_timestamp(NOW) == "2026-11-27T09:30:00Z"
    assert format_timestamp(NOW.replace(microsecond=250)) == "2026-11-27T09:30:00.000250Z"
    berlin = timezone(timedelta(hours=1))
    assert format_timestamp(datetime(2026, 11, 27, 10, 30, tzinfo=berlin)) == (
        "2026-11-27T09:30:00Z"
    )
