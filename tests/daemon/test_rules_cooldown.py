"""GET /rules shows each automation's cooldown, through the real daemon."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.support import daemon, write_rules


async def test_get_rules_shows_each_automations_cooldown(tmp_path: Path) -> None:
    rules = write_rules(
        tmp_path,
        """\
automations:
  - name: keyed
    on: [flow_run_state_change]
    cooldown: {for: 10m, key: "{flow_id}/{state}"}
    actions: [{webhook: {url: "http://127.0.0.1:1/a"}}]
  - name: unkeyed
    on: [job_done]
    cooldown: {for: 1h30m}
    actions: [{webhook: {url: "http://127.0.0.1:1/b"}}]
  - name: none
    on: [job_done]
    actions: [{webhook: {url: "http://127.0.0.1:1/c"}}]
""",
    )
    async with daemon(rules) as proc:
        async with aiohttp.ClientSession() as session, session.get(f"{proc.url}/rules") as answer:
            assert answer.status == 200
            body = await answer.json()
        assert await proc.stop() == 0
    assert {a["name"]: a["cooldown"] for a in body["automations"]} == {
        "keyed": {"for_seconds": 600.0, "key": "{flow_id}/{state}"},
        "unkeyed": {"for_seconds": 5400.0, "key": None},
        "none": None,
    }
