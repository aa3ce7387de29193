"""The APScheduler-backed deadlines with real time and sub-second durations."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

from automationd.deadlines import ScheduledDeadlines
from automationd.store import Deadline
from automationd.store.sqlite import SqliteStore

Fired = list[tuple[str, dict[str, object]]]
KIND = "test"


class OneKind:
    """The scheduler's deadlines of one kind, armed and read by key alone: what the owner of
    a kind sees (most tests here are about the scheduler, not about kinds)."""

    def __init__(self, deadlines: ScheduledDeadlines) -> None:
        self.deadlines = deadlines

    def arm(self, key: str, due: float, payload: dict[str, object]) -> None:
        self.deadlines.arm(KIND, key, due, payload)

    def arm_many(self, rows: list[tuple[str, float, dict[str, object]]]) -> None:
        self.deadlines.arm_many([Deadline(KIND, key, due, payload) for key, due, payload in rows])

    def disarm(self, key: str) -> bool:
        return self.deadlines.disarm(KIND, key)

    def get(self, key: str) -> Deadline | None:
        return self.deadlines.get(KIND, key)

    def armed(self) -> Iterator[Deadline]:
        return self.deadlines.armed(KIND)

    def __len__(self) -> int:
        return len(self.deadlines)


@asynccontextmanager
async def scheduled(path: Path) -> AsyncIterator[tuple[OneKind, Fired, asyncio.Event]]:
    store = SqliteStore(path)
    store.open()
    fired: Fired = []
    arrived = asyncio.Event()

    async def on_due(kind: str, key: str, payload: dict[str, object]) -> None:
        fired.append((key, payload) if kind == KIND else (f"{kind}?{key}", payload))
        arrived.set()

    deadlines = ScheduledDeadlines(store, on_due)
    deadlines.start()
    try:
        yield OneKind(deadlines), fired, arrived
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


async def test_a_key_names_a_deadline_within_its_kind(tmp_path: Path) -> None:
    """The same key under two kinds is two deadlines: each is listed, disarmed and fired
    under its own kind, and its owner is told the kind."""
    store = SqliteStore(tmp_path / "s.db")
    store.open()
    fired: list[tuple[str, str, dict[str, object]]] = []

    async def on_due(kind: str, key: str, payload: dict[str, object]) -> None:
        fired.append((kind, key, payload))

    deadlines = ScheduledDeadlines(store, on_due)
    deadlines.start()
    try:
        now = time.time()
        deadlines.arm("flow_sla", "k", now + 0.2, {"of": "flow"})
        deadlines.arm("agent_sla", "k", now + 0.4, {"of": "agent"})
        deadlines.arm("agent_sla", "gone", now + 0.1, {})
        assert [(a.kind, a.key, a.payload) for a in deadlines.armed("flow_sla")] == [
            ("flow_sla", "k", {"of": "flow"})
        ]
        assert [a.key for a in deadlines.armed("agent_sla")] == ["gone", "k"]
        assert deadlines.disarm("agent_sla", "gone")
        assert not deadlines.disarm("flow_sla", "gone")
        assert len(deadlines) == 2
        await until(lambda: len(fired) == 2)
        assert fired == [("flow_sla", "k", {"of": "flow"}), ("agent_sla", "k", {"of": "agent"})]
        await until(lambda: deadlines.get("agent_sla", "k") is None)
        assert list(deadlines.armed("flow_sla")) == []
    finally:
        await deadlines.stop()
        store.close()
