"""Reload latency: from the rename of a new rules file to the new rules deciding an event.

The daemon runs on rules whose one automation posts to /v0. Each round renames a new file
over the rules (as editors save) whose automation posts to /v<n>, while probe events are sent
every 10 ms; the latency of a round is the send time of the first probe that reached /v<n>,
minus the time of the rename. Prints p50, p90, p99 and max over the rounds.

    .venv/bin/python bench/reload.py [--rounds 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from common import running_daemon, running_receiver

RULES = """\
version: 1
server: {{listen: "127.0.0.1:0"}}
automations:
  - name: probe
    on: [probe]
    actions: [{{webhook: {{url: "{url}/v{n}", payload: {{sent: "{{sent}}"}}}}}}]
"""


async def main(rounds: int) -> None:
    arrivals: dict[str, list[float]] = {}

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        arrivals.setdefault(request.path, []).append(float(body["sent"]))
        return web.json_response({"ok": True})

    async with running_receiver(hook) as receiver:
        latencies: list[float] = []
        with tempfile.TemporaryDirectory() as tmp:
            rules = Path(tmp) / "rules.yaml"
            rules.write_text(RULES.format(url=receiver, n=0))
            async with running_daemon(rules) as url, aiohttp.ClientSession() as session:
                for n in range(1, rounds + 1):
                    new = Path(tmp) / ".rules.yaml.new"
                    new.write_text(RULES.format(url=receiver, n=n))
                    renamed = time.time()
                    os.replace(new, rules)
                    path = f"/v{n}"
                    async with asyncio.timeout(10):
                        while path not in arrivals:
                            probe = {"type": "probe", "sent": str(time.time())}
                            async with session.post(f"{url}/events", json=probe) as answer:
                                await answer.read()
                            await asyncio.sleep(0.01)
                    latencies.append(min(arrivals[path]) - renamed)
                    await asyncio.sleep(0.1)
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))] * 1000

    print(f"reload latency over {rounds} saves (rename -> first event decided by the new rules):")
    worst = ordered[-1] * 1000
    figures = f"p50 {pct(0.5):.0f} ms  p90 {pct(0.9):.0f} ms  p99 {pct(0.99):.0f} ms"
    print(f"  {figures}  max {worst:.0f} ms")
    print(f"  mean {statistics.mean(latencies) * 1000:.0f} ms (probes every 10 ms)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=50)
    asyncio.run(main(parser.parse_args().rounds))
