"""Stand-ins for Slack, Microsoft Teams, Twilio and PagerDuty that check the wire format.

These are NOT the real services, and nothing here reaches the internet: each stand-in plays
one service on a tests.support.Receiver (a real HTTP server on loopback). For every request
it checks what the service documents for the call the daemon makes (method, path, content
type, authentication, required fields, their types and limits), answers a wrong request with
the error the service documents for it (so the daemon meets that error as it would for real),
and adds a line per problem to `StandIns.malformed`, which the tests assert empty. A
well-formed request gets the answer queued in the Receiver's `replies` for its path, if any
(a 500, a 429 with Retry-After: faults a test scripts), otherwise the service's documented
success.

What the checks rest on (the services' public documentation, read in stored copies; where a
wording is the stand-in's own, it says so):

- Slack incoming webhooks ("Sending messages using incoming webhooks" and the changelog
  "Improving error conditions for Incoming Webhooks", 2016-05-17): the URL
  `/services/T…/B…/secret` is the credential; POST a JSON object (Content-Type
  application/json) with a non-empty `text` string and/or a `blocks` list of objects that
  each have a `type`. Answers: 200 with the body `ok`; 400 `invalid_payload` (the body does
  not match its content type or is not structurally valid), 400 `no_text`, 400
  `invalid_blocks`, 403 `invalid_token` (a wrong secret), 404 `no_service` (no such
  webhook), 410 `channel_is_archived`; 429 `rate_limited` with Retry-After. Slack also takes
  a form-encoded `payload=`; the daemon sends JSON, so only JSON is accepted here. A method
  other than POST gets 405, the stand-in's own answer.
- Microsoft Teams Workflows webhooks ("Create incoming webhooks with Workflows for Microsoft
  Teams"; Azure Logic Apps request triggers): the URL `/workflows/{id}/triggers/manual/paths/
  invoke?api-version=…&sp=…&sv=…&sig=…` is the credential (a shared-access signature); POST
  JSON `{"type": "message", "attachments": [{"contentType":
  "application/vnd.microsoft.card.adaptive", "content": {"type":
  "AdaptiveCard", "version": "1.x", "body": [...]}}]}`, each body element an object with a
  `type` (a TextBlock with a `text` string), the message at most 28 KB. Answers: 202 with an
  empty body; 401 `{"error": {"code": "DirectApiAuthorizationRequired", ...}}` without the
  signature, 401 `DirectApiInvalidAuthorizationSignature` with a wrong one, 404
  `WorkflowNotFound` for another workflow. The trigger answers 202 before the flow posts the
  card, so a card the flow cannot post is not refused on the wire (the run fails later, "the
  result of 'foreach' expression ... 'attachments' is of type 'Null'" in reports): this
  stand-in answers such a request 202 too, as Teams would, and only records the problem.
- Twilio Messages API (Message resource, "Create a Message"; the error dictionary): POST
  `/2010-04-01/Accounts/{AccountSid}/Messages.json`, Content-Type
  application/x-www-form-urlencoded (Twilio reads its parameters from the form only), HTTP
  Basic auth with the AccountSid and the auth token; `To` in E.164, `Body` 1 to 1,600
  characters, and `From` or `MessagingServiceSid` (error 21603 documents the service SID as
  "instead of or in addition to" `From`, so both is allowed, neither is refused). Answers:
  201 with the message resource as JSON; errors as JSON `{code, message, more_info, status}`:
  401 20003 "Authenticate", 400 21604 (no `To`), 21211 (`To` not a phone number), 21603 (no
  sender), 21602 (no `Body`), 21617 (`Body` over 1,600), 404 20404 for another path and 405
  20004 for another method.
- PagerDuty Events API v2 (developer docs "Send an Alert Event" and "Events API v2
  Overview"): POST `/v2/enqueue`, application/json, at most 512 KB; `routing_key` the 32
  character integration key; `event_action` one of trigger, acknowledge, resolve;
  `dedup_key` a string of at most 255 characters (required for acknowledge and resolve); for
  a trigger a `payload` with `summary` (1 to 1,024 characters), `source` and `severity`
  (critical, error, warning, info), and optional `timestamp` (ISO 8601), `component`,
  `group`, `class` (strings) and `custom_details` (an object). Answers: 202
  `{"status": "success", "message": "Event processed", "dedup_key": ...}`; 400
  `{"status": "invalid event", "message": "Event object is invalid", "errors": [...]}`, its
  errors worded as PagerDuty words them where seen ("Length of 'routing_key' is incorrect
  (should be 32 characters)", "'payload.severity' is missing or blank"), the others in that
  style by the stand-in; another path gets 404, another method 405 (the stand-in's own).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar, Protocol
from urllib.parse import parse_qs

from aiohttp import web

from tests.support import Receiver

Answer = tuple[int, str, dict[str, str]]
"""An HTTP answer as tests.support.Receiver gives it: status, text body, headers."""

JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Wire:
    """One request as it came over the wire."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: Mapping[str, str]
    """Case-insensitive, as aiohttp gives them."""
    body: bytes

    @classmethod
    def of(cls, request: web.Request, raw: bytes) -> Wire:
        query = parse_qs(request.query_string, keep_blank_values=True)
        return cls(request.method, request.path, query, request.headers, raw)

    @property
    def media_type(self) -> str:
        """The Content-Type without its parameters, lower case; "" when there is none."""
        return self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()

    def json_body(self) -> object:
        """The body as JSON (UTF-8); NOT_JSON when it is not JSON."""
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return NOT_JSON


NOT_JSON = object()
"""What Wire.json_body gives for a body that is not JSON."""


@dataclass(frozen=True)
class Verdict:
    """What a service makes of a request: what is wrong with it (nothing: it is well-formed)
    and what the service answers."""

    problems: tuple[str, ...]
    answer: Answer


class Service(Protocol):
    """One service a stand-in plays."""

    name: ClassVar[str]

    def serves(self, path: str) -> bool:
        """Whether a request to `path` is meant for this service."""
        ...

    def judge(self, wire: Wire) -> Verdict:
        """Check one request against the service's documented format."""
        ...


def _text(status: int, body: str) -> Answer:
    return status, body, {}


def _json(status: int, body: object) -> Answer:
    return status, json.dumps(body), dict(JSON_HEADERS)


def _nonblank(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


@dataclass(frozen=True)
class Slack:
    """A Slack incoming webhook; `hook` is its path, `/services/T…/B…/secret`."""

    hook: str
    name: ClassVar[str] = "Slack"

    def serves(self, path: str) -> bool:
        return path.startswith("/services/")

    def judge(self, wire: Wire) -> Verdict:
        if wire.path != self.hook:
            if wire.path.rsplit("/", 1)[0] == self.hook.rsplit("/", 1)[0]:
                return Verdict(("the webhook's secret is wrong",), _text(403, "invalid_token"))
            return Verdict(("there is no incoming webhook at this path",), _text(404, "no_service"))
        if wire.method != "POST":
            return Verdict(
                (f"the method is {wire.method}, not POST",), _text(405, "invalid_method")
            )
        if wire.media_type != "application/json":
            problem = f"the Content-Type is {wire.media_type or 'missing'}, not application/json"
            return Verdict((problem,), _text(400, "invalid_payload"))
        message = wire.json_body()
        if not isinstance(message, dict):
            return Verdict(("the body is not a JSON object",), _text(400, "invalid_payload"))
        text, blocks = message.get("text"), message.get("blocks")
        if text is not None and not isinstance(text, str):
            return Verdict(("`text` is not a string",), _text(400, "invalid_payload"))
        if blocks is not None and not (
            isinstance(blocks, list)
            and blocks
            and all(isinstance(b, dict) and _nonblank(b.get("type")) for b in blocks)
        ):
            problem = "`blocks` is not a list of objects that each have a `type`"
            return Verdict((problem,), _text(400, "invalid_blocks"))
        if not _nonblank(text) and not blocks:
            return Verdict(("neither a non-empty `text` nor `blocks`",), _text(400, "no_text"))
        return Verdict((), _text(200, "ok"))


TEAMS_CARD = "application/vnd.microsoft.card.adaptive"
TEAMS_LIMIT = 28 * 1024
"""The most a Teams message may hold, in bytes."""
CARD_VERSION = re.compile(r"1\.[0-9]")


def teams_card_problems(message: object) -> list[str]:
    """Every way `message` is not a Teams message holding Adaptive Cards."""
    if not isinstance(message, dict):
        return ["the body is not a JSON object"]
    problems = []
    if message.get("type") != "message":
        problems.append(f"`type` is {message.get('type')!r}, not 'message'")
    attachments = message.get("attachments")
    if not isinstance(attachments, list) or not attachments:
        return [*problems, "`attachments` is not a non-empty list"]
    for n, attachment in enumerate(attachments):
        where = f"attachments[{n}]"
        if not isinstance(attachment, dict):
            problems.append(f"{where} is not an object")
            continue
        if attachment.get("contentType") != TEAMS_CARD:
            problems.append(f"{where}.contentType is {attachment.get('contentType')!r}")
        card = attachment.get("content")
        if not isinstance(card, dict):
            problems.append(f"{where}.content is not an object")
            continue
        if card.get("type") != "AdaptiveCard":
            problems.append(f"{where}.content.type is {card.get('type')!r}, not 'AdaptiveCard'")
        version = card.get("version")
        if not (isinstance(version, str) and CARD_VERSION.fullmatch(version)):
            problems.append(f"{where}.content.version is {version!r}, not a 1.x version")
        body = card.get("body")
        if not isinstance(body, list) or not body:
            problems.append(f"{where}.content.body is not a non-empty list")
            continue
        for m, element in enumerate(body):
            if not isinstance(element, dict) or not _nonblank(element.get("type")):
                problems.append(f"{where}.content.body[{m}] is not an element with a `type`")
            elif element["type"] == "TextBlock" and not isinstance(element.get("text"), str):
                problems.append(f"{where}.content.body[{m}] is a TextBlock without `text`")
    return problems


def _logic_apps_error(status: int, code: str, message: str) -> Answer:
    return _json(status, {"error": {"code": code, "message": message}})


@dataclass(frozen=True)
class Teams:
    """A Teams Workflows webhook: the trigger at `path`, signed with `sig`."""

    path: str
    sig: str
    name: ClassVar[str] = "Teams"

    def serves(self, path: str) -> bool:
        return path.startswith("/workflows/")

    def judge(self, wire: Wire) -> Verdict:
        if wire.path != self.path:
            problem = "there is no workflow trigger at this path"
            answer = _logic_apps_error(404, "WorkflowNotFound", "The workflow could not be found.")
            return Verdict((problem,), answer)
        if wire.method != "POST":
            answer = _logic_apps_error(405, "MethodNotAllowed", "The method is not allowed.")
            return Verdict((f"the method is {wire.method}, not POST",), answer)
        missing = [p for p in ("api-version", "sp", "sv", "sig") if not wire.query.get(p)]
        if missing:
            problem = f"the URL lacks the shared-access parameters {', '.join(missing)}"
            message = "The request must be authenticated only by Shared Access scheme."
            answer = _logic_apps_error(401, "DirectApiAuthorizationRequired", message)
            return Verdict((problem,), answer)
        if wire.query["sig"] != [self.sig]:
            message = "The provided authorization signature is not valid."
            answer = _logic_apps_error(401, "DirectApiInvalidAuthorizationSignature", message)
            return Verdict(("the signature `sig` is wrong",), answer)
        # Teams' trigger accepts the request before its flow reads the card: what is wrong
        # from here on is recorded, and answered 202 as Teams answers it.
        problems = []
        if wire.media_type != "application/json":
            problems.append(f"the Content-Type is {wire.media_type or 'missing'}, not JSON")
        if len(wire.body) > TEAMS_LIMIT:
            problems.append(f"the message is {len(wire.body)} bytes, over Teams' 28 KB")
        problems += teams_card_problems(wire.json_body())
        return Verdict(tuple(problems), _text(202, ""))


E164 = re.compile(r"\+[1-9][0-9]{1,14}")
TWILIO_BODY_LIMIT = 1600


def _twilio_error(status: int, code: int, message: str) -> Answer:
    more_info = f"https://www.twilio.com/docs/errors/{code}"
    body = {"code": code, "message": message, "more_info": more_info, "status": status}
    return _json(status, body)


def twilio_message(account_sid: str, form: Mapping[str, str]) -> dict[str, object]:
    """The message resource Twilio answers a created message with (its main fields)."""
    sid = "SM" + uuid.uuid4().hex
    service = form.get("MessagingServiceSid")
    return {
        "sid": sid,
        "account_sid": account_sid,
        "to": form.get("To"),
        "from": form.get("From"),
        "messaging_service_sid": service,
        "body": form.get("Body"),
        "status": "accepted" if service else "queued",
        "direction": "outbound-api",
        "api_version": "2010-04-01",
        "error_code": None,
        "error_message": None,
        "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json",
    }


@dataclass(frozen=True)
class Twilio:
    """Twilio's Messages API for one account, whose auth token is `auth_token`."""

    account_sid: str
    auth_token: str
    name: ClassVar[str] = "Twilio"

    def serves(self, path: str) -> bool:
        return path.startswith("/2010-04-01/")

    def judge(self, wire: Wire) -> Verdict:
        path = f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"
        if wire.path != path:
            message = f"The requested resource {wire.path} was not found"
            return Verdict((f"the path is not {path}",), _twilio_error(404, 20404, message))
        if wire.method != "POST":
            answer = _twilio_error(405, 20004, "Method not allowed")
            return Verdict((f"the method is {wire.method}, not POST",), answer)
        if _basic_credentials(wire.headers.get("Authorization", "")) != (
            self.account_sid,
            self.auth_token,
        ):
            problem = "the Authorization is not HTTP Basic with the AccountSid and auth token"
            return Verdict((problem,), _twilio_error(401, 20003, "Authenticate"))
        problems: list[str] = []
        answers: list[Answer] = []

        def wrong(problem: str, code: int, message: str) -> None:
            problems.append(problem)
            answers.append(_twilio_error(400, code, message))

        fields: dict[str, list[str]] = {}
        if wire.media_type == "application/x-www-form-urlencoded":
            fields = parse_qs(wire.body.decode("utf-8", "replace"), keep_blank_values=True)
        else:
            kind = wire.media_type or "missing"
            problems.append(
                f"the Content-Type is {kind}, not application/x-www-form-urlencoded, "
                "so Twilio sees no parameters"
            )
        form = {k: v[0] for k, v in fields.items()}
        to, body = form.get("To", ""), form.get("Body", "")
        if not to:
            wrong("there is no `To`", 21604, "A 'To' phone number is required.")
        elif not E164.fullmatch(to):
            wrong(
                f"`To` {to!r} is not an E.164 number",
                21211,
                f"The 'To' number {to} is not a valid phone number.",
            )
        if not form.get("From") and not form.get("MessagingServiceSid"):
            wrong(
                "there is neither `From` nor `MessagingServiceSid`",
                21603,
                "A 'From' or 'MessagingServiceSid' parameter is required to send a message",
            )
        if not body:
            wrong("there is no `Body`", 21602, "Message body is required.")
        elif len(body) > TWILIO_BODY_LIMIT:
            wrong(
                f"`Body` is {len(body)} characters, over 1,600",
                21617,
                "The concatenated message body exceeds the 1600 character limit.",
            )
        if problems:  # a body that is not a form leaves no `To`: there is an answer
            return Verdict(tuple(problems), answers[0])
        return Verdict((), _json(201, twilio_message(self.account_sid, form)))


def _basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


PAGERDUTY_ACTIONS = ("trigger", "acknowledge", "resolve")
PAGERDUTY_SEVERITIES = ("critical", "error", "warning", "info")
PAGERDUTY_LIMIT = 512 * 1024


def pagerduty_event_errors(event: object) -> list[str]:
    """Every way `event` is not an Events API v2 event, as PagerDuty's `errors` words it."""
    if not isinstance(event, dict):
        return ["Event object is not a JSON object"]
    errors = []
    key = event.get("routing_key")
    if not _nonblank(key):
        errors.append("'routing_key' is missing or blank")
    elif len(str(key)) != 32:
        errors.append("Length of 'routing_key' is incorrect (should be 32 characters)")
    action = event.get("event_action")
    if not _nonblank(action):
        errors.append("'event_action' is missing or blank")
    elif action not in PAGERDUTY_ACTIONS:
        errors.append("'event_action' is invalid (must be trigger, acknowledge or resolve)")
    dedup_key = event.get("dedup_key")
    if dedup_key is not None and not isinstance(dedup_key, str):
        errors.append("'dedup_key' is not a string")
    elif isinstance(dedup_key, str) and len(dedup_key) > 255:
        errors.append("'dedup_key' is too long (at most 255 characters)")
    elif action in ("acknowledge", "resolve") and not dedup_key:
        errors.append(f"'dedup_key' is required for {action} events")
    if action == "trigger":
        errors += _pagerduty_payload_errors(event.get("payload"))
    return errors


def _pagerduty_payload_errors(payload: object) -> list[str]:
    if not isinstance(payload, dict):
        return ["'payload' is missing or not an object"]
    errors = [
        f"'payload.{name}' is missing or blank"
        for name in ("summary", "source", "severity")
        if not _nonblank(payload.get(name))
    ]
    summary = payload.get("summary")
    if isinstance(summary, str) and len(summary) > 1024:
        errors.append("'payload.summary' is too long (at most 1024 characters)")
    severity = payload.get("severity")
    if _nonblank(severity) and severity not in PAGERDUTY_SEVERITIES:
        errors.append("'payload.severity' is invalid (must be critical, error, warning or info)")
    if "timestamp" in payload and not _iso8601(payload["timestamp"]):
        errors.append("'payload.timestamp' is not an ISO 8601 timestamp")
    errors += [
        f"'payload.{name}' is not a string"
        for name in ("component", "group", "class")
        if name in payload and not isinstance(payload[name], str)
    ]
    if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
        errors.append("'payload.custom_details' is not an object")
    return errors


def _iso8601(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _invalid_event(errors: list[str]) -> Answer:
    body = {"status": "invalid event", "message": "Event object is invalid", "errors": errors}
    return _json(400, body)


@dataclass(frozen=True)
class PagerDuty:
    """PagerDuty's Events API v2."""

    name: ClassVar[str] = "PagerDuty"

    def serves(self, path: str) -> bool:
        return path.startswith("/v2/")

    def judge(self, wire: Wire) -> Verdict:
        if wire.path != "/v2/enqueue":
            return Verdict(("the path is not /v2/enqueue",), _text(404, "Not Found"))
        if wire.method != "POST":
            return Verdict(
                (f"the method is {wire.method}, not POST",), _text(405, "Method Not Allowed")
            )
        if wire.media_type != "application/json":
            error = f"Content-Type is {wire.media_type or 'missing'}, not application/json"
            return Verdict((error,), _invalid_event([error]))
        if len(wire.body) > PAGERDUTY_LIMIT:
            error = f"Event is {len(wire.body)} bytes, over the 512 KB limit"
            return Verdict((error,), _invalid_event([error]))
        event = wire.json_body()
        if event is NOT_JSON:
            return Verdict(("the body is not JSON",), _invalid_event(["Event is not valid JSON"]))
        errors = pagerduty_event_errors(event)
        if errors:
            return Verdict(tuple(errors), _invalid_event(errors))
        assert isinstance(event, dict)
        dedup_key = event.get("dedup_key") or uuid.uuid4().hex
        accepted = {"status": "success", "message": "Event processed", "dedup_key": dedup_key}
        return Verdict((), _json(202, accepted))


@dataclass
class StandIns:
    """The services one Receiver plays; installed as the Receiver's `check`."""

    recv: Receiver
    services: tuple[Service, ...]
    others: bool = False
    """Whether paths no service serves get the Receiver's usual answers (webhooks beside the
    services) instead of a 404 counted as malformed."""
    malformed: list[str] = field(default_factory=list)
    """One line per problem found in a request: the service, the request, what is wrong."""

    def __post_init__(self) -> None:
        self.recv.check = self.answer

    def answer(self, request: web.Request, raw: bytes) -> Answer | None:
        """The documented error for a malformed request; else the queued reply for its path
        (None: the Receiver gives it), else the service's documented success."""
        wire = Wire.of(request, raw)
        service = next((s for s in self.services if s.serves(wire.path)), None)
        if service is None:
            if self.others:
                return None
            self.malformed.append(f"{wire.method} {wire.path}: no stand-in serves this path")
            return _text(404, "Not Found")
        verdict = service.judge(wire)
        self.malformed += [
            f"{service.name}: {wire.method} {wire.path}: {p}" for p in verdict.problems
        ]
        if not verdict.problems and self.recv.replies.get(wire.path):
            return None
        return verdict.answer


def play(recv: Receiver, *services: Service, others: bool = False) -> StandIns:
    """Make `recv` play `services`, checking every request it gets against their format;
    with `others`, a path no service serves keeps the Receiver's usual answer."""
    return StandIns(recv, services, others)
