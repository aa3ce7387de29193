"""The HTTP API in-process (a real aiohttp server on loopback): every bad input is a 4xx JSON."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from automationd.engine import Engine
from automationd.rules.load import parse_config
from automationd.server import ENGINE, create_app
from tests.support import Receiver, audit_records, receiver

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def recv() -> AsyncIterator[Receiver]:
    async with receiver() as r:
        yield r


@pytest.fixture
async def client(tmp_path: Path, recv: Receiver) -> AsyncIterator[Client]:
    rules = f"""\
version: 1
server: {{max_body_bytes: 4096}}
retry: {{attempts: 2, initial: 10ms}}
automations:
  - name: failed
    on: [flow_run_state_change]
    match: {{state: Failed}}
    actions:
      - webhook: {{url: "{recv.url}/failed", payload: {{text: "{{message}}"}}}}
      - webhook: {{url: "{recv.url}/broken"}}
"""
    config = parse_config(rules.encode(), tmp_path / "rules.yaml")
    engine = Engine(config)
    async with TestClient(TestServer(create_app(engine))) as test_client:
        yield test_client


async def post(client: Client, body: object) -> tuple[int, dict[str, object]]:
    response = await client.post("/events", data=body)
    payload = await response.json()
    assert response.content_type == "application/json"
    return response.status, payload


BAD_BODIES = [
    (b"{not json", 400, None),
    (b'{"type": "a", "x": NaN}', 400, None),
    (b'{"type": "a", "x": Infinity}', 400, None),
    (b'{"type": "a", "type": "b"}', 400, "type"),
    (b'{"type": "a", "x": "\\udc00"}', 400, "x"),
    (b"[" * 2000 + b"]" * 2000, 400, None),
    (b"42", 400, None),
    (b'"event"', 400, None),
    (b"null", 400, None),
    (b"{}", 400, "type"),
    (b'{"type": 3}', 400, "type"),
    (b'{"type": "a", "timestamp": "now"}', 400, "timestamp"),
    (b"[]", 400, None),
    (b'[{"type": "a"}, {"type": "b"}, {"kind": "c"}]', 400, "[2].type"),
    (b'[{"type": "a"}, 5]', 400, "[1]"),
    (b'{"type": "' + b"a" * 5000 + b'"}', 413, None),
]


@pytest.mark.parametrize(("body", "status", "field"), BAD_BODIES)
async def test_bad_input_gets_a_json_4xx_naming_the_field(
    client: Client, body: bytes, status: int, field: str | None
) -> None:
    code, payload = await post(client, body)
    assert code == status, payload
    assert isinstance(payload["error"], str)
    assert payload["error"]
    assert payload["field"] == field
    # and the daemon is still fine
    code, payload = await post(client, b'{"type": "ping"}')
    assert code == 202


async def test_a_bad_item_rejects_the_whole_batch_with_its_index(
    client: Client, tmp_path: Path
) -> None:
    code, payload = await post(client, b'[{"type": "a"}, {"type": "b"}, {"type": "c", "id": 1}]')
    assert code == 400
    assert payload == {
        "error": "event 2 of the batch: 'id' must be a non-empty string of at most 200 characters",
        "field": "[2].id",
        "index": 2,
    }
    accepted = [r for r in audit_records(tmp_path / "audit.jsonl") if r["kind"] == "event.accepted"]
    assert accepted == []


async def test_chunked_body_over_the_limit_is_413(client: Client) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 1000

    code, payload = await post(client, chunks())
    assert code == 413
    assert "max_body_bytes (4096 bytes)" in str(payload["error"])


async def test_unknown_paths_and_methods_are_json(client: Client) -> None:
    response = await client.get("/nope")
    assert response.status == 404
    assert (await response.json())["error"] == "Not Found"
    response = await client.get("/events")
    assert response.status == 405


async def test_a_dead_letter_retry_answers_what_became_of_it(client: Client) -> None:
    """202 when its action runs again, 409 naming what left the rules, 404 when unknown."""
    app = client.app
    assert app is not None
    store = app[ENGINE].store
    event: dict[str, object] = {"id": "e1", "type": "flow_run_state_change", "message": "m"}
    kept = store.add_dead_letter(event, "failed", 1, "webhook", "HTTP 503", 1.0, 2)
    gone = store.add_dead_letter(event, "gone", 0, "webhook", "HTTP 503", 1.0, 2)
    moved = store.add_dead_letter(event, "failed", 5, "webhook", "HTTP 503", 1.0, 2)
    response = await client.post(f"/dead-letters/{gone}/retry")
    assert (response.status, await response.json()) == (
        409,
        {"error": "automation gone (action 0) is no longer in the rules", "field": "id"},
    )
    response = await client.post(f"/dead-letters/{moved}/retry")
    assert (response.status, await response.json()) == (
        409,
        {"error": "automation failed (action 5) is no longer in the rules", "field": "id"},
    )
    response = await client.post("/dead-letters/999/retry")
    assert (response.status, await response.json()) == (
        404,
        {"error": "no dead letter 999", "field": "id"},
    )
    response = await client.post(f"/dead-letters/{kept}/retry")
    assert (response.status, await response.json()) == (202, {"retrying": kept})


async def test_healthz(client: Client) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert (await response.json())["status"] == "ok"


async def test_accepted_events_are_matched_acted_on_and_audited(
    client: Client, recv: Receiver, tmp_path: Path
) -> None:
    recv.status["/broken"] = 500
    body = json.dumps(
        [
            {
                "type": "flow_run_state_change",
                "id": "run-1-failed",
                "flow_run_name": "r1",
                "flow_name": "f",
                "state": "Failed",
            },
            {"type": "flow_run_state_change", "id": "run-2-ok", "state": "Completed"},
        ]
    ).encode()
    code, payload = await post(client, body)
    assert code == 202
    assert payload == {"accepted": ["run-1-failed", "run-2-ok"]}
    got = await recv.wait_for(3)
    failed = next(r for r in got if r.path == "/failed")
    # a default message leaves out the clauses of fields the event lacks
    assert failed.body == {"text": "Run r1 of flow f entered state Failed."}
    await client.close()  # stops the engine: actions finish, audit flushed
    records = audit_records(tmp_path / "audit.jsonl")
    kinds = [
        (r["kind"], r.get("event_id"), r.get("automation"), r.get("action_index")) for r in records
    ]
    assert kinds[0] == ("config.loaded", None, None, None)
    assert ("event.accepted", "run-1-failed", None, None) in kinds
    assert ("event.accepted", "run-2-ok", None, None) in kinds
    assert ("automation.matched", "run-1-failed", "failed", None) in kinds
    assert not any(k[0] == "automation.matched" and k[1] == "run-2-ok" for k in kinds)
    succeeded = next(r for r in records if r["kind"] == "action.succeeded")
    assert succeeded["action_index"] == 0
    assert succeeded["status"] == 200
    assert isinstance(succeeded["latency_ms"], float)
    failed_record = next(r for r in records if r["kind"] == "action.failed")
    assert failed_record["action_index"] == 1
    assert failed_record["status"] == 500
    assert failed_record["attempts"] == 2
    assert [r.path for r in got].count("/broken") == 2
    assert "answered 500" in str(failed_record["error"])
    assert all(isinstance(r["time"], str) and str(r["time"]).endswith("Z") for r in records)


async def test_a_slow_destination_does_not_delay_ingestion_or_other_actions(
    client: Client, recv: Receiver
) -> None:
    recv.delay["/broken"] = 5.0
    code, _ = await post(client, b'{"type": "flow_run_state_change", "state": "Failed"}')
    assert code == 202
    # The slow destination holds its answer for 5 s; the other action arrives regardless,
    # and new events are still accepted meanwhile.
    await recv.wait_for(1, within=3.0)
    assert [r.path for r in recv.requests] == ["/failed"]
    code, _ = await post(client, b'{"type": "ping"}')
    assert code == 202
