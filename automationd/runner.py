"""The runner: one action from its first attempt to its outcome.

Like Alertmanager's RetryStage around its notifiers, it owns what every kind shares: the
per-destination backlog and slots, each attempt's timeout, the retries (the action's
RetryPolicy) within the run's life (`give_up_after`), the audit of every attempt and of the
outcome, the action metrics, and the dead letter of a run that failed for good. The action
modules only send and say whether a failure is worth retrying, so a notifier can be tested
through a Runner without an engine.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from automationd.actions import Action, ActionContext, ActionError, ActionResult, Services
from automationd.audit import AuditLog
from automationd.destinations import Destinations
from automationd.metrics import Metrics
from automationd.secrets import Redactor
from automationd.store import Store, StoreError

log = logging.getLogger("automationd.engine")
"""The engine's logger: these lines were the engine's, and keep their logger name."""


@dataclass(frozen=True, slots=True)
class Terms:
    """What one run takes from the rules it started under: a reload while it runs changes
    none of it."""

    services: Services
    redact: Redactor
    max_pending: int
    """delivery.max_pending_per_destination"""
    concurrency: int
    """delivery.concurrency_per_destination"""


Settled = Callable[[str, str, int, bool], None]
"""Told (event id, automation, action index, failed) of each outcome that is neither a test
nor the retry of a dead letter, once its dead letter (if any) is kept; may raise StoreError."""


class Runner:
    """Runs one action of one event with its retry policy, auditing every attempt and the
    outcome once."""

    def __init__(
        self,
        *,
        audit: AuditLog,
        metrics: Metrics,
        store: Store,
        destinations: Destinations,
        clock: Callable[[], datetime],
        settled: Settled,
    ) -> None:
        self.audit = audit
        self.metrics = metrics
        self.store = store
        self.destinations = destinations
        self.clock = clock
        self.settled = settled
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        """How back-offs are waited for (tests record them instead)."""
        self.rng = random.Random()
        """The jitter of the back-offs."""

    async def run(
        self,
        automation: str,
        index: int,
        action: Action,
        event: dict[str, object],
        terms: Terms,
        *,
        letter: int | None = None,
        test: bool = False,
    ) -> bool:
        """Run action `index` of `automation` for `event`: whether it succeeded. `letter` is
        the dead letter this run retries; a `test` run is audited with `test: true` and
        neither dead-lettered nor settled.

        Never raises: a failure is an audit record and a log line, with secrets redacted."""
        ctx = ActionContext(event, automation, index, terms.services)
        common: dict[str, object] = {
            "event_id": event["id"],
            "automation": automation,
            "action": action.kind,
            "action_index": index,
        }
        if test:
            common["test"] = True
        destination = action.spec.destination()
        token = self.destinations.admit(
            destination, max_pending=terms.max_pending, concurrency=terms.concurrency
        )
        if token is None:
            message = (
                f"destination backlog full: {terms.max_pending} actions pending for {destination}"
            )
            self.audit.write("action.failed", **common, attempts=0, error=message)
            self.metrics.actions.labels(action.kind, "failed").inc()
            if not test:
                self._finished(event, automation, index, message, letter, action.kind, 0)
            return False
        try:
            return await self._attempts(
                action, event, ctx, destination, common, terms.redact, letter=letter, test=test
            )
        finally:
            self.destinations.finish(destination, token)

    async def _attempts(
        self,
        action: Action,
        event: dict[str, object],
        ctx: ActionContext,
        destination: str,
        common: dict[str, object],
        redact: Redactor,
        *,
        letter: int | None,
        test: bool,
    ) -> bool:
        """The attempts of one admitted run, within its life (`give_up_after`): waiting for
        a slot at the destination, each attempt and each back-off count against it."""
        name, index = ctx.automation, ctx.index
        policy = action.retry
        loop = asyncio.get_running_loop()
        life_ends = loop.time() + action.give_up_after
        gave_up = f"gave up after {action.give_up_after:g} s (delivery.give_up_after)"
        attempt = 0
        failure: dict[str, object] = {}
        message = ""
        while attempt < policy.attempts:
            left = await self._slot(destination, life_ends)
            if left is None:
                message = f"{gave_up} waiting for a free slot at {destination}"
                failure = {"error": message}
                break
            attempt += 1
            outcome, elapsed = await self._attempt(action, ctx, destination, left, gave_up)
            latency_ms = round(elapsed * 1000, 1)
            if isinstance(outcome, ActionResult):
                done = {
                    "status": outcome.status,
                    "latency_ms": latency_ms,
                    "response": redact(outcome.detail),
                }
                self.audit.write("action.attempt", **common, attempt=attempt, ok=True, **done)
                self.audit.write("action.succeeded", **common, attempts=attempt, **done)
                self.metrics.actions.labels(action.kind, "succeeded").inc()
                if not test:
                    self._finished(event, name, index, None, letter, action.kind, attempt)
                return True
            failure, retry_in = self._failed_attempt(
                action, outcome, attempt, latency_ms, common, redact
            )
            message = str(failure["error"])
            if retry_in is None:
                break
            if loop.time() + retry_in >= life_ends:
                message = f"{gave_up}: the next attempt would be due in {retry_in:g} s; {message}"
                failure = {**failure, "error": message}
                break
            log.info(
                "%s #%d of %s: attempt %d failed (%s); retrying in %.1f s",
                action.kind,
                index,
                name,
                attempt,
                message,
                retry_in,
            )
            await self.sleep(retry_in)
        log.warning(
            "%s #%d of %s failed after %d attempt(s): %s",
            action.kind,
            index,
            name,
            attempt,
            message,
        )
        self.audit.write("action.failed", **common, attempts=attempt, **failure)
        self.metrics.actions.labels(action.kind, "failed").inc()
        if not test:
            self._finished(event, name, index, message, letter, action.kind, attempt)
        return False

    def _failed_attempt(
        self,
        action: Action,
        error: ActionError,
        attempt: int,
        latency_ms: float,
        common: dict[str, object],
        redact: Redactor,
    ) -> tuple[dict[str, object], float | None]:
        """Audit a failed attempt: what it came to (secrets redacted), and the seconds until
        the next one (None: no retry, the error is permanent or the attempts are spent)."""
        retry_in = None
        if error.retryable and attempt < action.retry.attempts:
            retry_in = round(action.retry.delay(attempt, error.retry_after, self.rng), 3)
        failure: dict[str, object] = {
            "status": error.status,
            "latency_ms": latency_ms,
            "error": redact(error.message),
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
        return failure, retry_in

    async def _slot(self, destination: str, life_ends: float) -> float | None:
        """Wait for a slot at `destination` within the run's life: the seconds of life left
        once the slot is held, or None (and no slot held) when the life ended first."""
        try:
            async with asyncio.timeout_at(life_ends):
                await self.destinations.slot(destination)
        except TimeoutError:
            return None
        left = life_ends - asyncio.get_running_loop().time()
        if left <= 0:  # the slot came as its life ended: no attempt is made
            self.destinations.free(destination)
            return None
        return left

    async def _attempt(
        self, action: Action, ctx: ActionContext, destination: str, left: float, gave_up: str
    ) -> tuple[ActionResult | ActionError, float]:
        """One attempt in a held slot (freed after it), cut at the action's timeout or at
        the end of the run's life (`left` seconds away): its result or error, and how long
        it took. An action that crashes is a permanent error (and a logged traceback)."""
        started = time.monotonic()
        outcome: ActionResult | ActionError
        cut_by_life = left < action.timeout
        try:
            async with asyncio.timeout(min(action.timeout, left)):
                outcome = await action.spec.run(ctx)
        except TimeoutError:
            if cut_by_life:
                outcome = ActionError(
                    f"{gave_up}: the attempt was cut after {left:.3g} s", retryable=False
                )
            else:
                outcome = ActionError(f"no answer within {action.timeout:g} s", retryable=True)
        except ActionError as exc:
            outcome = exc
        except Exception as exc:
            log.exception("%s #%d of %s crashed", action.kind, ctx.index, ctx.automation)
            outcome = ActionError(f"internal error: {type(exc).__name__}", retryable=False)
        finally:
            self.destinations.free(destination)
        elapsed = time.monotonic() - started
        self.metrics.latency.labels(action.kind).observe(elapsed)
        ok = isinstance(outcome, ActionResult)
        self.metrics.attempts.labels(action.kind, "ok" if ok else "failed").inc()
        return outcome, elapsed

    def _finished(
        self,
        event: dict[str, object],
        automation: str,
        index: int,
        error: str | None,
        letter: int | None,
        kind: str,
        attempts: int,
    ) -> None:
        """Record a run's final outcome: a retried dead letter resolved or failed again, a
        new dead letter when it failed (with its `attempts`), then `settled`."""
        event_id = str(event["id"])
        try:
            if letter is not None:
                self.store.retried_dead_letter(letter, error, attempts)
                if error is None:
                    self.audit.write("dead_letter.resolved", letter=letter, event_id=event_id)
                return
            if error is not None:
                at = self.clock().timestamp()
                new_letter = self.store.add_dead_letter(
                    event, automation, index, kind, error, at, attempts
                )
                self.audit.write(
                    "action.dead_lettered",
                    letter=new_letter,
                    event_id=event_id,
                    automation=automation,
                    action_index=index,
                )
            self.settled(event_id, automation, index, error is not None)
        except StoreError as exc:
            log.error(
                "cannot record the outcome of %s #%d for event %s: %s",
                automation,
                index,
                event_id,
                exc,
            )
