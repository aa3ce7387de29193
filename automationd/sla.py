"""SLAs: deadlines armed and disarmed by events, which emit failure events when they pass.

Flow SLAs watch `flow_run_state_change` events. A run's state is placed in a phase, by
`state_type` when the event has one (Prefect's SCHEDULED, PENDING, RUNNING, ...) and by the
state's name otherwise (see `STATE_NAME_PHASES`):

- scheduled: arms SCHEDULED_NOT_STARTED at `scheduled_start_time` (else the event's time) +
  duration;
- any later phase (started, running, finished) disarms it;
- running: arms STARTED_NOT_FINISHED at the event's time + duration (a later Running event of
  the same run keeps the first deadline);
- finished: disarms it.

Agent SLAs count the agents of one `agent_config_id` whose last heartbeat is younger than the
window; one `agent_sla_failure` when the count drops below `min_healthy`, one
`agent_sla_recovered` when it is back. Each agent's heartbeat expiry is a deadline too, so
health is judged at the moment an agent goes quiet, and both survive restarts.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

from automationd.audit import AuditLog
from automationd.config import AgentSla, Config, FlowSla
from automationd.deadlines import Deadlines
from automationd.events import BUILTIN_TYPES, format_timestamp, parse_timestamp
from automationd.matching import matcher_holds
from automationd.store import Deadline, Store

log = logging.getLogger("automationd.sla")

SCHEDULED_NOT_STARTED = "SCHEDULED_NOT_STARTED"
STARTED_NOT_FINISHED = "STARTED_NOT_FINISHED"

SCHEDULED, STARTED, RUNNING, FINISHED = "scheduled", "started", "running", "finished"

STATE_TYPE_PHASES = {
    "SCHEDULED": SCHEDULED,
    "PENDING": STARTED,
    "PAUSED": STARTED,
    "CANCELLING": STARTED,
    "RUNNING": RUNNING,
    "COMPLETED": FINISHED,
    "FAILED": FINISHED,
    "CANCELLED": FINISHED,
    "CRASHED": FINISHED,
}
"""Prefect state types; they decide when the event carries one (a `Late` run is SCHEDULED)."""

STATE_NAME_PHASES = {
    **dict.fromkeys(["Scheduled", "Late", "AwaitingRetry", "AwaitingConcurrencySlot"], SCHEDULED),
    **dict.fromkeys(
        ["Submitted", "Pending", "Queued", "Paused", "Suspended", "Resume", "Cancelling"], STARTED
    ),
    **dict.fromkeys(["Running", "Retrying"], RUNNING),
    **dict.fromkeys(
        [
            "Success",
            "Completed",
            "Failed",
            "Crashed",
            "Cancelled",
            "TimedOut",
            "Cached",
            "Skipped",
            "Looped",
            "Mapped",
            "Finished",
            "TriggerFailed",
            "ValidationFailed",
            "ClientFailed",
        ],
        FINISHED,
    ),
}
"""State names (Prefect 1, 2 and 3) when there is no state type. Any other name counts as
started and not finished: it disarms SCHEDULED_NOT_STARTED and leaves the other alone."""

FLOW_RUN_ATTRIBUTES = (
    *(BUILTIN_TYPES["flow_run_state_change"].attributes or {}),
    "tenant_id",
    "tenant_slug",
)
"""What a flow SLA failure carries of the run's last state change."""

EmitEvent = Callable[[dict[str, object]], Awaitable[None]]
"""Hands an event the daemon made to the engine; returns once it is journaled."""

_IDS = uuid.UUID("6f0c7a58-3c1e-4c55-9a57-9d5f0c6a4b21")


def phase_of(event: Mapping[str, object]) -> str:
    """The phase of a flow run state change: by state type, else by state name."""
    state_type = event.get("state_type")
    if isinstance(state_type, str) and state_type.upper() in STATE_TYPE_PHASES:
        return STATE_TYPE_PHASES[state_type.upper()]
    state = event.get("state")
    return STATE_NAME_PHASES.get(state, STARTED) if isinstance(state, str) else STARTED


def _seconds(duration: float) -> int | float:
    return int(duration) if float(duration).is_integer() else duration


FLOW_SLA, AGENT_SLA = "flow_sla", "agent_sla"
"""The kinds of the SLA deadlines: one per flow SLA and run; one per agent config's agent
(its heartbeat expires) and per agent config (one window after it was configured)."""


def flow_key(sla_id: str, flow_run_id: str) -> str:
    return f"{sla_id}\x1f{flow_run_id}"


def agent_key(agent_config_id: str, agent_id: str) -> str:
    return f"{agent_config_id}\x1f{agent_id}"


def _fingerprint(sla: FlowSla) -> str:
    return json.dumps(
        [sla.kind, sla.duration, [[m.path, list(m.values)] for m in sla.match]], sort_keys=True
    )


class SlaTracker:
    """Arms, disarms and fires the SLA deadlines of the live rules."""

    def __init__(
        self,
        deadlines: Deadlines,
        store: Store,
        audit: AuditLog,
        emit: EmitEvent,
        clock: Callable[[], datetime],
    ) -> None:
        self._deadlines = deadlines
        self._store = store
        self._audit = audit
        self._emit = emit
        self._clock = clock
        self._flow: dict[str, FlowSla] = {}
        self._agent: dict[str, AgentSla] = {}

    def _now(self) -> float:
        return self._clock().timestamp()

    # --- configuration (start and reload)

    def configure(self, config: Config) -> None:
        """Take the SLAs of `config`; deadlines of removed SLAs are disarmed, those whose
        duration or window changed are re-armed, each audited.

        Only the deadlines of flow SLAs that changed since the last configuration are read
        (each SLA's definition is remembered in the state store), so a restart with
        100,000 armed deadlines and unchanged rules reads none of them."""
        self._flow = {sla.id: sla for sla in config.flow_slas}
        self._agent = {sla.agent_config_id: sla for sla in config.agent_slas}
        known = self._store.flow_sla_fingerprints()
        current = {sla.id: _fingerprint(sla) for sla in config.flow_slas}
        rearm: list[Deadline] = []
        for sla_id, fingerprint in known.items():
            if current.get(sla_id) != fingerprint:
                for armed in list(self._deadlines.armed(FLOW_SLA, flow_key(sla_id, ""))):
                    self._reconcile_flow(armed, rearm)
        for armed in list(self._deadlines.armed(AGENT_SLA)):
            self._reconcile_agent(armed, rearm)
        if rearm:
            self._deadlines.arm_many(rearm)
        for sla_id in known.keys() - current.keys():
            self._store.set_flow_sla_fingerprint(sla_id, None)
        for sla_id, fingerprint in current.items():
            if known.get(sla_id) != fingerprint:
                self._store.set_flow_sla_fingerprint(sla_id, fingerprint)
        now = self._now()
        for sla in config.agent_slas:
            key = sla.agent_config_id  # an agent SLA's check is keyed by its config id
            if self._deadlines.get(AGENT_SLA, key) is None:
                payload: dict[str, object] = {"agent_config_id": sla.agent_config_id}
                self._deadlines.arm(AGENT_SLA, key, now + sla.window, payload)

    def _reconcile_flow(self, armed: Deadline, rearm: list[Deadline]) -> None:
        payload = armed.payload
        sla = self._flow.get(str(payload["sla"]))
        attributes = payload.get("attributes")
        record = {
            "sla": payload["sla"],
            "flow_run_id": payload["flow_run_id"],
            "sla_kind": payload["kind"],
        }
        if sla is None or sla.kind != payload["kind"]:
            reason = "the SLA is no longer in the rules"
        elif not isinstance(attributes, dict) or not all(
            matcher_holds(m, attributes) for m in sla.match
        ):
            reason = "the run no longer matches the SLA"
        else:
            if sla.duration != payload["duration"]:
                due = float(str(payload["anchor"])) + sla.duration
                rearm.append(
                    Deadline(FLOW_SLA, armed.key, due, {**payload, "duration": sla.duration})
                )
                self._audit.write(
                    "sla.armed",
                    **record,
                    due=format_timestamp(_moment(due)),
                    reason="the duration changed",
                )
            return
        self._deadlines.disarm(FLOW_SLA, armed.key)
        self._audit.write("sla.disarmed", **record, reason=reason)

    def _reconcile_agent(self, armed: Deadline, rearm: list[Deadline]) -> None:
        config_id = str(armed.payload["agent_config_id"])
        sla = self._agent.get(config_id)
        if sla is None:
            self._deadlines.disarm(AGENT_SLA, armed.key)
            self._store.set_agent_sla_failing(config_id, None)
            return
        seen = armed.payload.get("seen")
        if isinstance(seen, int | float) and seen + sla.window != armed.due:
            rearm.append(Deadline(AGENT_SLA, armed.key, seen + sla.window, armed.payload))

    # --- events

    def observe(self, event: Mapping[str, object]) -> list[dict[str, object]]:
        """Arm or disarm what this event affects (called for every accepted event); the
        events it causes (an agent SLA recovering), for the caller to emit."""
        event_type = event.get("type")
        if event_type == "flow_run_state_change" and self._flow:
            self._observe_flow_run(event)
        elif event_type == "agent_heartbeat":
            recovered = self._observe_heartbeat(event)
            return [recovered] if recovered else []
        return []

    def _observe_flow_run(self, event: Mapping[str, object]) -> None:
        run_id = event.get("flow_run_id")
        if not isinstance(run_id, str) or not run_id:
            return
        phase = phase_of(event)
        attributes = {name: event.get(name) for name in FLOW_RUN_ATTRIBUTES}
        for sla in self._flow.values():
            if not all(matcher_holds(m, event) for m in sla.match):
                continue
            key = flow_key(sla.id, run_id)
            existing = self._deadlines.get(FLOW_SLA, key)
            if sla.kind == SCHEDULED_NOT_STARTED:
                arming = phase == SCHEDULED
                anchor = _scheduled_start(event) or (
                    existing.payload["anchor"] if existing else _event_time(event)
                )
            else:
                arming = phase == RUNNING or (existing is not None and phase != FINISHED)
                anchor = existing.payload["anchor"] if existing else _event_time(event)
            if arming:
                self._arm_flow(sla, run_id, float(str(anchor)), attributes, existing)
            elif existing is not None and self._deadlines.disarm(FLOW_SLA, key):
                self._audit.write(
                    "sla.disarmed",
                    sla=sla.id,
                    flow_run_id=run_id,
                    sla_kind=sla.kind,
                    reason=f"the run entered {event.get('state')}",
                )

    def _arm_flow(
        self,
        sla: FlowSla,
        run_id: str,
        anchor: float,
        attributes: dict[str, object],
        existing: Deadline | None,
    ) -> None:
        due = anchor + sla.duration
        payload: dict[str, object] = {
            "sla": sla.id,
            "kind": sla.kind,
            "flow_run_id": run_id,
            "anchor": anchor,
            "duration": sla.duration,
            "attributes": attributes,
        }
        self._deadlines.arm(FLOW_SLA, flow_key(sla.id, run_id), due, payload)
        if existing is None or existing.due != due:
            self._audit.write(
                "sla.armed",
                sla=sla.id,
                flow_run_id=run_id,
                sla_kind=sla.kind,
                due=format_timestamp(_moment(due)),
            )

    def _observe_heartbeat(self, event: Mapping[str, object]) -> dict[str, object] | None:
        config_id, agent_id = event.get("agent_config_id"), event.get("agent_id")
        if not isinstance(config_id, str) or not isinstance(agent_id, str):
            return None
        now = self._now()
        self._store.put_heartbeat(config_id, agent_id, now)
        sla = self._agent.get(config_id)
        if sla is None:
            return None
        payload: dict[str, object] = {
            "agent_config_id": config_id,
            "agent_id": agent_id,
            "seen": now,
        }
        self._deadlines.arm(AGENT_SLA, agent_key(config_id, agent_id), now + sla.window, payload)
        return self._judge_agents(sla, now, may_fail=False)

    # --- deadlines that passed

    async def on_due(self, kind: str, key: str, payload: dict[str, object]) -> None:
        """A deadline passed: emit the flow SLA failure, or judge the agents' health."""
        event: dict[str, object] | None = None
        if kind == FLOW_SLA:
            event = self._flow_failure(payload)
        else:
            sla = self._agent.get(str(payload.get("agent_config_id")))
            if sla is not None:
                event = self._judge_agents(sla, self._now())
        if event is not None:
            await self._emit(event)

    def _flow_failure(self, payload: dict[str, object]) -> dict[str, object]:
        attributes = payload.get("attributes")
        duration = float(str(payload["duration"]))
        event: dict[str, object] = {
            **(attributes if isinstance(attributes, dict) else {}),
            "type": "flow_sla_failure",
            "id": str(
                uuid.uuid5(
                    _IDS, f"{payload['sla']}\x1f{payload['flow_run_id']}\x1f{payload['anchor']}"
                )
            ),
            "flow_sla_config_id": payload["sla"],
            "kind": payload["kind"],
            "duration_seconds": _seconds(duration),
        }
        self._audit.write(
            "sla.fired",
            sla=payload["sla"],
            flow_run_id=payload["flow_run_id"],
            sla_kind=payload["kind"],
            event_id=event["id"],
        )
        log.info(
            "SLA %s failed for run %s (%s)", payload["sla"], payload["flow_run_id"], payload["kind"]
        )
        return event

    def _judge_agents(
        self, sla: AgentSla, now: float, *, may_fail: bool = True
    ) -> dict[str, object] | None:
        """Emit a failure when too few agents are healthy, a recovery when enough are again.

        A heartbeat is good news and only ever recovers (`may_fail=False`): failures are
        judged when an agent's heartbeat expires, and one window after the SLA was
        configured, so agents starting one after another do not page anyone."""
        config_id = sla.agent_config_id
        beats = self._store.heartbeats(config_id)
        healthy = sorted(agent for agent, seen in beats.items() if now - seen < sla.window)
        unhealthy = sorted(agent for agent in beats if agent not in healthy)
        failing = self._store.agent_sla_failing(config_id) is not None
        if len(healthy) < sla.min_healthy and not failing and may_fail:
            self._store.set_agent_sla_failing(config_id, format_timestamp(_moment(now)))
            return self._agent_event("agent_sla_failure", sla, healthy, unhealthy, now)
        if len(healthy) >= sla.min_healthy and failing:
            self._store.set_agent_sla_failing(config_id, None)
            return self._agent_event("agent_sla_recovered", sla, healthy, unhealthy, now)
        return None

    def _agent_event(
        self, event_type: str, sla: AgentSla, healthy: list[str], unhealthy: list[str], now: float
    ) -> dict[str, object]:
        self._audit.write(
            "sla.fired" if event_type == "agent_sla_failure" else "sla.recovered",
            agent_config_id=sla.agent_config_id,
            healthy_agent_ids=healthy,
            unhealthy_agent_ids=unhealthy,
            sla_min_healthy=sla.min_healthy,
        )
        log.info("%s for agent config %s", event_type, sla.agent_config_id)
        return {
            "type": event_type,
            "id": str(uuid.uuid5(_IDS, f"{event_type}\x1f{sla.agent_config_id}\x1f{now}")),
            "agent_config_id": sla.agent_config_id,
            "sla_min_healthy": sla.min_healthy,
            "healthy_agent_ids": healthy,
            "unhealthy_agent_ids": unhealthy,
            "agent_ids": unhealthy,
        }

    # --- what is armed

    def listing(self) -> dict[str, object]:
        """Armed flow deadlines and agent health, for GET /slas."""
        flow = []
        for armed in self._deadlines.armed(FLOW_SLA):
            flow.append(
                {
                    "sla": armed.payload["sla"],
                    "kind": armed.payload["kind"],
                    "flow_run_id": armed.payload["flow_run_id"],
                    "due": format_timestamp(_moment(armed.due)),
                }
            )
        now = self._now()
        agents = []
        for sla in self._agent.values():
            beats = self._store.heartbeats(sla.agent_config_id)
            healthy = sorted(a for a, seen in beats.items() if now - seen < sla.window)
            agents.append(
                {
                    "agent_config_id": sla.agent_config_id,
                    "min_healthy": sla.min_healthy,
                    "healthy_agent_ids": healthy,
                    "unhealthy_agent_ids": sorted(a for a in beats if a not in healthy),
                    "failing": self._store.agent_sla_failing(sla.agent_config_id) is not None,
                }
            )
        return {"flow_deadlines": flow, "agent_slas": agents}


def _moment(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def _event_time(event: Mapping[str, object]) -> float:
    stamp = event.get("timestamp")
    return parse_timestamp(stamp).timestamp() if isinstance(stamp, str) else 0.0


def _scheduled_start(event: Mapping[str, object]) -> float | None:
    value = event.get("scheduled_start_time")
    if not isinstance(value, str) or not value:
        return None
    return parse_timestamp(value).timestamp()  # checked when the event was accepted
