"""SLA deadlines at scale: arm 100,000, restart, disarm them all. Prints a table.

Each arm and disarm is its own committed write to the SQLite state store (WAL), as in the
daemon. Every run is a fresh process, so its RSS (resident memory of the whole process,
interpreter and libraries included) is its own. Medians of the runs, with min-max.

    .venv/bin/python bench/deadlines.py [--count 100000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

from automationd.audit import AuditLog
from automationd.deadlines import ScheduledDeadlines
from automationd.events import EventTypeResolver, normalise
from automationd.rules import Config
from automationd.rules.load import parse_config
from automationd.store.sqlite import SqliteStore
from automationd.triggers import Triggers
from automationd.triggers.flow_sla import FLOW_SLA, flow_key

RULES = textwrap.dedent("""\
    version: 1
    automations: []
    flow_slas:
      - {id: start, kind: SCHEDULED_NOT_STARTED, duration: 1h, match: {flow_name: etl}}
""")


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def nothing(kind: str, key: str, payload: dict[str, object]) -> None:
    return None


async def drop(event: dict[str, object]) -> None:
    return None


def now() -> datetime:
    return datetime.now(UTC)


Parts = tuple[SqliteStore, AuditLog, ScheduledDeadlines, Triggers]


def tracker_for(directory: Path, config: Config) -> Parts:
    store = SqliteStore(directory / "state.db")
    store.open()
    audit = AuditLog(directory / "audit.jsonl", fsync="never", clock=now)
    audit.open()
    deadlines = ScheduledDeadlines(store, nothing)
    return store, audit, deadlines, Triggers(deadlines, store, audit, drop, now)


async def child(directory: Path, count: int) -> dict[str, float]:
    config = parse_config(RULES.encode(), directory / "rules.yaml")
    store, audit, deadlines, tracker = tracker_for(directory, config)
    tracker.configure(config)
    deadlines.start()
    anchor = time.time()
    attributes = {"flow_name": "etl", "flow_run_name": "brave-otter", "state": "Scheduled"}
    started = time.perf_counter()
    for i in range(count):
        run_id = f"run-{i:06d}"
        payload: dict[str, object] = {
            "sla": "start",
            "kind": "SCHEDULED_NOT_STARTED",
            "flow_run_id": run_id,
            "anchor": anchor,
            "duration": 3600.0,
            "attributes": {**attributes, "flow_run_id": run_id},
        }
        deadlines.arm(FLOW_SLA, flow_key("start", run_id), anchor + 3600, payload)
    arms = count / (time.perf_counter() - started)
    rss = rss_mib()
    await deadlines.stop()
    audit.close()
    store.close()

    # a restart: open the store, reconcile with the rules, load the schedule
    started = time.perf_counter()
    store, audit, deadlines, tracker = tracker_for(directory, config)
    tracker.configure(config)
    deadlines.start()
    restore = time.perf_counter() - started
    restored = len(deadlines)

    started = time.perf_counter()
    for i in range(count):
        deadlines.disarm(FLOW_SLA, flow_key("start", f"run-{i:06d}"))
    disarms = count / (time.perf_counter() - started)
    await deadlines.stop()
    audit.close()
    store.close()
    if restored != count:
        raise RuntimeError(f"restored {restored} of {count} deadlines")

    # arming through the SLA logic: a Scheduled event per run, matched, armed, audited
    (directory / "state.db").unlink()
    store, audit, deadlines, tracker = tracker_for(directory, config)
    tracker.configure(config)
    deadlines.start()
    resolver = EventTypeResolver()
    events = [
        normalise(
            {
                "type": "flow_run_state_change",
                "flow_name": "etl",
                "flow_run_id": f"r{i}",
                "state": "Scheduled",
            },
            resolver,
            now(),
        )
        for i in range(count // 4)
    ]
    started = time.perf_counter()
    for event in events:
        tracker.observe(event)
    via_events = len(events) / (time.perf_counter() - started)
    await deadlines.stop()
    audit.close()
    store.close()
    return {"arms": arms, "disarms": disarms, "rss": rss, "restore": restore, "events": via_events}


def summary(values: list[float], unit: str, fmt: str = ",.0f") -> str:
    return f"{statistics.median(values):{fmt}} {unit} ({min(values):{fmt}} - {max(values):{fmt}})"


def main(count: int, runs: int) -> None:
    results = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run(
                [sys.executable, __file__, "--child", tmp, "--count", str(count)],
                check=True,
                capture_output=True,
                text=True,
                timeout=600,
            ).stdout
            results.append(json.loads(out))
    print(f"{count:,} deadlines, {runs} runs (each a fresh process): median (min - max)")
    print(f"  arm, each committed     {summary([r['arms'] for r in results], 'arms/s')}")
    print(f"  RSS with all armed      {summary([r['rss'] for r in results], 'MiB', '.0f')}")
    print(f"  restart: reconcile+load {summary([r['restore'] for r in results], 's', '.2f')}")
    print(f"  disarm, each committed  {summary([r['disarms'] for r in results], 'disarms/s')}")
    via_events = summary([r["events"] for r in results], "events/s")
    print(f"  arm via SLA events      {via_events} ({count // 4:,} events)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(child(args.child, args.count))))
    else:
        main(args.count, args.runs)
