"""Progress: the work accepted events still owe, kept in the journal so a crash loses none.

It counts each event's outstanding actions and tells the journal which automations fired,
each action's outcome and when an event is done; after a restart it resumes what the journal
says was accepted and not finished; it forgets finished events past their retention, and
lets an operator retry or drop dead letters.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from automationd import jsontext
from automationd.audit import AuditLog
from automationd.journal import Journal
from automationd.rules import Automation, StateConfig
from automationd.store import LetterFilter, Store, StoreError, Unfinished

log = logging.getLogger("automationd.engine")
"""The engine's logger: these lines were the engine's, and keep their logger name."""

DROP_BATCH = 5000
"""Dead letters dropped in one transaction."""
PRUNE_SECONDS = 600.0


@dataclass(frozen=True, slots=True)
class LetterRetry:
    """What asking to retry a known dead letter did: its action runs again, or, when its
    automation or action is gone from the rules, not (`refused` says why)."""

    refused: str | None = None


StartAction = Callable[[Automation, int, dict[str, object], "int | None"], None]
"""Starts action `index` of an automation for an event, retrying dead letter `letter` (or
None), without waiting for it."""


class Progress:
    """What each accepted event still owes, from its matching to its last action's outcome."""

    def __init__(
        self,
        *,
        audit: AuditLog,
        store: Store,
        journal: Journal | None,
        clock: Callable[[], datetime],
        state: StateConfig,
        automations: Callable[[], Sequence[Automation]],
        start_action: StartAction,
        requeue: Callable[[dict[str, object]], None],
    ) -> None:
        self.audit = audit
        self.store = store
        self.journal = journal
        self.clock = clock
        self.state = state
        self.automations = automations
        """The live rules' automations."""
        self.start_action = start_action
        self.requeue = requeue
        """Queues a resumed event that was never matched, for the matcher."""
        self._outstanding: dict[str, int] = {}

    def matched(self, event_id: str, fired: list[str], pending: int) -> None:
        """The automations an event fired and how many actions they started."""
        if self.journal is None:
            return  # nothing to record, so nothing to count down either
        if pending:
            self._outstanding[event_id] = pending
        self.journal.set_matched(event_id, fired, done=pending == 0)

    def settled(self, event_id: str, automation: str, index: int, failed: bool) -> None:
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

    def resume(self) -> None:
        """After a restart, finish what the journal says was accepted and not finished.

        An event whose `event.accepted` record never reached the audit file (it waited in
        memory when the daemon was killed) gets it now, marked `resumed`."""
        if self.journal is None:
            return
        unfinished = list(self.store.unfinished())
        recorded = self._recorded(unfinished)
        automations = {a.name: a for a in self.automations()}
        for event, matched, finished, _ in unfinished:
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
                self.requeue(event)
            else:
                self._resume_actions(self.journal, automations, event, matched, finished)
        if unfinished:
            log.info("resumed %d events whose actions had not finished", len(unfinished))

    def _recorded(self, unfinished: list[Unfinished]) -> set[str]:
        """The ids of the unfinished events whose `event.accepted` record is in the trail."""
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
        return recorded

    def _resume_actions(
        self,
        journal: Journal,
        automations: Mapping[str, Automation],
        event: dict[str, object],
        matched: Sequence[str],
        finished: set[tuple[str, int]],
    ) -> None:
        """Start the actions of a matched event that have no outcome yet (`automations`: the
        live rules' automations by name)."""
        pending = 0
        for name in matched:
            automation = automations.get(name)
            if automation is None:
                log.warning(
                    "event %s: automation %s is gone; its actions are skipped", event["id"], name
                )
                continue
            for index in range(len(automation.actions)):
                if (name, index) not in finished:
                    pending += 1
                    self.start_action(automation, index, event, None)
        if pending:
            self._outstanding[str(event["id"])] = pending
        else:
            journal.set_done(str(event["id"]))

    async def prune_periodically(self) -> None:
        """Forget finished events older than the retention (and the dedup window)."""
        state = self.state
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
        automation = next((a for a in self.automations() if a.name == name), None)
        if automation is None or index >= len(automation.actions):
            return LetterRetry(f"automation {name} (action {index}) is no longer in the rules")
        self.audit.write(
            "dead_letter.retried",
            letter=letter_id,
            event_id=event["id"],
            automation=name,
            action_index=index,
        )
        self.start_action(automation, index, event, letter_id)
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
