"""Cooldowns: an automation that fired is held back for a while, per rendered key.

When each automation's cooldown for a key ends lives in the store, so cooldowns survive
restarts. The matcher asks whether one holds a firing back (and starts it if not);
POST /explain asks how long one has left, without starting it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from automationd.audit import AuditLog
from automationd.metrics import Metrics
from automationd.rules import Automation
from automationd.store import Store


class Cooldowns:
    """The cooldowns of the automations, kept in the store."""

    def __init__(
        self, *, audit: AuditLog, metrics: Metrics, store: Store, clock: Callable[[], datetime]
    ) -> None:
        self.audit = audit
        self.metrics = metrics
        self.store = store
        self.clock = clock

    def left(self, automation: Automation, event: dict[str, object]) -> tuple[str, float] | None:
        """The rendered key and seconds left when a cooldown holds this automation back."""
        if automation.cooldown is None:
            return None
        key = automation.cooldown.key.render(event)
        left = self._until(automation, key) - self.clock().timestamp()
        return (key, round(left, 3)) if left > 0 else None

    def _until(self, automation: Automation, key: str) -> float:
        until = self.store.cooldown_until(automation.name, key)
        return until if until is not None else 0.0

    def holds_back(self, automation: Automation, event: dict[str, object]) -> bool:
        """Whether a cooldown holds this firing back (audited as `automation.suppressed`);
        if not, start the cooldown now."""
        cooldown = automation.cooldown
        if cooldown is None:
            return False
        key = cooldown.key.render(event)
        now = self.clock().timestamp()
        left = self._until(automation, key) - now
        if left > 0:
            self.audit.write(
                "automation.suppressed",
                event_id=event["id"],
                automation=automation.name,
                key=key,
                remaining_s=round(left, 3),
            )
            self.metrics.automations_suppressed.labels(automation.name).inc()
            return True
        self.store.set_cooldown(automation.name, key, now + cooldown.seconds)
        return False
