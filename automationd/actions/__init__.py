"""Actions: what an automation does when it fires, one module per kind behind one interface.

A kind module provides a frozen spec, parsed from the action's block in `rules.yaml` by a
pure `parse(options)`, with `templates()` (for load-time field checks), `destination()` (for
per-destination concurrency) and `async run(ctx) -> ActionResult`, which makes one attempt.
Expected failures raise `ActionError`, which says whether retrying can help; anything else is
a bug and is reported as one by the engine. Timeouts and retries are the engine's, the same
for every kind, from the `Action` that wraps a spec.
"""

from __future__ import annotations

import functools
import hashlib
import random
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import InitVar, dataclass, field
from typing import ClassVar, Protocol

import aiohttp

from automationd.backoff import doubled, equal_jitter
from automationd.secrets import Secret
from automationd.templating import (
    JsonNode,
    JsonTemplateError,
    Template,
    TemplateError,
    compile_json,
    json_templates,
)

Path = tuple[str | int, ...]

DEFAULT_TIMEOUT = 10.0
DEFAULT_GIVE_UP_AFTER = 3600.0
DETAIL_LIMIT = 1024
LONGEST_RETRY_AFTER = 3600.0


class ActionError(Exception):
    """An expected failure. retryable=True only when retrying can help (timeout, 429, 5xx)."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        detail: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status = status
        self.detail = detail
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class ActionResult:
    """What a destination answered to a successful attempt: status and a short detail."""

    status: int | None
    detail: str


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently an action is retried: exponential backoff with jitter."""

    attempts: int = 5
    initial: float = 1.0
    max: float = 300.0

    def delay(self, failed_attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait after attempt number `failed_attempt` (1-based) failed.

        The backoff doubles from `initial` up to `max`, with "equal jitter" (half fixed, half
        random) so that many actions failing together do not retry in lockstep. A
        destination's Retry-After is honoured when it asks for longer (up to an hour)."""
        backoff = equal_jitter(doubled(self.initial, failed_attempt - 1, self.max), rng)
        if retry_after is not None:
            return max(backoff, min(retry_after, LONGEST_RETRY_AFTER))
        return backoff


@dataclass(frozen=True)
class ClientTls:
    """How the certificate of an HTTPS destination is checked (`tls: {ca_file, insecure}`):
    against the CA certificates in `ca_file` instead of the system's, or (`insecure`) not
    at all. Config builds the SSL context once at load (reading the file is its job); it is
    kept out of the fields, so equality, repr and `dataclasses.asdict` (GET /rules shows the
    prefect: block) see only the settings."""

    ca_file: str | None = None
    insecure: bool = False
    context: InitVar[ssl.SSLContext | None] = None
    _context: ClassVar[ssl.SSLContext | None] = None  # set per instance by __post_init__

    def __post_init__(self, context: ssl.SSLContext | None) -> None:
        object.__setattr__(self, "_context", context)


def client_ssl(tls: ClientTls | None) -> ssl.SSLContext | bool:
    """aiohttp's `ssl=` for a request to a destination with these settings: the private
    CA's context, False (no verification) when insecure, else True (the system's CAs)."""
    if tls is None:
        return True
    if tls.insecure:
        return False
    return tls._context if tls._context is not None else True


@functools.lru_cache(maxsize=32)
def trusting(ca_pem: str) -> ssl.SSLContext:
    """A client context that trusts exactly the CA certificates of `ca_pem`; raises
    ssl.SSLError when it holds none. Cached by content, so every action naming the same CA
    shares one context, across reloads too, and a changed file gets a new one."""
    if not ca_pem.strip():
        raise ssl.SSLError("no certificate")  # cadata="" would mean the system's CAs
    return ssl.create_default_context(cadata=ca_pem)


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Base URLs of the services actions call; configurable for proxies and tests, with
    how their certificates are checked (`tls`)."""

    twilio: str = "https://api.twilio.com"
    pagerduty: str = "https://events.pagerduty.com"
    tls: ClientTls | None = None


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """The SMTP server email actions send through (the `smtp:` block)."""

    host: str
    sender: str
    port: int = 25
    starttls: bool = False
    username: str | None = None
    password_secret: str | None = None
    timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class PrefectSettings:
    """The Prefect server (the `prefect:` block): orchestrator actions call its REST API, and
    with `subscribe` its event stream is a source of flow run state changes."""

    api_url: str
    api_key_secret: str | None = None
    ui_url: str | None = None
    subscribe: bool = False
    tls: ClientTls | None = None

    def auth_headers(self, secrets: Mapping[str, Secret]) -> dict[str, str]:
        """`Authorization: Bearer <api key>` when an API key is configured."""
        if self.api_key_secret is None:
            return {}
        return {"Authorization": f"Bearer {secrets[self.api_key_secret].reveal()}"}


@dataclass(frozen=True, slots=True)
class Services:
    """What actions reach beyond the event: the HTTP client, secrets and service settings.
    A preview (`automationd test`, POST /explain) sends nothing, so it has no HTTP client
    (`session` None)."""

    session: aiohttp.ClientSession | None
    secrets: Mapping[str, Secret]
    endpoints: Endpoints = Endpoints()
    smtp: SmtpSettings | None = None
    prefect: PrefectSettings | None = None

    @property
    def http(self) -> aiohttp.ClientSession:
        """The HTTP client to send with; asking a preview's for it is a bug, and says so."""
        if self.session is None:
            raise RuntimeError("a preview has no HTTP client: it sends nothing")
        return self.session


@dataclass(frozen=True, slots=True)
class ActionContext:
    """What one run of an action gets. `progress` survives between the attempts of one run
    (e.g. which phone numbers already got their text), so a retry does not repeat them."""

    event: Mapping[str, object]
    automation: str
    index: int
    services: Services
    progress: dict[str, object] = field(default_factory=dict)

    @property
    def idempotency_key(self) -> str:
        """Stable per (event id, automation, action index): repeats are harmless downstream."""
        raw = f"{self.event.get('id')}\x1f{self.automation}\x1f{self.index}"
        return hashlib.sha256(raw.encode()).hexdigest()[:32]

    def secret(self, name: str) -> str:
        """The value of a secret, for sending it; config checked it exists."""
        return self.services.secrets[name].reveal()


class ActionSpec(Protocol):
    """One configured action of an automation, as its kind module parsed it."""

    kind: ClassVar[str]

    def templates(self) -> Iterator[tuple[Path, Template]]:
        """Every template of this action with its path inside the action's block."""
        ...

    def describe(self) -> str:
        """A one-line summary without secret values, for logs and the rules listing."""
        ...

    def destination(self) -> str:
        """Who receives it (a host, a service): concurrency is bounded per destination."""
        ...

    def preview(self, ctx: ActionContext) -> dict[str, object]:
        """What `run` would send for the event of `ctx`, secrets masked; sends nothing."""
        ...

    async def run(self, ctx: ActionContext) -> ActionResult:
        """Make one attempt; raise ActionError on an expected failure."""
        ...


@dataclass(frozen=True, slots=True)
class Action:
    """A spec with the settings every kind shares: per-attempt timeout, retry policy and the
    longest life of one run (waiting for the destination, attempts and back-offs)."""

    spec: ActionSpec
    timeout: float = DEFAULT_TIMEOUT
    retry: RetryPolicy = RetryPolicy()
    give_up_after: float = DEFAULT_GIVE_UP_AFTER

    @property
    def kind(self) -> str:
        return self.spec.kind


class SpecProblems(Exception):
    """Problems in one action block, each with its path inside the block."""

    def __init__(
        self, problems: list[tuple[Path, str]], parsed: list[tuple[Path, Template]] | None = None
    ) -> None:
        super().__init__("; ".join(message for _, message in problems))
        self.problems = problems
        self.parsed = parsed or []


class OptionReader:
    """Reads an action block's options, collecting every problem instead of stopping."""

    def __init__(self, options: Mapping[str, object]) -> None:
        self.options = options
        self.problems: list[tuple[Path, str]] = []
        self.parsed: list[tuple[Path, Template]] = []

    def template(self, key: str, default: str) -> Template:
        """The option `key` parsed as a template (else `default`)."""
        text = str(self.options.get(key, default))
        try:
            template = Template.parse(text)
        except TemplateError as exc:
            self.problems.append(((key,), template_problem(exc)))
            return Template(text, (text,))
        self.parsed.append(((key,), template))
        return template

    def json(self, key: str) -> JsonNode | None:
        """An option holding JSON whose keys and string values are templates; None if absent."""
        if key not in self.options:
            return None
        errors: list[JsonTemplateError] = []
        node = compile_json(self.options[key], errors=errors)
        self.problems.extend(((key, *e.path), template_problem(e.error)) for e in errors)
        self.parsed.extend(((key, *path), t) for path, t in json_templates(node))
        return node

    def text(self, key: str, default: str = "") -> str:
        """A plain (not templated) text option."""
        return str(self.options.get(key, default))

    def texts(self, key: str) -> tuple[str, ...]:
        """A list-of-text option."""
        value = self.options.get(key)
        return tuple(str(v) for v in value) if isinstance(value, list) else ()

    def done(self) -> None:
        """Raise SpecProblems if anything was wrong (with the templates that did parse, so
        their fields can still be checked)."""
        if self.problems:
            raise SpecProblems(self.problems, self.parsed)


def template_problem(exc: TemplateError) -> str:
    """How a template error reads in a config problem."""
    return f"template error at character {exc.offset + 1}: {exc.message}"


def shorten(text: str, limit: int = DETAIL_LIMIT) -> str:
    """Cut a text (a response body, a summary) to `limit` characters."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
