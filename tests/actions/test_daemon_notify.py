"""Every notification kind delivered through the running daemon, secrets kept out of sight."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.standins import PagerDuty, Slack, Teams, Twilio, play
from tests.support import Mailbox, audit_records, daemon, receiver, smtp_server, until, write_rules

FINAL = ("action.succeeded", "action.failed")

SLACK_TOKEN = "T00000000/B00000000/XXXXslackSECRETXXXX"
TEAMS_PATH = "/workflows/abc123/triggers/manual/paths/invoke"
TEAMS_SIG = "teamsSECRETsig"
TEAMS_TOKEN = (
    f"{TEAMS_PATH[1:]}?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={TEAMS_SIG}"
)
TWILIO_TOKEN = "twilioSECRETtoken"
PAGERDUTY_KEY = "R1000000000000000000000000000000"
SMTP_PASSWORD = "smtpSECRETpassword"


async def test_all_kinds_deliver_and_no_secret_leaks(tmp_path: Path) -> None:
    """The running daemon delivers one event by every kind, each request in its service's
    documented wire format (checked by the stand-ins), and no secret reaches the audit trail
    or the log, not even when a service echoes the secret webhook URL back."""
    mailbox = Mailbox()
    async with receiver() as recv, smtp_server(mailbox, login=("bot", SMTP_PASSWORD)) as smtp_port:
        services = play(
            recv,
            Slack(f"/services/{SLACK_TOKEN}"),
            Teams(TEAMS_PATH, TEAMS_SIG),
            Twilio("AC1", TWILIO_TOKEN),
            PagerDuty(),
        )
        slack_url = f"{recv.url}/services/{SLACK_TOKEN}"
        teams_url = f"{recv.url}/{TEAMS_TOKEN}"
        # Slack first fails with a body that echoes the secret URL back, then says ok.
        recv.replies[f"/services/{SLACK_TOKEN}"] = [(500, f"boom at {slack_url}", {})]
        (tmp_path / "teams-url").write_text(teams_url + "\n")
        credentials = tmp_path / "credentials"
        credentials.mkdir()
        (credentials / "twilio").write_text(TWILIO_TOKEN)
        rules = write_rules(
            tmp_path,
            f"""\
secrets:
  slack: {{env: SLACK_URL}}
  teams: {{file: {tmp_path / "teams-url"}}}
  twilio: {{credential: twilio}}
  smtp-password: {{env: SMTP_PASSWORD}}
smtp: {{host: 127.0.0.1, port: {smtp_port}, from: bot@example.com, username: bot, password_secret: smtp-password}}
endpoints: {{twilio: "{recv.url}", pagerduty: "{recv.url}"}}
retry: {{initial: 10ms}}
automations:
  - name: everyone
    on: [flow_run_state_change]
    match: {{state: Failed}}
    actions:
      - slack: {{webhook_url_secret: slack}}
      - teams: {{webhook_url_secret: teams}}
      - email: {{to_emails: [ops@example.com]}}
      - twilio: {{account_sid: AC1, auth_token_secret: twilio, messaging_service_sid: MG1, phone_numbers: ["+15550100"]}}
      - pagerduty: {{routing_key: {PAGERDUTY_KEY}, severity: critical}}
""",
        )
        env = {
            "SLACK_URL": slack_url,
            "SMTP_PASSWORD": SMTP_PASSWORD,
            "CREDENTIALS_DIRECTORY": str(credentials),
        }
        async with daemon(rules, env=env) as proc:
            status, _ = await proc.post(
                {"type": "flow_run_state_change", "state": "Failed", "flow_name": "etl"}
            )
            assert status == 202
            audit = tmp_path / "audit.jsonl"

            async def all_five_done() -> bool:
                return audit.exists() and sum(r["kind"] in FINAL for r in audit_records(audit)) == 5

            # every action ends (succeeded, or failed on a stand-in's refusal) before any check
            await until(all_five_done, within=30)
            await asyncio.wait_for(mailbox.delivered.wait(), 10)
            assert await proc.stop() == 0
    assert services.malformed == []
    assert sorted(r.path for r in recv.requests) == sorted(
        [
            f"/services/{SLACK_TOKEN}",
            f"/services/{SLACK_TOKEN}",
            TEAMS_PATH,
            "/v2/enqueue",
            "/2010-04-01/Accounts/AC1/Messages.json",
        ]
    )
    records = audit_records(tmp_path / "audit.jsonl")
    finals = {str(r["action"]): r for r in records if r["kind"] in FINAL}
    assert {kind: r["kind"] for kind, r in finals.items()} == dict.fromkeys(
        ("slack", "teams", "email", "twilio", "pagerduty"), "action.succeeded"
    )
    assert finals["slack"]["attempts"] == 2
    first_slack = next(
        r for r in records if r["kind"] == "action.attempt" and r["action"] == "slack"
    )
    assert first_slack["response"] == "boom at ********"  # the whole URL is the secret
    trail = (tmp_path / "audit.jsonl").read_text()
    log = "\n".join(proc.log)
    for secret in (
        SLACK_TOKEN,
        "teamsSECRETsig",
        TWILIO_TOKEN,
        SMTP_PASSWORD,
        slack_url,
        teams_url,
    ):
        assert secret not in trail
        assert secret not in log
