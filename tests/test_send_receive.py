"""`automationd send` and `automationd receive` as a user runs them, against real processes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from tests.support import (
    LISTENING,
    audit_records,
    daemon,
    run_cli,
    start_automationd,
    until,
    write_rules,
)


async def test_send_keeps_text_as_text_and_takes_raw_json_after_colon_equals(
    tmp_path: Path,
) -> None:
    """HTTPie's convention: `k=v` is always a string, `k:=json` is raw JSON."""
    rules = write_rules(tmp_path, "automations: []\n")
    async with daemon(rules) as proc:
        code, out, err = await run_cli(
            "send",
            "deploy_finished",
            "version=1.10",
            "build=007",
            "flag=true",
            "empty=",
            "count:=3",
            "ratio:=1.10",
            "ok:=false",
            "nothing:=null",
            'tags:=["a", "b"]',
            'labels:={"env": "prod"}',
            "--url",
            proc.url,
        )
        assert code == 0, err
        (deploy_id,) = json.loads(out)["accepted"]
        # a built-in attribute that must be text, given as digits: accepted as text
        code, out, err = await run_cli(
            "send",
            "flow_run_state_change",
            "flow_run_id=123",
            "flow_name=etl",
            "state=Failed",
            "--url",
            proc.url,
        )
        assert code == 0, err
        (run_id,) = json.loads(out)["accepted"]

        def accepted() -> dict[str, dict[str, object]]:
            return {
                str(r["event_id"]): r["event"]  # type: ignore[misc]
                for r in audit_records(tmp_path / "audit.jsonl")
                if r["kind"] == "event.accepted"
            }

        async def both() -> bool:
            return {deploy_id, run_id} <= accepted().keys()

        await until(both, within=10)
        assert await proc.stop() == 0
    events = accepted()
    deploy = events[deploy_id]
    assert (deploy["version"], deploy["build"], deploy["flag"], deploy["empty"]) == (
        "1.10",
        "007",
        "true",
        "",
    )
    assert (deploy["count"], deploy["ratio"], deploy["ok"], deploy["nothing"]) == (
        3,
        1.1,
        False,
        None,
    )
    assert (deploy["tags"], deploy["labels"]) == (["a", "b"], {"env": "prod"})
    assert events[run_id]["flow_run_id"] == "123"


async def test_send_names_the_field_whose_raw_json_is_malformed() -> None:
    nowhere = "http://127.0.0.1:9"  # never reached: the command stops before posting
    for field, shown in (
        ("count:=1.2.3", "count"),
        ("tags:=[a, b]", "tags"),
        ("ratio:=NaN", "ratio"),
        ("empty:=", "empty"),
    ):
        code, out, err = await run_cli("send", "deploy_finished", field, "--url", nowhere)
        assert code == 2, (field, err)
        assert out == ""
        assert f"automationd send: {field!r}: the value of {shown!r} is not JSON" in err, err
        assert "cannot reach" not in err
    code, _, err = await run_cli("send", "deploy_finished", "=x", "--url", nowhere)
    assert code == 2
    assert "is not key=value or key:=json" in err


async def test_send_help_tells_text_from_json() -> None:
    code, out, _ = await run_cli("send", "--help")
    assert code == 0
    assert "key:=json" in out
    assert "always text" in out


@asynccontextmanager
async def receive(*args: str) -> AsyncIterator[str]:
    """`automationd receive` on a free loopback port; yields its URL."""
    process = await start_automationd(
        "receive", "--listen", "127.0.0.1:0", *args, stdout=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    try:
        url = ""
        async with asyncio.timeout(20):
            while not url:
                line = (await process.stderr.readline()).decode()
                assert line, "automationd receive exited"
                if match := LISTENING.search(line):
                    url = match.group(1)
        yield url
    finally:
        process.terminate()
        await process.wait()


EVERY_KIND = """\
version: 1
retry: {{attempts: 1}}
secrets: {{slack: {{env: SLACK_URL}}, teams: {{env: TEAMS_URL}}, tw: {{env: TW}}}}
endpoints: {{pagerduty: "{url}/pagerduty", twilio: "{url}/twilio"}}
prefect: {{api_url: "{url}/prefect/api"}}
automations:
  - name: every-kind
    on: [flow_run_state_change]
    actions:
      - webhook: {{url: "{url}/hook"}}
      - slack: {{webhook_url_secret: slack}}
      - teams: {{webhook_url_secret: teams}}
      - twilio: {{account_sid: AC1, auth_token_secret: tw, messaging_service_sid: MG1, phone_numbers: ["+15550100", "+15550101"]}}
      - pagerduty: {{routing_key: R1, severity: critical}}
      - cancel_flow_run: {{}}
      - pause_schedule: {{}}
      - start_flow_run: {{parameters: {{run: "{{flow_run_id}}"}}}}
"""

RUN_EVENT = {
    "type": "flow_run_state_change",
    "id": "e1",
    "flow_name": "etl",
    "flow_run_id": "0b0b0b0b-0000-4000-8000-000000000001",
    "flow_group_id": "0d0d0d0d-0000-4000-8000-000000000002",
    "state": "Failed",
}


async def test_every_http_action_kind_succeeds_against_receive(tmp_path: Path) -> None:
    """Slack wants 200 `ok`, Teams 202, Twilio 201, PagerDuty 202, a Prefect cancel an
    orchestration result: `automationd receive` answers each as the real service would."""
    async with receive() as url:
        rules = tmp_path / "rules.yaml"
        rules.write_text(EVERY_KIND.format(url=url))
        env = {
            "SLACK_URL": f"{url}/services/T0/B0/x",
            "TEAMS_URL": f"{url}/workflows/teams",
            "TW": "token",
        }
        send = ("test", str(rules), "-", "--send", "every-kind")
        code, out, err = await run_cli(*send, stdin=json.dumps(RUN_EVENT).encode(), env=env)
        assert code == 0, out + err
        assert "sent every-kind: every action succeeded" in out
        records = audit_records(tmp_path / "audit.jsonl")
        succeeded = {str(r["action"]): r for r in records if r["kind"] == "action.succeeded"}
        assert sorted(succeeded) == sorted(
            [
                "webhook",
                "slack",
                "teams",
                "twilio",
                "pagerduty",
                "cancel_flow_run",
                "pause_schedule",
                "start_flow_run",
            ]
        ), records
        statuses = {kind: r["status"] for kind, r in succeeded.items()}
        assert statuses == {
            "webhook": 200,
            "slack": 200,
            "teams": 202,
            "twilio": 201,
            "pagerduty": 202,
            "cancel_flow_run": 201,
            "pause_schedule": 200,
            "start_flow_run": 201,
        }
        assert succeeded["cancel_flow_run"]["response"] == "ACCEPT"
        # the same event again: Prefect gives the same run back for a known idempotency key
        code, out, err = await run_cli(*send, stdin=json.dumps(RUN_EVENT).encode(), env=env)
        assert code == 0, out + err
        again = [
            r
            for r in audit_records(tmp_path / "audit.jsonl")
            if r["kind"] == "action.succeeded" and r["action"] == "start_flow_run"
        ]
        assert [r["status"] for r in again] == [201, 200]
        assert again[1]["response"] == f"already {again[0]['response']}"


async def test_receive_status_still_answers_every_request_with_it(tmp_path: Path) -> None:
    async with receive("--status", "404") as url:
        rules = tmp_path / "rules.yaml"
        rules.write_text(EVERY_KIND.format(url=url))
        env = {"SLACK_URL": f"{url}/s", "TEAMS_URL": f"{url}/t", "TW": "token"}
        send = ("test", str(rules), "-", "--send", "every-kind")
        code, out, _ = await run_cli(*send, stdin=json.dumps(RUN_EVENT).encode(), env=env)
        assert code == 1
        assert "an action failed" in out
    records = audit_records(tmp_path / "audit.jsonl")
    failed = [r for r in records if r["kind"] == "action.failed"]
    assert len(failed) == 8
    assert {r["status"] for r in failed} == {404}
