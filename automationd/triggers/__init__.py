"""Triggers: what arms deadlines on events and makes events when they pass.

Each kind is a module (`flow_sla`, `agent_sla`) offering the `Trigger` interface of
`base`; `Triggers` is the one object the engine holds: it configures, informs and lists
every kind, hands each due deadline to the kind that owns it, and emits what they make.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime

from automationd.audit import AuditLog
from automationd.deadlines import Deadlines
from automationd.rules import Config
from automationd.store import Store
from automationd.triggers.agent_sla import AgentSlas
from automationd.triggers.base import Made, Trigger, TriggerParts
from automationd.triggers.flow_sla import FlowSlas

__all__ = ["EmitEvent", "Trigger", "TriggerParts", "Triggers"]

EmitEvent = Callable[[dict[str, object]], Awaitable[None]]
"""Hands an event the daemon made to the engine; returns once it is journaled."""


class Triggers:
    """Every trigger kind of the live rules, behind one configure/observe/due/list."""

    def __init__(
        self,
        deadlines: Deadlines,
        store: Store,
        audit: AuditLog,
        emit: EmitEvent,
        clock: Callable[[], datetime],
    ) -> None:
        parts = TriggerParts(deadlines, store, audit, clock)
        self._emit = emit
        self._triggers: tuple[Trigger, ...] = (FlowSlas(parts), AgentSlas(parts))
        self._owners = {kind: trigger for trigger in self._triggers for kind in trigger.kinds}

    def configure(self, config: Config) -> None:
        """Take the triggers of `config` (at start, before any deadline may fire, and on
        every reload)."""
        for trigger in self._triggers:
            trigger.configure(config)

    def observe(self, event: Mapping[str, object]) -> Made:
        """Arm or disarm what this event affects (called for every accepted event); the
        events it causes (an agent SLA recovering), for the caller to emit."""
        made: Made = []
        for trigger in self._triggers:
            made += trigger.observe(event)
        return made

    async def on_due(self, kind: str, key: str, payload: dict[str, object]) -> None:
        """A deadline passed: its trigger says what it makes, which is emitted in order."""
        trigger = self._owners.get(kind)
        if trigger is None:  # no trigger arms deadlines of this kind
            return
        for event in trigger.due(kind, key, payload):
            await self._emit(event)

    def listing(self) -> dict[str, object]:
        """What every trigger has armed and judged, for GET /slas."""
        listed: dict[str, object] = {}
        for trigger in self._triggers:
            listed.update(trigger.listing())
        return listed
