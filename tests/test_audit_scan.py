"""Finding the `event.accepted` records of resumed events: from the end of the trail backwards,
only as far as needed (a real file written by AuditLog; no daemon needed for the bounds)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from automationd.audit import AuditLog

DAY = datetime(2026, 11, 27, tzinfo=UTC)


def trail_of(tmp_path: Path, days: int, per_day: int) -> AuditLog:
    """A trail with `per_day` accepted events (and their attempts) on each of `days` days;
    the ids repeat every day, as an id may be used again after the dedup window."""
    now = DAY

    def clock() -> datetime:
        return now

    trail = AuditLog(tmp_path / "audit.jsonl", fsync="never", clock=clock)
    trail.open()
    for day in range(days):
        now = DAY + timedelta(days=day)
        for n in range(per_day):
            event = f'{{"id":"e{n}","type":"job_done","pad":"{"x" * 200}"}}'
            trail.write("event.accepted", {"event": event}, event_id=f"e{n}", source="http")
            trail.write("action.attempt", event_id=f"e{n}", attempt=1, ok=False)
            trail.flush()  # one record per write: the chunks cut lines anywhere
    trail.write("event.accepted", event_id='odd "id"\\', source="http")
    with trail.path.open("a") as raw:  # a record torn and completed by hand, badly escaped
        raw.write('{"time":"2026-11-29T00:00:00Z","kind":"event.accepted","event_id":"\\x"}\n')
    trail.write("config.loaded", nested={"time": "x", "kind": "event.accepted", "event_id": "e9"})
    return trail


def test_found_from_the_end_and_only_records_recent_enough(tmp_path: Path) -> None:
    trail = trail_of(tmp_path, days=3, per_day=2_000)
    last = DAY + timedelta(days=2)
    wanted = {"e5": last, "e1999": last, "never": last, 'odd "id"\\': last}
    assert trail.recorded_acceptances(wanted) == {"e5", "e1999", 'odd "id"\\'}
    # a record older than the time given is an earlier use of the id: not this event's
    later = last + timedelta(hours=1)
    assert trail.recorded_acceptances({"e5": later, "e6": last}) == {"e6"}
    # a record nested in another (not at the start of a line) does not count
    assert trail.recorded_acceptances({"e9": last + timedelta(hours=1)}) == set()
    trail.close()


def test_the_search_is_bounded(tmp_path: Path) -> None:
    trail = trail_of(tmp_path, days=3, per_day=2_000)
    size = trail.path.stat().st_size
    # "never" is not there (the search ends at the records older than the earliest time)
    recent = DAY + timedelta(days=2)
    assert trail.recorded_acceptances({"never": recent, "e1": recent}) == {"e1"}
    # a record beyond the byte bound is not seen: its event counts as not recorded
    wanted = {"e0": DAY, "e1999": DAY}
    assert trail.recorded_acceptances(wanted, max_bytes=size // 4) == {"e1999"}
    assert trail.recorded_acceptances(wanted, max_bytes=size) == {"e0", "e1999"}
    trail.close()
