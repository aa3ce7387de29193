"""Deadlines: things that must happen by a time, armed and disarmed by key, kept across restarts.

`Deadlines` is the seam the SLA logic talks to; tests drive it with a manual clock. The real
one, `ScheduledDeadlines`, is APScheduler 3's `AsyncIOScheduler` over a job store of our own
(`DeadlineJobStore`) whose rows live in the state store. The job store keeps only (due, key)
pairs in memory and builds APScheduler `Job`s for the few that are due, so 100,000 armed
deadlines cost a few megabytes, and arming one is a single committed row.

Jobs run with `misfire_grace_time=None` and `coalesce=True`: a deadline that passed while the
daemon was down fires once when it starts. A periodic `wakeup()` makes the scheduler look
again after a wall-clock jump. A fired deadline's row is deleted only after its callback has
run, so a crash in between fires it again on start (at least once, never zero times).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from apscheduler.job import Job
from apscheduler.jobstores.base import BaseJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger

from automationd.state import StateStore

log = logging.getLogger("automationd.deadlines")

WAKEUP_SECONDS = 1.0

OnDue = Callable[[str, dict[str, object]], Awaitable[None]]
"""Called with a deadline's key and payload when it passes."""


@dataclass(frozen=True, slots=True)
class Armed:
    """One armed deadline."""

    key: str
    due: float
    payload: dict[str, object]


class Deadlines(Protocol):
    """Arm, disarm and list deadlines; when one passes, the owner's callback runs."""

    def arm(self, key: str, due: float, payload: dict[str, object]) -> None: ...

    def arm_many(self, rows: list[tuple[str, float, dict[str, object]]]) -> None: ...

    def disarm(self, key: str) -> bool:
        """Disarm; False when nothing was armed under `key`."""
        ...

    def get(self, key: str) -> Armed | None: ...

    def armed(self, prefix: str = "") -> Iterator[Armed]:
        """Every armed deadline whose key starts with `prefix`, soonest first."""
        ...


class DeadlineJobStore(BaseJobStore):  # type: ignore[misc]
    """An APScheduler job store over the `deadlines` rows of the state store.

    Deadlines are armed through `ScheduledDeadlines`, not `scheduler.add_job`; the store
    hands APScheduler a `Job` for each deadline that is due."""

    def __init__(self, fire: Callable[[str, float], Awaitable[None]]) -> None:
        super().__init__()
        self._fire = fire
        self._due: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    # --- what ScheduledDeadlines calls

    def put(self, key: str, due: float) -> bool:
        """Track a deadline; True when it is now the earliest one (the scheduler must look)."""
        earliest = self.earliest()
        self._due[key] = due
        heapq.heappush(self._heap, (due, key))
        return earliest is None or due < earliest

    def forget(self, key: str) -> bool:
        return self._due.pop(key, None) is not None

    def earliest(self) -> float | None:
        """The soonest due time, dropping heap entries that were disarmed or re-armed."""
        heap = self._heap
        while heap and self._due.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def __len__(self) -> int:
        return len(self._due)

    # --- the BaseJobStore interface APScheduler calls

    def _job(self, key: str, due: float) -> Job:
        moment = datetime.fromtimestamp(due, UTC)
        job = Job(
            self._scheduler,
            id=key,
            func=self._fire,
            args=(key, due),
            kwargs={},
            trigger=DateTrigger(run_date=moment, timezone=UTC),
            executor="default",
            name=key,
            misfire_grace_time=None,
            coalesce=True,
            max_instances=1,
            next_run_time=moment,
        )
        job._jobstore_alias = self._alias
        return job

    def lookup_job(self, job_id: str) -> Job | None:
        due = self._due.get(job_id)
        return None if due is None else self._job(job_id, due)

    def get_due_jobs(self, now: datetime) -> list[Job]:
        limit = now.timestamp()
        due: list[Job] = []
        while (earliest := self.earliest()) is not None and earliest <= limit:
            _, key = heapq.heappop(self._heap)
            del self._due[key]  # APScheduler removes it right after submitting it
            due.append(self._job(key, earliest))
        return due

    def get_next_run_time(self) -> datetime | None:
        earliest = self.earliest()
        return None if earliest is None else datetime.fromtimestamp(earliest, UTC)

    def get_all_jobs(self) -> list[Job]:
        return [self._job(key, due) for due, key in sorted((d, k) for k, d in self._due.items())]

    def add_job(self, job: Job) -> None:
        raise NotImplementedError("deadlines are armed through ScheduledDeadlines.arm()")

    def update_job(self, job: Job) -> None:
        raise NotImplementedError("deadlines are armed through ScheduledDeadlines.arm()")

    def remove_job(self, job_id: str) -> None:
        """Nothing to do: the scheduler calls this right after submitting a due job, which
        get_due_jobs already took out (the row stays until the callback has run)."""

    def remove_all_jobs(self) -> None:
        self._due.clear()
        self._heap.clear()


class ScheduledDeadlines:
    """Deadlines persisted in the state store and fired by APScheduler's AsyncIOScheduler."""

    def __init__(self, store: StateStore, on_due: OnDue) -> None:
        self._store = store
        self._on_due = on_due
        self._jobs = DeadlineJobStore(self._fire)
        self._scheduler: AsyncIOScheduler | None = None
        self._waker: asyncio.Task[None] | None = None
        self._running: set[str] = set()

    def start(self) -> None:
        """Load every armed deadline and start firing them (past ones at once)."""
        for key, due in self._store.deadline_times():
            self._jobs.put(key, due)
        scheduler = AsyncIOScheduler(
            timezone=UTC,
            jobstores={"default": self._jobs},
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
        )
        logging.getLogger("apscheduler").setLevel(logging.WARNING)  # it logs every job at INFO
        scheduler.start()
        self._scheduler = scheduler
        self._waker = asyncio.create_task(self._wake_periodically(), name="automationd-deadlines")
        log.info("%d deadlines armed", len(self._jobs))

    async def stop(self) -> None:
        if self._waker is not None:
            self._waker.cancel()
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)
            await asyncio.sleep(0)  # AsyncIOScheduler shuts down through the event loop

    async def _wake_periodically(self) -> None:
        """After a wall-clock jump the scheduler would sleep on its old timer: nudge it."""
        while True:
            await asyncio.sleep(WAKEUP_SECONDS)
            if self._scheduler is not None:
                self._scheduler.wakeup()

    def arm(self, key: str, due: float, payload: dict[str, object]) -> None:
        self._store.put_deadline(key, due, payload)
        self._track(key, due)

    def arm_many(self, rows: list[tuple[str, float, dict[str, object]]]) -> None:
        self._store.put_deadlines(rows)
        for key, due, _ in rows:
            self._track(key, due)

    def _track(self, key: str, due: float) -> None:
        if self._jobs.put(key, due) and self._scheduler is not None:
            self._scheduler.wakeup()

    def disarm(self, key: str) -> bool:
        known = (
            self._jobs.forget(key) or key in self._running or self._store.deadline(key) is not None
        )
        self._store.delete_deadline(key)
        return known

    def get(self, key: str) -> Armed | None:
        found = self._store.deadline(key)
        return None if found is None else Armed(key, found[0], found[1])

    def armed(self, prefix: str = "") -> Iterator[Armed]:
        for key, due, payload in self._store.deadlines(prefix):
            yield Armed(key, due, payload)

    def __len__(self) -> int:
        return len(self._jobs)

    async def _fire(self, key: str, due: float) -> None:
        """Run the callback of a due deadline, then delete its row (unless re-armed)."""
        found = self._store.deadline(key)
        if found is None:
            return  # disarmed after it fell due
        stored_due, payload = found
        if stored_due != due:
            self._track(key, stored_due)  # re-armed for another time meanwhile
            return
        self._running.add(key)
        try:
            await self._on_due(key, payload)
        except Exception:
            log.exception("deadline %s: its callback failed", key)
        finally:
            self._running.discard(key)
        current = self._store.deadline(key)
        if current is not None and current[0] == due:
            self._store.delete_deadline(key)
