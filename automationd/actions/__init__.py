"""Actions: what an automation does when it fires, one module per kind behind one interface.

A kind module provides a frozen spec, parsed from the action's block in `rules.yaml` by a
pure `parse(options)`, with `templates()` (for load-time field checks), `destination()` (for
per-destination concurrency) and `async run(ctx) -> ActionResult`, which makes one attempt.
Expected failures raise `ActionError`, which says whether retrying can help; anything else is
a bug and is reported as one by the engine. Timeouts and retries are the engine's, the same
for every kind, from the `Action` that wraps a spec.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import aiohttp

from automationd.rules import (
    DEFAULT_GIVE_UP_AFTER,
    DEFAULT_TIMEOUT,
    ClientTls,
    Endpoints,
    PrefectSettings,
    RetryPolicy,
    SmtpSettings,
)
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

DETAIL_LIMIT = 1024


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


def client_ssl(tls: ClientTls | None) -> ssl.SSLContext | bool:
    """aiohttp's `ssl=` for a request to a destination with these settings: the private
    CA's context, False (no verification) when insecure, else True (the system's CAs)."""
    if tls is None:
        return True
    if tls.insecure:
        return False
    return tls._context if tls._context is not None else True


@dataclass(frozen=True, slots=True)
class Services:
    """What actions reach beyond the event: the HTTP client, secrets and service settings.
    A preview (`automationd test`, POST /explain) sends nothing, so it has no HTTP client
    (`session` None)."""

    session: aiohttp.ClientSession | None
    secrets: Mapping[str, Secret]
    endpoints: Endpoints = field(default_factory=Endpoints)
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
        """The value of a secret, for sending it; the rules checked it exists."""
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
    retry: RetryPolicy = field(default_factory=RetryPolicy)
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
    """How a template error reads in a problem of the rules."""
    return f"template error at character {exc.offset + 1}: {exc.message}"


def shorten(text: str, limit: int = DETAIL_LIMIT) -> str:
    """Cut a text (a response body, a summary) to `limit` characters."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
