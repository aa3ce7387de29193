"""README promises about the state store and what the SLAs report, through the real daemon:
`/readyz` fails while the state store cannot be written (and recovers), retention prunes
finished events only (never sooner than the dedup window), `GET /slas` lists each agent
SLA's agents, `sla.recovered` is audited with its fields, and
`automationd_sla_failures_total` counts SLA failures by type."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import aiohttp
import pytest

from tests.support import (
    Daemon,
    audit_records,
    daemon,
    free_port,
    mount_small_tmpfs,
    receiver,
    until,
    write_rules,
)


async def get(url: str) -> tuple[int, object]:
    """GET `url`; the status and the JSON answer."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.json()


async def metrics_of(proc: Daemon) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{proc.url}/metrics") as response:
        assert response.status == 200
        return await response.text()


def samples(text: str, name: str) -> dict[str, str]:
    """The samples of the metric `name` in a Prometheus text: labels (as written) -> value."""
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            series, value = line.rsplit(" ", 1)
            found[series.removeprefix(name)] = value
    return found


def read_only(path: Path) -> sqlite3.Connection:
    """The state database opened read-only (beside the running daemon)."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def write_to(path: Path) -> None:
    """Write a row into the state database, as another client of it."""
    db = sqlite3.connect(path)
    try:
        with db:
            db.execute("INSERT INTO heartbeats VALUES ('test.write', 'x', 0)")
    finally:
        db.close()


async def readyz_until(proc: Daemon, status: int) -> object:
    """Ask `/readyz` until it answers `status` (up to 15 s); that answer's body."""
    answers: list[tuple[int, object]] = []

    async def answered() -> bool:
        answers.append(await get(f"{proc.url}/readyz"))
        return answers[-1][0] == status

    try:
        await until(answered, within=15)
    except TimeoutError:
        pytest.fail(f"/readyz never answered {status}; it answered {answers[-1]}")
    return answers[-1][1]


# --- /readyz and a state store that cannot be written


@pytest.mark.parametrize("journal", [True, False], ids=["journal", "no-journal"])
async def test_readyz_fails_while_the_state_store_cannot_be_written(
    tmp_path: Path, journal: bool
) -> None:
    """README (Sandbox and probes): `/readyz` answers 200 only when ... the state store is
    writable, 503 with the failing checks otherwise. The state database alone lives on a
    2 MiB tmpfs (the audit trail stays on the test's disk), which another file then fills:
    a really full file system, which root cannot write either. `/readyz` answers 503 naming
    `state_writable` (and nothing else) as failing, with and without the journal (no event
    is posted, so the journal has no write that could fail first), and 200 again, without a
    restart, once the filler is deleted."""
    disk = tmp_path / "disk"
    mount_small_tmpfs(disk, "2m", "as root, permissions cannot make the state store unwritable")
    try:
        rules = write_rules(
            tmp_path,
            f"""\
state: {{url: "sqlite:///{disk}/state.db", journal: {str(journal).lower()}}}
automations:
  - name: forward
    on: [job_done]
    actions: [{{webhook: {{url: "http://127.0.0.1:{free_port()}/hook"}}}}]
""",
        )
        healthy = {
            "rules_loaded": True,
            "listening": True,
            "audit_writable": True,
            "state_writable": True,
            "journal_writable": True,
        }
        async with daemon(rules) as proc:
            assert await get(f"{proc.url}/readyz") == (200, {"ready": True, "checks": healthy})
            filler = disk / "filler"
            await asyncio.to_thread(
                subprocess.run,
                ["dd", "if=/dev/zero", f"of={filler}", "bs=4k"],
                capture_output=True,
                check=False,
            )
            with pytest.raises(sqlite3.OperationalError, match="full"):  # for real
                write_to(disk / "state.db")
            checks = {**healthy, "state_writable": False}
            assert await readyz_until(proc, 503) == {"ready": False, "checks": checks}
            await asyncio.to_thread(filler.unlink)
            assert await readyz_until(proc, 200) == {"ready": True, "checks": healthy}
            assert await proc.stop() == 0
    finally:
        await asyncio.to_thread(subprocess.run, ["umount", str(disk)], check=False)


# --- retention

DAY = 24 * 3600.0


def events_in(path: Path) -> dict[str, int]:
    """The state store's events: id -> done (read-only, beside the running daemon)."""
    with closing(read_only(path)) as db:
        return dict(db.execute("SELECT id, done FROM events"))


def outcomes_in(path: Path) -> set[str]:
    """The ids of the events with an action outcome in the state store."""
    with closing(read_only(path)) as db:
        return {str(row[0]) for row in db.execute("SELECT event_id FROM action_outcomes")}


def age(path: Path, ages: dict[str, float]) -> None:
    """Make events older: `accepted` moved back by the seconds given (the daemon stopped)."""
    db = sqlite3.connect(path)
    try:
        with db:
            for event_id, seconds in ages.items():
                moved = db.execute(
                    "UPDATE events SET accepted = accepted - ? WHERE id = ?", (seconds, event_id)
                ).rowcount
                assert moved == 1, event_id
    finally:
        db.close()


def journal_empty(tmp_path: Path) -> bool:
    """Whether every accepted event has left the journal's segments for the database."""
    return all(p.stat().st_size == 0 for p in (tmp_path / "state.db-events").glob("*.log"))


async def pruned(proc: Daemon, count: int) -> None:
    """Wait until the daemon logs the prune; its count must be `count`."""

    async def logged() -> bool:
        return any("finished events from the journal" in line for line in proc.log)

    try:
        await until(logged, within=20)
    except TimeoutError:
        pytest.fail("the daemon logged no prune within 20 s of its start")
    (line,) = [line for line in proc.log if "finished events from the journal" in line]
    assert f"pruned {count} finished events from the journal" in line, line


async def test_retention_prunes_finished_events_only_after_seven_days(tmp_path: Path) -> None:
    """README (Guarantees, Retention): finished events are pruned from the state store after
    `state.retention`, 7 days by default. Events go through the daemon, their `accepted`
    time is then moved back in the stopped daemon's database, and the daemon started again
    prunes (it does at start, then every 10 minutes): the finished event accepted 8 days ago
    goes with its action outcome; one finished 6 days ago, one just now and an unfinished one
    accepted 8 days ago (its destination is down, its action backing off for an hour) stay."""
    down = free_port()
    state = tmp_path / "state.db"
    async with receiver() as recv:
        rules = write_rules(
            tmp_path,
            f"""\
automations:
  - name: forward
    on: [job_done]
    actions: [{{webhook: {{url: "{recv.url}/hook"}}}}]
  - name: stuck
    on: [job_stuck]
    actions:
      - webhook: {{url: "http://127.0.0.1:{down}/hook", give_up_after: 2d,
                   retry: {{attempts: 5, initial: 1h, max: 1h}}}}
""",
        )
        finished = ["old-done", "week-old", "recent"]
        async with daemon(rules) as proc:
            for event_id in finished:
                assert (await proc.post({"type": "job_done", "id": event_id}))[0] == 202
            assert (await proc.post({"type": "job_stuck", "id": "old-stuck"}))[0] == 202
            await recv.wait_for_path("/hook", 3)
            expected = {"old-done": 1, "week-old": 1, "recent": 1, "old-stuck": 0}

            async def written() -> bool:
                return events_in(state) == expected and journal_empty(tmp_path)

            await until(written, within=20)

            async def attempted() -> bool:
                records = audit_records(tmp_path / "audit.jsonl")
                return any(
                    (r["kind"], r.get("event_id")) == ("action.attempt", "old-stuck")
                    for r in records
                )

            await until(attempted, within=20)
            assert outcomes_in(state) == set(finished)
            # the stuck action backs off for an hour: a SIGTERM would wait 30 s for it
            proc.process.kill()
            await proc.process.wait()
        age(state, {"old-done": 8 * DAY, "old-stuck": 8 * DAY, "week-old": 6 * DAY})
        async with daemon(rules) as proc:
            await pruned(proc, 1)
            assert events_in(state) == {"week-old": 1, "recent": 1, "old-stuck": 0}
            assert outcomes_in(state) == {"week-old", "recent"}
            proc.process.kill()
            await proc.process.wait()


async def test_retention_never_prunes_within_the_dedup_window(tmp_path: Path) -> None:
    """README (Guarantees, Retention): ... after `state.retention`, never sooner than the
    dedup window. With `retention: 1h` and `dedup_window: 2d`, of the finished events
    accepted 3 days, 36 hours, 2 hours and moments ago only the first is pruned, and the
    36-hour-old id is still a duplicate when posted again."""
    state = tmp_path / "state.db"
    async with receiver() as recv:
        rules = write_rules(
            tmp_path,
            f"""\
state: {{retention: 1h, dedup_window: 2d}}
automations:
  - name: forward
    on: [job_done]
    actions: [{{webhook: {{url: "{recv.url}/hook"}}}}]
""",
        )
        ids = ["three-days", "day-and-half", "two-hours", "now"]
        async with daemon(rules) as proc:
            for event_id in ids:
                assert (await proc.post({"type": "job_done", "id": event_id}))[0] == 202
            await recv.wait_for_path("/hook", len(ids))
            assert await proc.stop() == 0
        assert events_in(state) == dict.fromkeys(ids, 1)
        age(state, {"three-days": 3 * DAY, "day-and-half": 1.5 * DAY, "two-hours": 2 * 3600.0})
        async with daemon(rules) as proc:
            await pruned(proc, 1)
            assert events_in(state) == {"day-and-half": 1, "two-hours": 1, "now": 1}
            status, answer = await proc.post({"type": "job_done", "id": "day-and-half"})
            assert (status, answer) == (
                202,
                {"accepted": ["day-and-half"], "duplicates": ["day-and-half"], "duplicate": True},
            )
            assert await proc.stop() == 0


# --- agent SLAs: GET /slas, the audit trail and the failure counter


async def test_agents_listed_by_get_slas_and_recovery_audited(tmp_path: Path) -> None:
    """README (SLAs): `GET /slas` lists each agent SLA's healthy and unhealthy agents;
    `sla.fired` and `sla.recovered` are audited; `automationd_sla_failures_total` counts the
    failure events (a recovery is not one). Two agents of `prod` (`min_healthy: 2`,
    `window: 5s`) beat; a2 goes on beating every 0.5 s while a1 goes quiet, then comes back.
    The listing is checked whole before, while failing and after: a1 unhealthy, `failing`
    true; then both healthy again. The audit records of the failure and the recovery are
    checked field by field, and the counter reads exactly 1 for `agent_sla_failure`.

    Both agents beat every 0.5 s before the SLA exists, and go on after a reload adds it, so
    its first judgement, one window after the reload, finds both healthy whatever the
    machine's speed. (Beats posted only after the SLA is configured would race that
    judgement: fewer than two agents seen by then, and it fails.)"""
    async with receiver() as recv:
        rules = tmp_path / "rules.yaml"
        with_sla = f"""\
version: 1
server: {{listen: "127.0.0.1:0"}}
agent_slas:
  - {{agent_config_id: prod, min_healthy: 2, window: 5s}}
automations:
  - name: agents
    on: [agent_sla_failure, agent_sla_recovered]
    actions: [{{webhook: {{url: "{recv.url}/agents"}}}}]
"""
        before, after = with_sla.index("agent_slas:"), with_sla.index("automations:")
        rules.write_text(with_sla[:before] + with_sla[after:])

        def prod(healthy: list[str], unhealthy: list[str], failing: bool) -> dict[str, object]:
            return {
                "flow_deadlines": [],
                "agent_slas": [
                    {
                        "agent_config_id": "prod",
                        "min_healthy": 2,
                        "healthy_agent_ids": healthy,
                        "unhealthy_agent_ids": unhealthy,
                        "failing": failing,
                    }
                ],
            }

        async with daemon(rules) as proc:
            listings: list[object] = []

            async def listed(expected: dict[str, object]) -> None:
                async def shown() -> bool:
                    status, listing = await get(f"{proc.url}/slas")
                    assert status == 200
                    listings.append(listing)
                    return listing == expected

                try:
                    await until(shown, within=20)
                except TimeoutError:
                    pytest.fail(f"GET /slas never showed {expected}; last {listings[-1]}")

            beaten = {"a1": 0, "a2": 0}

            async def beat(agent: str) -> None:
                event = {"type": "agent_heartbeat", "agent_id": agent, "agent_config_id": "prod"}
                status, answer = await proc.post(event)
                assert status == 202, answer
                beaten[agent] += 1

            async def beats(agent: str) -> None:
                while True:
                    await beat(agent)
                    await asyncio.sleep(0.5)

            a1_beating = asyncio.create_task(beats("a1"))
            beating = asyncio.create_task(beats("a2"))
            try:

                async def both_beat() -> bool:
                    return min(beaten.values()) >= 1

                await until(both_beat, within=15)
                rules.write_text(with_sla)  # the SLA added, both agents beating meanwhile
                async with (
                    aiohttp.ClientSession() as session,
                    session.post(f"{proc.url}/reload") as response,
                ):
                    assert response.status == 200
                    assert (await response.json())["outcome"] == "applied"
                await listed(prod(["a1", "a2"], [], failing=False))
                a1_beating.cancel()  # a1 goes quiet, a2 beats on
                await listed(prod(["a2"], ["a1"], failing=True))
                (failure,) = await recv.wait_for_path("/agents")
                await beat("a1")
                await listed(prod(["a1", "a2"], [], failing=False))
                _, recovery = await recv.wait_for_path("/agents", 2)
                counted = samples(await metrics_of(proc), "automationd_sla_failures_total")
            finally:
                a1_beating.cancel()
                beating.cancel()
            assert await proc.stop() == 0
    assert isinstance(failure.body, dict)
    assert isinstance(recovery.body, dict)
    assert (failure.body["type"], recovery.body["type"]) == (
        "agent_sla_failure",
        "agent_sla_recovered",
    )
    assert counted == {'{type="agent_sla_failure"}': "1.0"}
    records = [
        r
        for r in audit_records(tmp_path / "audit.jsonl")
        if r["kind"] in ("sla.fired", "sla.recovered")
    ]
    for record in records:
        assert isinstance(record.pop("time"), str)
    # a1 and a2 beat last just before the stop; a stop slower than the window may add a
    # failure, never another recovery
    assert all(r["kind"] == "sla.fired" for r in records[2:])
    assert records[:2] == [
        {
            "kind": "sla.fired",
            "agent_config_id": "prod",
            "healthy_agent_ids": ["a2"],
            "unhealthy_agent_ids": ["a1"],
            "sla_min_healthy": 2,
        },
        {
            "kind": "sla.recovered",
            "agent_config_id": "prod",
            "healthy_agent_ids": ["a1", "a2"],
            "unhealthy_agent_ids": [],
            "sla_min_healthy": 2,
        },
    ]


# --- flow SLAs: the failure counter


async def test_sla_failures_total_counts_each_flow_sla_failure_once(tmp_path: Path) -> None:
    """README (Sandbox and probes): `automationd_sla_failures_total` (labelled by the failure
    event's `type`) counts SLA failures. Four runs are scheduled under a 6 s
    SCHEDULED_NOT_STARTED SLA and one of them starts in time: no sample before any failure,
    then exactly 3 for `flow_sla_failure` once the three late runs' failures reached their
    webhook, and no deadline left armed."""
    async with receiver() as recv:
        rules = write_rules(
            tmp_path,
            f"""\
flow_slas:
  - {{id: start-in-time, kind: SCHEDULED_NOT_STARTED, duration: 6s, match: {{flow_name: etl}}}}
automations:
  - name: late
    on: [flow_sla_failure]
    actions: [{{webhook: {{url: "{recv.url}/late", payload: {{run: "{{flow_run_id}}"}}}}}}]
""",
        )
        async with daemon(rules) as proc:
            before = samples(await metrics_of(proc), "automationd_sla_failures_total")
            for run in ("run-1", "run-2", "run-3", "run-4"):
                scheduled = {
                    "type": "flow_run_state_change",
                    "flow_name": "etl",
                    "flow_run_id": run,
                    "state": "Scheduled",
                }
                assert (await proc.post(scheduled))[0] == 202
            assert (await proc.post({**scheduled, "state": "Running"}))[0] == 202

            async def armed() -> set[object]:
                status, listing = await get(f"{proc.url}/slas")
                assert status == 200
                assert isinstance(listing, dict)
                return {d["flow_run_id"] for d in listing["flow_deadlines"]}

            async def run_4_disarmed() -> bool:
                return await armed() == {"run-1", "run-2", "run-3"}

            await until(run_4_disarmed, within=20)
            late = await recv.wait_for_path("/late", 3, within=30)

            async def none_armed() -> bool:  # each row goes once its failure was emitted
                return await armed() == set()

            await until(none_armed, within=10)
            counted = samples(await metrics_of(proc), "automationd_sla_failures_total")
            assert await proc.stop() == 0
    assert before == {}
    assert sorted(str(r.body["run"]) for r in late if isinstance(r.body, dict)) == [
        "run-1",
        "run-2",
        "run-3",
    ]
    assert counted == {'{type="flow_sla_failure"}': "3.0"}
