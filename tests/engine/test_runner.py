"""The runner without an engine: a webhook action against a real HTTP receiver on loopback,
its attempts, audit records, metrics and dead letters."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from automationd.actions import Action, Services
from automationd.actions.webhook import parse
from automationd.audit import AuditLog
from automationd.destinations import Destinations
from automationd.metrics import Metrics
from automationd.rules import RetryPolicy
from automationd.runner import Runner, Terms
from automationd.secrets import Redactor
from automationd.store.sqlite import SqliteStore
from tests.support import Receiver, audit_records, receiver

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
TIME = "2026-01-02T03:04:05Z"
EVENT: dict[str, object] = {"id": "e-1", "type": "flow_run_state_change", "state": "Failed"}
COMMON = {"event_id": "e-1", "automation": "page", "action": "webhook", "action_index": 0}


class Midway(random.Random):
    """An rng whose jitter is always half the range: a back-off of 1 s waits 0.75 s."""

    def uniform(self, a: float, b: float) -> float:
        return (a + b) / 2


@dataclass
class Run:
    """A Runner on a real audit file and store, with what it settled and waited."""

    runner: Runner
    audit: AuditLog
    store: SqliteStore
    metrics: Metrics
    terms: Terms
    url: str
    settled: list[tuple[str, str, int, bool]] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)

    async def webhook(self, path: str) -> bool:
        action = Action(
            parse({"url": self.url + path}),
            timeout=5.0,
            retry=RetryPolicy(attempts=3, initial=1.0, max=10.0),
            give_up_after=60.0,
        )
        return await self.runner.run("page", 0, action, EVENT, self.terms)

    def records(self) -> list[dict[str, object]]:
        """The audit records so far, each `latency_ms` checked to be a float and set to 0."""
        self.audit.flush()
        records = audit_records(self.audit.path)
        for record in records:
            if "latency_ms" in record:
                assert isinstance(record["latency_ms"], float)
                record["latency_ms"] = 0.0
        return records

    def metric(self, name: str, outcome: str) -> float | None:
        """A webhook sample of the daemon's metrics (None when never set)."""
        labels = {"kind": "webhook", "outcome": outcome}
        return self.metrics.registry.get_sample_value(f"automationd_{name}_total", labels)


@pytest.fixture
async def recv() -> AsyncIterator[Receiver]:
    async with receiver() as r:
        yield r


@pytest.fixture
async def run(tmp_path: Path, recv: Receiver) -> AsyncIterator[Run]:
    audit = AuditLog(tmp_path / "audit.jsonl", fsync="batch", clock=lambda: NOW)
    store = SqliteStore(tmp_path / "state.db")
    metrics = Metrics()
    audit.open()
    store.open()
    async with aiohttp.ClientSession() as session:
        terms = Terms(Services(session, {}), Redactor([]), max_pending=10, concurrency=2)
        settled: list[tuple[str, str, int, bool]] = []
        waits: list[float] = []

        async def record_wait(seconds: float) -> None:
            waits.append(seconds)

        runner = Runner(
            audit=audit,
            metrics=metrics,
            store=store,
            destinations=Destinations(metrics.pending_changed),
            clock=lambda: NOW,
            settled=lambda *outcome: settled.append(outcome),
        )
        runner.sleep = record_wait
        runner.rng = Midway()
        try:
            yield Run(runner, audit, store, metrics, terms, recv.url, settled, waits)
        finally:
            store.close()
            audit.close()


async def test_success_at_the_first_attempt(run: Run, recv: Receiver) -> None:
    assert await run.webhook("/hook") is True
    assert [(r.path, r.body) for r in recv.requests] == [("/hook", EVENT)]
    ok = {"status": 200, "latency_ms": 0.0, "response": '{"ok": true, "path": "/hook"}'}
    assert run.records() == [
        {"time": TIME, "kind": "action.attempt", **COMMON} | {"attempt": 1, "ok": True, **ok},
        {"time": TIME, "kind": "action.succeeded", **COMMON} | {"attempts": 1, **ok},
    ]
    assert run.settled == [("e-1", "page", 0, False)]
    assert run.waits == []
    assert run.store.dead_letters() == []
    assert run.metric("actions", "succeeded") == 1.0
    assert run.metric("action_attempts", "ok") == 1.0
    assert run.metric("action_attempts", "failed") is None
    assert run.metric("actions", "failed") is None


async def test_a_503_then_a_200_is_two_attempts(run: Run, recv: Receiver) -> None:
    recv.replies["/hook"] = [(503, "busy", {})]
    assert await run.webhook("/hook") is True
    assert [r.path for r in recv.requests] == ["/hook", "/hook"]
    ok = {"status": 200, "latency_ms": 0.0, "response": '{"ok": true, "path": "/hook"}'}
    assert run.records() == [
        {"time": TIME, "kind": "action.attempt", **COMMON}
        | {
            "attempt": 1,
            "ok": False,
            "status": 503,
            "latency_ms": 0.0,
            "error": f"{run.url}/hook answered 503",
            "response": "busy",
            "retryable": True,
            "retry_in_s": 0.75,
        },
        {"time": TIME, "kind": "action.attempt", **COMMON} | {"attempt": 2, "ok": True, **ok},
        {"time": TIME, "kind": "action.succeeded", **COMMON} | {"attempts": 2, **ok},
    ]
    assert run.waits == [0.75]
    assert run.settled == [("e-1", "page", 0, False)]
    assert run.store.dead_letters() == []
    assert run.metric("action_attempts", "failed") == 1.0
    assert run.metric("action_attempts", "ok") == 1.0
    assert run.metric("actions", "succeeded") == 1.0
    assert run.metric("actions", "failed") is None


async def test_a_permanent_4xx_is_one_attempt_and_a_dead_letter(run: Run, recv: Receiver) -> None:
    recv.status["/gone"] = 404
    assert await run.webhook("/gone") is False
    assert [r.path for r in recv.requests] == ["/gone"]
    failure = {
        "status": 404,
        "latency_ms": 0.0,
        "error": f"{run.url}/gone answered 404",
        "response": '{"ok": false, "path": "/gone"}',
    }
    assert run.records() == [
        {"time": TIME, "kind": "action.attempt", **COMMON}
        | {"attempt": 1, "ok": False, **failure, "retryable": False, "retry_in_s": None},
        {"time": TIME, "kind": "action.failed", **COMMON} | {"attempts": 1, **failure},
        {
            "time": TIME,
            "kind": "action.dead_lettered",
            "letter": 1,
            "event_id": "e-1",
            "automation": "page",
            "action_index": 0,
        },
    ]
    assert run.waits == []
    assert run.settled == [("e-1", "page", 0, True)]
    assert run.store.dead_letters() == [
        {
            "id": 1,
            "event_id": "e-1",
            "automation": "page",
            "action_index": 0,
            "action": "webhook",
            "error": f"{run.url}/gone answered 404",
            "failed_at": NOW.timestamp(),
            "runs": 1,
            "attempts": 1,
        }
    ]
    assert run.metric("actions", "failed") == 1.0
    assert run.metric("action_attempts", "failed") == 1.0
    assert run.metric("actions", "succeeded") is None
