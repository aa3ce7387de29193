"""SLA logic with an injected clock: deadlines are driven by hand, nothing sleeps."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from automationd.audit import AuditLog
from automationd.events import EventTypeResolver, normalise
from automationd.rules import Config
from automationd.rules.load import parse_config
from automationd.store import Deadline
from automationd.store.sqlite import SqliteStore
from automationd.triggers import Triggers
from automationd.triggers.flow_sla import FINISHED, RUNNING, SCHEDULED, STARTED, phase_of
from tests.support import audit_records

T0 = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class ManualDeadlines:
    """The Deadlines seam, fired by `advance()` instead of a scheduler."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Deadline] = {}

    def arm(self, kind: str, key: str, due: float, payload: dict[str, object]) -> None:
        self.rows[kind, key] = Deadline(kind, key, due, payload)

    def arm_many(self, deadlines: Sequence[Deadline]) -> None:
        for armed in deadlines:
            self.arm(armed.kind, armed.key, armed.due, armed.payload)

    def disarm(self, kind: str, key: str) -> bool:
        return self.rows.pop((kind, key), None) is not None

    def get(self, kind: str, key: str) -> Deadline | None:
        return self.rows.get((kind, key))

    def armed(self, kind: str | None = None, prefix: str = "") -> Iterator[Deadline]:
        """Those of `kind` (every kind when None) whose key starts with `prefix`."""
        rows = (
            a for a in self.rows.values() if kind in (None, a.kind) and a.key.startswith(prefix)
        )
        return iter(sorted(rows, key=lambda a: a.due))


class Harness:
    def __init__(self, tmp_path: Path, rules: str) -> None:
        self.tmp_path = tmp_path
        self.clock = Clock()
        self.deadlines = ManualDeadlines()
        self.store = SqliteStore(tmp_path / "state.db")
        self.store.open()
        self.audit = AuditLog(tmp_path / "audit.jsonl", fsync="never", clock=self.clock)
        self.audit.open()
        self.emitted: list[dict[str, object]] = []
        self.tracker = self.new_tracker()
        self.configure(rules)

    def new_tracker(self) -> Triggers:
        async def emit(event: dict[str, object]) -> None:
            self.emitted.append(event)

        return Triggers(self.deadlines, self.store, self.audit, emit, self.clock)

    def configure(self, rules: str) -> Config:
        config = parse_config(
            ("version: 1\nautomations: []\n" + textwrap.dedent(rules)).encode(),
            self.tmp_path / "r.yaml",
        )
        self.tracker.configure(config)
        return config

    def event(self, **attributes: object) -> None:
        raw = {
            "type": "flow_run_state_change",
            "flow_run_id": "run-1",
            "flow_name": "etl",
            **attributes,
        }
        self.tracker.observe(normalise(raw, EventTypeResolver(), self.clock()))

    def heartbeat(self, agent: str, config: str = "prod") -> None:
        self.emitted += self.tracker.observe(
            normalise(
                {"type": "agent_heartbeat", "agent_id": agent, "agent_config_id": config},
                EventTypeResolver(),
                self.clock(),
            )
        )

    async def advance(self, seconds: float) -> None:
        """Move the clock and fire every deadline that passed, in order."""
        self.clock.now += timedelta(seconds=seconds)
        while True:
            due = [a for a in self.deadlines.armed() if a.due <= self.clock.now.timestamp()]
            if not due:
                return
            first = due[0]
            del self.deadlines.rows[first.kind, first.key]
            await self.tracker.on_due(first.kind, first.key, first.payload)

    def close(self) -> None:
        self.audit.close()
        self.store.close()

    def audited(self, kind: str) -> list[dict[str, object]]:
        self.audit.flush()
        return [r for r in audit_records(self.tmp_path / "audit.jsonl") if r["kind"] == kind]


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Callable[[str], Harness]]:
    made: list[Harness] = []

    def make(rules: str) -> Harness:
        made.append(Harness(tmp_path, rules))
        return made[-1]

    yield make
    for h in made:
        h.close()


FLOW_SLAS = """\
    flow_slas:
      - {id: start, kind: SCHEDULED_NOT_STARTED, duration: 15m, match: {flow_name: etl}}
      - {id: finish, kind: STARTED_NOT_FINISHED, duration: 2h, match: {flow_name: etl}}
"""


@pytest.mark.parametrize(
    ("state", "state_type", "phase"),
    [
        ("Scheduled", None, SCHEDULED),
        ("Late", None, SCHEDULED),
        ("Late", "SCHEDULED", SCHEDULED),
        ("Submitted", None, STARTED),
        ("Pending", "PENDING", STARTED),
        ("Running", None, RUNNING),
        ("Retrying", "RUNNING", RUNNING),
        ("Success", None, FINISHED),
        ("TimedOut", None, FINISHED),
        ("Whatever", "COMPLETED", FINISHED),
        ("Cancelled", "CANCELLED", FINISHED),
        ("Crashed", "crashed", FINISHED),
        ("SomethingNew", None, STARTED),
    ],
)
def test_phases_by_state_type_first(state: str, state_type: str | None, phase: str) -> None:
    assert phase_of({"state": state, "state_type": state_type}) == phase


async def test_scheduled_not_started_fires_once_with_the_runs_last_attributes(
    harness: Callable[[str], Harness],
) -> None:
    h = harness(FLOW_SLAS)
    start = (T0 + timedelta(minutes=5)).isoformat()
    h.event(
        state="Scheduled",
        scheduled_start_time=start,
        flow_run_name="brave-otter",
        flow_run_link="http://ui/r/1",
    )
    (armed,) = h.deadlines.armed()
    assert armed.due == (T0 + timedelta(minutes=20)).timestamp()  # scheduled start + 15m
    h.event(
        state="Late",
        state_type="SCHEDULED",
        flow_run_name="brave-otter",
        flow_run_link="http://ui/r/1",
    )
    assert [a.due for a in h.deadlines.armed()] == [armed.due]  # still armed, not moved
    await h.advance(19 * 60)
    assert h.emitted == []
    await h.advance(60)
    (failure,) = h.emitted
    assert failure["type"] == "flow_sla_failure"
    assert failure["flow_sla_config_id"] == "start"
    assert failure["kind"] == "SCHEDULED_NOT_STARTED"
    assert failure["duration_seconds"] == 900
    assert failure["state"] == "Late"
    event = normalise(failure, EventTypeResolver(), h.clock())
    assert event["message"] == (
        "Run brave-otter (run-1) of flow etl failed SCHEDULED_NOT_STARTED SLA (start) after 900 "
        "seconds. See http://ui/r/1 for more details."
    )
    await h.advance(3600)
    assert len(h.emitted) == 1
    (fired,) = h.audited("sla.fired")
    assert (fired["sla"], fired["sla_kind"], fired["event_id"]) == (
        "start",
        "SCHEDULED_NOT_STARTED",
        failure["id"],
    )


async def test_starting_in_time_disarms_and_running_arms_the_finish_deadline(
    harness: Callable[[str], Harness],
) -> None:
    h = harness(FLOW_SLAS)
    h.event(state="Scheduled")
    h.clock.now += timedelta(minutes=10)
    h.event(state="Running")
    (armed,) = h.deadlines.armed()
    assert armed.payload["sla"] == "finish"
    assert armed.due == (T0 + timedelta(minutes=10, hours=2)).timestamp()
    h.clock.now += timedelta(minutes=30)
    h.event(state="Paused")
    h.event(state="Running")  # a later Running keeps the first deadline
    assert [a.due for a in h.deadlines.armed()] == [armed.due]
    h.event(state="Completed")
    assert list(h.deadlines.armed()) == []
    await h.advance(5 * 3600)
    assert h.emitted == []
    assert [(r["sla"], r["reason"]) for r in h.audited("sla.disarmed")] == [
        ("start", "the run entered Running"),
        ("finish", "the run entered Completed"),
    ]


async def test_started_not_finished_fires_for_a_run_that_hangs(
    harness: Callable[[str], Harness],
) -> None:
    h = harness(FLOW_SLAS)
    h.event(state="Running", flow_run_name="stuck")
    await h.advance(2 * 3600)
    (failure,) = h.emitted
    assert (failure["kind"], failure["duration_seconds"], failure["flow_run_name"]) == (
        "STARTED_NOT_FINISHED",
        7200,
        "stuck",
    )


async def test_match_limits_which_runs_an_sla_watches(harness: Callable[[str], Harness]) -> None:
    h = harness(FLOW_SLAS)
    h.event(state="Scheduled", flow_name="other-flow")
    h.event(state="Running", flow_run_id="", flow_name="etl")  # no run id: nothing to track
    assert list(h.deadlines.armed()) == []


async def test_reconfigure_disarms_removed_slas_and_rearms_changed_durations(
    harness: Callable[[str], Harness],
) -> None:
    h = harness(FLOW_SLAS)
    h.event(state="Scheduled")
    h.event(state="Running", flow_run_id="run-2")
    h.configure("""\
        flow_slas:
          - {id: start, kind: SCHEDULED_NOT_STARTED, duration: 30m, match: {flow_name: etl}}
    """)
    (armed,) = h.deadlines.armed()
    assert (armed.payload["sla"], armed.due) == ("start", (T0 + timedelta(minutes=30)).timestamp())
    assert [(r["sla"], r["reason"]) for r in h.audited("sla.disarmed")] == [
        ("finish", "the SLA is no longer in the rules")
    ]
    assert [(r["sla"], r.get("reason")) for r in h.audited("sla.armed")][-1] == (
        "start",
        "the duration changed",
    )


async def test_agents_fail_once_recover_once_and_fail_again(
    harness: Callable[[str], Harness],
) -> None:
    h = harness("agent_slas: [{agent_config_id: prod, min_healthy: 2, window: 60s}]\n")
    h.heartbeat("a1")
    h.heartbeat("a2")
    await h.advance(30)
    h.heartbeat("a1")
    await h.advance(40)  # a2 last seen 70 s ago: one healthy of two needed
    (failure,) = h.emitted
    assert failure["type"] == "agent_sla_failure"
    assert failure["healthy_agent_ids"] == ["a1"]
    assert failure["unhealthy_agent_ids"] == failure["agent_ids"] == ["a2"]
    assert failure["sla_min_healthy"] == 2
    await h.advance(60)  # a1 goes quiet too: still failing, no second failure
    assert len(h.emitted) == 1
    h.heartbeat("a1")
    h.heartbeat("a2")
    recovered = h.emitted[1]
    assert recovered["type"] == "agent_sla_recovered"
    assert recovered["healthy_agent_ids"] == ["a1", "a2"]
    await h.advance(61)
    assert [e["type"] for e in h.emitted] == [
        "agent_sla_failure",
        "agent_sla_recovered",
        "agent_sla_failure",
    ]


async def test_an_agent_config_that_never_reports_fails_after_one_window(
    harness: Callable[[str], Harness],
) -> None:
    h = harness("agent_slas: [{agent_config_id: prod, min_healthy: 1, window: 5m}]\n")
    await h.advance(299)
    assert h.emitted == []
    await h.advance(1)
    (failure,) = h.emitted
    assert (failure["type"], failure["agent_ids"]) == ("agent_sla_failure", [])


async def test_agent_state_survives_a_new_tracker(harness: Callable[[str], Harness]) -> None:
    rules = "agent_slas: [{agent_config_id: prod, min_healthy: 1, window: 60s}]\n"
    h = harness(rules)
    h.heartbeat("a1")
    await h.advance(61)
    assert [e["type"] for e in h.emitted] == ["agent_sla_failure"]
    h.tracker = h.new_tracker()
    h.configure(rules)
    await h.advance(600)
    assert [e["type"] for e in h.emitted] == ["agent_sla_failure"]  # no second failure
    h.heartbeat("a1")
    assert [e["type"] for e in h.emitted] == ["agent_sla_failure", "agent_sla_recovered"]
