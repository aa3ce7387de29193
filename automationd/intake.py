"""Intake: from raw events to accepted ones, waiting in the queue for the matcher.

Every event, received over HTTP, followed from Prefect or made by the daemon itself (an SLA
failure), comes in here: normalised against the live types, refused when the queue is full
(backpressure), made durable in the journal, audited as `event.accepted` (or
`event.duplicate`), counted, and queued; all of a request's events or none.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from automationd import jsontext
from automationd.audit import AuditLog
from automationd.events import EventError, EventTypeResolver, normalise
from automationd.journal import Journal
from automationd.metrics import Metrics

log = logging.getLogger("automationd.engine")
"""The engine's logger: these lines were the engine's, and keep their logger name."""


@dataclass(frozen=True, slots=True)
class Ingested:
    """The ids of a request's events, and which of them were duplicates."""

    ids: list[str]
    duplicates: list[str]


class Busy(Exception):
    """The queue is full: the client should retry later (429)."""

    retry_after = 1

    def __init__(self, events: int) -> None:
        super().__init__(f"the queue is full; {events} event(s) refused")
        self.events = events


class Intake:
    """Accepts events into `queue`: normalised, durable, audited, counted."""

    def __init__(
        self,
        *,
        audit: AuditLog,
        metrics: Metrics,
        journal: Journal | None,
        clock: Callable[[], datetime],
        resolver: Callable[[], EventTypeResolver],
        queue_size: Callable[[], int],
    ) -> None:
        self.audit = audit
        self.metrics = metrics
        self.journal = journal
        self.clock = clock
        self.resolver = resolver
        """The live rules' type resolver."""
        self.queue_size = queue_size
        """The live rules' server.queue_size: how many events may wait (HTTP's only)."""
        self.queue: asyncio.Queue[dict[str, object]] = asyncio.Queue()
        """Accepted events, for the matcher."""
        self._reserved = 0

    @property
    def backlog(self) -> int:
        """Events accepted (or being made durable) and not yet matched."""
        return self.queue.qsize() + self._reserved

    async def ingest(
        self, raw_events: Sequence[object], *, batch: bool, source: str = "http"
    ) -> Ingested:
        """Normalise a request's events, make them durable, queue the new ones; all or none.

        Raises EventError naming the field (prefixed with the item's index in a batch), Busy
        when the queue is full, JournalError when the events could not be made durable, and
        AuditUnwritable (a JournalError) while the audit trail cannot be written. The
        daemon's own events (an SLA failure: no client would send it again) are taken even
        then; their records wait with the others."""
        if source != "sla":
            self.audit.ensure_writable()
        now = self.clock()
        events = self._normalised(raw_events, batch, now)
        if source == "http" and self.backlog + len(events) > self.queue_size():
            raise Busy(len(events))
        bodies = [jsontext.dumps(e) for e in events]
        fresh = await self._append(events, bodies, now)
        duplicates = []
        for event, body, new in zip(events, bodies, fresh, strict=True):
            if not new:
                duplicates.append(str(event["id"]))
                self.audit.write("event.duplicate", event_id=event["id"], source=source)
                continue
            self.audit.write(
                "event.accepted",
                {"event": body},
                event_id=event["id"],
                event_type=event["type"],
                source=source,
            )
            self.queue.put_nowait(event)
            self.metrics.received(str(event["type"]))
        return Ingested([str(event["id"]) for event in events], duplicates)

    def _normalised(
        self, raw_events: Sequence[object], batch: bool, now: datetime
    ) -> list[dict[str, object]]:
        resolver = self.resolver()
        events = []
        for i, raw in enumerate(raw_events):
            try:
                events.append(normalise(raw, resolver, now))
            except EventError as exc:
                if not batch:
                    raise
                raise exc.in_batch(i) from None
        return events

    async def _append(
        self, events: list[dict[str, object]], bodies: list[str], now: datetime
    ) -> list[bool]:
        """Make the events durable (counted in the backlog meanwhile); for each, whether it
        is new (False: a duplicate id)."""
        self._reserved += len(events)
        try:
            if self.journal is None:
                return [True] * len(events)
            rows = [(str(e["id"]), body) for e, body in zip(events, bodies, strict=True)]
            return await self.journal.append(rows, now.timestamp())
        finally:
            self._reserved -= len(events)

    async def emit(self, raw: dict[str, object]) -> None:
        """Accept an event the daemon made itself (an SLA failure): journaled, audited and
        matched like a received one; returns once it is durable."""
        event_type = str(raw.get("type"))
        if event_type.endswith("_failure"):
            self.metrics.sla_failures.labels(event_type).inc()
        try:
            await self.ingest([raw], batch=False, source="sla")
        except EventError as exc:  # a bug: the daemon's own events follow the contract
            log.error("the daemon made an invalid %s event: %s", event_type, exc.message)
