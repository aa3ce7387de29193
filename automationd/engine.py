"""The engine: the one place that wires events -> automations -> actions -> audit.

It builds the parts (intake, runner, progress, reload, the triggers, the Prefect source)
each with what it needs, owns the one live reference to the rules (config, type resolver
and automation index, swapped as one on reload), matches queued events against them and
starts the actions of those that fire. One bad automation or action never stops the loop:
failures are caught at the automation and action boundaries, logged and audited.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp

from automationd import __version__
from automationd.actions import Action, Services
from automationd.audit import AuditLog
from automationd.cooldowns import Cooldowns
from automationd.deadlines import ScheduledDeadlines
from automationd.destinations import Destinations
from automationd.globs import is_glob
from automationd.intake import Ingested, Intake
from automationd.journal import Journal
from automationd.metrics import Metrics
from automationd.prefect_source import PrefectSource
from automationd.progress import Progress
from automationd.reload import Changes, LiveRules, Reloader, ReloadOutcome
from automationd.rules import Automation, Config
from automationd.runner import Runner, Terms
from automationd.store.backends import open_store
from automationd.systemd import Notifier
from automationd.triggers import Triggers

log = logging.getLogger("automationd.engine")

STOP_GRACE_SECONDS = 30.0


def utc_now() -> datetime:
    """The real clock; tests inject their own."""
    return datetime.now(UTC)


class Engine:
    """Accepts events, matches them against the live rules, runs and audits actions, and
    keeps the SLA deadlines the events arm."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], datetime] = utc_now,
        environ: Mapping[str, str] | None = None,
        notifier: Notifier | None = None,
        rules_in_place: Callable[[], None] = lambda: None,
    ) -> None:
        """`rules_in_place` is called once rules are in place: at start and after each applied
        reload (the daemon settles the heap there)."""
        self.rules = LiveRules.of(config)
        self.clock = clock
        self.metrics = Metrics()
        self.listening = False
        self.rules_in_place = rules_in_place
        self.audit = AuditLog(config.audit.path, fsync=config.audit.fsync, clock=clock)
        self.store = open_store(config.state)
        self.journal = self._journal(config)
        self.intake = Intake(
            audit=self.audit,
            metrics=self.metrics,
            journal=self.journal,
            clock=clock,
            resolver=lambda: self.rules.resolver,
            queue_size=lambda: self.config.server.queue_size,
        )
        self.deadlines = ScheduledDeadlines(self.store, self._deadline_passed)
        self.triggers = Triggers(self.deadlines, self.store, self.audit, self.intake.emit, clock)
        self.progress = Progress(
            audit=self.audit,
            store=self.store,
            journal=self.journal,
            clock=clock,
            state=config.state,
            automations=lambda: self.config.automations,
            start_action=self._start_action,
            requeue=self.intake.queue.put_nowait,
        )
        self.cooldowns = Cooldowns(
            audit=self.audit, metrics=self.metrics, store=self.store, clock=clock
        )
        self.destinations = Destinations(self.metrics.pending_changed)
        self.runner = Runner(
            audit=self.audit,
            metrics=self.metrics,
            store=self.store,
            destinations=self.destinations,
            clock=clock,
            settled=self.progress.settled,
        )
        self.reloader = Reloader(
            audit=self.audit,
            metrics=self.metrics,
            notifier=notifier or Notifier({}),
            clock=clock,
            environ=environ or {},
            current=lambda: self.config,
            swap=self._swap,
            status=self.status,
            rules_in_place=rules_in_place,
        )
        self.prefect = PrefectSource(
            audit=self.audit,
            metrics=self.metrics,
            store=self.store,
            accept=lambda events, batch: self.intake.ingest(events, batch=batch, source="prefect"),
        )
        self._tasks: set[asyncio.Task[object]] = set()
        self._background: list[asyncio.Task[None]] = []
        self._http: aiohttp.ClientSession | None = None

    def _journal(self, config: Config) -> Journal | None:
        """The journal of accepted events, unless `state: {journal: false}`."""
        state = config.state
        if not state.journal:
            return None
        return Journal(
            self.store, state.path, dedup_window=state.dedup_window, on_commit=self._committed
        )

    def _committed(self, events: int) -> None:
        self.metrics.journal_commits.inc()
        self.metrics.journal_events.inc(events)

    def _know_types(self) -> None:
        config = self.config
        named = {t for a in config.automations for t in a.on if not is_glob(t)}
        self.metrics.know_types(named | set(config.event_types) | set(self.rules.resolver.names()))

    @property
    def config(self) -> Config:
        return self.rules.config

    async def start(self) -> None:
        """Open the audit trail, the state store and the HTTP client; arm the SLAs of the
        rules (disarming those no longer in them) before any stored deadline may fire."""
        self.audit.open()
        self.store.open()
        if self.journal is not None:
            self.journal.open()
        self._http = aiohttp.ClientSession(
            headers={"User-Agent": f"automationd/{__version__}"},
            timeout=aiohttp.ClientTimeout(total=None),
            # No global cap: concurrency is bounded per destination (delivery:)
            # instead, so one slow destination cannot take every connection.
            connector=aiohttp.TCPConnector(limit=0),
        )
        self._background = [
            asyncio.create_task(self._match_queued(), name="automationd-matcher"),
            asyncio.create_task(self.audit.sync_periodically(), name="automationd-audit-sync"),
            asyncio.create_task(self.progress.prune_periodically(), name="automationd-prune"),
        ]
        config = self.config
        self.reloader.started()
        self.triggers.configure(config)
        self.deadlines.start()
        self._know_types()
        self.metrics.watch(
            self.intake.queue.qsize, lambda: len(self.deadlines), self.prefect.connected
        )
        self.progress.resume()
        self.prefect.start(config, self._http)
        self.rules_in_place()

    async def stop(self) -> None:
        """Stop the Prefect subscription and firing deadlines, match what is queued, let
        running actions finish (up to 30 s), close the audit trail and the state store."""
        await self.prefect.stop()
        await self.deadlines.stop()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        queue = self.intake.queue
        try:
            await asyncio.wait_for(queue.join(), timeout=STOP_GRACE_SECONDS)
        except TimeoutError:
            log.error("stopping with %d events not yet matched", queue.qsize())
        for task in self._background:
            task.cancel()
        if self._tasks:
            await self._finish_actions(max(0.0, deadline - time.monotonic()))
        if self._http is not None:
            await self._http.close()
        if self.journal is not None:
            await self.journal.close()
        self.store.close()
        self.audit.close()

    async def _finish_actions(self, grace: float) -> None:
        """Let running actions finish within `grace` seconds, then cancel the rest."""
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for running in pending:
            running.cancel()
        if pending:
            log.error("stopping with %d actions still running; they were cancelled", len(pending))
            await asyncio.wait(pending)

    async def reload(self, trigger: str, *, force: bool = True) -> ReloadOutcome:
        """Load the rules file again and swap it in whole, or keep the old rules and report
        every problem (reload.py says how)."""
        return await self.reloader.reload(trigger, force=force)

    async def _swap(self, new: Config, changes: Changes) -> None:
        """Put new rules in place: events from here on meet them."""
        self.rules = LiveRules.of(new)
        self.triggers.configure(new)
        if {"prefect", "secrets"} & set(changes.sections_changed):
            await self.prefect.stop()
            self.prefect.start(new, self._http)
        self._know_types()

    def status(self) -> str:
        """A one-line status for systemd."""
        config = self.config
        return f"{len(config.automations)} automations, {len(self.deadlines)} SLA deadlines armed"

    def readiness(self) -> dict[str, bool]:
        """What /readyz checks: rules loaded, port bound, audit and state writable."""
        return {
            "rules_loaded": True,
            "listening": self.listening,
            "audit_writable": self.audit.healthy,
            "state_writable": self.store.writable(),
            "journal_writable": self.journal is None or self.journal.healthy,
        }

    async def _deadline_passed(self, kind: str, key: str, payload: dict[str, object]) -> None:
        await self.triggers.on_due(kind, key, payload)

    async def ingest(
        self, raw_events: Sequence[object], *, batch: bool, source: str = "http"
    ) -> Ingested:
        """Accept a request's events, all or none (intake.py says how and what it raises)."""
        return await self.intake.ingest(raw_events, batch=batch, source=source)

    async def _match_queued(self) -> None:
        while True:
            event = await self.intake.queue.get()
            try:
                self.process(event)
            except Exception:
                log.exception("matching event %s failed", event.get("id"))
            finally:
                self.intake.queue.task_done()

    def process(self, event: dict[str, object]) -> None:
        """Arm or disarm the SLA deadlines the event affects, judge every automation of its
        type and start the actions of those that fire."""
        for made in self.triggers.observe(event):
            self._spawn(self.intake.emit(made))
        fired: list[str] = []
        pending = 0
        for automation, verdict in self.rules.index.judge_candidates(event):
            if verdict.error:
                log.warning("automation %s: %s: %s", automation.name, verdict.reason, verdict.error)
                self.audit.write(
                    "automation.error",
                    event_id=event["id"],
                    automation=automation.name,
                    error=f"{verdict.reason}: {verdict.error}",
                )
                continue
            if not verdict.fired or self.cooldowns.holds_back(automation, event):
                continue
            self.audit.write("automation.matched", event_id=event["id"], automation=automation.name)
            self.metrics.automations_matched.labels(automation.name).inc()
            fired.append(automation.name)
            for index, action in enumerate(automation.actions):
                pending += 1
                self._spawn(self._run_action(automation, index, action, event))
        self.progress.matched(str(event["id"]), fired, pending)

    async def send_test(self, automation: Automation, event: dict[str, object]) -> bool:
        """Run one automation's actions for `event` for real, once each (with their retries),
        audited with `test: true`: the "test action" of `automationd test --send`. Needs only
        the audit trail open; nothing is journaled or dead-lettered."""
        async with aiohttp.ClientSession(
            headers={"User-Agent": f"automationd/{__version__} (test)"}
        ) as session:
            self._http = session
            self.audit.write("automation.tested", event_id=event["id"], automation=automation.name)
            results = [
                await self._run_action(automation, index, action, event, test=True)
                for index, action in enumerate(automation.actions)
            ]
        self._http = None
        return all(results)

    def _spawn(self, work: Coroutine[Any, Any, object]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_action(
        self,
        automation: Automation,
        index: int,
        action: Action,
        event: dict[str, object],
        *,
        letter: int | None = None,
        test: bool = False,
    ) -> bool:
        """Run one action through the runner; never raises.

        In-flight actions finish under the rules they started with: the terms of the run
        are taken from the rules live when it starts."""
        rules = self.rules
        assert self._http is not None
        config = rules.config
        services = Services(
            self._http, config.secrets, config.endpoints, config.smtp, config.prefect
        )
        delivery = config.delivery
        terms = Terms(
            services,
            rules.redact,
            delivery.max_pending_per_destination,
            delivery.concurrency_per_destination,
        )
        return await self.runner.run(
            automation.name, index, action, event, terms, letter=letter, test=test
        )

    def _start_action(
        self, automation: Automation, index: int, event: dict[str, object], letter: int | None
    ) -> None:
        self._spawn(
            self._run_action(automation, index, automation.actions[index], event, letter=letter)
        )
