"""Deadlines: things that must happen by a time, armed and disarmed by kind and key, kept
across restarts.

A deadline's `kind` names what owns it ("flow_sla", "agent_sla"): its owner lists and is
handed the deadlines of its kinds, and the key tells them apart within the kind. `Deadlines`
is the seam the SLA logic talks to; tests drive it with a manual clock. The real one,
`ScheduledDeadlines`, is APScheduler 3's `AsyncIOScheduler` over a job store of our own
(`DeadlineJobStore`) whose rows live in the store. The job store keeps only (due, job id)
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
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Protocol

from apscheduler.job import Job
from apscheduler.jobstores.base import BaseJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger

from automationd.store import Deadline, Store

log = logging.getLogger("automationd.deadlines")

WAKEUP_SECONDS = 1.0

OnDue = Callable[[str, str, dict[str, object]], Awaitable[None]]
"""Called with a deadline's kind, key and payload when it passes."""


class Deadlines(Protocol):
    """Arm, disarm and list deadlines; when one passes, the owner's callback runs."""

    def arm(self, kind: str, key: str, due: float, payload: dict[str, object]) -> None: ...

    def arm_many(self, deadlines: Sequence[Deadline]) -> None: ...

    def disarm(self, kind: str, key: str) -> bool:
        """Disarm; False when nothing was armed under `kind` and `key`."""
        ...

    def get(self, kind: str, key: str) -> Deadline | None: ...

    def armed(self, kind: str, prefix: str = "") -> Iterator[Deadline]:
        """Every armed deadline of `kind` whose key starts with `prefix`, soonest first."""
        ...


def job_id(kind: str, key: str) -> str:
    """The one string APScheduler knows a deadline by (a kind holds no \x1f)."""
    return f"{kind}\x1f{key}"


class DeadlineJobStore(BaseJobStore):  # type: ignore[misc]
    """An APScheduler job store over the `deadlines` rows of the store.

    Deadlines are armed through `ScheduledDeadlines`, not `scheduler.add_job`; the store
    hands APScheduler a `Job` for each deadline that is due. Jobs are known by `job_id`."""

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
    """Deadlines persisted in the store and fired by APScheduler's AsyncIOScheduler."""

    def __init__(self, store: Store, on_due: OnDue) -> None:
        self._store = store
        self._on_due = on_due
        self._jobs = DeadlineJobStore(self._fire)
        self._scheduler: AsyncIOScheduler | None = None
        self._waker: asyncio.Task[None] | None = None
        self._running: set[str] = set()

    def start(self) -> None:
        """Load every armed deadline and start firing them (past ones at once)."""
        for kind, key, due in self._store.deadline_times():
            self._jobs.put(job_id(kind, key), due)
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

    def arm(self, kind: str, key: str, due: float, payload: dict[str, object]) -> None:
        self._store.put_deadline(Deadline(kind, key, due, payload))
        self._track(job_id(kind, key), due)

    def arm_many(self, deadlines: Sequence[Deadline]) -> None:
        self._store.put_deadlines(deadlines)
        for armed in deadlines:
            self._track(job_id(armed.kind, armed.key), armed.due)

    def _track(self, job: str, due: float) -> None:
        if self._jobs.put(job, due) and self._scheduler is not None:
            self._scheduler.wakeup()

    def disarm(self, kind: str, key: str) -> bool:
        job = job_id(kind, key)
        known = (
            self._jobs.forget(job)
            or job in self._running
            or self._store.deadline(kind, key) is not None
        )
        self._store.delete_deadline(kind, key)
        return known

    def get(self, kind: str, key: str) -> Deadline | None:
        return self._store.deadline(kind, key)

    def armed(self, kind: str, prefix: str = "") -> Iterator[Deadline]:
        return self._store.deadlines(kind, prefix)

    def __len__(self) -> int:
        return len(self._jobs)

    async def _fire(self, job: str, due: float) -> None:
        """Run the callback of a due deadline, then delete its row (unless re-armed)."""
        kind, _, key = job.partition("\x1f")
        found = self._store.deadline(kind, key)
        if found is None:
            return  # disarmed after it fell due
        if found.due != due:
            self._track(job, found.due)  # re-armed for another time meanwhile
            return
        self._running.add(job)
        try:
            await self._on_due(kind, key, found.payload)
        except Exception:
            log.exception("deadline %s: its callback failed", job)
        finally:
            self._running.discard(job)
        current = self._store.deadline(kind, key)
        if current is not None and current.due == due:
            self._store.delete_deadline(kind, key)
