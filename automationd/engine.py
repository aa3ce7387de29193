"""The engine: the one place that wires events -> automations -> actions -> audit.

It owns the live rules (config, type resolver and automation index, swapped as one
reference), the queue between the HTTP handler and the matcher, and the tasks of running
actions. One bad automation or action never stops the loop: failures are caught at the
automation and action boundaries, logged and audited.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from automationd import __version__
from automationd.actions import Action, ActionContext, ActionError, Services
from automationd.audit import AuditLog
from automationd.config import Automation, Config
from automationd.deadlines import ScheduledDeadlines
from automationd.events import EventError, EventTypeResolver, normalise
from automationd.matching import AutomationIndex
from automationd.secrets import Redactor
from automationd.sla import SlaTracker
from automationd.state import StateStore

log = logging.getLogger("automationd.engine")

STOP_GRACE_SECONDS = 30.0
DESTINATION_CONCURRENCY = 8
"""Attempts in flight per destination (a host, a service): a slow one cannot take them all."""


def utc_now() -> datetime:
    """The real clock; tests inject their own."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Rules:
    """Everything derived from one config, swapped in one step on reload."""

    config: Config
    resolver: EventTypeResolver
    index: AutomationIndex
    redact: Redactor

    @classmethod
    def of(cls, config: Config) -> Rules:
        return cls(
            config,
            config.resolver(),
            AutomationIndex(config.automations),
            Redactor(config.secrets.values()),
        )


class Engine:
    """Accepts events, matches them against the live rules, runs and audits actions, and
    keeps the SLA deadlines the events arm."""

    def __init__(self, config: Config, *, clock: Callable[[], datetime] = utc_now) -> None:
        self.rules = Rules.of(config)
        self.clock = clock
        self.audit = AuditLog(config.audit.path, fsync=config.audit.fsync, clock=clock)
        self.store = StateStore(config.state.path)
        self.deadlines = ScheduledDeadlines(self.store, self._deadline_passed)
        self.sla = SlaTracker(self.deadlines, self.store, self.audit, self.emit, clock)
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self.rng = random.Random()
        self._limits: dict[str, asyncio.Semaphore] = {}
        self._queue: asyncio.Queue[dict[str, object]] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._background: list[asyncio.Task[None]] = []
        self._http: aiohttp.ClientSession | None = None

    @classmethod
    def create(cls, config: Config, *, clock: Callable[[], datetime] = utc_now) -> Engine:
        """An engine for `config`, writing the audit trail and state the config names."""
        return cls(config, clock=clock)

    @property
    def config(self) -> Config:
        return self.rules.config

    async def start(self) -> None:
        """Open the audit trail, the state store and the HTTP client; arm the SLAs of the
        rules (disarming those no longer in them) before any stored deadline may fire."""
        self.audit.open()
        self.store.open()
        self._http = aiohttp.ClientSession(
            headers={"User-Agent": f"automationd/{__version__}"},
            timeout=aiohttp.ClientTimeout(total=None),
            # No global cap: concurrency is bounded per destination (DESTINATION_CONCURRENCY)
            # instead, so one slow destination cannot take every connection.
            connector=aiohttp.TCPConnector(limit=0),
        )
        self._background = [
            asyncio.create_task(self._match_queued(), name="automationd-matcher"),
            asyncio.create_task(self.audit.sync_periodically(), name="automationd-audit-sync"),
        ]
        config = self.config
        self.audit.write(
            "config.loaded",
            path=str(config.source),
            sha256=config.sha256,
            automations=[a.name for a in config.automations],
        )
        log.info("loaded %s: %d automations", config.source, len(config.automations))
        self.sla.configure(config)
        self.deadlines.start()

    async def stop(self) -> None:
        """Stop firing deadlines, match what is queued, let running actions finish (up to
        30 s), close the audit trail and the state store."""
        await self.deadlines.stop()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        try:
            await asyncio.wait_for(self._queue.join(), timeout=STOP_GRACE_SECONDS)
        except TimeoutError:
            log.error("stopping with %d events not yet matched", self._queue.qsize())
        for task in self._background:
            task.cancel()
        if self._tasks:
            remaining = max(0.0, deadline - time.monotonic())
            _, pending = await asyncio.wait(set(self._tasks), timeout=remaining)
            for task in pending:
                task.cancel()
            if pending:
                log.error(
                    "stopping with %d actions still running; they were cancelled", len(pending)
                )
                await asyncio.wait(pending)
        if self._http is not None:
            await self._http.close()
        self.store.close()
        self.audit.close()

    async def _deadline_passed(self, key: str, payload: dict[str, object]) -> None:
        await self.sla.on_due(key, payload)

    def emit(self, raw: dict[str, object]) -> None:
        """Accept an event the daemon made itself (an SLA failure): audited and matched like
        a received one."""
        try:
            self.accept([raw], batch=False, source="sla")
        except EventError as exc:  # a bug: the daemon's own events follow the contract
            log.error("the daemon made an invalid %s event: %s", raw.get("type"), exc.message)

    def accept(
        self, raw_events: Sequence[object], *, batch: bool, source: str = "http"
    ) -> list[str]:
        """Normalise a request's events and queue them; all or none.

        Raises EventError naming the field (prefixed with the item's index in a batch)."""
        rules = self.rules
        now = self.clock()
        events = []
        for i, raw in enumerate(raw_events):
            try:
                events.append(normalise(raw, rules.resolver, now))
            except EventError as exc:
                if not batch:
                    raise
                where = f"[{i}]" + (f".{exc.field}" if exc.field else "")
                raise EventError(f"event {i} of the batch: {exc.message}", where, i) from None
        for event in events:
            self.audit.write(
                "event.accepted",
                event_id=event["id"],
                event_type=event["type"],
                source=source,
                event=event,
            )
            self._queue.put_nowait(event)
        return [str(event["id"]) for event in events]

    async def _match_queued(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                self.process(event)
            except Exception:
                log.exception("matching event %s failed", event.get("id"))
            finally:
                self._queue.task_done()

    def process(self, event: dict[str, object]) -> None:
        """Arm or disarm the SLA deadlines the event affects, judge every automation of its
        type and start the actions of those that fire."""
        self.sla.observe(event)
        for automation, verdict in self.rules.index.judge_all(event):
            if verdict.error:
                log.warning("automation %s: %s: %s", automation.name, verdict.reason, verdict.error)
                self.audit.write(
                    "automation.error",
                    event_id=event["id"],
                    automation=automation.name,
                    error=f"{verdict.reason}: {verdict.error}",
                )
                continue
            if not verdict.fired:
                continue
            self.audit.write("automation.matched", event_id=event["id"], automation=automation.name)
            for index, action in enumerate(automation.actions):
                self._spawn(self._run_action(automation, index, action, event))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _limit(self, destination: str) -> asyncio.Semaphore:
        limit = self._limits.get(destination)
        if limit is None:
            limit = self._limits[destination] = asyncio.Semaphore(DESTINATION_CONCURRENCY)
        return limit

    async def _run_action(
        self, automation: Automation, index: int, action: Action, event: dict[str, object]
    ) -> None:
        """Run one action with its retry policy, auditing every attempt and the outcome once.

        Never raises: a failure is an audit record and a log line, with secrets redacted."""
        rules = self.rules  # in-flight actions finish under the rules they started with
        assert self._http is not None
        services = Services(
            self._http, rules.config.secrets, rules.config.endpoints, rules.config.smtp
        )
        ctx = ActionContext(event, automation.name, index, services)
        redact = rules.redact
        common = {
            "event_id": event["id"],
            "automation": automation.name,
            "action": action.kind,
            "action_index": index,
        }
        policy = action.retry
        for attempt in range(1, policy.attempts + 1):
            started = time.monotonic()
            error: ActionError | None = None
            try:
                async with self._limit(action.spec.destination()), asyncio.timeout(action.timeout):
                    result = await action.spec.run(ctx)
            except TimeoutError:
                error = ActionError(f"no answer within {action.timeout:g} s", retryable=True)
            except ActionError as exc:
                error = exc
            except Exception as exc:
                log.exception("%s #%d of %s crashed", action.kind, index, automation.name)
                error = ActionError(f"internal error: {type(exc).__name__}", retryable=False)
            latency_ms = round((time.monotonic() - started) * 1000, 1)
            if error is None:
                outcome = {
                    "status": result.status,
                    "latency_ms": latency_ms,
                    "response": redact(result.detail),
                }
                self.audit.write("action.attempt", **common, attempt=attempt, ok=True, **outcome)
                self.audit.write("action.succeeded", **common, attempts=attempt, **outcome)
                return
            retry_in = None
            if error.retryable and attempt < policy.attempts:
                retry_in = round(policy.delay(attempt, error.retry_after, self.rng), 3)
            message = redact(error.message)
            failure = {
                "status": error.status,
                "latency_ms": latency_ms,
                "error": message,
                "response": redact.optional(error.detail),
            }
            self.audit.write(
                "action.attempt",
                **common,
                attempt=attempt,
                ok=False,
                **failure,
                retryable=error.retryable,
                retry_in_s=retry_in,
            )
            if retry_in is None:
                break
            log.info(
                "%s #%d of %s: attempt %d failed (%s); retrying in %.1f s",
                action.kind,
                index,
                automation.name,
                attempt,
                message,
                retry_in,
            )
            await self.sleep(retry_in)
        log.warning(
            "%s #%d of %s failed after %d attempt(s): %s",
            action.kind,
            index,
            automation.name,
            attempt,
            message,
        )
        self.audit.write("action.failed", **common, attempts=attempt, **failure)
