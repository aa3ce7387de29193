"""Prefect integration against a real Prefect server (one for this module, ~10 s to start).

Flows, deployments and runs are made through Prefect's own client and driven through states
as a worker would; what the daemon did is checked through Prefect's API and a real webhook
receiver. Each test uses flows of its own, so the daemons' subscriptions see other tests'
runs too, as they would on a shared server, and must only act on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import tempfile
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

# Prefect's client makes a home directory when imported: keep it out of the user's home
os.environ.setdefault(
    "PREFECT_HOME", str(Path(tempfile.gettempdir()) / "automationd-tests-prefect-home")
)

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import DeploymentScheduleCreate, WorkPoolCreate
from prefect.client.schemas.schedules import IntervalSchedule
from prefect.states import Failed, Running, Scheduled

from automationd import prefect_events as subscription_module
from automationd.prefect_events import PrefectSubscription, flow_run_event
from automationd.rules import PrefectSettings
from tests.prefect_server import TcpProxy, losing_proxy, prefect_server
from tests.support import Daemon, audit_records, daemon, receiver, until, write_rules

# The per-test timeout (pyproject's, 120 s) times the test functions only: the server's
# start-up, paid by the first test's setup, has its own wait (STARTUP_SECONDS, 120 s), which
# it could never reach inside the 120 s; a server that does not start fails with its log.
pytestmark = pytest.mark.timeout(func_only=True)


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with prefect_server(tmp_path_factory.mktemp("prefect")) as api:
        yield api


@pytest.fixture
async def prefect(prefect_api: str) -> AsyncIterator[PrefectClient]:
    async with PrefectClient(api=prefect_api) as client:
        yield client


async def a_deployment(client: PrefectClient) -> tuple[str, uuid.UUID, uuid.UUID]:
    """A new flow (unique name) with one deployment: (flow name, flow id, deployment id)."""
    name = f"etl-{uuid.uuid4().hex[:8]}"
    flow_id = await client.create_flow_from_name(name)
    deployment_id = await client.create_deployment(flow_id=flow_id, name="prod")
    return name, flow_id, deployment_id


def rules(tmp_path: Path, api: str, body: str) -> Path:
    head = f"""\
        audit: {{path: audit.jsonl}}
        prefect: {{api_url: "{api}", ui_url: "http://prefect.example:4200", subscribe: true}}
        retry: {{attempts: 3, initial: 0.2}}
    """
    return write_rules(tmp_path, textwrap.dedent(head) + textwrap.dedent(body))


async def ready(running: Daemon) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{running.url}/readyz") as answer:
        body: dict[str, Any] = await answer.json()
        return body


async def subscribed(running: Daemon) -> None:
    async def connected() -> bool:
        return bool((await ready(running)).get("prefect", {}).get("state") == "connected")

    await until(connected)


async def metric(running: Daemon, name: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"{running.url}/metrics") as answer:
        for line in (await answer.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


async def test_a_failed_run_reaches_a_webhook_through_the_subscription(
    tmp_path: Path, prefect_api: str, prefect: PrefectClient
) -> None:
    name, flow_id, deployment_id = await a_deployment(prefect)
    async with receiver() as hooks:
        config = rules(
            tmp_path,
            prefect_api,
            f"""\
            automations:
              - name: failed
                on: [flow_run_state_change]
                match: {{state: Failed, flow_name: {name}}}
                actions: [{{webhook: {{url: "{hooks.url}/failed"}}}}]
            """,
        )
        async with daemon(config) as running:
            await subscribed(running)
            run = await prefect.create_flow_run_from_deployment(deployment_id)
            await prefect.set_flow_run_state(run.id, Running(), force=True)
            await prefect.set_flow_run_state(run.id, Failed(message="disk full"), force=True)
            (delivered,) = await hooks.wait_for_path("/failed", within=30)
            assert await metric(running, "automationd_prefect_subscription_up") == 1.0
            assert await metric(running, "automationd_prefect_events_total") >= 3
            status = (await ready(running))["prefect"]
            assert status["state"] == "connected"
            assert status["events_received"] >= 3
    event = delivered.body
    assert isinstance(event, dict)
    assert {k: event[k] for k in ("type", "flow_run_id", "flow_run_name", "flow_id")} == {
        "type": "flow_run_state_change",
        "flow_run_id": str(run.id),
        "flow_run_name": run.name,
        "flow_id": str(flow_id),
    }
    assert (event["flow_name"], event["flow_group_id"]) == (name, str(deployment_id))
    assert (event["state"], event["state_type"], event["state_message"]) == (
        "Failed",
        "FAILED",
        "disk full",
    )
    assert event["flow_run_link"] == f"http://prefect.example:4200/runs/flow-run/{run.id}"
    assert event["flow_link"] == f"http://prefect.example:4200/flows/flow/{flow_id}"
    assert (event["tenant_id"], event["tenant_slug"]) == ("", "")
    assert event["message"] == (
        f"Run {run.name} of flow {name} entered state Failed with message disk full. "
        f"See http://prefect.example:4200/runs/flow-run/{run.id} for more details."
    )
    # the Prefect event id is the event's id: it is what duplicates are recognised by
    (prefect_event,) = [
        e for e in await prefect_events(prefect, run.id) if e["event"] == "prefect.flow-run.Failed"
    ]
    assert event["id"] == prefect_event["id"]
    assert delivered.headers["X-PREFECT-EVENT-ID"] == prefect_event["id"]


async def prefect_events(client: PrefectClient, run_id: uuid.UUID) -> list[dict[str, Any]]:
    """The Prefect server's stored events about one flow run (read through its REST API)."""
    body = {
        "filter": {
            "resource": {"id": [f"prefect.flow-run.{run_id}"]},
            "order": "ASC",
        },
        "limit": 50,
    }
    for _ in range(50):  # the event persister writes them in batches
        answer = await client._client.post("/events/filter", json=body)
        events: list[dict[str, Any]] = answer.json()["events"]
        if any(e["event"] == "prefect.flow-run.Failed" for e in events):
            return events
        await asyncio.sleep(0.2)
    return events


async def test_a_scheduled_run_that_never_starts_fires_its_sla_even_when_marked_late(
    tmp_path: Path, prefect_api: str, prefect: PrefectClient
) -> None:
    name, _, deployment_id = await a_deployment(prefect)
    async with receiver() as hooks:
        config = rules(
            tmp_path,
            prefect_api,
            f"""\
            flow_slas:
              - {{id: start-on-time, kind: SCHEDULED_NOT_STARTED, duration: 5s, match: {{flow_name: {name}}}}}
            automations:
              - name: late
                on: [flow_sla_failure]
                actions: [{{webhook: {{url: "{hooks.url}/sla"}}}}]
            """,
        )
        async with daemon(config) as running:
            await subscribed(running)
            scheduled = datetime.now(UTC)
            run = await prefect.create_flow_run_from_deployment(
                deployment_id, state=Scheduled(scheduled_time=scheduled)
            )
            # no worker picks it up; Prefect's late-runs service marks it Late after ~1 s
            (fired,) = await hooks.wait_for_path("/sla", within=30)
            assert (await prefect.read_flow_run(run.id)).state_name == "Late"
    body = fired.body
    assert isinstance(body, dict)
    assert (body["kind"], body["flow_run_id"], body["flow_sla_config_id"]) == (
        "SCHEDULED_NOT_STARTED",
        str(run.id),
        "start-on-time",
    )
    records = audit_records(tmp_path / "audit.jsonl")
    states = [
        r["event"]["state"]  # type: ignore[index]
        for r in records
        if r["kind"] == "event.accepted" and r["source"] == "prefect"
    ]
    assert states[:2] == ["Scheduled", "Late"]
    # Late kept the deadline of the scheduled start: armed once, never disarmed or moved
    armed = [r for r in records if r["kind"] == "sla.armed" and r.get("flow_run_id") == str(run.id)]
    assert len(armed) == 1
    assert not [r for r in records if r["kind"] == "sla.disarmed"]
    due = datetime.fromisoformat(str(armed[0]["due"]))
    assert abs((due - scheduled).total_seconds() - 5) < 0.01


async def test_cancel_flow_run_cancels_a_run_that_ran_too_long(
    tmp_path: Path, prefect_api: str, prefect: PrefectClient
) -> None:
    name, _, deployment_id = await a_deployment(prefect)
    config = rules(
        tmp_path,
        prefect_api,
        f"""\
        flow_slas:
          - {{id: runtime, kind: STARTED_NOT_FINISHED, duration: 1s, match: {{flow_name: {name}}}}}
        automations:
          - name: cancel-on-timeout
            on: [flow_sla_failure]
            match: {{kind: STARTED_NOT_FINISHED}}
            actions: [{{cancel_flow_run: {{message: "ran over {{duration_seconds}} s"}}}}]
        """,
    )
    async with daemon(config) as running:
        await subscribed(running)
        run = await prefect.create_flow_run_from_deployment(deployment_id)
        await prefect.set_flow_run_state(run.id, Running(), force=True)

        async def cancelled() -> bool:
            state = (await prefect.read_flow_run(run.id)).state
            return state is not None and state.type.value in ("CANCELLING", "CANCELLED")

        await until(cancelled)
    state = (await prefect.read_flow_run(run.id)).state
    assert state is not None
    assert state.message == "ran over 1 s"
    (outcome,) = [
        r for r in audit_records(tmp_path / "audit.jsonl") if r["kind"] == "action.succeeded"
    ]
    assert (outcome["action"], outcome["response"]) == ("cancel_flow_run", "ACCEPT")


async def test_pause_schedule_pauses_the_deployment_of_a_failed_run(
    tmp_path: Path, prefect_api: str, prefect: PrefectClient
) -> None:
    name, _, deployment_id = await a_deployment(prefect)
    other_name, _, other_deployment = await a_deployment(prefect)
    config = rules(
        tmp_path,
        prefect_api,
        f"""\
        automations:
          - name: stop-the-schedule
            on: [flow_run_state_change]
            match: {{state: Failed, flow_name: {name}}}
            actions: [{{pause_schedule: {{}}}}, {{cancel_flow_run: {{}}}}]
        """,
    )
    assert not (await prefect.read_deployment(deployment_id)).paused
    async with daemon(config) as running:
        await subscribed(running)
        for deployment in (other_deployment, deployment_id):
            run = await prefect.create_flow_run_from_deployment(deployment)
            await prefect.set_flow_run_state(run.id, Running(), force=True)
            await prefect.set_flow_run_state(run.id, Failed(), force=True)

        async def paused() -> bool:
            return bool((await prefect.read_deployment(deployment_id)).paused)

        await until(paused)

        async def both_done() -> bool:
            records = audit_records(tmp_path / "audit.jsonl")
            return sum(r["kind"] == "action.succeeded" for r in records) == 2

        await until(both_done)
    assert not (await prefect.read_deployment(other_deployment)).paused, other_name
    # cancelling a run that already failed: Prefect aborts the transition, and that is done
    outcomes = {
        r["action"]: r["response"]
        for r in audit_records(tmp_path / "audit.jsonl")
        if r["kind"] == "action.succeeded"
    }
    assert outcomes == {
        "pause_schedule": "paused",
        "cancel_flow_run": "ABORT: Run is already in terminal state FAILED.",
    }


async def test_start_flow_run_starts_exactly_one_run_when_the_answer_is_lost_and_retried(
    tmp_path: Path, prefect_api: str, prefect: PrefectClient
) -> None:
    _, _, deployment_id = await a_deployment(prefect)
    # the first answer to create_flow_run is lost on the way back: the daemon retries
    async with losing_proxy(prefect_api, "/create_flow_run") as proxy:
        path = write_rules(
            tmp_path,
            textwrap.dedent(f"""\
            audit: {{path: audit.jsonl}}
            prefect: {{api_url: "{proxy.url}"}}
            event_types:
              retrain_needed: {{attributes: [model, rows]}}
            automations:
              - name: retrain
                on: [retrain_needed]
                actions:
                  - start_flow_run:
                      flow_group_id: "{deployment_id}"
                      parameters: {{model: "{{model}}", rows: "{{rows}}", reason: "drift on {{model}}"}}
                      retry: {{attempts: 3, initial: 0.2}}
            """),
        )
        async with daemon(path) as running:
            status, _ = await running.post({"type": "retrain_needed", "model": "churn", "rows": 5})
            assert status == 202

            async def finished() -> bool:
                records = audit_records(tmp_path / "audit.jsonl")
                return any(r["kind"] == "action.succeeded" for r in records)

            await until(finished)
    assert proxy.seen == [
        f"/api/deployments/{deployment_id}/create_flow_run -> 201",
        f"/api/deployments/{deployment_id}/create_flow_run -> 200",
    ]
    runs = [r for r in await prefect.read_flow_runs() if r.deployment_id == deployment_id]
    assert len(runs) == 1
    assert runs[0].parameters == {"model": "churn", "rows": 5, "reason": "drift on churn"}
    records = audit_records(tmp_path / "audit.jsonl")
    attempts = [r for r in records if r["kind"] == "action.attempt"]
    assert [a["ok"] for a in attempts] == [False, True]
    (done,) = [r for r in records if r["kind"] == "action.succeeded"]
    assert done["response"] == f"already started flow run {runs[0].name} ({runs[0].id})"


async def test_state_changes_missed_while_disconnected_or_stopped_are_caught_up(
    tmp_path: Path, prefect_api: str, prefect: PrefectClient
) -> None:
    name, _, deployment_id = await a_deployment(prefect)
    host, port = prefect_api.removeprefix("http://").removesuffix("/api").split(":")
    proxy = TcpProxy((host, int(port)))
    await proxy.start()

    async def fail_a_run() -> uuid.UUID:
        run = await prefect.create_flow_run_from_deployment(deployment_id)
        await prefect.set_flow_run_state(run.id, Running(), force=True)
        await prefect.set_flow_run_state(run.id, Failed(), force=True)
        return run.id

    try:
        async with receiver() as hooks:
            config = rules(
                tmp_path,
                proxy.url + "/api",
                f"""\
                automations:
                  - name: failed
                    on: [flow_run_state_change]
                    match: {{state: Failed, flow_name: {name}}}
                    actions: [{{webhook: {{url: "{hooks.url}/failed", payload: {{run: "{{flow_run_id}}"}}}}}}]
                """,
            )
            async with daemon(config) as running:
                await subscribed(running)
                first = await fail_a_run()
                await hooks.wait_for_path("/failed", 1, within=30)
                # cut the line: the websocket drops and reconnections are refused
                proxy.refusing = True
                proxy.cut()

                async def disconnected() -> bool:
                    return bool((await ready(running))["prefect"]["state"] != "connected")

                await until(disconnected)
                second = await fail_a_run()
                # the catch-up can only find what Prefect has stored (it stores in batches)
                stored = await prefect_events(prefect, second)
                assert any(e["event"] == "prefect.flow-run.Failed" for e in stored)
                assert len(hooks.requests) == 1
                proxy.refusing = False
                await hooks.wait_for_path("/failed", 2, within=60)
                status = (await ready(running))["prefect"]
                assert status["reconnects"] >= 1
                assert await running.stop() == 0
            # stopped: a third run fails; started again, the daemon catches up from where it was
            third = await fail_a_run()
            # Prefect stores events in batches: the catch-up can only find it once stored
            stored = await prefect_events(prefect, third)
            assert any(e["event"] == "prefect.flow-run.Failed" for e in stored)
            async with daemon(config) as running:
                await hooks.wait_for_path("/failed", 3, within=60)
                # a negative check: a copy of an event from the stream and the catch-up both
                # would be delivered twice; the wait gives the second copy time to come in,
                # and the stop lets any action it started finish
                await asyncio.sleep(1)
                assert await running.stop() == 0
            runs = [r.body["run"] for r in hooks.requests]  # type: ignore[index]
    finally:
        await proxy.stop()
    assert runs == [str(first), str(second), str(third)]
    accepted = [
        r["event_id"]
        for r in audit_records(tmp_path / "audit.jsonl")
        if r["kind"] == "event.accepted" and r["source"] == "prefect"
    ]
    assert len(accepted) == len(set(accepted)), "an event was processed twice"


async def test_an_event_without_the_id_fails_the_action_for_good_and_reload_subscribes(
    tmp_path: Path, prefect_api: str, prefect: PrefectClient
) -> None:
    path = tmp_path / "rules.yaml"
    first = f"""\
        version: 1
        server: {{listen: "127.0.0.1:0"}}
        audit: {{path: audit.jsonl}}
        prefect: {{api_url: "{prefect_api}"}}
        automations:
          - name: cancel-anything
            on: ["deploy_*"]
            actions: [{{cancel_flow_run: {{}}}}]
    """
    path.write_text(textwrap.dedent(first))
    async with daemon(path) as running:
        assert "prefect" not in await ready(running)  # subscribe is off
        status, _ = await running.post({"type": "deploy_done", "app": "shop"})
        assert status == 202

        async def failed() -> bool:
            records = audit_records(tmp_path / "audit.jsonl")
            return any(r["kind"] == "action.failed" for r in records)

        await until(failed)
        # turning the subscription on takes a reload, not a restart
        on = f'api_url: "{prefect_api}", subscribe: true'
        path.write_text(textwrap.dedent(first).replace(f'api_url: "{prefect_api}"', on))
        await subscribed(running)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{running.url}/rules") as answer,
        ):
            listed = (await answer.json())["prefect"]
        assert listed == {
            "api_url": prefect_api,
            "api_key_secret": None,
            "ui_url": None,
            "subscribe": True,
            "tls": None,
        }
    (failure,) = [
        r for r in audit_records(tmp_path / "audit.jsonl") if r["kind"] == "action.failed"
    ]
    assert (failure["error"], failure["attempts"]) == (
        "the event has no flow_run_id to act on",
        1,
    )


async def a_deployment_in_a_work_pool(
    client: PrefectClient, tags: list[str]
) -> tuple[str, uuid.UUID, str, str]:
    """A new flow with one deployment on a new work pool and queue (unique names), tagged
    `tags`: (flow name, deployment id, work pool name, work queue name)."""
    suffix = uuid.uuid4().hex[:8]
    pool, queue = f"pool-{suffix}", f"queue-{suffix}"
    await client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    await client.create_work_queue(name=queue, work_pool_name=pool)
    name = f"etl-{suffix}"
    flow_id = await client.create_flow_from_name(name)
    deployment_id = await client.create_deployment(
        flow_id=flow_id, name="nightly", work_pool_name=pool, work_queue_name=queue, tags=tags
    )
    return name, deployment_id, pool, queue


async def test_a_run_is_routed_by_its_tags_deployment_and_work_pool(
    tmp_path: Path, prefect_api: str, prefect: PrefectClient
) -> None:
    name, deployment_id, pool, queue = await a_deployment_in_a_work_pool(prefect, ["etl"])
    async with receiver() as hooks:
        config = rules(
            tmp_path,
            prefect_api,
            f"""\
            flow_slas:
              - {{id: prod-runtime, kind: STARTED_NOT_FINISHED, duration: 1s, match: {{tags: prod, flow_name: {name}}}}}
            automations:
              - name: prod
                on: [flow_run_state_change]
                match: {{tags: prod, state: Failed, flow_name: {name}}}
                actions:
                  - webhook: {{url: "{hooks.url}/prod"}}
                  - webhook:
                      url: "{hooks.url}/prod-text"
                      payload: {{text: "{{deployment_name}} on {{work_pool_name}}/{{work_queue_name}} [{{tags}}]"}}
              - name: nonprod
                on: [flow_run_state_change]
                match: {{tags: nonprod, flow_name: {name}}}
                actions: [{{webhook: {{url: "{hooks.url}/nonprod"}}}}]
              - name: prod-sla
                on: [flow_sla_failure]
                match: {{tags: prod}}
                actions: [{{webhook: {{url: "{hooks.url}/sla"}}}}]
            """,
        )
        async with daemon(config) as running:
            await subscribed(running)
            run = await prefect.create_flow_run_from_deployment(
                deployment_id, tags=["prod", "team-a"]
            )
            await prefect.set_flow_run_state(run.id, Running(), force=True)
            (sla,) = await hooks.wait_for_path("/sla", within=30)
            await prefect.set_flow_run_state(run.id, Failed(message="disk full"), force=True)
            (failed,) = await hooks.wait_for_path("/prod", within=30)
            (text,) = await hooks.wait_for_path("/prod-text", within=30)
            # one event matches every automation at once, so a /nonprod action would have
            # started with /prod's; the stop lets every running action finish
            assert await running.stop() == 0
    assert not [r for r in hooks.requests if r.path == "/nonprod"]
    assert set(run.tags) == {"etl", "prod", "team-a"}  # the deployment's and the run's own
    routing = {
        "tags": ["etl", "prod", "team-a"],
        "deployment_id": str(deployment_id),
        "deployment_name": "nightly",
        "work_pool_name": pool,
        "work_queue_name": queue,
    }
    for delivered in (failed, sla):
        event = delivered.body
        assert isinstance(event, dict)
        assert (event["flow_run_id"], event["flow_name"]) == (str(run.id), name)
        assert {k: event[k] for k in routing} == routing
    assert failed.body["state"] == "Failed"  # type: ignore[index]
    assert (sla.body["type"], sla.body["kind"]) == (  # type: ignore[index]
        "flow_sla_failure",
        "STARTED_NOT_FINISHED",
    )
    assert text.body == {"text": f"nightly on {pool}/{queue} [etl, prod, team-a]"}
    matched = [
        str(r["automation"])
        for r in audit_records(tmp_path / "audit.jsonl")
        if r["kind"] == "automation.matched"
    ]
    assert sorted(matched) == ["prod", "prod-sla"]


def test_a_prefect_event_without_deployment_or_tags_gives_empty_values() -> None:
    raw = {
        "id": "e1",
        "occurred": "2026-12-02T03:06:24.047441Z",
        "event": "prefect.flow-run.Running",
        "resource": {
            "prefect.resource.id": "prefect.flow-run.r1",
            "prefect.resource.name": "brave-otter",
            "prefect.state-name": "Running",
            "prefect.state-type": "RUNNING",
        },
        "related": [
            {
                "prefect.resource.id": "prefect.flow.f1",
                "prefect.resource.role": "flow",
                "prefect.resource.name": "etl",
            },
            {"prefect.resource.id": "prefect.tag.b", "prefect.resource.role": "tag"},
            {"prefect.resource.id": "prefect.tag.a", "prefect.resource.role": "tag"},
            {"prefect.resource.id": "prefect.tag.a", "prefect.resource.role": "tag"},
            {"prefect.resource.id": "prefect.other.x", "prefect.resource.role": "tag"},
        ],
    }
    event = flow_run_event(raw, None)
    assert event is not None
    assert {k: event[k] for k in ("tags", "deployment_id", "deployment_name")} == {
        "tags": ["a", "b"],
        "deployment_id": "",
        "deployment_name": "",
    }
    assert (event["work_pool_name"], event["work_queue_name"]) == ("", "")
    raw["related"] = []
    assert flow_run_event(raw, None)["tags"] == []  # type: ignore[index]


async def test_the_api_key_goes_as_a_bearer_token_on_every_request_and_nowhere_else(
    tmp_path: Path, prefect_api: str, prefect: PrefectClient
) -> None:
    """`api_key_secret` is sent as `Authorization: Bearer <key>` on every request to Prefect:
    the orchestrator actions, the subscription's websocket (whose `auth` message carries the
    key too), the read of a scheduled run and the catch-up after a reconnection; the key
    is in neither the audit trail nor the daemon's log."""
    name, _, deployment_id = await a_deployment(prefect)
    key = f"pnu_{uuid.uuid4().hex}"
    async with losing_proxy(prefect_api, "", lose=0) as proxy:
        path = write_rules(
            tmp_path,
            textwrap.dedent(f"""\
            audit: {{path: audit.jsonl}}
            secrets:
              prefect-key: {{env: AUTOMATIOND_TEST_PREFECT_KEY}}
            prefect: {{api_url: "{proxy.url}", api_key_secret: prefect-key, subscribe: true}}
            automations:
              - name: act
                on: [flow_run_state_change]
                match: {{state: Failed, flow_name: {name}}}
                actions: [{{pause_schedule: {{}}}}, {{cancel_flow_run: {{}}}}, {{start_flow_run: {{}}}}]
            """),
        )
        async with daemon(path, env={"AUTOMATIOND_TEST_PREFECT_KEY": key}) as running:
            await subscribed(running)
            run = await prefect.create_flow_run_from_deployment(deployment_id)
            await prefect.set_flow_run_state(run.id, Running(), force=True)
            await prefect.set_flow_run_state(run.id, Failed(), force=True)

            async def acted() -> bool:
                records = audit_records(tmp_path / "audit.jsonl")
                return sum(r["kind"] == "action.succeeded" for r in records) == 3

            await until(acted)
            # the stream goes away: the daemon reconnects and catches up with the key again
            await proxy.cut()

            async def caught_up() -> bool:
                return ("POST", "/api/events/filter") in {(m, p) for m, p, _ in proxy.requests}

            await until(caught_up)
            await subscribed(running)
            async with aiohttp.ClientSession() as session:
                shown = ""
                for page in ("/rules", "/readyz", "/metrics"):
                    async with session.get(running.url + page) as answer:
                        shown += await answer.text()
            assert await running.stop() == 0
    called = {(method, path) for method, path, _ in proxy.requests}
    assert {
        ("GET", "/api/events/out"),
        ("POST", "/api/events/filter"),
        ("GET", f"/api/flow_runs/{run.id}"),
        ("POST", f"/api/deployments/{deployment_id}/pause_deployment"),
        ("POST", f"/api/flow_runs/{run.id}/set_state"),
        ("POST", f"/api/deployments/{deployment_id}/create_flow_run"),
    } <= called, called
    assert sum(request[:2] == ("GET", "/api/events/out") for request in proxy.requests) == 2
    assert {authorization for _, _, authorization in proxy.requests} == {f"Bearer {key}"}
    # each websocket begins with Prefect's auth message carrying the key
    auths = [json.loads(m) for m in proxy.sent if json.loads(m).get("type") == "auth"]
    assert auths == [{"type": "auth", "token": key}] * 2
    assert key not in (tmp_path / "audit.jsonl").read_text()
    assert key not in "\n".join(running.log)
    assert key not in shown


async def test_cancelling_a_run_that_is_still_scheduled_cancels_it_straight_away(
    tmp_path: Path, prefect_api: str, prefect: PrefectClient
) -> None:
    """cancel_flow_run on a run still Scheduled (never started): Prefect rejects CANCELLING
    and puts the run straight into Cancelled; the REJECT counts as done."""
    name, _, deployment_id = await a_deployment(prefect)
    config = rules(
        tmp_path,
        prefect_api,
        f"""\
        automations:
          - name: cancel-before-start
            on: [flow_run_state_change]
            match: {{state: Scheduled, flow_name: {name}}}
            actions: [{{cancel_flow_run: {{message: "not wanted"}}}}]
        """,
    )
    async with daemon(config) as running:
        await subscribed(running)
        later = datetime.now(UTC) + timedelta(hours=1)  # not Late meanwhile, and no worker
        run = await prefect.create_flow_run_from_deployment(
            deployment_id, state=Scheduled(scheduled_time=later)
        )

        async def done() -> bool:
            records = audit_records(tmp_path / "audit.jsonl")
            return any(r["kind"] in ("action.succeeded", "action.failed") for r in records)

        await until(done)
    read = await prefect.read_flow_run(run.id)
    assert read.state is not None
    assert (read.state.type.value, read.state.name) == ("CANCELLED", "Cancelled")
    history = [s.type.value for s in await prefect.read_flow_run_states(run.id)]
    assert history == ["SCHEDULED", "CANCELLED"]  # never CANCELLING
    records = audit_records(tmp_path / "audit.jsonl")
    (outcome,) = [r for r in records if r["kind"] == "action.succeeded"]
    assert (outcome["action"], outcome["attempts"], outcome["response"]) == (
        "cancel_flow_run",
        1,
        "REJECT: Scheduled flow run has no infrastructure to terminate.",
    )
    assert not [r for r in records if r["kind"] == "action.failed"]


async def test_pausing_a_paused_schedule_again_succeeds_and_changes_nothing(
    tmp_path: Path, prefect_api: str, prefect: PrefectClient
) -> None:
    """pause_schedule on a deployment whose schedule is already paused succeeds (no error,
    no retry) and leaves the deployment and its schedule as the first pause left them."""
    name = f"etl-{uuid.uuid4().hex[:8]}"
    flow_id = await prefect.create_flow_from_name(name)
    hourly = DeploymentScheduleCreate(schedule=IntervalSchedule(interval=timedelta(hours=1)))
    deployment_id = await prefect.create_deployment(
        flow_id=flow_id, name="hourly", schedules=[hourly]
    )
    config = rules(
        tmp_path,
        prefect_api,
        f"""\
        automations:
          - name: stop-the-schedule
            on: [flow_run_state_change]
            match: {{state: Failed, flow_name: {name}}}
            actions: [{{pause_schedule: {{}}}}]
        """,
    )

    async def fail_a_run() -> None:
        run = await prefect.create_flow_run_from_deployment(deployment_id)
        await prefect.set_flow_run_state(run.id, Running(), force=True)
        await prefect.set_flow_run_state(run.id, Failed(), force=True)

    def finished() -> list[dict[str, object]]:
        """The actions' outcomes so far, success or failure."""
        records = audit_records(tmp_path / "audit.jsonl")
        return [r for r in records if r["kind"] in ("action.succeeded", "action.failed")]

    assert not (await prefect.read_deployment(deployment_id)).paused
    async with daemon(config) as running:
        await subscribed(running)
        await fail_a_run()

        async def paused_once() -> bool:
            return len(finished()) == 1

        await until(paused_once)
        first = await prefect.read_deployment(deployment_id)
        schedules = await prefect.read_deployment_schedules(deployment_id)
        await fail_a_run()

        async def paused_twice() -> bool:
            return len(finished()) == 2

        await until(paused_twice)
        second = await prefect.read_deployment(deployment_id)
    assert first.paused
    assert second.model_dump() == first.model_dump()  # not even its `updated` time moved
    assert await prefect.read_deployment_schedules(deployment_id) == schedules
    outcomes = [
        (r["kind"], r["action"], r.get("status"), r.get("response"), r["attempts"])
        for r in finished()
    ]
    status = outcomes[0][2]
    assert outcomes == [("action.succeeded", "pause_schedule", status, "paused", 1)] * 2, outcomes
    assert 200 <= int(str(status)) < 300
    records = audit_records(tmp_path / "audit.jsonl")
    assert [r["ok"] for r in records if r["kind"] == "action.attempt"] == [True, True]


UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
"""How a refusing TcpProxy answers, as a load balancer with Prefect away would: one connection
per attempt (a connection dropped unanswered, aiohttp tries a second one at once)."""


def gaps(times: list[float], start: float) -> list[float]:
    """The time from `start` to the first of `times`, and between each and the next."""
    return [b - a for a, b in zip([start, *times], times, strict=False)]


async def test_the_subscription_reconnects_backing_off_and_starts_over_once_connected(
    tmp_path: Path, prefect_api: str, prefect: PrefectClient
) -> None:
    """While the stream cannot be reached, reconnections back off from 0.5 s, doubling (each
    wait is drawn between half and all of its step: 0.5, 1, 2, 4 s, ...); once connected
    again and an event has come through, the next loss starts over from 0.5 s. That loss is
    a cut connection, which the daemon takes as a failure (it logs a warning), not as a
    clean close by the server."""
    host, port = prefect_api.removeprefix("http://").removesuffix("/api").split(":")
    proxy = TcpProxy((host, int(port)), refuse_with=UNAVAILABLE)
    await proxy.start()
    try:
        config = rules(tmp_path, proxy.url + "/api", "automations: []\n")
        async with daemon(config) as running:
            await subscribed(running)
            proxy.refusing = True
            cut = time.monotonic()
            proxy.cut()

            def attempted(count: int) -> Callable[[], Awaitable[bool]]:
                async def check() -> bool:
                    return len([t for t in proxy.attempts if t > cut]) >= count

                return check

            await until(attempted(4), within=20)
            proxy.refusing = False
            await until(attempted(5), within=20)
            attempts = [t for t in proxy.attempts if t > cut][:5]
            await subscribed(running)
            # connected again, and the connection works: an event comes through it
            before = (await ready(running))["prefect"]["events_received"]
            _, _, deployment_id = await a_deployment(prefect)
            run = await prefect.create_flow_run_from_deployment(deployment_id)
            await prefect.set_flow_run_state(run.id, Running(), force=True)

            async def delivered() -> bool:
                return bool((await ready(running))["prefect"]["events_received"] > before)

            await until(delivered)
            # so the next loss backs off from the first step again
            logged = len(running.log)
            again = time.monotonic()
            proxy.cut()

            async def reconnecting() -> bool:
                return any(t > again for t in proxy.attempts)

            await until(reconnecting, within=20)
            restart = next(t for t in proxy.attempts if t > again)
            await subscribed(running)
            assert (await ready(running))["prefect"]["reconnects"] >= 6

            async def warned() -> bool:  # the log is read from the daemon's stderr as it comes
                return any(
                    line.startswith("WARNING ")
                    and f"Prefect event stream {proxy.url}/api: " in line
                    and line.endswith("; reconnecting")
                    for line in running.log[logged:]
                )

            await until(warned, within=10)  # the cut was a failure, not a clean close
    finally:
        await proxy.stop()
    waited = gaps(attempts, cut)
    steps = [0.5, 1.0, 2.0, 4.0, 8.0]
    for wait, step in zip(waited, steps, strict=True):
        assert wait >= step / 2, waited  # never sooner than half the step
        assert wait <= step + 2.0, waited  # at most the step, and time for a loaded machine
    assert all(waited[i + 2] > waited[i] for i in range(3)), waited
    assert again + 0.25 <= restart <= again + 2.5, restart - again


class Highest(random.Random):
    """Jitter that always draws the top of its range: each wait is its whole step."""

    def uniform(self, a: float, b: float) -> float:
        return b


@contextlib.asynccontextmanager
async def subscription_in_process(
    prefect_api: str,
) -> AsyncIterator[tuple[TcpProxy, PrefectSubscription]]:
    """The daemon's PrefectSubscription, run in this process (so its backoff constants can be
    scaled down), through a TcpProxy to the Prefect server that refuses connections at first."""
    host, port = prefect_api.removeprefix("http://").removesuffix("/api").split(":")
    proxy = TcpProxy((host, int(port)), refusing=True, refuse_with=UNAVAILABLE)
    await proxy.start()

    async def ingest(events: list[dict[str, object]]) -> None:
        pass

    settings = PrefectSettings(api_url=proxy.url + "/api", subscribe=True)
    try:
        async with aiohttp.ClientSession() as http:
            subscription = PrefectSubscription(
                settings, {}, http, ingest, (lambda: None, lambda _: None)
            )
            subscription.start()
            try:
                yield proxy, subscription
            finally:
                await subscription.stop()
    finally:
        await proxy.stop()


async def test_the_reconnection_backoff_stops_doubling_at_its_cap(
    prefect_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backoff doubles up to its cap and then stays there (a minute in the daemon; here
    the steps are scaled down to 0.05 s capped at 0.2 s, the subscription run in-process)."""
    monkeypatch.setattr(subscription_module, "FIRST_BACKOFF", 0.05)
    monkeypatch.setattr(subscription_module, "LONGEST_BACKOFF", 0.2)
    async with subscription_in_process(prefect_api) as (proxy, subscription):
        subscription.rng = Highest()

        async def twelve() -> bool:
            return len(proxy.attempts) >= 12

        await until(twelve, within=15)  # uncapped, the 12th would come after 100 s
    waited = gaps(proxy.attempts[1:12], proxy.attempts[0])
    steps = [0.05, 0.1] + [0.2] * 9
    assert all(w >= step for w, step in zip(waited, steps, strict=True)), waited
    assert sum(waited[2:]) <= 9 * 0.2 + 3.0, waited  # uncapped: 0.2 + 0.4 + ... = 102 s


async def test_the_subscription_outlives_a_thousand_failed_reconnections(
    prefect_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However long Prefect stays away, the subscription keeps trying and connects when it is
    back: past 1024 failures in a row (17 hours at a minute each) the backoff's doubling must
    not overflow. The waits are scaled to nothing here, the subscription run in-process."""
    monkeypatch.setattr(subscription_module, "FIRST_BACKOFF", 0.0)
    monkeypatch.setattr(subscription_module, "LONGEST_BACKOFF", 0.0)
    async with subscription_in_process(prefect_api) as (proxy, subscription):

        async def many() -> bool:
            task = subscription._task
            assert task is not None
            assert not task.done(), f"the subscription ended: {task.exception()!r}"
            return len(proxy.attempts) >= 1100

        await until(many, within=60)
        proxy.refusing = False

        async def connected() -> bool:
            return bool(subscription.state == "connected")

        await until(connected, within=10)
        assert subscription.reconnects >= 1100
