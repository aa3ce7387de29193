"""Reload: the live rules, loading them anew, and what one load changed.

`LiveRules` is everything derived from one config, which the engine swaps as one reference.
A `Reloader` reads the rules file again and either hands the new rules to the engine to swap
in whole, or keeps the old ones and reports every problem; `changes_between` says what the
swap changes (automations added, removed, changed; other sections; what needs a restart),
for the log, the `config.applied` audit record and GET /rules.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from automationd.audit import AuditLog
from automationd.events import EventTypeResolver, format_timestamp
from automationd.matching import AutomationIndex
from automationd.metrics import Metrics
from automationd.rules import Config
from automationd.rules.load import ConfigError, parse_config
from automationd.secrets import Redactor
from automationd.systemd import Notifier

log = logging.getLogger("automationd.engine")
"""The engine's logger: these lines were the engine's, and keep their logger name."""

RESTART_ONLY = ("server", "audit", "state")
"""Settings a reload cannot change in a running daemon (the port, files already open)."""

RELOADED_SECTIONS = (
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
"""The sections other than automations and secrets a reload takes in, compared as a whole."""


@dataclass(frozen=True, slots=True)
class LiveRules:
    """Everything derived from one config, swapped in one step on reload."""

    config: Config
    resolver: EventTypeResolver
    index: AutomationIndex
    redact: Redactor

    @classmethod
    def of(cls, config: Config) -> LiveRules:
        return cls(
            config,
            config.resolver(),
            AutomationIndex(config.automations),
            Redactor([*config.secrets.values(), *config.server.tokens]),
        )


@dataclass(frozen=True, slots=True)
class Changes:
    """What a reload changes: automations by name, other sections by name, and the
    sections whose new values wait for a restart. Field order is the order of the JSON
    answers and the audit record."""

    automations_added: tuple[str, ...] = ()
    automations_removed: tuple[str, ...] = ()
    automations_changed: tuple[str, ...] = ()
    sections_changed: tuple[str, ...] = ()
    restart_needed: tuple[str, ...] = ()

    def as_json(self) -> dict[str, list[str]]:
        """Each field as a list, in field order (GET /rules, POST /reload, the audit record)."""
        return {f.name: list(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def describe(self) -> str:
        """The log's words: "automations added: a, b; sections changed: smtp"."""
        parts = [
            f"{key.replace('_', ' ')}: {', '.join(names)}"
            for key, names in self.as_json().items()
            if names
        ]
        return "; ".join(parts) or "no automation changed"


def restart_kept(old: Config, new: Config) -> Config:
    """`new`, with what only a restart can change (RESTART_ONLY) as it is running in `old`
    (but tokens are taken anew)."""
    kept = {name: getattr(old, name) for name in RESTART_ONLY}
    kept["server"] = dataclasses.replace(old.server, tokens=new.server.tokens)
    return dataclasses.replace(new, **kept)


def changes_between(old: Config, new: Config) -> Changes:
    """Automations added, removed and changed, other sections that changed, and the
    restart-only sections that differ (their new values wait for a restart)."""
    before = {a.name: a for a in old.automations}
    after = {a.name: a for a in new.automations}
    kept = restart_kept(old, new)
    sections = [name for name in RELOADED_SECTIONS if getattr(old, name) != getattr(new, name)]
    if old.secrets.keys() != new.secrets.keys() or any(
        old.secrets[k].reveal() != new.secrets[k].reveal()
        for k in old.secrets.keys() & new.secrets.keys()
    ):
        sections.append("secrets")
    return Changes(
        automations_added=tuple(sorted(after.keys() - before.keys())),
        automations_removed=tuple(sorted(before.keys() - after.keys())),
        automations_changed=tuple(
            sorted(n for n in before.keys() & after.keys() if before[n] != after[n])
        ),
        sections_changed=tuple(sections),
        restart_needed=tuple(n for n in RESTART_ONLY if getattr(kept, n) != getattr(new, n)),
    )


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    """What one attempt to load the rules came to (GET /rules shows the last one)."""

    at: str
    trigger: str
    outcome: str  # applied, rejected, unchanged, restored
    sha256: str
    problems: tuple[str, ...] = ()
    changes: Changes | None = None
    """Only an applied reload has changes."""

    def as_json(self) -> dict[str, object]:
        return {
            "at": self.at,
            "trigger": self.trigger,
            "outcome": self.outcome,
            "sha256": self.sha256,
            "problems": list(self.problems),
            "changes": {} if self.changes is None else self.changes.as_json(),
        }


Swap = Callable[[Config, Changes], Awaitable[None]]
"""Puts new rules in place (the engine's one reference, and what depends on them)."""


class Reloader:
    """Loads the rules file again on request (SIGHUP, POST /reload, a save of the file), one
    load at a time, and keeps the outcome of the last one."""

    def __init__(
        self,
        *,
        audit: AuditLog,
        metrics: Metrics,
        notifier: Notifier,
        clock: Callable[[], datetime],
        environ: Mapping[str, str],
        current: Callable[[], Config],
        swap: Swap,
        status: Callable[[], str],
        rules_in_place: Callable[[], None],
    ) -> None:
        self.audit = audit
        self.metrics = metrics
        self.notifier = notifier
        self.clock = clock
        self.environ = environ
        self.current = current
        self.swap = swap
        self.status = status
        """A one-line status for systemd, told when a load is over."""
        self.rules_in_place = rules_in_place
        """Called once new rules are in place."""
        self.loaded_at = format_timestamp(clock())
        self.last = ReloadOutcome(self.loaded_at, "start", "applied", current().sha256)
        self._lock = asyncio.Lock()

    def started(self) -> None:
        """The rules the daemon starts with: audited, logged, and the reload gauges set."""
        config = self.current()
        self.audit.write(
            "config.loaded",
            path=str(config.source),
            sha256=config.sha256,
            automations=[a.name for a in config.automations],
        )
        log.info("loaded %s: %d automations", config.source, len(config.automations))
        self._succeeded()

    def _succeeded(self) -> None:
        self.metrics.reload_successful.set(1)
        self.metrics.reload_timestamp.set(time.time())

    async def reload(self, trigger: str, *, force: bool = True) -> ReloadOutcome:
        """Load the rules file again and swap it in whole, or keep the old rules and report
        every problem. Without `force`, an unchanged file (same sha256) is left alone; after a
        rejection, that file is `restored` (a successful outcome, logged and audited).
        A forced reload (SIGHUP, POST /reload) also reopens the audit file, for logrotate."""
        if force:
            self.audit.reopen()
        async with self._lock:
            outcome = await self._reload(trigger, force)
            self.last = outcome
            return outcome

    async def _reload(self, trigger: str, force: bool) -> ReloadOutcome:
        path = self.current().source
        now = format_timestamp(self.clock())
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            return self._rejected(
                trigger, now, "", [f"{path}: cannot read the file: {exc.strerror}"]
            )
        sha256 = hashlib.sha256(data).hexdigest()
        if sha256 == self.current().sha256 and not force:
            return self._unchanged(trigger, now, sha256)
        self.notifier.reloading()
        try:
            try:
                new = await asyncio.to_thread(parse_config, data, path, environ=self.environ)
            except ConfigError as exc:
                return self._rejected(trigger, now, sha256, exc.lines())
            return await self._apply(new, trigger, now, sha256)
        finally:
            self.notifier.ready(self.status())

    def _unchanged(self, trigger: str, now: str, sha256: str) -> ReloadOutcome:
        if self.last.outcome != "rejected":
            return ReloadOutcome(now, trigger, "unchanged", sha256)
        # the file is back to the rules running: nothing to swap, but the rejection is
        # over, and the gauge, the log and the audit trail must say so
        path = self.current().source
        self._succeeded()
        self.audit.write("config.restored", path=str(path), sha256=sha256, trigger=trigger)
        log.info("%s is the running rules again (%s): nothing changed", path, trigger)
        return ReloadOutcome(now, trigger, "restored", sha256)

    async def _apply(self, new: Config, trigger: str, now: str, sha256: str) -> ReloadOutcome:
        old = self.current()
        changes = changes_between(old, new)
        await self.swap(restart_kept(old, new), changes)
        self._succeeded()
        self.loaded_at = now
        path = old.source
        self.audit.write(
            "config.applied",
            path=str(path),
            sha256=sha256,
            trigger=trigger,
            **changes.as_json(),
        )
        log.info("reloaded %s (%s): %s", path, trigger, changes.describe())
        self.rules_in_place()
        return ReloadOutcome(now, trigger, "applied", sha256, changes=changes)

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
