"""The trigger seam: what every trigger kind offers the engine, and what it is given.

A trigger kind reads its part of the rules (`configure`), arms and disarms deadlines as
events arrive (`observe`), and says what happens when one of its deadlines passes (`due`).
Deadlines are stored by kind; a trigger names the kinds it owns (`kinds`) and is handed
only those. Events a trigger makes (an SLA failure, a recovery) are returned, never sent:
the dispatcher in `automationd.triggers` hands them to the engine, so a trigger can be
tested with a store, an audit log and a clock alone.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from automationd.audit import AuditLog
from automationd.deadlines import Deadlines
from automationd.rules import Config
from automationd.store import Store

Made = list[dict[str, object]]
"""Events a trigger made, for the engine to journal and match like received ones."""

EVENT_IDS = uuid.UUID("6f0c7a58-3c1e-4c55-9a57-9d5f0c6a4b21")
"""The namespace of the ids of the events triggers make (uuid5 of what makes them unique)."""


@dataclass(frozen=True, slots=True)
class TriggerParts:
    """What a trigger works with: its deadlines, the state store, the audit log, the clock."""

    deadlines: Deadlines
    store: Store
    audit: AuditLog
    clock: Callable[[], datetime]

    def now(self) -> float:
        return self.clock().timestamp()


class Trigger(Protocol):
    """One trigger kind: its rules, the events that arm or disarm it, its deadlines."""

    kinds: tuple[str, ...]
    """The deadline kinds it arms; the dispatcher hands it the due deadlines of these."""

    def configure(self, config: Config) -> None:
        """Take its part of `config` (at start and on every reload), reconciling what is
        armed with it."""

    def observe(self, event: Mapping[str, object]) -> Made:
        """Arm or disarm what an accepted event affects; the events that causes."""

    def due(self, kind: str, key: str, payload: dict[str, object]) -> Made:
        """One of its deadlines passed (it is no longer armed); the events that causes."""

    def listing(self) -> dict[str, object]:
        """What it has armed and judged, merged into GET /slas."""


def moment(timestamp: float) -> datetime:
    """A Unix time as an aware UTC datetime (for `format_timestamp`)."""
    return datetime.fromtimestamp(timestamp, UTC)
