"""Ingest throughput of the real daemon: events/s for single events and batches of 100.

Starts `python -m automationd run` on a throw-away rules file (10 automations, one of which
matches 1 % of events and posts a webhook to a local receiver; audit trail on), then posts
events from one client connection for a fixed time. Prints a table; changes nothing.

    .venv/bin/python bench/ingest.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

RULES = """\
version: 1
server: {{listen: "127.0.0.1:0", max_body_bytes: 4194304}}
audit: {{path: audit.jsonl}}
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
    state = "Failed" if n % 100 == 0 else "Running"
    return {
        "type": "flow_run_state_change",
        "flow_name": "nightly-etl",
        "flow_run_name": f"run-{n}",
        "flow_run_id": f"id-{n}",
        "state": state,
        "state_message": "",
    }


async def post_for(session: aiohttp.ClientSession, url: str, batch: int, seconds: float) -> float:
    sent, n = 0, 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        body = json.dumps([event(n + i) for i in range(batch)] if batch > 1 else event(n))
        async with session.post(f"{url}/events", data=body) as response:
            if response.status != 202:
                raise RuntimeError(f"{response.status}: {await response.text()}")
            await response.read()
        n += batch
        sent += batch
    return sent / (time.perf_counter() - started)


async def main(seconds: float) -> None:
    hooks = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal hooks
        await request.read()
        hooks += 1
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/{tail:.*}", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    receiver_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "rules.yaml"
        others = "".join(OTHER.format(i=i, url=receiver_url) for i in range(9))
        rules.write_text(RULES.format(automations=others, url=receiver_url))
        daemon = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "automationd",
            "run",
            "--config",
            str(rules),
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ},
        )
        assert daemon.stderr is not None
        url = ""
        while not url:
            line = (await asyncio.wait_for(daemon.stderr.readline(), 20)).decode()
            if not line:
                raise RuntimeError("the daemon did not start")
            if match := re.search(r"listening on (http://\S+)", line):
                url = match.group(1)
        drain = asyncio.create_task(daemon.stderr.read())
        try:
            async with aiohttp.ClientSession() as session:
                rows = []
                for batch in (1, 100):
                    rate = await post_for(session, url, batch, seconds)
                    rows.append((batch, rate))
        finally:
            daemon.terminate()
            await daemon.wait()
            await drain
        audit_lines = sum(1 for _ in (Path(tmp) / "audit.jsonl").open())
    await runner.cleanup()
    print(f"{'events per request':>20} {'events/s':>10}")
    for batch, rate in rows:
        print(f"{batch:>20} {rate:>10,.0f}")
    print(f"webhooks received: {hooks}; audit lines written: {audit_lines}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    asyncio.run(main(parser.parse_args().seconds))
