"""Actions: what an automation does when it fires, one module per kind behind one interface.

A kind module provides a frozen spec, parsed from the action's block in `rules.yaml` by a
pure `parse(options)`, with `templates()` (for load-time field checks) and
`async run(ctx) -> ActionResult`. Expected failures raise `ActionError`, which says whether
retrying can help; anything else is a bug and is reported as one by the engine.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar, Protocol

import aiohttp

from automationd.durations import parse_duration
from automationd.templating import Template, TemplateError

Path = tuple[str | int, ...]

DEFAULT_TIMEOUT = 10.0
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
    """What a destination answered to a successful action: status and a short detail."""

    status: int | None
    detail: str


@dataclass(frozen=True, slots=True)
class ActionContext:
    """What an action run gets: the event, who fired it, and the shared HTTP client."""

    event: Mapping[str, object]
    automation: str
    index: int
    http: aiohttp.ClientSession


class ActionSpec(Protocol):
    """One configured action of an automation."""

    kind: ClassVar[str]

    @property
    def timeout(self) -> float: ...

    def templates(self) -> Iterator[tuple[Path, Template]]:
        """Every template of this action with its path inside the action's block."""
        ...

    def describe(self) -> str:
        """A one-line summary without secret values, for logs and the rules listing."""
        ...

    async def run(self, ctx: ActionContext) -> ActionResult:
        """Carry the action out once; raise ActionError on an expected failure."""
        ...


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

    def template(self, key: str, default: str | None = None) -> Template | None:
        """The option `key` parsed as a template, else `default` parsed, else None."""
        text = self.options.get(key, default)
        if text is None:
            return None
        try:
            template = Template.parse(str(text))
        except TemplateError as exc:
            self.problems.append(((key,), template_problem(exc)))
            return None
        self.parsed.append(((key,), template))
        return template

    def timeout(self) -> float:
        """The per-attempt timeout in seconds (default 10 s)."""
        raw = self.options.get("timeout")
        if raw is None:
            return DEFAULT_TIMEOUT
        try:
            seconds = parse_duration(raw)
        except ValueError as exc:
            self.problems.append((("timeout",), str(exc)))
            return DEFAULT_TIMEOUT
        if seconds <= 0:
            self.problems.append((("timeout",), "the timeout must be longer than 0"))
        return seconds

    def done(self) -> None:
        """Raise SpecProblems if anything was wrong (with the templates that did parse, so
        their fields can still be checked)."""
        if self.problems:
            raise SpecProblems(self.problems, self.parsed)


def template_problem(exc: TemplateError) -> str:
    """How a template error reads in a config problem."""
    return f"template error at character {exc.offset + 1}: {exc.message}"


def shorten(text: str, limit: int = DETAIL_LIMIT) -> str:
    """Cut a response body for the audit trail."""
    return text if len(text) <= limit else text[:limit] + "…"
