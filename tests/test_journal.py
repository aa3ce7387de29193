"""The journal in-process, on real files: what the state store holds after progress arrives
before the first database write (all of it within FLUSH_SECONDS, as under load)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from automationd.journal import Journal
from automationd.state import StateStore


def body(event_id: str) -> str:
    return json.dumps({"id": event_id, "type": "job_done"}, separators=(",", ":"))


async def test_progress_before_the_first_write_lands_in_order(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    store.open()
    journal = Journal(store.path, dedup_window=3600)
    journal.open()
    ids = ["fired", "quiet", "pending"]
    at = time.time()
    assert await journal.append([(i, body(i)) for i in ids], at) == [True] * 3
    journal.set_matched("fired", ["forward"], done=False)  # an automation fired...
    journal.set_outcome("fired", "forward", 0, "succeeded")
    journal.set_done("fired")  # ...and its action finished
    journal.set_matched("quiet", [], done=True)  # nothing fired
    journal.set_matched("pending", ["forward"], done=False)  # its action still runs
    assert await journal.append([("quiet", body("quiet"))], time.time()) == [False]
    await journal.close()  # writes what waits, in one transaction

    rows = store.db.execute("SELECT id, done, body, matched FROM events ORDER BY id").fetchall()
    assert rows == [
        ("fired", 1, body("fired"), '["forward"]'),
        ("pending", 0, body("pending"), '["forward"]'),
        ("quiet", 1, "", None),  # finished before it was written: its id is enough
    ]
    ((event, matched, finished, accepted),) = store.unfinished()
    assert (event, matched, finished) == (json.loads(body("pending")), ["forward"], set())
    assert accepted == at
    assert not list((tmp_path / "state.db-events").glob("*.log"))  # synced, segments gone
    store.close()
