"""Agent SLAs: enough agents of one `agent_config_id` must be polling.

An agent SLA counts the agents of its `agent_config_id` whose last heartbeat is younger
than the window; one `agent_sla_failure` when the count drops below `min_healthy`, one
`agent_sla_recovered` when it is back. Each agent's heartbeat expiry is a deadline too, so
health is judged at the moment an agent goes quiet, and both survive restarts.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping

from automationd.events import format_timestamp
from automationd.rules import AgentSla, Config
from automationd.store import Deadline
from automationd.triggers.base import EVENT_IDS, Made, TriggerParts, moment

log = logging.getLogger("automationd.sla")

AGENT_SLA = "agent_sla"
"""The kind of the agent SLA deadlines: one per agent config's agent (its heartbeat
expires) and per agent config (one window after it was configured)."""


def agent_key(agent_config_id: str, agent_id: str) -> str:
    return f"{agent_config_id}\x1f{agent_id}"


class AgentSlas:
    """Keeps the heartbeats of agents and judges the agent SLAs of the live rules."""

    kinds: tuple[str, ...] = (AGENT_SLA,)

    def __init__(self, parts: TriggerParts) -> None:
        self._deadlines = parts.deadlines
        self._store = parts.store
        self._audit = parts.audit
        self._now = parts.now
        self._agent: dict[str, AgentSla] = {}

    # --- configuration (start and reload)

    def configure(self, config: Config) -> None:
        """Take the agent SLAs of `config`: the deadlines of removed ones are disarmed (and
        their failing state forgotten), those whose window changed are re-armed, and each
        new one is judged one window from now."""
        self._agent = {sla.agent_config_id: sla for sla in config.agent_slas}
        rearm: list[Deadline] = []
        for armed in list(self._deadlines.armed(AGENT_SLA)):
            self._reconcile(armed, rearm)
        if rearm:
            self._deadlines.arm_many(rearm)
        now = self._now()
        for sla in config.agent_slas:
            key = sla.agent_config_id  # an agent SLA's check is keyed by its config id
            if self._deadlines.get(AGENT_SLA, key) is None:
                payload: dict[str, object] = {"agent_config_id": sla.agent_config_id}
                self._deadlines.arm(AGENT_SLA, key, now + sla.window, payload)

    def _reconcile(self, armed: Deadline, rearm: list[Deadline]) -> None:
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

    def observe(self, event: Mapping[str, object]) -> Made:
        """Keep an agent's heartbeat and re-arm its expiry; a recovery when enough agents
        are healthy again."""
        if event.get("type") != "agent_heartbeat":
            return []
        recovered = self._observe_heartbeat(event)
        return [recovered] if recovered else []

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
        return self._judge(sla, now, may_fail=False)

    # --- deadlines that passed

    def due(self, kind: str, key: str, payload: dict[str, object]) -> Made:
        """An agent went quiet, or an SLA's first window passed: judge the agents' health."""
        sla = self._agent.get(str(payload.get("agent_config_id")))
        event = self._judge(sla, self._now()) if sla is not None else None
        return [event] if event is not None else []

    def _judge(
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
            self._store.set_agent_sla_failing(config_id, format_timestamp(moment(now)))
            return self._event("agent_sla_failure", sla, healthy, unhealthy, now)
        if len(healthy) >= sla.min_healthy and failing:
            self._store.set_agent_sla_failing(config_id, None)
            return self._event("agent_sla_recovered", sla, healthy, unhealthy, now)
        return None

    def _event(
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
            "id": str(uuid.uuid5(EVENT_IDS, f"{event_type}\x1f{sla.agent_config_id}\x1f{now}")),
            "agent_config_id": sla.agent_config_id,
            "sla_min_healthy": sla.min_healthy,
            "healthy_agent_ids": healthy,
            "unhealthy_agent_ids": unhealthy,
            "agent_ids": unhealthy,
        }

    # --- what is judged

    def listing(self) -> dict[str, object]:
        """Each agent SLA's healthy and unhealthy agents, and whether it is failing."""
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
        return {"agent_slas": agents}
