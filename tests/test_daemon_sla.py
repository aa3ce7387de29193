"""SLAs through the real daemon: sub-second durations, restarts and kill -9."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from tests.support import Receiver, audit_records, daemon, receiver


def sla_rules(tmp_path: Path, recv: Receiver, duration: str) -> Path:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f"""\
version: 1
server: {{listen: "127.0.0.1:0"}}
flow_slas:
  - {{id: nightly-start, kind: SCHEDULED_NOT_STARTED, duration: {duration}, match: {{flow_name: nightly-etl}}}}
agent_slas:
  - {{agent_config_id: prod, min_healthy: 1, window: 1s}}
automations:
  - name: late
    on: [flow_sla_failure]
    actions: [{{webhook: {{url: "{recv.url}/late", payload: {{text: "{{message}}", run: "{{flow_run_id}}"}}}}}}]
  - name: agents
    on: [agent_sla_failure, agent_sla_recovered]
    actions: [{{webhook: {{url: "{recv.url}/agents"}}}}]
"""
    )
    return rules


SCHEDULED = {
    "type": "flow_run_state_change",
    "flow_name": "nightly-etl",
    "flow_run_id": "run-42",
    "flow_run_name": "brave-otter",
    "state": "Scheduled",
    "flow_run_link": "http://ui/runs/42",
}


async def get_json(url: str) -> object:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        return await response.json()


async def test_a_late_run_fires_its_sla_through_an_automation(tmp_path: Path) -> None:
    async with receiver() as recv, daemon(sla_rules(tmp_path, recv, "400ms")) as proc:
        status, _ = await proc.post(SCHEDULED)
        assert status == 202
        listing = await get_json(f"{proc.url}/slas")
        assert isinstance(listing, dict)
        (armed,) = listing["flow_deadlines"]
        assert (armed["sla"], armed["flow_run_id"], armed["kind"]) == (
            "nightly-start",
            "run-42",
            "SCHEDULED_NOT_STARTED",
        )
        late = await recv.wait_for_path("/late")
        assert late[0].body == {
            "text": "Run brave-otter (run-42) of flow nightly-etl failed SCHEDULED_NOT_STARTED SLA "
            "(nightly-start) after 0.4 seconds. See http://ui/runs/42 for more details.",
            "run": "run-42",
        }
        listing = await get_json(f"{proc.url}/slas")
        assert isinstance(listing, dict)
        assert listing["flow_deadlines"] == []
        # No agent ever beats, so the agent SLA fails too, once, one window (1s) after the
        # start; waiting for it (up to a deadline) makes the count below exact, not luck.
        await recv.wait_for_path("/agents", within=15)
        assert await proc.stop() == 0
    records = audit_records(tmp_path / "audit.jsonl")
    assert [r["kind"] for r in records].count("sla.armed") == 1
    fired = [r for r in records if r["kind"] == "sla.fired"]
    flow = [(r["sla"], r["flow_run_id"]) for r in fired if "sla" in r]
    agents = [r["agent_config_id"] for r in fired if "agent_config_id" in r]
    assert (flow, agents, len(fired)) == ([("nightly-start", "run-42")], ["prod"], 2)
    assert [r.path for r in recv.requests].count("/late") == 1


async def test_a_run_that_starts_in_time_fires_nothing(tmp_path: Path) -> None:
    async with receiver() as recv, daemon(sla_rules(tmp_path, recv, "600ms")) as proc:
        await proc.post(SCHEDULED)
        await proc.post({**SCHEDULED, "state": "Running"})
        await asyncio.sleep(1.0)
        assert await proc.stop() == 0
    assert [r.path for r in recv.requests if r.path == "/late"] == []


async def test_kill_9_then_restart_fires_a_passed_deadline_exactly_once(tmp_path: Path) -> None:
    async with receiver() as recv:
        rules = sla_rules(tmp_path, recv, "1500ms")
        async with daemon(rules) as proc:
            status, _ = await proc.post(SCHEDULED)
            assert status == 202
            async with asyncio.timeout(15):
                while "sla.armed" not in (tmp_path / "audit.jsonl").read_text():  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            proc.process.kill()  # SIGKILL: no shutdown of any kind
            await proc.process.wait()
        assert [r for r in recv.requests if r.path == "/late"] == []
        await asyncio.sleep(2.0)  # the deadline passes while nothing runs
        async with daemon(rules) as proc:
            await recv.wait_for_path("/late")
            await asyncio.sleep(1.0)  # and nothing more arrives
            assert await proc.stop() == 0
    late = [r for r in recv.requests if r.path == "/late"]
    assert len(late) == 1
    assert isinstance(late[0].body, dict)
    assert late[0].body["run"] == "run-42"


async def test_agents_going_quiet_and_coming_back(tmp_path: Path) -> None:
    async with receiver() as recv, daemon(sla_rules(tmp_path, recv, "1h")) as proc:
        await proc.post({"type": "agent_heartbeat", "agent_id": "a1", "agent_config_id": "prod"})
        (failure,) = await recv.wait_for_path("/agents")
        assert isinstance(failure.body, dict)
        assert failure.body["type"] == "agent_sla_failure"
        assert failure.body["agent_ids"] == ["a1"]
        assert failure.body["message"].endswith("The following agents are unhealthy: a1")
        await proc.post({"type": "agent_heartbeat", "agent_id": "a1", "agent_config_id": "prod"})
        _, recovered = await recv.wait_for_path("/agents", 2)
        assert isinstance(recovered.body, dict)
        assert recovered.body["type"] == "agent_sla_recovered"
        assert recovered.body["healthy_agent_ids"] == ["a1"]
        # a1 beats no more: one window later the SLA fails again, once, and then stays
        # failing; waiting for that failure (up to a deadline) makes the counts exact
        await recv.wait_for_path("/agents", 3, within=15)
        assert await proc.stop() == 0
    types = [r.body["type"] for r in recv.requests if isinstance(r.body, dict)]
    assert types == ["agent_sla_failure", "agent_sla_recovered", "agent_sla_failure"]
    kinds = [r["kind"] for r in audit_records(tmp_path / "audit.jsonl") if r.get("agent_config_id")]
    assert kinds == ["sla.fired", "sla.recovered", "sla.fired"]


async def test_reloads_rearm_changed_and_disarm_removed_slas(tmp_path: Path) -> None:
    async with receiver() as recv:
        rules = sla_rules(tmp_path, recv, "1h")
        async with daemon(rules) as proc:
            await proc.post(SCHEDULED)
            trail = tmp_path / "audit.jsonl"
            async with asyncio.timeout(15):
                while "sla.armed" not in trail.read_text():  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            rules.write_text(rules.read_text().replace("duration: 1h", "duration: 2h"))
            async with asyncio.timeout(15):
                while "the duration changed" not in trail.read_text():  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            listing = await get_json(f"{proc.url}/slas")
            assert isinstance(listing, dict)
            (armed,) = listing["flow_deadlines"]
            first = next(r for r in audit_records(trail) if r["kind"] == "sla.armed")
            assert armed["due"] > first["due"]
            text = rules.read_text()
            rules.write_text(text[: text.index("flow_slas:")] + text[text.index("agent_slas:") :])
            async with asyncio.timeout(15):
                while "the SLA is no longer in the rules" not in trail.read_text():  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            listing = await get_json(f"{proc.url}/slas")
            assert isinstance(listing, dict)
            assert listing["flow_deadlines"] == []
            assert await proc.stop() == 0
