"""Progress without an engine: a real journal over a SQLite store in tmp_path, a real audit
file; what is resumed after a crash, what an outcome settles, and what pruning forgets."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from automationd.audit import AuditLog
from automationd.journal import Journal
from automationd.progress import Progress
from automationd.rules import Automation, StateConfig
from automationd.rules.load import parse_config
from automationd.store.sqlite import SqliteStore
from tests.support import audit_records

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
TIME = "2026-01-02T03:04:05Z"
DAY = 24 * 3600.0
RULES = b"""\
version: 1
automations:
  - name: page
    on: [job_failed]
    actions:
      - webhook: {url: "http://127.0.0.1:9/first"}
      - webhook: {url: "http://127.0.0.1:9/second"}
"""


def event(event_id: str) -> dict[str, object]:
    return {"id": event_id, "type": "job_failed"}


@dataclass
class Parts:
    """A Progress on a real store and journal, with what it started and queued again."""

    tmp_path: Path
    audit: AuditLog
    store: SqliteStore
    journal: Journal
    progress: Progress
    automations: tuple[Automation, ...]
    started: list[tuple[str, int, object, int | None]] = field(default_factory=list)
    requeued: list[object] = field(default_factory=list)

    def records(self) -> list[dict[str, object]]:
        self.audit.flush()
        return audit_records(self.audit.path)

    def held_events(self) -> int:
        """The events the store holds, counted in a backup copy."""
        copies = len(list(self.tmp_path.glob("copy-*.db")))
        return self.store.copy_to(self.tmp_path / f"copy-{copies}.db").events


def build(tmp_path: Path, clock: datetime = NOW) -> Parts:
    config = parse_config(RULES, tmp_path / "rules.yaml")
    audit = AuditLog(tmp_path / "audit.jsonl", fsync="batch", clock=lambda: clock)
    store = SqliteStore(tmp_path / "state.db")
    audit.open()
    store.open()
    journal = Journal(store, store.path, dedup_window=DAY)
    journal.open()
    started: list[tuple[str, int, object, int | None]] = []
    requeued: list[object] = []
    progress = Progress(
        audit=audit,
        store=store,
        journal=journal,
        clock=lambda: clock,
        state=StateConfig(store.path, retention=7 * DAY, dedup_window=DAY),
        automations=lambda: config.automations,
        start_action=lambda a, index, e, letter: started.append((a.name, index, e["id"], letter)),
        requeue=lambda e: requeued.append(e["id"]),
    )
    return Parts(tmp_path, audit, store, journal, progress, config.automations, started, requeued)


async def close(parts: Parts) -> None:
    await parts.journal.close()
    parts.store.close()
    parts.audit.close()


@pytest.fixture
async def crashed(tmp_path: Path) -> Path:
    """A state left by a daemon stopped mid-work: `matched` fired `page`, whose first action
    succeeded and whose second had not finished; `unmatched` was never matched; `done`
    finished. None has an event.accepted record in the audit trail."""
    parts = build(tmp_path)
    accepted = NOW.timestamp()
    rows = [(i, json.dumps(event(i))) for i in ("matched", "unmatched", "done")]
    assert await parts.journal.append(rows, accepted) == [True, True, True]
    parts.progress.matched("matched", ["page"], 2)
    parts.progress.settled("matched", "page", 0, False)
    parts.progress.matched("done", [], 0)
    await close(parts)
    return tmp_path


async def test_resume_acts_again_on_what_a_crash_left_unfinished(crashed: Path) -> None:
    parts = build(crashed)
    try:
        parts.progress.resume()
        assert parts.started == [("page", 1, "matched", None)]
        assert parts.requeued == ["unmatched"]

        def resumed_acceptance(event_id: str) -> dict[str, object]:
            return {
                "time": TIME,
                "kind": "event.accepted",
                "event": event(event_id),
                "event_id": event_id,
                "event_type": "job_failed",
                "resumed": True,
            }

        assert parts.records() == [
            resumed_acceptance("matched"),
            {"time": TIME, "kind": "event.resumed", "event_id": "matched", "matched": ["page"]},
            resumed_acceptance("unmatched"),
            {"time": TIME, "kind": "event.resumed", "event_id": "unmatched", "matched": None},
        ]
        # the resumed action's outcome finishes its event
        parts.progress.settled("matched", "page", 1, True)
    finally:
        await close(parts)
    parts = build(crashed)
    try:
        assert [u.event["id"] for u in parts.store.unfinished()] == ["unmatched"]
    finally:
        await close(parts)


async def test_resume_skips_the_actions_of_an_automation_gone_from_the_rules(
    crashed: Path,
) -> None:
    parts = build(crashed)
    parts.progress.automations = lambda: ()
    try:
        parts.progress.resume()
        assert parts.started == []
        assert parts.requeued == ["unmatched"]
    finally:
        await close(parts)
    parts = build(crashed)
    try:  # nothing is left to run for it: it is done
        assert [u.event["id"] for u in parts.store.unfinished()] == ["unmatched"]
    finally:
        await close(parts)


async def test_prune_forgets_finished_events_past_their_retention(crashed: Path) -> None:
    parts = build(crashed, clock=NOW + timedelta(days=7, seconds=1))
    try:
        parts.store.set_cooldown("page", "k", NOW.timestamp() + 60)
        assert parts.held_events() == 3
        pruning = asyncio.create_task(parts.progress.prune_periodically())
        await asyncio.sleep(0.05)
        pruning.cancel()
        # "done" is gone; the unfinished stay, whatever their age
        assert parts.held_events() == 2
        assert parts.store.cooldown_until("page", "k") is None
    finally:
        await close(parts)


async def test_prune_keeps_finished_events_within_their_retention(crashed: Path) -> None:
    parts = build(crashed, clock=NOW + timedelta(days=7))
    try:
        pruning = asyncio.create_task(parts.progress.prune_periodically())
        await asyncio.sleep(0.05)
        pruning.cancel()
        assert parts.held_events() == 3
    finally:
        await close(parts)


async def test_without_a_journal_nothing_is_kept_per_event(tmp_path: Path) -> None:
    """With `state: {journal: false}` no progress is recorded, so nothing may be counted per
    event either: a count kept by `matched` and never taken down by `settled` would grow with
    every event that fired an action, for the life of the daemon."""
    parts = build(tmp_path)
    progress = Progress(
        audit=parts.audit,
        store=parts.store,
        journal=None,
        clock=lambda: NOW,
        state=StateConfig(parts.store.path, retention=7 * DAY, dedup_window=DAY),
        automations=lambda: parts.automations,
        start_action=lambda a, index, e, letter: None,
        requeue=lambda e: None,
    )
    for number in range(100):
        progress.matched(f"e{number}", ["page"], 2)
        progress.settled(f"e{number}", "page", 0, failed=False)
        progress.settled(f"e{number}", "page", 1, failed=True)
    assert progress._outstanding == {}  # private: what the daemon would keep in memory
    await close(parts)
