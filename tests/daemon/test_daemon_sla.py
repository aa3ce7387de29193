"""SLAs through the real daemon: real time, restarts and kill -9.

Durations are a few seconds, not a fraction of one: a test that must see a deadline armed
(or disarm it) before it passes needs a margin that a loaded machine cannot eat. Waits are
for something to have happened (polled up to a deadline), never a guess at how long it
takes; "nothing fired" is shown by a later deadline of the same kind firing first."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path

import aiohttp

from tests.support import Receiver, audit_records, daemon, receiver, until, write_rules


def sla_rules(tmp_path: Path, recv: Receiver, duration: str) -> Path:
    return write_rules(
        tmp_path,
        f"""\
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
""",
    )


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


def records_of(trail: Path, kind: str) -> list[dict[str, object]]:
    return [r for r in audit_records(trail) if r["kind"] == kind] if trail.exists() else []


def due_of(record: dict[str, object]) -> float:
    """The `due` of an `sla.armed` audit record, as a Unix time."""
    return datetime.fromisoformat(str(record["due"])).timestamp()


async def test_a_late_run_fires_its_sla_through_an_automation(tmp_path: Path) -> None:
    """A scheduled run that never starts is listed as armed in GET /slas, then its SLA fails
    once, through an automation, with the README's message, and the deadline goes. The 2.5 s
    keeps a fraction in the message and leaves the listing seconds to be read in time."""
    async with receiver() as recv, daemon(sla_rules(tmp_path, recv, "2500ms")) as proc:
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
            "(nightly-start) after 2.5 seconds. See http://ui/runs/42 for more details.",
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
    """A run that starts before its SCHEDULED_NOT_STARTED deadline disarms it: it never
    fires. Shown without guessing a wait: a second run, scheduled after the first and never
    started, fails its SLA; deadlines fire in due order (their `sla.fired` records too), so
    once the later one has fired, the earlier one would have been recorded before it."""
    trail = tmp_path / "audit.jsonl"
    async with receiver() as recv, daemon(sla_rules(tmp_path, recv, "3s")) as proc:
        assert (await proc.post(SCHEDULED))[0] == 202
        assert (await proc.post({**SCHEDULED, "state": "Running"}))[0] == 202

        async def disarmed() -> bool:
            return bool(records_of(trail, "sla.disarmed"))

        await until(disarmed, within=15)
        (record,) = records_of(trail, "sla.disarmed")
        assert (record["flow_run_id"], record["reason"]) == ("run-42", "the run entered Running")
        assert (await proc.post({**SCHEDULED, "flow_run_id": "run-43"}))[0] == 202
        await recv.wait_for_path("/late", within=30)
        assert await proc.stop() == 0
    armed = records_of(trail, "sla.armed")
    assert [r["flow_run_id"] for r in armed] == ["run-42", "run-43"]
    assert due_of(armed[0]) <= due_of(armed[1])
    fired = [r["flow_run_id"] for r in records_of(trail, "sla.fired") if r.get("sla")]
    assert fired == ["run-43"]
    late = [r.body for r in recv.requests if r.path == "/late"]
    assert [body["run"] for body in late if isinstance(body, dict)] == ["run-43"]
    assert len(late) == 1


async def test_kill_9_then_restart_fires_a_passed_deadline_exactly_once(tmp_path: Path) -> None:
    """An armed deadline survives kill -9; one that passed while the daemon was down fires
    once when it starts (one `sla.fired`, one webhook), and its row goes, so it is not armed
    any more and no later start can fire it again."""
    trail = tmp_path / "audit.jsonl"
    async with receiver() as recv:
        rules = sla_rules(tmp_path, recv, "3s")
        async with daemon(rules) as proc:
            assert (await proc.post(SCHEDULED))[0] == 202

            async def armed() -> bool:
                return bool(records_of(trail, "sla.armed"))

            await until(armed, within=15)
            proc.process.kill()  # SIGKILL: no shutdown of any kind
            await proc.process.wait()
        (record,) = records_of(trail, "sla.armed")
        assert not [r for r in records_of(trail, "sla.fired") if r.get("sla")]
        assert [r for r in recv.requests if r.path == "/late"] == []
        # the deadline passes while nothing runs: a wait for the clock, not for the daemon
        await asyncio.sleep(max(0.0, due_of(record) - time.time()) + 0.5)
        async with daemon(rules) as proc:
            await recv.wait_for_path("/late", within=15)

            async def disarmed() -> bool:
                listing = await get_json(f"{proc.url}/slas")
                return isinstance(listing, dict) and listing["flow_deadlines"] == []

            await until(disarmed, within=15)
            assert await proc.stop() == 0  # lets the actions of whatever fired finish
    fired = [r for r in records_of(trail, "sla.fired") if r.get("sla")]
    assert [(r["sla"], r["flow_run_id"]) for r in fired] == [("nightly-start", "run-42")]
    late = [r for r in recv.requests if r.path == "/late"]
    assert len(late) == 1
    assert isinstance(late[0].body, dict)
    assert late[0].body["run"] == "run-42"


async def test_agents_going_quiet_and_coming_back(tmp_path: Path) -> None:
    """An agent SLA fails once when too few agents are healthy, recovers once on a
    heartbeat, and fails once more when that agent goes quiet for a window.

    Agent a1 first reports to a daemon without the agent SLA (its heartbeat is kept all the
    same), so the daemon that has the SLA starts with a1 already quiet: its first judgement,
    one window after start, is a failure naming a1, whatever the machine's speed. (Posting
    the heartbeat after start would race that judgement: an agent seen before it is healthy,
    one seen after it is not yet known.)"""
    trail = tmp_path / "audit.jsonl"
    heartbeat = {"type": "agent_heartbeat", "agent_id": "a1", "agent_config_id": "prod"}
    async with receiver() as recv:
        rules = sla_rules(tmp_path, recv, "1h")
        with_sla = rules.read_text()
        before, after = with_sla.index("agent_slas:"), with_sla.index("automations:")
        rules.write_text(with_sla[:before] + with_sla[after:])
        async with daemon(rules) as proc:
            assert (await proc.post(heartbeat))[0] == 202
            assert await proc.stop() == 0
        rules.write_text(with_sla)
        async with daemon(rules) as proc:
            (failure,) = await recv.wait_for_path("/agents", within=15)
            assert isinstance(failure.body, dict)
            assert failure.body["type"] == "agent_sla_failure"
            assert failure.body["agent_ids"] == ["a1"]
            assert failure.body["healthy_agent_ids"] == []
            assert failure.body["message"].endswith("The following agents are unhealthy: a1")
            assert (await proc.post(heartbeat))[0] == 202
            _, recovered = await recv.wait_for_path("/agents", 2, within=15)
            assert isinstance(recovered.body, dict)
            assert recovered.body["type"] == "agent_sla_recovered"
            assert recovered.body["healthy_agent_ids"] == ["a1"]
            # a1 beats no more: one window later the SLA fails again, once, and then stays
            # failing; waiting for that failure (up to a deadline) makes the counts exact
            _, _, quiet = await recv.wait_for_path("/agents", 3, within=15)
            assert isinstance(quiet.body, dict)
            assert quiet.body["agent_ids"] == ["a1"]
            assert await proc.stop() == 0
    types = [r.body["type"] for r in recv.requests if isinstance(r.body, dict)]
    assert types == ["agent_sla_failure", "agent_sla_recovered", "agent_sla_failure"]
    kinds = [r["kind"] for r in audit_records(trail) if r.get("agent_config_id")]
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
