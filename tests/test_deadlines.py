"""The APScheduler-backed deadlines with real time and sub-second durations."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from automationd.deadlines import ScheduledDeadlines
from automationd.state import StateStore

Fired = list[tuple[str, dict[str, object]]]


@asynccontextmanager
async def scheduled(path: Path) -> AsyncIterator[tuple[ScheduledDeadlines, Fired, asyncio.Event]]:
    store = StateStore(path)
    store.open()
    fired: Fired = []
    arrived = asyncio.Event()

    async def on_due(key: str, payload: dict[str, object]) -> None:
        fired.append((key, payload))
        arrived.set()

    deadlines = ScheduledDeadlines(store, on_due)
    deadlines.start()
    try:
        yield deadlines, fired, arrived
    finally:
        await deadlines.stop()
        store.close()


async def until(condition: Callable[[], bool], within: float = 15.0) -> None:
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - polling a plain list the scheduler fills
            await asyncio.sleep(0.01)


async def test_a_deadline_fires_once_when_due_and_its_row_goes(tmp_path: Path) -> None:
    """A deadline fires when due, once, and its row is deleted after its callback ran.
    "Once" is shown by a later deadline firing after it: the scheduler takes due deadlines
    soonest first, so a second firing of k1 would come before that one's."""
    async with scheduled(tmp_path / "s.db") as (deadlines, fired, arrived):
        armed_at = time.time()
        deadlines.arm("k1", armed_at + 0.2, {"n": 1})
        assert deadlines.get("k1") is not None
        assert fired == []  # no await since arming: the scheduler has not had a turn
        await asyncio.wait_for(arrived.wait(), 5)
        assert fired == [("k1", {"n": 1})]
        assert time.time() >= armed_at + 0.2
        await until(lambda: deadlines.get("k1") is None)
        deadlines.arm("after", time.time() + 0.2, {})
        await until(lambda: len(fired) >= 2)
        assert fired == [("k1", {"n": 1}), ("after", {})]


async def test_disarmed_and_rearmed_deadlines(tmp_path: Path) -> None:
    async with scheduled(tmp_path / "s.db") as (deadlines, fired, _):
        now = time.time()
        deadlines.arm("gone", now + 0.1, {})
        deadlines.arm("moved", now + 0.1, {"v": 1})
        deadlines.arm("moved", now + 0.4, {"v": 2})
        assert deadlines.disarm("gone")
        assert not deadlines.disarm("never-armed")
        await until(lambda: len(fired) == 1)
        assert fired == [("moved", {"v": 2})]
        assert time.time() >= now + 0.4
        assert [a.key for a in deadlines.armed()] == []


async def test_deadlines_survive_a_restart_and_missed_ones_fire_at_start(tmp_path: Path) -> None:
    """Armed deadlines outlive the scheduler; one that fell due while none ran fires when
    the next one starts, the others stay armed. "missed" is due 3 s after arming, so that
    stopping (a few SQLite commits and a loop turn) surely comes first on a loaded
    machine."""
    path = tmp_path / "s.db"
    async with scheduled(path) as (deadlines, fired, _):
        now = time.time()
        deadlines.arm("missed", now + 3, {"x": 1})
        deadlines.arm("later", now + 60, {"x": 2})
    assert fired == []  # stopped before either was due
    # the deadline passes while nothing runs: a wait for the clock, not for the scheduler
    await asyncio.sleep(max(0.0, now + 3 - time.time()) + 0.1)
    async with scheduled(path) as (deadlines, fired, arrived):
        await asyncio.wait_for(arrived.wait(), 5)
        assert fired == [("missed", {"x": 1})]
        assert [a.key for a in deadlines.armed()] == ["later"]
        assert len(deadlines) == 1


async def test_many_due_at_once_all_fire(tmp_path: Path) -> None:
    async with scheduled(tmp_path / "s.db") as (deadlines, fired, _):
        due = time.time() + 0.1
        deadlines.arm_many([(f"k{i}", due, {"i": i}) for i in range(200)])
        await until(lambda: len(fired) == 200)
        assert sorted(str(k) for k, _ in fired) == sorted(f"k{i}" for i in range(200))
