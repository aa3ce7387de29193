"""Flow SLAs: deadlines armed and disarmed by a flow run's state changes, which emit a
`flow_sla_failure` when they pass.

Flow SLAs watch `flow_run_state_change` events. A run's state is placed in a phase, by
`state_type` when the event has one (Prefect's SCHEDULED, PENDING, RUNNING, ...) and by the
state's name otherwise (see `STATE_NAME_PHASES`):

- scheduled: arms SCHEDULED_NOT_STARTED at `scheduled_start_time` (else the event's time) +
  duration;
- any later phase (started, running, finished) disarms it;
- running: arms STARTED_NOT_FINISHED at the event's time + duration (a later Running event of
  the same run keeps the first deadline);
- finished: disarms it.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping

from automationd.events import BUILTIN_TYPES, format_timestamp, parse_timestamp
from automationd.matching import matcher_holds
from automationd.rules import Config, FlowSla
from automationd.store import Deadline
from automationd.triggers.base import EVENT_IDS, Made, TriggerParts, moment

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

FLOW_SLA = "flow_sla"
"""The kind of the flow SLA deadlines: one per flow SLA and run."""


def phase_of(event: Mapping[str, object]) -> str:
    """The phase of a flow run state change: by state type, else by state name."""
    state_type = event.get("state_type")
    if isinstance(state_type, str) and state_type.upper() in STATE_TYPE_PHASES:
        return STATE_TYPE_PHASES[state_type.upper()]
    state = event.get("state")
    return STATE_NAME_PHASES.get(state, STARTED) if isinstance(state, str) else STARTED


def flow_key(sla_id: str, flow_run_id: str) -> str:
    return f"{sla_id}\x1f{flow_run_id}"


def _seconds(duration: float) -> int | float:
    return int(duration) if float(duration).is_integer() else duration


def _fingerprint(sla: FlowSla) -> str:
    return json.dumps(
        [sla.kind, sla.duration, [[m.path, list(m.values)] for m in sla.match]], sort_keys=True
    )


class FlowSlas:
    """Arms, disarms and fires the deadlines of the flow SLAs of the live rules."""

    kinds: tuple[str, ...] = (FLOW_SLA,)

    def __init__(self, parts: TriggerParts) -> None:
        self._deadlines = parts.deadlines
        self._store = parts.store
        self._audit = parts.audit
        self._flow: dict[str, FlowSla] = {}

    # --- configuration (start and reload)

    def configure(self, config: Config) -> None:
        """Take the flow SLAs of `config`; deadlines of removed SLAs are disarmed, those
        whose duration changed are re-armed, each audited.

        Only the deadlines of flow SLAs that changed since the last configuration are read
        (each SLA's definition is remembered in the state store), so a restart with
        100,000 armed deadlines and unchanged rules reads none of them."""
        self._flow = {sla.id: sla for sla in config.flow_slas}
        known = self._store.flow_sla_fingerprints()
        current = {sla.id: _fingerprint(sla) for sla in config.flow_slas}
        rearm: list[Deadline] = []
        for sla_id, fingerprint in known.items():
            if current.get(sla_id) != fingerprint:
                for armed in list(self._deadlines.armed(FLOW_SLA, flow_key(sla_id, ""))):
                    self._reconcile(armed, rearm)
        if rearm:
            self._deadlines.arm_many(rearm)
        for sla_id in known.keys() - current.keys():
            self._store.set_flow_sla_fingerprint(sla_id, None)
        for sla_id, fingerprint in current.items():
            if known.get(sla_id) != fingerprint:
                self._store.set_flow_sla_fingerprint(sla_id, fingerprint)

    def _reconcile(self, armed: Deadline, rearm: list[Deadline]) -> None:
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
                    due=format_timestamp(moment(due)),
                    reason="the duration changed",
                )
            return
        self._deadlines.disarm(FLOW_SLA, armed.key)
        self._audit.write("sla.disarmed", **record, reason=reason)

    # --- events

    def observe(self, event: Mapping[str, object]) -> Made:
        """Arm or disarm the deadlines of the run a state change is about; makes none."""
        if event.get("type") == "flow_run_state_change" and self._flow:
            self._observe_flow_run(event)
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
                self._arm(sla, run_id, float(str(anchor)), attributes, existing)
            elif existing is not None and self._deadlines.disarm(FLOW_SLA, key):
                self._audit.write(
                    "sla.disarmed",
                    sla=sla.id,
                    flow_run_id=run_id,
                    sla_kind=sla.kind,
                    reason=f"the run entered {event.get('state')}",
                )

    def _arm(
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
                due=format_timestamp(moment(due)),
            )

    # --- deadlines that passed

    def due(self, kind: str, key: str, payload: dict[str, object]) -> Made:
        """A run missed its SLA: one `flow_sla_failure`, carrying its last state change."""
        attributes = payload.get("attributes")
        duration = float(str(payload["duration"]))
        event: dict[str, object] = {
            **(attributes if isinstance(attributes, dict) else {}),
            "type": "flow_sla_failure",
            "id": str(
                uuid.uuid5(
                    EVENT_IDS,
                    f"{payload['sla']}\x1f{payload['flow_run_id']}\x1f{payload['anchor']}",
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
        return [event]

    # --- what is armed

    def listing(self) -> dict[str, object]:
        """The armed flow deadlines, soonest first."""
        flow = []
        for armed in self._deadlines.armed(FLOW_SLA):
            flow.append(
                {
                    "sla": armed.payload["sla"],
                    "kind": armed.payload["kind"],
                    "flow_run_id": armed.payload["flow_run_id"],
                    "due": format_timestamp(moment(armed.due)),
                }
            )
        return {"flow_deadlines": flow}


def _event_time(event: Mapping[str, object]) -> float:
    stamp = event.get("timestamp")
    return parse_timestamp(stamp).timestamp() if isinstance(stamp, str) else 0.0


def _scheduled_start(event: Mapping[str, object]) -> float | None:
    value = event.get("scheduled_start_time")
    if not isinstance(value, str) or not value:
        return None
    return parse_timestamp(value).timestamp()  # checked when the event was accepted
