"""Bounds per destination (a host, a service), so a slow, hanging or dead one can take
neither memory nor the other destinations' turns.

Every run of an action is *pending* at its destination from when it is admitted until its
outcome: waiting for one of the destination's slots, in an attempt, or backing off. A
destination admits at most `max_pending` runs; beyond that a new run is refused at once
(the runner dead-letters it), so what waits behind a dead destination stays bounded.
At most `concurrency` attempts per destination are in flight; the rest wait their turn in
order of arrival.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("automationd.destinations")


@dataclass
class _Destination:
    slots: asyncio.Semaphore
    concurrency: int
    pending: dict[int, float] = field(default_factory=dict)
    """Runs admitted and not finished (token -> when admitted), oldest first."""
    waiting: int = 0
    """Runs waiting for a slot."""
    full: bool = False
    """Whether the last admission was refused (logged once per episode, not per action)."""


class Destinations:
    """Pending runs and attempt slots of every destination."""

    def __init__(
        self,
        on_change: Callable[[str, int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_change = on_change or (lambda _destination, _pending: None)
        self._clock = clock
        self._tokens = itertools.count()
        self._destinations: dict[str, _Destination] = {}

    def _get(self, name: str, concurrency: int) -> _Destination:
        destination = self._destinations.get(name)
        if destination is None or (
            destination.concurrency != concurrency and not destination.pending
        ):
            destination = _Destination(asyncio.Semaphore(concurrency), concurrency)
            self._destinations[name] = destination
        return destination

    def admit(self, name: str, *, max_pending: int, concurrency: int) -> int | None:
        """A token for one run at `name`, or None when `max_pending` runs are pending there
        already (the backlog is full)."""
        destination = self._get(name, concurrency)
        if len(destination.pending) >= max_pending:
            if not destination.full:
                destination.full = True
                log.warning(
                    "destination %s: backlog full (%d actions pending); new actions are "
                    "dead-lettered until it drains",
                    name,
                    len(destination.pending),
                )
            return None
        if destination.full:
            destination.full = False
            log.info("destination %s: taking actions again", name)
        token = next(self._tokens)
        destination.pending[token] = self._clock()
        self._on_change(name, len(destination.pending))
        return token

    def finish(self, name: str, token: int) -> None:
        """The run of `token` reached its outcome."""
        destination = self._destinations[name]
        del destination.pending[token]
        self._on_change(name, len(destination.pending))

    async def slot(self, name: str) -> None:
        """Wait for a free attempt slot at `name` (in order of arrival); pair with `free`."""
        destination = self._destinations[name]
        destination.waiting += 1
        try:
            await destination.slots.acquire()
        finally:
            destination.waiting -= 1

    def free(self, name: str) -> None:
        """Give back a slot taken with `slot`."""
        self._destinations[name].slots.release()

    def pending(self, name: str) -> int:
        """Runs pending at `name`."""
        destination = self._destinations.get(name)
        return 0 if destination is None else len(destination.pending)

    def backing_up(self, max_pending: int) -> list[dict[str, object]]:
        """Destinations with runs waiting for a slot (every slot busy) or a full backlog
        (whose runs may all be backing off), most pending first: what GET /readyz names as
        backing up."""
        now = self._clock()
        backed_up = sorted(
            (
                (name, d)
                for name, d in self._destinations.items()
                if d.pending and (d.waiting or len(d.pending) >= max_pending)
            ),
            key=lambda item: -len(item[1].pending),
        )
        return [
            {
                "destination": name,
                "pending": len(destination.pending),
                "waiting_for_a_slot": destination.waiting,
                "max_pending": max_pending,
                "full": len(destination.pending) >= max_pending,
                "oldest_pending_s": round(now - next(iter(destination.pending.values())), 3),
            }
            for name, destination in backed_up
        ]
