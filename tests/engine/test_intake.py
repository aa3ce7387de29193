"""Intake without an engine: a real journal over a SQLite store in tmp_path, a real audit
file; what is accepted, refused as a duplicate, refused when the queue is full, and refused
when the journal cannot make it durable."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from automationd.audit import AuditLog
from automationd.events import EventError, EventTypeResolver
from automationd.intake import Busy, Ingested, Intake
from automationd.journal import Journal
from automationd.metrics import Metrics
from automationd.store import JournalError
from automationd.store.sqlite import SqliteStore
from tests.support import audit_records

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
TIME = "2026-01-02T03:04:05Z"


def event(event_id: str) -> dict[str, object]:
    return {"id": event_id, "type": "job_done", "timestamp": TIME}


def accepted(event_id: str, source: str = "http") -> dict[str, object]:
    """The event.accepted record of `event(event_id)`, normalised."""
    body = {
        **event(event_id),
        "tenant_id": None,
        "tenant_slug": None,
        "event_name": "Job done",
        "message": "job_done",
    }
    return {
        "time": TIME,
        "kind": "event.accepted",
        "event": body,
        "event_id": event_id,
        "event_type": "job_done",
        "source": source,
    }


@dataclass
class Parts:
    intake: Intake
    audit: AuditLog
    journal: Journal
    metrics: Metrics
    queue_size: list[int]

    def records(self) -> list[dict[str, object]]:
        self.audit.flush()
        return audit_records(self.audit.path)

    def queued(self) -> list[object]:
        queue = self.intake.queue
        return [queue.get_nowait()["id"] for _ in range(queue.qsize())]

    def received(self) -> float | None:
        labels = {"type": "job_done"}
        return self.metrics.registry.get_sample_value("automationd_events_received_total", labels)


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[Parts]:
    audit = AuditLog(tmp_path / "audit.jsonl", fsync="batch", clock=lambda: NOW)
    store = SqliteStore(tmp_path / "state.db")
    audit.open()
    store.open()
    journal = Journal(store, store.path, dedup_window=3600)
    metrics = Metrics()
    metrics.know_types(["job_done"])
    queue_size = [10]
    intake = Intake(
        audit=audit,
        metrics=metrics,
        journal=journal,
        clock=lambda: NOW,
        resolver=EventTypeResolver,
        queue_size=lambda: queue_size[0],
    )
    try:
        yield Parts(intake, audit, journal, metrics, queue_size)
    finally:
        await journal.close()
        store.close()
        audit.close()


async def test_accepted_events_are_audited_counted_and_queued(parts: Parts) -> None:
    parts.journal.open()
    got = await parts.intake.ingest([event("e-1"), event("e-2")], batch=True)
    assert got == Ingested(["e-1", "e-2"], [])
    assert parts.records() == [accepted("e-1"), accepted("e-2")]
    assert parts.queued() == ["e-1", "e-2"]
    assert parts.received() == 2.0
    assert parts.intake.backlog == 0


async def test_a_duplicate_is_audited_and_not_queued_again(parts: Parts) -> None:
    parts.journal.open()
    await parts.intake.ingest([event("e-1")], batch=False)
    got = await parts.intake.ingest([event("e-1")], batch=False, source="prefect")
    assert got == Ingested(["e-1"], ["e-1"])
    duplicate = {"time": TIME, "kind": "event.duplicate", "event_id": "e-1", "source": "prefect"}
    assert parts.records() == [accepted("e-1"), duplicate]
    assert parts.queued() == ["e-1"]
    assert parts.received() == 1.0


async def test_a_full_queue_refuses_a_whole_http_request(parts: Parts) -> None:
    parts.journal.open()
    parts.queue_size[0] = 2
    await parts.intake.ingest([event("e-1")], batch=False)
    with pytest.raises(Busy) as refused:
        await parts.intake.ingest([event("e-2"), event("e-3")], batch=True)
    assert (refused.value.events, str(refused.value)) == (
        2,
        "the queue is full; 2 event(s) refused",
    )
    assert [r["event_id"] for r in parts.records()] == ["e-1"]
    assert parts.intake.backlog == 1
    # the daemon's own events and Prefect's are not held back by the queue's size
    await parts.intake.ingest([event("e-2"), event("e-3")], batch=True, source="prefect")
    assert parts.queued() == ["e-1", "e-2", "e-3"]


async def test_an_event_the_journal_cannot_keep_is_not_accepted(parts: Parts) -> None:
    # the journal is not opened: it cannot make anything durable
    with pytest.raises(JournalError, match="the journal is not running"):
        await parts.intake.ingest([event("e-1")], batch=False)
    assert parts.records() == []
    assert parts.queued() == []
    assert parts.intake.backlog == 0
    assert parts.received() is None


async def test_an_invalid_event_of_a_batch_is_named_by_its_index(parts: Parts) -> None:
    parts.journal.open()
    with pytest.raises(EventError) as refused:
        await parts.intake.ingest([event("e-1"), {"id": "e-2"}], batch=True)
    assert (refused.value.message, refused.value.field) == (
        "event 1 of the batch: the event has no 'type'",
        "[1].type",
    )
    assert parts.records() == []
    assert parts.queued() == []
