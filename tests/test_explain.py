"""`automationd test` and POST /explain: why each automation does or does not fire."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from automationd.actions import Services
from tests.support import audit_records, daemon, receiver, run_cli, write_rules

SLACK_URL = "https://hooks.slack.com/services/T0/B0/secretSECRET"

RULES = """\
secrets: {slack: {env: SLACK_URL}, tw: {env: TW}}
smtp: {host: 127.0.0.1, port: 2525, from: bot@example.com}
endpoints: {pagerduty: "http://127.0.0.1:9/pd", twilio: "http://127.0.0.1:9/tw"}
automations:
  - {name: off, enabled: false, on: [flow_run_state_change], actions: [{webhook: {url: "http://127.0.0.1:9/a"}}]}
  - {name: deploys, on: [deploy], actions: [{webhook: {url: "http://127.0.0.1:9/b"}}]}
  - {name: crashed-only, on: [flow_run_state_change], match: {state: Crashed}, actions: [{webhook: {url: "http://127.0.0.1:9/c"}}]}
  - {name: prod-only, on: [flow_run_state_change], when: "contains(tags, 'prod')", actions: [{webhook: {url: "http://127.0.0.1:9/d"}}]}
  - {name: needs-number, on: [flow_run_state_change], when: "length(flow_name) > `100`", actions: [{webhook: {url: "http://127.0.0.1:9/e"}}]}
  - {name: broken-condition, on: [flow_run_state_change], when: "length(state_message) > `0`", actions: [{webhook: {url: "http://127.0.0.1:9/f"}}]}
  - name: everything
    on: ["flow_*"]
    cooldown: {for: 1h, key: "{flow_name}"}
    actions:
      - webhook: {url: "http://127.0.0.1:9/hook?token=abc", payload: {text: "{flow_name} {state}"}}
      - slack: {webhook_url_secret: slack}
      - teams: {webhook_url_secret: slack, title: "{flow_name}"}
      - email: {to_emails: [ops@example.com], subject: "{state}: {flow_name}"}
      - twilio: {account_sid: AC1, auth_token_secret: tw, messaging_service_sid: MG1, phone_numbers: ["+15550100"], message: "{state}"}
      - pagerduty: {routing_key: R1, severity: critical}
"""

EVENT = {
    "type": "flow_run_state_change",
    "id": "e1",
    "flow_name": "etl",
    "state": "Failed",
    "tags": ["dev"],
}
ENV = {"SLACK_URL": SLACK_URL, "TW": "twilioSECRET", "PATH": ""}


def run_test(rules: Path, body: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "automationd", "test", str(rules), "-", *args],
        input=body,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=ENV,
    )


def test_every_reason_and_every_rendered_action(tmp_path: Path) -> None:
    rules = write_rules(tmp_path, RULES)
    result = run_test(rules, json.dumps(EVENT), "--json")
    assert result.returncode == 0, result.stderr
    (answer,) = json.loads(result.stdout)
    verdicts = {v["automation"]: v for v in answer["automations"]}
    # every automation has its verdict, in the file's order, and only `everything` fires
    assert [(v["automation"], v["fires"]) for v in answer["automations"]] == [
        ("off", False),
        ("deploys", False),
        ("crashed-only", False),
        ("prod-only", False),
        ("needs-number", False),
        ("broken-condition", False),
        ("everything", True),
    ]
    assert "reason" not in verdicts["everything"]
    assert verdicts["off"]["reason"] == "disabled (enabled: false)"
    assert verdicts["deploys"]["reason"] == 'type "flow_run_state_change" is not in on: ["deploy"]'
    assert (
        verdicts["crashed-only"]["reason"]
        == 'match state: expected one of ["Crashed"], saw "Failed"'
    )
    assert verdicts["prod-only"]["reason"] == "condition \"contains(tags, 'prod')\" gave false"
    assert verdicts["needs-number"]["reason"] == 'condition "length(flow_name) > `100`" gave false'
    assert verdicts["broken-condition"]["reason"] == (
        'condition "length(state_message) > `0`" failed (In function length(), invalid type '
        'for value: null, expected one of: ["string", "array", "object"], received: "null")'
    )
    actions = verdicts["everything"]["actions"]
    assert verdicts["everything"]["fires"] is True
    assert [a["kind"] for a in actions] == [
        "webhook",
        "slack",
        "teams",
        "email",
        "twilio",
        "pagerduty",
    ]
    webhook, slack, teams, email, twilio, pagerduty = actions
    assert webhook["url"] == "http://127.0.0.1:9/hook"  # the query (tokens live there) is left out
    assert webhook["json"] == {"text": "etl Failed"}
    assert slack["json"] == {"text": answer["event"]["message"]}
    assert slack["url"] == "******** (secret 'slack')"
    assert teams["json"]["attachments"][0]["content"]["body"][0]["text"] == "etl"
    assert (email["to"], email["subject"], email["smtp"]) == (
        ["ops@example.com"],
        "Failed: etl",
        "127.0.0.1:2525",
    )
    assert twilio["forms"] == [{"To": "+15550100", "MessagingServiceSid": "MG1", "Body": "Failed"}]
    assert pagerduty["json"]["payload"]["severity"] == "critical"
    assert "SECRET" not in result.stdout


def test_readable_report_and_errors(tmp_path: Path) -> None:
    rules = write_rules(tmp_path, RULES)
    result = run_test(rules, json.dumps([EVENT, {**EVENT, "id": "e2", "state": "Crashed"}]))
    assert result.returncode == 0, result.stderr
    assert "event e1 (flow_run_state_change)" in result.stdout
    assert (
        '  - crashed-only: no, match state: expected one of ["Crashed"], saw "Failed"'
        in result.stdout
    )
    assert "  + everything: FIRES" in result.stdout
    assert "event e2 (flow_run_state_change)" in result.stdout
    assert "  + crashed-only: FIRES" in result.stdout
    assert "SECRET" not in result.stdout
    bad = run_test(rules, '{"type": 5}')
    assert bad.returncode == 1
    assert "'type' must be a string" in bad.stderr
    rules.write_text("version: 1\n")
    assert run_test(rules, json.dumps(EVENT)).returncode == 1


async def test_post_explain_uses_the_live_rules_and_acts_on_nothing(tmp_path: Path) -> None:
    async with receiver() as recv:
        rules = write_rules(
            tmp_path,
            f"""\
automations:
  - name: page
    on: [flow_run_state_change]
    cooldown: {{for: 1h, key: "{{flow_name}}"}}
    actions: [{{webhook: {{url: "{recv.url}/page"}}}}]
""",
        )
        async with daemon(rules) as proc, aiohttp.ClientSession() as session:
            async with session.post(f"{proc.url}/explain", json=EVENT) as response:
                assert response.status == 200
                answer = await response.json()
            assert answer["automations"][0]["fires"] is True
            status, _ = await proc.post(EVENT)
            assert status == 202
            await recv.wait_for(1)
            async with session.post(f"{proc.url}/explain", json={**EVENT, "id": "e9"}) as response:
                answer = await response.json()
            (verdict,) = answer["automations"]
            assert verdict["fires"] is False
            assert verdict["reason"].startswith('cooldown: key "etl" is held for')
            async with session.post(f"{proc.url}/explain", data=b"{bad") as response:
                assert response.status == 400
            assert await proc.stop() == 0
    assert len(recv.requests) == 1  # explaining sent nothing


async def test_send_fires_one_automation_for_real_audited_as_a_test(tmp_path: Path) -> None:

    async with receiver() as recv:
        rules = tmp_path / "rules.yaml"
        rules.write_text(
            f"""\
version: 1
retry: {{attempts: 1}}
automations:
  - name: hook
    on: [flow_run_state_change]
    match: {{state: Crashed}}
    actions: [{{webhook: {{url: "{recv.url}/hook"}}}}, {{webhook: {{url: "{recv.url}/second"}}}}]
"""
        )
        send = ("test", str(rules), "-", "--send", "hook")
        code, out, err = await run_cli(*send, stdin=json.dumps(EVENT).encode())
        assert code == 0, err
        assert "sent hook: every action succeeded" in out
        assert sorted(r.path for r in recv.requests) == ["/hook", "/second"]
        recv.status["/second"] = 500
        code, out, _ = await run_cli(*send, stdin=json.dumps(EVENT).encode())
        assert code == 1
        assert "an action failed" in out
    records = audit_records(tmp_path / "audit.jsonl")
    assert [r["kind"] for r in records if r["kind"] == "automation.tested"] == [
        "automation.tested"
    ] * 2
    assert all(r.get("test") is True for r in records if str(r["kind"]).startswith("action."))
    assert not any(r["kind"] == "action.dead_lettered" for r in records)  # a test leaves none


JSON_VALUES_RULES = """\
automations:
  - {name: first-try, on: [job_done], match: {attempt: 1}, actions: [{webhook: {url: "http://127.0.0.1:9/a"}}]}
  - {name: needs-owner, on: [job_done], match: {owner: ops}, actions: [{webhook: {url: "http://127.0.0.1:9/b"}}]}
  - {name: quiet-only, on: [job_done], match: {quiet: true}, actions: [{webhook: {url: "http://127.0.0.1:9/c"}}]}
  - {name: failed-only, on: [job_done], when: "failed", actions: [{webhook: {url: "http://127.0.0.1:9/d"}}]}
  - {name: has-retries, on: [job_done], when: "retries", actions: [{webhook: {url: "http://127.0.0.1:9/e"}}]}
  - {name: has-labels, on: [job_done], when: "labels", actions: [{webhook: {url: "http://127.0.0.1:9/f"}}]}
"""

JOB = {
    "type": "job_done",
    "id": "j1",
    "attempt": True,
    "quiet": False,
    "failed": False,
    "labels": {},
}


def test_every_value_in_a_reason_is_shown_as_json(tmp_path: Path) -> None:
    """JSON's true/false/null and double quotes, never Python's True/False/None/'...'."""
    rules = write_rules(tmp_path, JSON_VALUES_RULES)
    result = run_test(rules, json.dumps(JOB))
    assert result.returncode == 0, result.stderr
    assert "  - first-try: no, match attempt: expected one of [1], saw true" in result.stdout
    assert '  - needs-owner: no, match owner: expected one of ["ops"], saw null' in result.stdout
    assert "  - quiet-only: no, match quiet: expected one of [true], saw false" in result.stdout
    assert '  - failed-only: no, condition "failed" gave false' in result.stdout
    assert '  - has-retries: no, condition "retries" gave null' in result.stdout
    assert '  - has-labels: no, condition "labels" gave {}' in result.stdout
    for python in ("True", "False", "None", "'"):
        assert python not in result.stdout, result.stdout


async def test_post_explain_shows_json_false(tmp_path: Path) -> None:
    rules = write_rules(tmp_path, JSON_VALUES_RULES)
    async with daemon(rules) as proc, aiohttp.ClientSession() as session:
        async with session.post(f"{proc.url}/explain", json=JOB) as response:
            assert response.status == 200
            answer = await response.json()
        reasons = {v["automation"]: v["reason"] for v in answer["automations"]}
        assert reasons["failed-only"] == 'condition "failed" gave false'
        assert reasons["quiet-only"] == "match quiet: expected one of [true], saw false"
        assert await proc.stop() == 0


def test_needs_no_secret_values_and_shows_each_masked(tmp_path: Path) -> None:
    """Trying a rule needs none of its secrets (env unset, file missing, no
    $CREDENTIALS_DIRECTORY): each is shown masked, as when its value is there."""
    no_values = RULES.replace("tw: {env: TW}", "tw: {file: /nonexistent/tw}, pd: {credential: pd}")
    rules = write_rules(tmp_path, no_values.replace("routing_key: R1", "routing_key_secret: pd"))
    result = subprocess.run(
        [sys.executable, "-m", "automationd", "test", str(rules), "-", "--json"],
        input=json.dumps(EVENT),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": ""},
    )
    assert result.returncode == 0, result.stderr
    (answer,) = json.loads(result.stdout)
    (everything,) = [v for v in answer["automations"] if v["automation"] == "everything"]
    by_kind = {a["kind"]: a for a in everything["actions"]}
    assert by_kind["slack"]["url"] == "******** (secret 'slack')"
    assert by_kind["teams"]["url"] == "******** (secret 'slack')"
    assert by_kind["twilio"]["auth"] == "AC1:******** (secret 'tw')"
    assert by_kind["pagerduty"]["json"]["routing_key"] == "******** (secret 'pd')"
    assert by_kind["pagerduty"]["url"] == "http://127.0.0.1:9/pd/v2/enqueue"


async def test_send_needs_the_secrets_and_names_the_missing_one(tmp_path: Path) -> None:
    async with receiver() as recv:
        rules = tmp_path / "rules.yaml"
        rules.write_text(
            f"""\
version: 1
secrets: {{pd: {{env: PD_ROUTING_KEY}}}}
endpoints: {{pagerduty: "{recv.url}"}}
retry: {{attempts: 1}}
automations:
  - {{name: page, on: [flow_run_state_change], actions: [{{pagerduty: {{routing_key_secret: pd}}}}]}}
"""
        )
        send = ("test", str(rules), "-", "--send", "page")
        code, out, err = await run_cli(*send, stdin=json.dumps(EVENT).encode(), env={"PATH": ""})
        assert code == 1
        assert out == ""
        assert err.splitlines() == [
            f"{rules}:2:11: secrets.pd: secret 'pd': environment variable PD_ROUTING_KEY "
            "is not set",
            "automationd test --send sends for real: it needs the value of every secret, "
            "as the daemon does (without --send, secrets are shown masked)",
        ]
        env = {"PATH": "", "PD_ROUTING_KEY": "R0UTINGsecretKEY"}
        code, out, err = await run_cli(*send, stdin=json.dumps(EVENT).encode(), env=env)
        assert code == 0, err
        assert "R0UTINGsecretKEY" not in out + err
        assert "******** (secret 'pd')" in out
    (request,) = recv.requests
    assert isinstance(request.body, dict)
    assert request.body["routing_key"] == "R0UTINGsecretKEY"
    assert "R0UTINGsecretKEY" not in (tmp_path / "audit.jsonl").read_text()


def test_a_preview_has_no_http_client_and_says_so_when_asked() -> None:
    services = Services(None, {})
    assert services.session is None
    with pytest.raises(RuntimeError) as raised:
        _ = services.http
    assert str(raised.value) == "a preview has no HTTP client: it sends nothing"
