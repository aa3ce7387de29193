"""Every notification kind through the engine, against real servers on loopback that check
each service's documented wire format, with retries, secrets and redaction."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import textwrap
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from automationd.actions.teams import adaptive_card
from automationd.engine import Engine
from automationd.rules.load import parse_config
from tests.standins import PagerDuty, Slack, Teams, Twilio, play, twilio_message
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
HOOK = "/services/T0/B0/s3cr3tTOKEN"
"""A Slack incoming webhook's path (the whole URL is the secret)."""
TEAMS_PATH = "/workflows/abc123/triggers/manual/paths/invoke"
TEAMS_SIG = "teamsS1Gnature"
TEAMS_QUERY = f"?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={TEAMS_SIG}"
ROUTING_KEY = "R0UTING0000000000000000000000000"
"""A PagerDuty integration key: 32 characters, as PagerDuty requires."""


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
    engine.runner.sleep = no_wait
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
    """Each Slack action POSTs its rendered message as `{"text": ...}` JSON to the webhook,
    in Slack's wire format, and Slack's 200 `ok` is success."""
    slack = play(recv, Slack(HOOK))
    rules = """\
        secrets: {slack-prod: {env: SLACK_URL}}
        automations:
          - name: chat
            on: [flow_run_state_change]
            actions:
              - slack: {webhook_url_secret: slack-prod}
              - slack: {webhook_url_secret: slack-prod, message: "{flow_name} is {state}"}
    """
    async with engine_for(tmp_path, rules, {"SLACK_URL": recv.url + HOOK}) as (engine, _):
        await engine.ingest([FAILED], batch=False)
        await recv.wait_for(2)
    assert slack.malformed == []
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
    """Slack's documented errors (and a 200 without `ok`) fail the action at once, with
    Slack's answer kept in the audit."""
    slack = play(recv, Slack(HOOK))
    recv.replies[HOOK] = [(status, body, {})] * 5
    rules = """\
        secrets: {slack: {env: SLACK_URL}}
        automations:
          - {name: chat, on: [flow_run_state_change], actions: [{slack: {webhook_url_secret: slack}}]}
    """
    async with engine_for(tmp_path, rules, {"SLACK_URL": recv.url + HOOK}) as (engine, _):
        await engine.ingest([FAILED], batch=False)
    assert slack.malformed == []
    assert len(recv.requests) == tries
    (outcome,) = outcomes(tmp_path)
    assert outcome["kind"] == "action.failed"
    assert outcome["response"] == body
    assert outcome["attempts"] == 1


async def test_slack_429_honours_retry_after(tmp_path: Path, recv: Receiver) -> None:
    """Slack's 429 is retried after the seconds its Retry-After says."""
    slack = play(recv, Slack(HOOK))
    recv.replies[HOOK] = [(429, "rate_limited", {"Retry-After": "7"})]
    rules = """\
        secrets: {slack: {env: SLACK_URL}}
        automations:
          - {name: chat, on: [flow_run_state_change], actions: [{slack: {webhook_url_secret: slack}}]}
    """
    async with engine_for(tmp_path, rules, {"SLACK_URL": recv.url + HOOK}) as (engine, delays):
        await engine.ingest([FAILED], batch=False)
    assert slack.malformed == []
    assert len(recv.requests) == 2
    assert delays == [7.0]
    assert [a["status"] for a in attempts(tmp_path)] == [429, 200]
    assert attempts(tmp_path)[0]["retry_in_s"] == 7.0


async def test_teams_sends_an_adaptive_card(tmp_path: Path, recv: Receiver) -> None:
    """The Teams action POSTs a message with one Adaptive Card (bold title, wrapped message)
    to the signed Workflows URL, in the format Teams documents; 202 is success."""
    teams = play(recv, Teams(TEAMS_PATH, TEAMS_SIG))
    rules = """\
        secrets: {teams: {env: TEAMS_URL}}
        automations:
          - name: chat
            on: [flow_run_state_change]
            actions: [{teams: {webhook_url_secret: teams, title: "{flow_name} failed"}}]
    """
    teams_url = recv.url + TEAMS_PATH + TEAMS_QUERY
    async with engine_for(tmp_path, rules, {"TEAMS_URL": teams_url}) as (engine, _):
        await engine.ingest([FAILED], batch=False)
    assert teams.malformed == []
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
    """A PagerDuty trigger in the Events API v2 format, its summary cut to 1,024 characters,
    is retried after a 503 with the same dedup_key (one incident, not two)."""
    pagerduty = play(recv, PagerDuty())
    recv.replies["/v2/enqueue"] = [(503, "busy", {})]
    rules = f"""\
        endpoints: {{pagerduty: "{recv.url}"}}
        retry: {{initial: 10ms}}
        automations:
          - name: page
            on: [flow_run_state_change]
            actions: [{{pagerduty: {{routing_key: {ROUTING_KEY}, severity: critical}}}}]
    """
    long_message = {**FAILED, "message": "x" * 3000}
    async with engine_for(tmp_path, rules) as (engine, _):
        await engine.ingest([long_message], batch=False)
    assert pagerduty.malformed == []
    first, second = recv.requests
    assert first.body == second.body
    body = first.body
    assert isinstance(body, dict)
    assert body["routing_key"] == ROUTING_KEY
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
    """One SMS per number in Twilio's wire format (form-encoded, Basic auth); a retry after
    a 500 texts only the number that did not get its SMS."""
    twilio = play(recv, Twilio("AC123", "tw-t0ken"))
    path = "/2010-04-01/Accounts/AC123/Messages.json"
    recv.replies[path] = [
        (201, json.dumps(twilio_message("AC123", {"To": "+15550001"})), {}),
        (500, "oops", {}),
    ]
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
    assert twilio.malformed == []
    assert [r.body for r in recv.requests] == [
        {"To": "+15550001", "MessagingServiceSid": "MG456", "Body": "nightly-etl failed"},
        {"To": "+15550002", "MessagingServiceSid": "MG456", "Body": "nightly-etl failed"},
        {"To": "+15550002", "MessagingServiceSid": "MG456", "Body": "nightly-etl failed"},
    ]
    expected_auth = "Basic " + base64.b64encode(b"AC123:tw-t0ken").decode()
    assert {r.headers["Authorization"] for r in recv.requests} == {expected_auth}
    (outcome,) = outcomes(tmp_path)
    assert (outcome["kind"], outcome["attempts"]) == ("action.succeeded", 2)


async def test_a_routing_key_pagerduty_refuses_fails_at_once_with_its_reason(
    tmp_path: Path, recv: Receiver
) -> None:
    """A routing key PagerDuty refuses (not 32 characters) gets PagerDuty's 400 `invalid
    event`: the action fails on the first attempt, PagerDuty's reason in the audit."""
    pagerduty = play(recv, PagerDuty())
    rules = f"""\
        endpoints: {{pagerduty: "{recv.url}"}}
        retry: {{initial: 10ms}}
        automations:
          - {{name: page, on: [flow_run_state_change], actions: [{{pagerduty: {{routing_key: {ROUTING_KEY[:31]}}}}}]}}
    """
    async with engine_for(tmp_path, rules) as (engine, _):
        await engine.ingest([FAILED], batch=False)
    reason = "Length of 'routing_key' is incorrect (should be 32 characters)"
    assert pagerduty.malformed == [f"PagerDuty: POST /v2/enqueue: {reason}"]
    (outcome,) = outcomes(tmp_path)
    assert (outcome["kind"], outcome["attempts"], outcome["status"]) == ("action.failed", 1, 400)
    assert json.loads(str(outcome["response"])) == {
        "status": "invalid event",
        "message": "Event object is invalid",
        "errors": [reason],
    }


async def test_a_twilio_token_twilio_refuses_is_not_retried(tmp_path: Path, recv: Receiver) -> None:
    """A wrong Twilio auth token gets Twilio's 401 `Authenticate` (20003): permanent, one
    attempt, and the token is not in the audit."""
    twilio = play(recv, Twilio("AC123", "tw-t0ken"))
    rules = f"""\
        secrets: {{twilio-token: {{env: TWILIO_TOKEN}}}}
        endpoints: {{twilio: "{recv.url}"}}
        retry: {{initial: 10ms}}
        automations:
          - name: text
            on: [flow_run_state_change]
            actions:
              - twilio: {{account_sid: AC123, auth_token_secret: twilio-token, messaging_service_sid: MG456, phone_numbers: ["+15550001"]}}
    """
    async with engine_for(tmp_path, rules, {"TWILIO_TOKEN": "wr0ng-t0ken"}) as (engine, _):
        await engine.ingest([FAILED], batch=False)
    path = "/2010-04-01/Accounts/AC123/Messages.json"
    assert twilio.malformed == [
        f"Twilio: POST {path}: the Authorization is not HTTP Basic with the AccountSid and auth token"
    ]
    (outcome,) = outcomes(tmp_path)
    assert (outcome["kind"], outcome["attempts"], outcome["status"]) == ("action.failed", 1, 401)
    assert json.loads(str(outcome["response"]))["code"] == 20003
    assert "wr0ng-t0ken" not in (tmp_path / "audit.jsonl").read_text()


# The stand-ins themselves: each refuses what its service refuses, with the service's answer,
# and lets through what the daemon sends (the first case of each).


async def send_raw(
    url: str, body: bytes, content_type: str, headers: Mapping[str, str] | None = None
) -> tuple[int, object]:
    """POST `body` as given; the status and the answer (JSON when it is JSON, else text)."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url, data=body, headers={"Content-Type": content_type, **(headers or {})}
        ) as response,
    ):
        text = await response.text()
        if response.content_type == "application/json":
            return response.status, json.loads(text)
        return response.status, text


SLACK_CASES = {
    "what the daemon sends": (HOOK, b'{"text":"hi"}', "application/json", 200, "ok", None),
    "no text": (
        HOOK,
        b'{"username":"bot"}',
        "application/json",
        400,
        "no_text",
        "neither a non-empty `text` nor `blocks`",
    ),
    "empty text": (
        HOOK,
        b'{"text":" "}',
        "application/json",
        400,
        "no_text",
        "neither a non-empty `text` nor `blocks`",
    ),
    "form-encoded": (
        HOOK,
        b"text=hi",
        "application/x-www-form-urlencoded",
        400,
        "invalid_payload",
        "the Content-Type is application/x-www-form-urlencoded, not application/json",
    ),
    "not JSON": (
        HOOK,
        b'{"text":',
        "application/json",
        400,
        "invalid_payload",
        "the body is not a JSON object",
    ),
    "wrong secret": (
        "/services/T0/B0/wr0ng",
        b'{"text":"hi"}',
        "application/json",
        403,
        "invalid_token",
        "the webhook's secret is wrong",
    ),
}


@pytest.mark.parametrize(
    ("path", "body", "content_type", "status", "answer", "problem"),
    list(SLACK_CASES.values()),
    ids=list(SLACK_CASES),
)
async def test_the_slack_stand_in_refuses_what_slack_refuses(
    recv: Receiver,
    path: str,
    body: bytes,
    content_type: str,
    status: int,
    answer: str,
    problem: str | None,
) -> None:
    """The Slack stand-in answers a malformed webhook call with Slack's documented error and
    records the problem; a well-formed one gets 200 `ok`."""
    slack = play(recv, Slack(HOOK))
    assert await send_raw(recv.url + path, body, content_type) == (status, answer)
    assert slack.malformed == ([f"Slack: POST {path}: {problem}"] if problem else [])


def teams_body(**changes: object) -> bytes:
    """The message the teams action sends, with `changes` made to its card."""
    message = adaptive_card("title", "message")
    attachments = message["attachments"]
    assert isinstance(attachments, list)
    attachments[0]["content"].update(changes)
    return json.dumps(message).encode()


TEAMS_CASES = {
    "what the daemon sends": (TEAMS_QUERY, teams_body(), 202, "", []),
    "a MessageCard": (
        TEAMS_QUERY,
        b'{"@type":"MessageCard","text":"hi"}',
        202,
        "",
        ["`type` is None, not 'message'", "`attachments` is not a non-empty list"],
    ),
    "a card without version or body": (
        TEAMS_QUERY,
        teams_body(version=None, body=[]),
        202,
        "",
        [
            "attachments[0].content.version is None, not a 1.x version",
            "attachments[0].content.body is not a non-empty list",
        ],
    ),
    "not signed": (
        "?api-version=2016-06-01",
        teams_body(),
        401,
        {
            "error": {
                "code": "DirectApiAuthorizationRequired",
                "message": "The request must be authenticated only by Shared Access scheme.",
            }
        },
        ["the URL lacks the shared-access parameters sp, sv, sig"],
    ),
    "a wrong signature": (
        TEAMS_QUERY.replace(TEAMS_SIG, "f0rged"),
        teams_body(),
        401,
        {
            "error": {
                "code": "DirectApiInvalidAuthorizationSignature",
                "message": "The provided authorization signature is not valid.",
            }
        },
        ["the signature `sig` is wrong"],
    ),
}


@pytest.mark.parametrize(
    ("query", "body", "status", "answer", "problems"),
    list(TEAMS_CASES.values()),
    ids=list(TEAMS_CASES),
)
async def test_the_teams_stand_in_refuses_what_teams_refuses(
    recv: Receiver, query: str, body: bytes, status: int, answer: object, problems: list[str]
) -> None:
    """The Teams stand-in refuses an unsigned or wrongly signed call as the Workflows trigger
    does (401); a card the flow could not post is answered 202 as Teams answers it, and its
    problems recorded."""
    teams = play(recv, Teams(TEAMS_PATH, TEAMS_SIG))
    got = await send_raw(recv.url + TEAMS_PATH + query, body, "application/json")
    assert got == (status, answer)
    assert teams.malformed == [f"Teams: POST {TEAMS_PATH}: {p}" for p in problems]


TWILIO_AUTH = {"Authorization": "Basic " + base64.b64encode(b"AC123:tw-t0ken").decode()}
TWILIO_FORM = "application/x-www-form-urlencoded"
TWILIO_CASES = {
    "what the daemon sends": (
        b"To=%2B15550001&MessagingServiceSid=MG456&Body=hi",
        TWILIO_FORM,
        TWILIO_AUTH,
        201,
        None,
        [],
    ),
    "JSON": (
        b'{"To":"+15550001","MessagingServiceSid":"MG456","Body":"hi"}',
        "application/json",
        TWILIO_AUTH,
        400,
        (21604, "A 'To' phone number is required."),
        [
            "the Content-Type is application/json, not application/x-www-form-urlencoded, so Twilio sees no parameters",
            "there is no `To`",
            "there is neither `From` nor `MessagingServiceSid`",
            "there is no `Body`",
        ],
    ),
    "a wrong token": (
        b"To=%2B15550001&MessagingServiceSid=MG456&Body=hi",
        TWILIO_FORM,
        {"Authorization": "Basic " + base64.b64encode(b"AC123:wr0ng").decode()},
        401,
        (20003, "Authenticate"),
        ["the Authorization is not HTTP Basic with the AccountSid and auth token"],
    ),
    "no auth": (
        b"To=%2B15550001&MessagingServiceSid=MG456&Body=hi",
        TWILIO_FORM,
        {},
        401,
        (20003, "Authenticate"),
        ["the Authorization is not HTTP Basic with the AccountSid and auth token"],
    ),
    "not E.164": (
        b"To=5550001&MessagingServiceSid=MG456&Body=hi",
        TWILIO_FORM,
        TWILIO_AUTH,
        400,
        (21211, "The 'To' number 5550001 is not a valid phone number."),
        ["`To` '5550001' is not an E.164 number"],
    ),
    "no sender": (
        b"To=%2B15550001&Body=hi",
        TWILIO_FORM,
        TWILIO_AUTH,
        400,
        (21603, "A 'From' or 'MessagingServiceSid' parameter is required to send a message"),
        ["there is neither `From` nor `MessagingServiceSid`"],
    ),
    "a body over 1,600": (
        b"To=%2B15550001&MessagingServiceSid=MG456&Body=" + b"x" * 1601,
        TWILIO_FORM,
        TWILIO_AUTH,
        400,
        (21617, "The concatenated message body exceeds the 1600 character limit."),
        ["`Body` is 1601 characters, over 1,600"],
    ),
}


@pytest.mark.parametrize(
    ("body", "content_type", "headers", "status", "error", "problems"),
    list(TWILIO_CASES.values()),
    ids=list(TWILIO_CASES),
)
async def test_the_twilio_stand_in_refuses_what_twilio_refuses(
    recv: Receiver,
    body: bytes,
    content_type: str,
    headers: dict[str, str],
    status: int,
    error: tuple[int, str] | None,
    problems: list[str],
) -> None:
    """The Twilio stand-in answers a malformed Messages call with Twilio's error JSON (code,
    message, more_info, status); a well-formed one gets 201 and the message resource."""
    twilio = play(recv, Twilio("AC123", "tw-t0ken"))
    path = "/2010-04-01/Accounts/AC123/Messages.json"
    got_status, answer = await send_raw(recv.url + path, body, content_type, headers)
    assert got_status == status
    assert isinstance(answer, dict)
    if error is None:
        assert (answer["to"], answer["messaging_service_sid"], answer["body"]) == (
            "+15550001",
            "MG456",
            "hi",
        )
        assert answer["status"] == "accepted"
    else:
        code, message = error
        more_info = f"https://www.twilio.com/docs/errors/{code}"
        assert answer == {
            "code": code,
            "message": message,
            "more_info": more_info,
            "status": status,
        }
    assert twilio.malformed == [f"Twilio: POST {path}: {p}" for p in problems]


def pagerduty_event(**changes: object) -> dict[str, object]:
    """A well-formed trigger, with `changes` made to its payload (None: left out)."""
    base = {"summary": "etl failed", "source": "automationd/page", "severity": "critical"}
    payload = {k: v for k, v in {**base, **changes}.items() if v is not None}
    return {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": "d" * 32,
        "payload": payload,
    }


PAGERDUTY_CASES = {
    "what the daemon sends": (pagerduty_event(), "application/json", []),
    "no source": (
        pagerduty_event(source=None),
        "application/json",
        ["'payload.source' is missing or blank"],
    ),
    "a severity PagerDuty does not know": (
        pagerduty_event(severity="fatal"),
        "application/json",
        ["'payload.severity' is invalid (must be critical, error, warning or info)"],
    ),
    "a summary over 1,024": (
        pagerduty_event(summary="x" * 1025),
        "application/json",
        ["'payload.summary' is too long (at most 1024 characters)"],
    ),
    "a short routing key": (
        {**pagerduty_event(), "routing_key": ROUTING_KEY[:31]},
        "application/json",
        ["Length of 'routing_key' is incorrect (should be 32 characters)"],
    ),
    "no event_action": (
        {k: v for k, v in pagerduty_event().items() if k != "event_action"},
        "application/json",
        ["'event_action' is missing or blank"],
    ),
    "form-encoded": (
        pagerduty_event(),
        "application/x-www-form-urlencoded",
        ["Content-Type is application/x-www-form-urlencoded, not application/json"],
    ),
}


@pytest.mark.parametrize(
    ("event", "content_type", "errors"),
    list(PAGERDUTY_CASES.values()),
    ids=list(PAGERDUTY_CASES),
)
async def test_the_pagerduty_stand_in_refuses_what_pagerduty_refuses(
    recv: Receiver, event: dict[str, object], content_type: str, errors: list[str]
) -> None:
    """The PagerDuty stand-in answers a malformed event 400 `invalid event` with its errors,
    as the Events API v2 does; a well-formed one gets 202 with its dedup_key."""
    pagerduty = play(recv, PagerDuty())
    got = await send_raw(f"{recv.url}/v2/enqueue", json.dumps(event).encode(), content_type)
    if errors:
        invalid = {
            "status": "invalid event",
            "message": "Event object is invalid",
            "errors": errors,
        }
        assert got == (400, invalid)
    else:
        accepted = {"status": "success", "message": "Event processed", "dedup_key": "d" * 32}
        assert got == (202, accepted)
    assert pagerduty.malformed == [f"PagerDuty: POST /v2/enqueue: {e}" for e in errors]


@pytest.mark.parametrize(
    ("status", "tries", "final"),
    [((503, 503, 200), 3, "action.succeeded"), ((404,), 1, "action.failed")],
)
async def test_webhook_retries_only_what_can_succeed(
    tmp_path: Path, recv: Receiver, status: tuple[int, ...], tries: int, final: str
) -> None:
    """5xx is retried (with equal-jitter backoff) until it succeeds; a 404 fails at once; every try
    carries the same Idempotency-Key."""
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
    """An action's own `timeout` and `retry` replace the global ones: two attempts of 0.1 s."""
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
    """An action that fails does not keep the automation's next action from running."""
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
    """One email, with AUTH, to every recipient; its subject rendered, its body the message."""
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
    """A 550 for a recipient fails the email at once, naming the recipient."""
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
    """A 451 at DATA is retried until the server accepts the message."""
    mailbox = Mailbox(busy_times=1)
    async with smtp_server(mailbox, login=("bot", "pw")) as port:
        rules = SMTP_RULES.format(port=port, to='["ops@example.com"]')
        async with engine_for(tmp_path, rules, {"SMTP_PASSWORD": "pw"}) as (engine, _):
            await engine.ingest([FAILED], batch=False)
    assert len(mailbox.messages) == 1
    assert [(a["ok"], a["status"]) for a in attempts(tmp_path)] == [(False, 451), (True, 250)]


async def test_email_wrong_password_is_permanent_and_never_logged(tmp_path: Path) -> None:
    """A refused login (535) is permanent, and the password is not in the audit."""
    mailbox = Mailbox()
    async with smtp_server(mailbox, login=("bot", "right")) as port:
        rules = SMTP_RULES.format(port=port, to='["ops@example.com"]')
        async with engine_for(tmp_path, rules, {"SMTP_PASSWORD": "wr0ng-pa55"}) as (engine, _):
            await engine.ingest([FAILED], batch=False)
    (outcome,) = outcomes(tmp_path)
    assert (outcome["kind"], outcome["attempts"], outcome["status"]) == ("action.failed", 1, 535)
    assert "wr0ng-pa55" not in (tmp_path / "audit.jsonl").read_text()


async def test_a_dead_smtp_server_is_retried(tmp_path: Path) -> None:
    """An SMTP server that is down is retried up to the attempts allowed (5)."""
    async with smtp_server(Mailbox()) as port:
        pass  # closed again: nothing listens on the port now
    rules = SMTP_RULES.format(port=port, to='["ops@example.com"]')
    async with engine_for(tmp_path, rules, {"SMTP_PASSWORD": "pw"}) as (engine, delays):
        await engine.ingest([FAILED], batch=False)
    (outcome,) = outcomes(tmp_path)
    assert (outcome["kind"], outcome["attempts"]) == ("action.failed", 5)
    assert len(delays) == 4


async def test_concurrency_is_bounded_per_destination(tmp_path: Path, recv: Receiver) -> None:
    """A slow destination has at most 8 attempts in flight, and does not hold up another."""
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
