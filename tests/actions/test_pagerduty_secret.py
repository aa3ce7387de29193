"""PagerDuty's routing key as a secret (`routing_key_secret`), through the real daemon: sent
as `routing_key`, never in the audit trail, the log, GET /rules or `automationd test`."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from tests.standins import PagerDuty, play
from tests.support import audit_records, daemon, receiver, run_cli, write_rules

ROUTING_KEY = "R0UTINGkeyVALUE0123456789abcdefg"
"""32 characters, as PagerDuty's integration keys are (its stand-in refuses any other)."""


async def test_the_routing_key_secret_is_sent_and_shown_nowhere(tmp_path: Path) -> None:
    """The secret's value goes to PagerDuty as `routing_key`, in an event the PagerDuty
    stand-in checks, and is in none of the audit, the log, GET /rules, /explain or `test`."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "pagerduty").write_text(ROUTING_KEY + "\n")
    async with receiver() as recv:
        pagerduty = play(recv, PagerDuty())
        rules = write_rules(
            tmp_path,
            f"""\
secrets: {{pd-routing: {{credential: pagerduty}}}}
endpoints: {{pagerduty: "{recv.url}"}}
automations:
  - name: page
    on: [flow_run_state_change]
    actions: [{{pagerduty: {{routing_key_secret: pd-routing, severity: critical}}}}]
""",
        )
        event = {"type": "flow_run_state_change", "flow_name": "etl", "state": "Failed"}
        env = {"CREDENTIALS_DIRECTORY": str(credentials)}
        async with daemon(rules, env=env) as proc:
            status, _ = await proc.post(event)
            assert status == 202
            (request,) = await recv.wait_for(1)
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{proc.url}/rules") as response,
            ):
                listing = await response.text()
            async with (
                aiohttp.ClientSession() as session,
                session.post(f"{proc.url}/explain", json=event) as response,
            ):
                explained = await response.text()
            assert await proc.stop() == 0
    assert pagerduty.malformed == []
    assert request.path == "/v2/enqueue"
    assert isinstance(request.body, dict)
    assert request.body["routing_key"] == ROUTING_KEY
    assert request.body["event_action"] == "trigger"
    assert request.body["payload"]["severity"] == "critical"
    records = audit_records(tmp_path / "audit.jsonl")
    assert any(r["kind"] == "action.succeeded" and r["action"] == "pagerduty" for r in records), (
        records
    )
    assert '"pd-routing"' in listing
    assert "******** (secret 'pd-routing')" in explained
    trail = (tmp_path / "audit.jsonl").read_text()
    log = "\n".join(proc.log)
    for where in (trail, log, listing, explained):
        assert ROUTING_KEY not in where
        assert "VALUE" not in where

    code, out, err = await run_cli(
        "test",
        str(rules),
        "-",
        "--json",
        stdin=json.dumps(event).encode(),
        env={"PATH": "", "CREDENTIALS_DIRECTORY": str(credentials)},
    )
    assert code == 0, err
    assert "******** (secret 'pd-routing')" in out
    assert ROUTING_KEY not in out + err
