"""The engine: the one place that wires events -> automations -> actions -> audit.

It owns the live rules (config, type resolver and automation index, swapped as one
reference), the queue between the HTTP handler and the matcher, and the tasks of running
actions. One bad automation or action never stops the loop: failures are caught at the
automation and action boundaries, logged and audited.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import hashlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp

from automationd import __version__, jsontext
from automationd.actions import Action, Services
from automationd.audit import AuditLog
from automationd.deadlines import ScheduledDeadlines
from automationd.destinations import Destinations
from automationd.events import EventError, EventTypeResolver, format_timestamp, normalise
from automationd.globs import is_glob
from automationd.journal import Journal
from automationd.matching import AutomationIndex
from automationd.metrics import Metrics
from automationd.prefect_events import PrefectSubscription
from automationd.rules import Automation, Config
from automationd.rules.load import ConfigError, parse_config
from automationd.runner import Runner, Terms
from automationd.secrets import Redactor
from automationd.store import LetterFilter, Store, StoreError
from automationd.store.sqlite import SqliteStore
from automationd.systemd import Notifier
from automationd.triggers import Triggers

log = logging.getLogger("automationd.engine")

STOP_GRACE_SECONDS = 30.0
DROP_BATCH = 5000
"""Dead letters dropped in one transaction."""
PRUNE_SECONDS = 600.0


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
            Redactor([*config.secrets.values(), *config.server.tokens]),
        )


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    """What one attempt to load the rules came to (GET /rules shows the last one)."""

    at: str
    trigger: str
    outcome: str  # applied, rejected, unchanged, restored
    sha256: str
    problems: tuple[str, ...] = ()
    changes: Mapping[str, object] = field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        return {
            "at": self.at,
            "trigger": self.trigger,
            "outcome": self.outcome,
            "sha256": self.sha256,
            "problems": list(self.problems),
            "changes": dict(self.changes),
        }


@dataclass(frozen=True, slots=True)
class Ingested:
    """The ids of a request's events, and which of them were duplicates."""

    ids: list[str]
    duplicates: list[str]


@dataclass(frozen=True, slots=True)
class LetterRetry:
    """What asking to retry a known dead letter did: its action runs again, or, when its
    automation or action is gone from the rules, not (`refused` says why)."""

    refused: str | None = None


class Busy(Exception):
    """The queue is full: the client should retry later (429)."""

    retry_after = 1

    def __init__(self, events: int) -> None:
        super().__init__(f"the queue is full; {events} event(s) refused")
        self.events = events


RESTART_ONLY = ("server", "audit", "state")
"""Settings a reload cannot change in a running daemon (the port, files already open)."""


def changes_between(old: Config, new: Config) -> dict[str, object]:
    """Automations added, removed and changed, and other sections that changed (the
    caller adds what needs a restart)."""
    before = {a.name: a for a in old.automations}
    after = {a.name: a for a in new.automations}
    sections = [
        name
        for name in (
            "flow_slas",
            "agent_slas",
            "event_types",
            "smtp",
            "endpoints",
            "retry",
            "prefect",
            "delivery",
            "reload",
        )
        if getattr(old, name) != getattr(new, name)
    ]
    if old.secrets.keys() != new.secrets.keys() or any(
        old.secrets[k].reveal() != new.secrets[k].reveal()
        for k in old.secrets.keys() & new.secrets.keys()
    ):
        sections.append("secrets")
    return {
        "automations_added": sorted(after.keys() - before.keys()),
        "automations_removed": sorted(before.keys() - after.keys()),
        "automations_changed": sorted(
            n for n in before.keys() & after.keys() if before[n] != after[n]
        ),
        "sections_changed": sections,
    }


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
    ) -> None:
        self.rules = Rules.of(config)
        self.clock = clock
        self.environ = environ or {}
        self.notifier = notifier or Notifier({})
        self.metrics = Metrics()
        self.loaded_at = format_timestamp(clock())
        self.last_reload = ReloadOutcome(self.loaded_at, "start", "applied", config.sha256)
        self.listening = False
        self._reload_lock = asyncio.Lock()
        self.audit = AuditLog(config.audit.path, fsync=config.audit.fsync, clock=clock)
        self.store: Store = SqliteStore(config.state.path)
        self.deadlines = ScheduledDeadlines(self.store, self._deadline_passed)
        self.triggers = Triggers(self.deadlines, self.store, self.audit, self.emit, clock)
        state = config.state
        self.journal = (
            Journal(
                self.store, state.path, dedup_window=state.dedup_window, on_commit=self._committed
            )
            if state.journal
            else None
        )
        self._reserved = 0
        self._outstanding: dict[str, int] = {}
        self.destinations = Destinations(self.metrics.pending_changed)
        self.runner = Runner(
            audit=self.audit,
            metrics=self.metrics,
            store=self.store,
            destinations=self.destinations,
            clock=clock,
            settled=self._settled,
        )
        self._queue: asyncio.Queue[dict[str, object]] = asyncio.Queue()
        self._tasks: set[asyncio.Task[object]] = set()
        self._background: list[asyncio.Task[None]] = []
        self._http: aiohttp.ClientSession | None = None
        self.prefect: PrefectSubscription | None = None

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
            asyncio.create_task(self._prune_periodically(), name="automationd-prune"),
        ]
        config = self.config
        self.audit.write(
            "config.loaded",
            path=str(config.source),
            sha256=config.sha256,
            automations=[a.name for a in config.automations],
        )
        log.info("loaded %s: %d automations", config.source, len(config.automations))
        self.triggers.configure(config)
        self.deadlines.start()
        self._know_types()
        self.metrics.reload_successful.set(1)
        self.metrics.reload_timestamp.set(time.time())
        self.metrics.watch(
            self._queue.qsize,
            lambda: len(self.deadlines),
            lambda: None if self.prefect is None else float(self.prefect.state == "connected"),
        )
        self._resume()
        self._subscribe(config)
        settle_heap()

    async def stop(self) -> None:
        """Stop the Prefect subscription and firing deadlines, match what is queued, let
        running actions finish (up to 30 s), close the audit trail and the state store."""
        if self.prefect is not None:
            await self.prefect.stop()
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
            for running in pending:
                running.cancel()
            if pending:
                log.error(
                    "stopping with %d actions still running; they were cancelled", len(pending)
                )
                await asyncio.wait(pending)
        if self._http is not None:
            await self._http.close()
        if self.journal is not None:
            await self.journal.close()
        self.store.close()
        self.audit.close()

    async def reload(self, trigger: str, *, force: bool = True) -> ReloadOutcome:
        """Load the rules file again and swap it in whole, or keep the old rules and report
        every problem. Without `force`, an unchanged file (same sha256) is left alone; after a
        rejection, that file is `restored` (a successful outcome, logged and audited).
        A forced reload (SIGHUP, POST /reload) also reopens the audit file, for logrotate."""
        if force:
            self.audit.reopen()
        async with self._reload_lock:
            outcome = await self._reload(trigger, force)
            self.last_reload = outcome
            return outcome

    async def _reload(self, trigger: str, force: bool) -> ReloadOutcome:
        old = self.config
        path = old.source
        now = format_timestamp(self.clock())
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            return self._rejected(
                trigger, now, "", [f"{path}: cannot read the file: {exc.strerror}"]
            )
        sha256 = hashlib.sha256(data).hexdigest()
        if sha256 == old.sha256 and not force:
            if self.last_reload.outcome != "rejected":
                return ReloadOutcome(now, trigger, "unchanged", sha256)
            # the file is back to the rules running: nothing to swap, but the rejection is
            # over, and the gauge, the log and the audit trail must say so
            self.metrics.reload_successful.set(1)
            self.metrics.reload_timestamp.set(time.time())
            self.audit.write("config.restored", path=str(path), sha256=sha256, trigger=trigger)
            log.info("%s is the running rules again (%s): nothing changed", path, trigger)
            return ReloadOutcome(now, trigger, "restored", sha256)
        self.notifier.reloading()
        try:
            try:
                new = await asyncio.to_thread(parse_config, data, path, environ=self.environ)
            except ConfigError as exc:
                return self._rejected(trigger, now, sha256, exc.lines())
            # what only a restart can change stays as it is (but tokens are taken anew)
            kept = {name: getattr(old, name) for name in RESTART_ONLY}
            kept["server"] = dataclasses.replace(old.server, tokens=new.server.tokens)
            changes = changes_between(old, new)
            changes["restart_needed"] = [n for n, v in kept.items() if v != getattr(new, n)]
            new = dataclasses.replace(new, **kept)
            self.rules = Rules.of(new)  # the swap: events from here on meet the new rules
            self.triggers.configure(new)
            sections = changes["sections_changed"]
            if isinstance(sections, list) and {"prefect", "secrets"} & set(sections):
                if self.prefect is not None:
                    await self.prefect.stop()
                self._subscribe(new)
            self._know_types()
            self.metrics.reload_successful.set(1)
            self.metrics.reload_timestamp.set(time.time())
            self.loaded_at = now
            self.audit.write(
                "config.applied", path=str(path), sha256=sha256, trigger=trigger, **changes
            )
            log.info("reloaded %s (%s): %s", path, trigger, _describe(changes))
            settle_heap()  # the old rules' cycles go; the new ones are set aside
            return ReloadOutcome(now, trigger, "applied", sha256, changes=changes)
        finally:
            self.notifier.ready(self.status())

    def _rejected(
        self, trigger: str, now: str, sha256: str, problems: Sequence[str]
    ) -> ReloadOutcome:
        for line in problems:
            log.error("%s", line)
        log.error(
            "the rules were not reloaded (%s): %d problem(s); the old rules stay",
            trigger,
            len(problems),
        )
        self.audit.write(
            "config.rejected", trigger=trigger, sha256=sha256 or None, problems=list(problems)
        )
        self.metrics.reload_successful.set(0)
        return ReloadOutcome(now, trigger, "rejected", sha256, tuple(problems))

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
        rules = self.rules
        now = self.clock()
        events = []
        for i, raw in enumerate(raw_events):
            try:
                events.append(normalise(raw, rules.resolver, now))
            except EventError as exc:
                if not batch:
                    raise
                raise exc.in_batch(i) from None
        if source == "http" and self.backlog + len(events) > rules.config.server.queue_size:
            raise Busy(len(events))
        bodies = [jsontext.dumps(e) for e in events]
        self._reserved += len(events)
        try:
            fresh = [True] * len(events)
            if self.journal is not None:
                rows = [(str(e["id"]), body) for e, body in zip(events, bodies, strict=True)]
                fresh = await self.journal.append(rows, now.timestamp())
        finally:
            self._reserved -= len(events)
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
            self._queue.put_nowait(event)
            self.metrics.received(str(event["type"]))
        return Ingested([str(event["id"]) for event in events], duplicates)

    def _subscribe(self, config: Config) -> None:
        """Follow the Prefect server's flow run events when `prefect: {subscribe: true}`."""
        self.prefect = None
        if config.prefect is None or not config.prefect.subscribe:
            return
        assert self._http is not None
        self.prefect = PrefectSubscription(
            config.prefect,
            config.secrets,
            self._http,
            self._ingest_prefect,
            (self.store.prefect_position, self._save_prefect_position),
        )
        self.prefect.start()

    def _save_prefect_position(self, stamp: str) -> None:
        try:
            self.store.set_prefect_position(stamp)
        except StoreError as exc:  # the catch-up after a restart starts earlier, no loss
            log.error("cannot keep the Prefect event position: %s", exc)

    async def _ingest_prefect(self, events: list[dict[str, object]]) -> None:
        """Accept events from the Prefect server like a batch from HTTP. One the contract
        refuses is logged and audited and the rest go on; a journal failure propagates, so
        the subscription reconnects and catches up from before them."""
        self.metrics.prefect_events.inc(len(events))
        try:
            await self.ingest(events, batch=True, source="prefect")
            return
        except EventError:
            pass
        for event in events:
            try:
                await self.ingest([event], batch=False, source="prefect")
            except EventError as exc:
                log.error("Prefect event %s refused: %s", event.get("id"), exc.message)
                self.metrics.events_rejected.labels("invalid_event").inc()
                self.audit.write(
                    "event.rejected", source="prefect", event_id=event.get("id"), error=exc.message
                )

    def _committed(self, events: int) -> None:
        self.metrics.journal_commits.inc()
        self.metrics.journal_events.inc(events)

    @property
    def backlog(self) -> int:
        """Events accepted (or being made durable) and not yet matched."""
        return self._queue.qsize() + self._reserved

    def _resume(self) -> None:
        """After a restart, finish what the journal says was accepted and not finished.

        An event whose `event.accepted` record never reached the audit file (it waited in
        memory when the daemon was killed) gets it now, marked `resumed`."""
        if self.journal is None:
            return
        unfinished = list(self.store.unfinished())
        # the earliest each record can be: a second before its event's acceptance
        earliest = {
            str(event["id"]): datetime.fromtimestamp(max(0.0, accepted - 1), UTC)
            for event, _, _, accepted in unfinished
        }
        recorded = self.audit.recorded_acceptances(earliest)
        if len(recorded) < len(unfinished):
            log.warning(
                "%d resumed events had no event.accepted record in the audit trail "
                "(lost in a crash); written now",
                len(unfinished) - len(recorded),
            )
        resumed = 0
        for event, matched, finished, _ in unfinished:
            resumed += 1
            if str(event["id"]) not in recorded:
                self.audit.write(
                    "event.accepted",
                    {"event": jsontext.dumps(event)},
                    event_id=event["id"],
                    event_type=event.get("type"),
                    resumed=True,
                )
            self.audit.write("event.resumed", event_id=event["id"], matched=matched)
            if matched is None:
                self._queue.put_nowait(event)
                continue
            automations = {a.name: a for a in self.config.automations}
            pending = 0
            for name in matched:
                automation = automations.get(name)
                if automation is None:
                    log.warning(
                        "event %s: automation %s is gone; its actions are skipped",
                        event["id"],
                        name,
                    )
                    continue
                for index, action in enumerate(automation.actions):
                    if (name, index) not in finished:
                        pending += 1
                        self._spawn(self._run_action(automation, index, action, event))
            if pending:
                self._outstanding[str(event["id"])] = pending
            else:
                self.journal.set_done(str(event["id"]))
        if resumed:
            log.info("resumed %d events whose actions had not finished", resumed)

    async def _prune_periodically(self) -> None:
        """Forget finished events older than the retention (and the dedup window)."""
        state = self.config.state
        while True:
            keep = max(state.retention, state.dedup_window)
            now = self.clock().timestamp()
            try:
                self.store.prune_cooldowns(now)
                pruned = self.store.prune(now - keep) if self.journal is not None else 0
            except StoreError as exc:
                log.error("cannot prune the journal: %s", exc)
            else:
                if pruned:
                    log.info("pruned %d finished events from the journal", pruned)
            await asyncio.sleep(PRUNE_SECONDS)

    async def retry_dead_letter(self, letter_id: int) -> LetterRetry | None:
        """Run a dead letter's action again (with its retry policy); None when it is unknown,
        else whether it runs (its result lands in the audit trail and the letter list)."""
        letter = self.store.dead_letter(letter_id)
        if letter is None:
            return None
        event, name, index = letter
        automation = next((a for a in self.config.automations if a.name == name), None)
        if automation is None or index >= len(automation.actions):
            return LetterRetry(f"automation {name} (action {index}) is no longer in the rules")
        self.audit.write(
            "dead_letter.retried",
            letter=letter_id,
            event_id=event["id"],
            automation=name,
            action_index=index,
        )
        self._spawn(
            self._run_action(automation, index, automation.actions[index], event, letter=letter_id)
        )
        return LetterRetry()

    async def drop_dead_letters(self, which: LetterFilter) -> int:
        """Forget the dead letters `which` selects (an operator gave up on them); how many.
        Each is audited as `dead_letter.dropped`. A few thousand at a time, the event loop
        turning in between: a dead destination can leave hundreds of thousands."""
        count = 0
        while dropped := self.store.drop_dead_letters(which, limit=DROP_BATCH):
            for letter, event_id, automation in dropped:
                self.audit.write(
                    "dead_letter.dropped", letter=letter, event_id=event_id, automation=automation
                )
            count += len(dropped)
            await asyncio.sleep(0)
        if count:
            log.info("dropped %d dead letters", count)
        return count

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
        for made in self.triggers.observe(event):
            self._spawn(self.emit(made))
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
            if not verdict.fired or self._cooling_down(automation, event):
                continue
            self.audit.write("automation.matched", event_id=event["id"], automation=automation.name)
            self.metrics.automations_matched.labels(automation.name).inc()
            fired.append(automation.name)
            for index, action in enumerate(automation.actions):
                pending += 1
                self._spawn(self._run_action(automation, index, action, event))
        event_id = str(event["id"])
        if pending:
            self._outstanding[event_id] = pending
        if self.journal is not None:
            self.journal.set_matched(event_id, fired, done=pending == 0)

    def cooldown_left(
        self, automation: Automation, event: dict[str, object]
    ) -> tuple[str, float] | None:
        """The rendered key and seconds left when a cooldown holds this automation back."""
        if automation.cooldown is None:
            return None
        key = automation.cooldown.key.render(event)
        left = self._cooldown_until(automation, key) - self.clock().timestamp()
        return (key, round(left, 3)) if left > 0 else None

    def _cooldown_until(self, automation: Automation, key: str) -> float:
        until = self.store.cooldown_until(automation.name, key)
        return until if until is not None else 0.0

    def _cooling_down(self, automation: Automation, event: dict[str, object]) -> bool:
        """Whether a cooldown holds this firing back; if not, start the cooldown now.

        Cooldowns live in the store (when each automation's cooldown for a rendered key
        ends), so they survive restarts."""
        cooldown = automation.cooldown
        if cooldown is None:
            return False
        key = cooldown.key.render(event)
        now = self.clock().timestamp()
        left = self._cooldown_until(automation, key) - now
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

    def _settled(self, event_id: str, automation: str, index: int, failed: bool) -> None:
        """An action's final outcome (its dead letter kept): progress in the journal, and
        the event done when it was its last action. Raises StoreError (the runner logs it)."""
        if self.journal is None:
            return
        self.journal.set_outcome(event_id, automation, index, "failed" if failed else "succeeded")
        left = self._outstanding.get(event_id, 1) - 1
        if left > 0:
            self._outstanding[event_id] = left
        else:
            self._outstanding.pop(event_id, None)
            self.journal.set_done(event_id)


def settle_heap() -> None:
    """Collect once and set aside (gc.freeze) what is left: the libraries, the rules, the
    daemon's long-lived objects. Under load the collector runs a full pass about once a
    second; it then walks only what the traffic made (measured: 0.6 ms instead of 17-27 ms,
    a pause every request waiting at that moment shared). Objects set aside are still freed
    when no longer referenced; only their cycles wait for the next call (each reload)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _describe(changes: Mapping[str, object]) -> str:
    parts = [
        f"{key.replace('_', ' ')}: {', '.join(map(str, value))}"
        for key, value in changes.items()
        if isinstance(value, list) and value
    ]
    return "; ".join(parts) or "no automation changed"
