"""Ingest throughput and latency of the real daemon, journal on and off, in one run.

Starts `python -m automationd run` on a throw-away rules file (10 automations over 10 event
types; 1 % of events fire a webhook to a local receiver; audit trail on), pinned to CPU 0 when
`taskset` exists, and drives it from this process (pinned to CPU 1) with concurrent
keep-alive connections for a fixed time per round. Each scenario runs `--runs` rounds and
prints the median with min-max: events/s, p99 request latency, and journal fsyncs/s (commits:
each one fsync, shared by the requests that arrived while the previous one was on its way).

    .venv/bin/python bench/ingest.py [--seconds 5] [--runs 3] [--connections 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from common import pinned, running_daemon, running_receiver

RULES = """\
version: 1
server: {{listen: "127.0.0.1:0", max_body_bytes: 4194304, queue_size: 1000000}}
audit: {{path: audit.jsonl}}
state: {{url: "sqlite:///state.db", journal: {journal}}}
automations:
{automations}
  - name: failed-runs
    on: [flow_run_state_change]
    match: {{state: Failed}}
    actions:
      - webhook: {{url: "{url}/hook", payload: {{text: "{{message}}"}}}}
"""

OTHER = """\
  - name: other-{i}
    on: [type_{i}]
    match: {{env: prod}}
    when: "count > `10`"
    actions: [{{webhook: {{url: "{url}/other"}}}}]
"""


def event(n: int) -> dict[str, object]:
    return {
        "type": "flow_run_state_change",
        "flow_name": "nightly-etl",
        "flow_run_name": f"run-{n}",
        "flow_run_id": f"id-{n}",
        "state": "Failed" if n % 100 == 0 else "Running",
        "state_message": "",
    }


async def metric(session: aiohttp.ClientSession, url: str, name: str) -> float:
    async with session.get(f"{url}/metrics") as response:
        text = await response.text()
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


async def load(url: str, batch: int, seconds: float, connections: int) -> dict[str, float]:
    latencies: list[float] = []
    sent = 0
    deadline = time.perf_counter() + seconds
    counter = iter(range(10**12))

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal sent
        while time.perf_counter() < deadline:
            first = next(counter) * batch
            body = json.dumps(
                [event(first + i) for i in range(batch)] if batch > 1 else event(first)
            )
            started = time.perf_counter()
            async with session.post(f"{url}/events", data=body) as response:
                await response.read()
                if response.status != 202:
                    raise RuntimeError(f"{response.status}: {await response.text()}")
            latencies.append(time.perf_counter() - started)
            sent += batch

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        commits_before = await metric(session, url, "automationd_journal_commits_total")
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(connections)))
        elapsed = time.perf_counter() - started
        commits = await metric(session, url, "automationd_journal_commits_total") - commits_before
    latencies.sort()
    return {
        "rate": sent / elapsed,
        "p99": latencies[int(0.99 * (len(latencies) - 1))] * 1000,
        "fsyncs": commits / elapsed,
    }


async def scenario(
    journal: bool, batch: int, args: argparse.Namespace, receiver: str
) -> list[dict[str, float]]:
    rounds = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            rules = Path(tmp) / "rules.yaml"
            others = "".join(OTHER.format(i=i, url=receiver) for i in range(9))
            rules.write_text(
                RULES.format(automations=others, url=receiver, journal=str(journal).lower())
            )
            async with running_daemon(rules, cpu=0) as url:
                connections = args.connections if batch == 1 else 4
                rounds.append(await load(url, batch, args.seconds, connections))
    return rounds


def summary(values: list[float], fmt: str) -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


async def main(args: argparse.Namespace) -> None:
    if pinned(1):
        os.sched_setaffinity(0, {1})

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"ok": True})

    async with running_receiver(hook) as receiver:
        print(f"{args.runs} rounds of {args.seconds:g} s each; median (min-max)")
        print(f"{'scenario':<34} {'events/s':>22} {'p99 ms':>18} {'fsyncs/s':>18}")
        results = {}
        for batch in (1, 100):
            for journal in (True, False):
                rounds = await scenario(journal, batch, args, receiver)
                results[(batch, journal)] = statistics.median(r["rate"] for r in rounds)
                connections = args.connections if batch == 1 else 4
                kind = "single events" if batch == 1 else "batches of 100"
                name = f"{kind} x{connections}, journal {'on' if journal else 'off'}"
                rate = summary([r["rate"] for r in rounds], ",.0f")
                p99 = summary([r["p99"] for r in rounds], ".1f")
                fsyncs = summary([r["fsyncs"] for r in rounds], ",.0f")
                print(f"{name:<34} {rate:>22} {p99:>18} {fsyncs:>18}")
        for batch in (1, 100):
            cost = 1 - results[(batch, True)] / results[(batch, False)]
            kind = "single events" if batch == 1 else "batches of 100"
            print(f"journal cost, {kind}: {cost:.0%} of the throughput")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    asyncio.run(main(parser.parse_args()))
