"""Every notification kind through the engine, against real servers on loopback that check
each service's documented wire format, with retries, secrets and redaction."""

from __future__ import annotations

import base64
import email
import email.policy
import textwrap
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from automationd.config import parse_config
from automationd.engine import Engine
from tests.support import Mailbox, Receiver, audit_records, receiver, smtp_server

FAILED = {
    "type": "flow_run_state_change",
    "id": "evt-1",
    "flow_name": "nightly-etl",
    "flow_run_name": "brave-otter",
    "state": "Failed",
    "state_message": "exit code 1",
    "flow_run_link": "http://ui/runs/1",
}
MESSAGE = (
    "Run brave-otter of flow nightly-etl entered state Failed with message exit code 1. "
    "See http://ui/runs/1 for more details."
)


@pytest.fixture
async def recv() -> AsyncIterator[Receiver]:
    async with receiver() as r:
        yield r


@asynccontextmanager
async def engine_for(
    tmp_path: Path, rules: str, environ: Mapping[str, str] | None = None
) -> AsyncIterator[tuple[Engine, list[float]]]:
    """An engine on these rules whose retry waits are recorded instead of slept."""
    text = "version: 1\naudit: {path: audit.jsonl}\n" + textwrap.dedent(rules)
    config = parse_config(text.encode(), tmp_path / "rules.yaml", environ=environ)
    delays: list[float] = []

    async def no_wait(seconds: float) -> None:
        delays.append(seconds)

    engine = Engine(config)
    engine.sleep = no_wait
    await engine.start()
    try:
        yield engine, delays
    finally:
        await engine.stop()


def outcomes(tmp_path: Path) -> list[dict[str, object]]:
    kinds = ("action.succeeded", "action.failed")
    return [r for r in audit_records(tmp_path / "audit.jsonl") if r["kind"] in kinds]


def attempts(tmp_path: Path) -> list[dict[str, object]]:
    return [r for r in audit_records(tmp_path / "audit.jsonl") if r["kind"] == "action.attempt"]


async def test_slack_posts_text_and_needs_ok(tmp_path: Path, recv: Receiver) -> None:
    hook = f"{recv.url}/services/T0/B0/s3cr3tTOKEN"
    recv.replies["/services/T0/B0/s3cr3tTOKEN"] = [(200, "ok", {})]
    rules = """\
        secrets: {slack-prod: {env: SLACK_URL}}
        automations:
          - name: chat
            on: [flow_run_state_change]
            actions:
              - slack: {webhook_url_secret: slack-prod}
              - slack: {webhook_url_secret: slack-prod, message: "{flow_name} is {state}"}
    """
    async with engine_for(tmp_path, rules, {"SLACK_URL": hook}) as (engine, _):
        await engine.ingest([FAILED], batch=False)
        recv.replies["/services/T0/B0/s3cr3tTOKEN"].append((200, "ok", {}))
        await recv.wait_for(2)
    bodies = sorted(str(r.body) for r in recv.requests)
    assert sorted(r.headers["Content-Type"] for r in recv.requests) == ["application/json"] * 2
    assert bodies == sorted([str({"text": MESSAGE}), str({"text": "nightly-etl is Failed"})])
    assert [o["kind"] for o in outcomes(tmp_path)] == ["action.succeeded"] * 2


@pytest.mark.parametrize(
    ("status", "body", "tries"),
    [
        (404, "no_service", 1),
        (400, "invalid_payload", 1),
        (410, "channel_is_archived", 1),
        (200, "not ok", 1),
    ],
)
async def test_slack_permanent_errors_are_not_retried(
    tmp_path: Path, recv: Receiver, status: int, body: str, tries: int
) -> None:
    recv.replies["/hook"] = [(status, body, {})] * 5
    rules = """\
        secrets: {slack: {env: SLACK_URL}}
        automations:
          - {name: chat, on: [flow_run_state_change], actions: [{slack: {webhook_url_secret: slack}}]}
    """
    async with engine_for(tmp_path, rules, {"SLACK_URL": f"{recv.url}/hook"}) as (engine, _):
        await engine.ingest([FAILED], batch=False)
    assert len(recv.requests) == tries
    (outcome,) = outcomes(tmp_path)
    assert outcome["kind"] == "action.failed"
    assert outcome["response"] == body
    assert outcome["attempts"] == 1


async def test_slack_429_honours_retry_after(tmp_path: Path, recv: Receiver) -> None:
    recv.replies["/hook"] = [(429, "rate_limited", {"Retry-After": "7"}), (200, "ok", {})]
    rules = """\
        secrets: {slack: {env: SLACK_URL}}
        automations:
          - {name: chat, on: [flow_run_state_change], actions: [{slack: {webhook_url_secret: slack}}]}
    """
    async with engine_for(tmp_path, rules, {"SLACK_URL": f"{recv.url}/hook"}) as (engine, delays):
        await engine.ingest([FAILED], batch=False)
    assert len(recv.requests) == 2
    assert delays == [7.0]
    assert [a["status"] for a in attempts(tmp_path)] == [429, 200]
    assert attempts(tmp_path)[0]["retry_in_s"] == 7.0


async def test_teams_sends_an_adaptive_card(tmp_path: Path, recv: Receiver) -> None:
    recv.replies["/workflows/abc"] = [(202, "", {})]
    rules = """\
        secrets: {teams: {env: TEAMS_URL}}
        automations:
          - name: chat
            on: [flow_run_state_change]
            actions: [{teams: {webhook_url_secret: teams, title: "{flow_name} failed"}}]
    """
    async with engine_for(tmp_path, rules, {"TEAMS_URL": f"{recv.url}/workflows/abc"}) as (
        engine,
        _,
    ):
        await engine.ingest([FAILED], batch=False)
    (got,) = recv.requests
    assert isinstance(got.body, dict)
    assert got.body["type"] == "message"
    (attachment,) = got.body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard"
    assert card["version"] == "1.2"
    title, message = card["body"]
    assert title == {
        "type": "TextBlock",
        "text": "nightly-etl failed",
        "weight": "Bolder",
        "size": "Medium",
        "wrap": True,
    }
    assert message == {"type": "TextBlock", "text": MESSAGE, "wrap": True}
    (outcome,) = outcomes(tmp_path)
    assert (outcome["kind"], outcome["status"]) == ("action.succeeded", 202)


async def test_pagerduty_trigger_keeps_its_dedup_key_across_retries(
    tmp_path: Path, recv: Receiver
) -> None:
    accepted = '{"status":"success","message":"Event processed","dedup_key":"x"}'
    recv.replies["/v2/enqueue"] = [(503, "busy", {}), (202, accepted, {})]
    rules = f"""\
        endpoints: {{pagerduty: "{recv.url}"}}
        retry: {{initial: 10ms}}
        automations:
          - name: page
            on: [flow_run_state_change]
            actions: [{{pagerduty: {{routing_key: R0UTING, severity: critical}}}}]
    """
    long_message = {**FAILED, "message": "x" * 3000}
    async with engine_for(tmp_path, rules) as (engine, _):
        await engine.ingest([long_message], batch=False)
    first, second = recv.requests
    assert first.body == second.body
    body = first.body
    assert isinstance(body, dict)
    assert body["routing_key"] == "R0UTING"
    assert body["event_action"] == "trigger"
    assert isinstance(body["dedup_key"], str)
    assert len(body["dedup_key"]) == 32
    payload = body["payload"]
    assert len(payload["summary"]) == 1024
    assert payload["severity"] == "critical"
    assert payload["source"] == "automationd/page"
    assert payload["timestamp"].endswith("Z")
    assert payload["custom_details"]["flow_run_name"] == "brave-otter"
    assert [a["status"] for a in attempts(tmp_path)] == [503, 202]


async def test_twilio_texts_each_number_once_even_when_one_is_retried(
    tmp_path: Path, recv: Receiver
) -> None:
    path = "/2010-04-01/Accounts/AC123/Messages.json"
    recv.replies[path] = [(201, "{}", {}), (500, "oops", {}), (201, "{}", {})]
    rules = f"""\
        secrets: {{twilio-token: {{env: TWILIO_TOKEN}}}}
        endpoints: {{twilio: "{recv.url}"}}
        retry: {{initial: 10ms}}
        automations:
          - name: text
            on: [flow_run_state_change]
            actions:
              - twilio:
                  account_sid: AC123
                  auth_token_secret: twilio-token
                  messaging_service_sid: MG456
                  phone_numbers: ["+15550001", "+15550002"]
                  message: "{{flow_name}} failed"
    """
    async with engine_for(tmp_path, rules, {"TWILIO_TOKEN": "tw-t0ken"}) as (engine, _):
        await engine.ingest([FAILED], batch=False)
    assert [r.body for r in recv.requests] == [
        {"To": "+15550001", "MessagingServiceSid": "MG456", "Body": "nightly-etl failed"},
        {"To": "+15550002", "MessagingServiceSid": "MG456", "Body": "nightly-etl failed"},
        {"To": "+15550002", "MessagingServiceSid": "MG456", "Body": "nightly-etl failed"},
    ]
    expected_auth = "Basic " + base64.b64encode(b"AC123:tw-t0ken").decode()
    assert {r.headers["Authorization"] for r in recv.requests} == {expected_auth}
    (outcome,) = outcomes(tmp_path)
    assert (outcome["kind"], outcome["attempts"]) == ("action.succeeded", 2)


@pytest.mark.parametrize(
    ("status", "tries", "final"),
    [((503, 503, 200), 3, "action.succeeded"), ((404,), 1, "action.failed")],
)
async def test_webhook_retries_only_what_can_succeed(
    tmp_path: Path, recv: Receiver, status: tuple[int, ...], tries: int, final: str
) -> None:
    recv.replies["/hook"] = [(s, "{}", {}) for s in status]
    rules = f"""\
        retry: {{attempts: 5, initial: 1s, max: 3s}}
        automations:
          - {{name: hook, on: [flow_run_state_change], actions: [{{webhook: {{url: "{recv.url}/hook"}}}}]}}
    """
    async with engine_for(tmp_path, rules) as (engine, delays):
        await engine.ingest([FAILED], batch=False)
    assert len(recv.requests) == tries
    assert len({r.headers["Idempotency-Key"] for r in recv.requests}) == 1
    (outcome,) = outcomes(tmp_path)
    assert outcome["kind"] == final
    assert outcome["attempts"] == tries
    assert [a["attempt"] for a in attempts(tmp_path)] == list(range(1, tries + 1))
    # one wait before each retry, none after the last try
    assert len(delays) == tries - 1
    # equal jitter: the n-th wait lies between half and all of min(max, initial * 2^(n-1))
    for n, delay in enumerate(delays, start=1):
        base = min(3.0, 1.0 * 2 ** (n - 1))
        assert base / 2 <= delay <= base


async def test_per_action_retry_and_timeout_override_the_defaults(
    tmp_path: Path, recv: Receiver
) -> None:
    recv.delay["/slow"] = 1.0
    rules = f"""\
        retry: {{attempts: 5, initial: 10ms}}
        automations:
          - name: hook
            on: [flow_run_state_change]
            actions: [{{webhook: {{url: "{recv.url}/slow", timeout: 100ms, retry: {{attempts: 2}}}}}}]
    """
    async with engine_for(tmp_path, rules) as (engine, delays):
        await engine.ingest([FAILED], batch=False)
    assert len(delays) == 1
    tried = attempts(tmp_path)
    assert [(a["attempt"], a["error"], a["retryable"]) for a in tried] == [
        (1, "no answer within 0.1 s", True),
        (2, "no answer within 0.1 s", True),
    ]
    (outcome,) = outcomes(tmp_path)
    assert (outcome["kind"], outcome["attempts"]) == ("action.failed", 2)


async def test_a_failing_action_does_not_stop_the_next_one(tmp_path: Path, recv: Receiver) -> None:
    recv.status["/broken"] = 400
    rules = f"""\
        automations:
          - name: two
            on: [flow_run_state_change]
            actions:
              - webhook: {{url: "{recv.url}/broken"}}
              - webhook: {{url: "{recv.url}/fine"}}
    """
    async with engine_for(tmp_path, rules) as (engine, _):
        await engine.ingest([FAILED], batch=False)
    assert sorted(r.path for r in recv.requests) == ["/broken", "/fine"]
    assert sorted(str(o["kind"]) for o in outcomes(tmp_path)) == [
        "action.failed",
        "action.succeeded",
    ]


SMTP_RULES = """\
    secrets: {{smtp-password: {{env: SMTP_PASSWORD}}}}
    smtp: {{host: 127.0.0.1, port: {port}, from: automationd@example.com, username: bot, password_secret: smtp-password}}
    retry: {{initial: 10ms}}
    automations:
      - name: mail
        on: [flow_run_state_change]
        actions:
          - email:
              to_emails: {to}
              subject: "{{flow_name}}: {{state}}"
"""


async def test_email_goes_to_every_recipient_in_one_message(tmp_path: Path) -> None:
    mailbox = Mailbox()
    async with smtp_server(mailbox, login=("bot", "pw-s3cret")) as port:
        rules = SMTP_RULES.format(port=port, to='["ops@example.com", "dev@example.com"]')
        async with engine_for(tmp_path, rules, {"SMTP_PASSWORD": "pw-s3cret"}) as (engine, _):
            await engine.ingest([FAILED], batch=False)
    (envelope,) = mailbox.messages
    assert envelope.mail_from == "automationd@example.com"
    assert envelope.rcpt_tos == ["ops@example.com", "dev@example.com"]
    assert isinstance(envelope.content, bytes)
    message = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert message["Subject"] == "nightly-etl: Failed"
    assert message["To"] == "ops@example.com, dev@example.com"
    assert message["From"] == "automationd@example.com"
    assert message.get_content().strip() == MESSAGE
    (outcome,) = outcomes(tmp_path)
    assert outcome["kind"] == "action.succeeded"


async def test_email_550_recipient_is_permanent(tmp_path: Path) -> None:
    mailbox = Mailbox(refuse={"nobody@example.com"})
    async with smtp_server(mailbox, login=("bot", "pw")) as port:
        rules = SMTP_RULES.format(port=port, to='["nobody@example.com"]')
        async with engine_for(tmp_path, rules, {"SMTP_PASSWORD": "pw"}) as (engine, _):
            await engine.ingest([FAILED], batch=False)
    assert mailbox.messages == []
    (outcome,) = outcomes(tmp_path)
    assert (outcome["kind"], outcome["attempts"], outcome["status"]) == ("action.failed", 1, 550)
    assert "nobody@example.com: 550" in str(outcome["error"])


async def test_email_4xx_is_retried_until_accepted(tmp_path: Path) -> None:
    mailbox = Mailbox(busy_times=1)
    async with smtp_server(mailbox, login=("bot", "pw")) as port:
        rules = SMTP_RULES.format(port=port, to='["ops@example.com"]')
        async with engine_for(tmp_path, rules, {"SMTP_PASSWORD": "pw"}) as (engine, _):
            await engine.ingest([FAILED], batch=False)
    assert len(mailbox.messages) == 1
    assert [(a["ok"], a["status"]) for a in attempts(tmp_path)] == [(False, 451), (True, 250)]


async def test_email_wrong_password_is_permanent_and_never_logged(tmp_path: Path) -> None:
    mailbox = Mailbox()
    async with smtp_server(mailbox, login=("bot", "right")) as port:
        rules = SMTP_RULES.format(port=port, to='["ops@example.com"]')
        async with engine_for(tmp_path, rules, {"SMTP_PASSWORD": "wr0ng-pa55"}) as (engine, _):
            await engine.ingest([FAILED], batch=False)
    (outcome,) = outcomes(tmp_path)
    assert (outcome["kind"], outcome["attempts"], outcome["status"]) == ("action.failed", 1, 535)
    assert "wr0ng-pa55" not in (tmp_path / "audit.jsonl").read_text()


async def test_a_dead_smtp_server_is_retried(tmp_path: Path) -> None:
    async with smtp_server(Mailbox()) as port:
        pass  # closed again: nothing listens on the port now
    rules = SMTP_RULES.format(port=port, to='["ops@example.com"]')
    async with engine_for(tmp_path, rules, {"SMTP_PASSWORD": "pw"}) as (engine, delays):
        await engine.ingest([FAILED], batch=False)
    (outcome,) = outcomes(tmp_path)
    assert (outcome["kind"], outcome["attempts"]) == ("action.failed", 5)
    assert len(delays) == 4


async def test_concurrency_is_bounded_per_destination(tmp_path: Path, recv: Receiver) -> None:
    recv.delay["/slow"] = 0.3
    async with receiver() as other:
        rules = f"""\
            automations:
              - name: slow
                on: [flow_run_state_change]
                actions: [{{webhook: {{url: "{recv.url}/slow"}}}}]
              - name: other
                on: [flow_run_state_change]
                actions: [{{webhook: {{url: "{other.url}/fast"}}}}]
        """
        async with engine_for(tmp_path, rules) as (engine, _):
            await engine.ingest([{**FAILED, "id": f"e{i}"} for i in range(20)], batch=True)
            # the other destination gets all 20 while the slow one works through its queue
            await other.wait_for(20, within=5)
            assert len(recv.requests) < 20
    assert len(recv.requests) == 20
    assert recv.most_in_flight == 8  # DESTINATION_CONCURRENCY
