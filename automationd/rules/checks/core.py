"""The core every check shares: the document, the problems found so far, and the small
readings (durations, paths, templates, unique names) that report a problem where they fail."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path

from automationd import yamldoc
from automationd.durations import parse_duration
from automationd.templating import Template, TemplateError
from automationd.yamldoc import Document, Problem

DocPath = yamldoc.Path


def where(path: DocPath) -> str:
    """How a problem names the place it is at: `automations[0].actions[1].webhook`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "the file"


def suggest(word: str, choices: Iterable[str]) -> str:
    """`; did you mean 'x'?` for the closest of `choices`, or nothing."""
    close = difflib.get_close_matches(word, sorted(set(choices)), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


class Checker:
    """Collects every problem of one document, each at its place; the sections (in
    `rules.checks`) build their part of the Config through it."""

    def __init__(
        self,
        doc: Document,
        source: Path,
        environ: Mapping[str, str],
        *,
        resolve_secrets: bool = True,
    ) -> None:
        self.doc = doc
        self.source = source
        self.environ = environ
        self.resolve_secrets = resolve_secrets
        self.problems: list[Problem] = []
        self.bad_paths: list[DocPath] = []
        """Where the schema found something wrong: the checks skip what lies below."""

    def add(self, path: DocPath, message: str, *, at_key: bool = False) -> None:
        """A problem at `path` (at its key rather than its value with `at_key`)."""
        place = self.doc.key_position(path) if at_key else self.doc.position(path)
        self.problems.append(Problem(place, f"{where(path)}: {message}"))

    def clean(self, path: DocPath) -> bool:
        """Whether the schema found nothing wrong at or below `path`."""
        return not any(bad[: len(path)] == path for bad in self.bad_paths)

    def seconds(
        self, path: DocPath, raw: object, default: float, *, positive: bool = True
    ) -> float:
        """A duration (`30s`, `5m`, a number of seconds), else `default`."""
        if raw is None:
            return default
        try:
            seconds = parse_duration(raw)
        except ValueError as exc:
            self.add(path, str(exc))
            return default
        if positive and seconds <= 0:
            self.add(path, "must be longer than 0")
        return seconds

    def path(self, value: object) -> Path:
        """A file the rules name: a relative one is beside the rules file."""
        path = Path(str(value))
        return path if path.is_absolute() else self.source.parent / path

    def template(self, path: DocPath, text: str) -> Template | None:
        """`text` parsed as a template, or None with the problem reported."""
        try:
            return Template.parse(text)
        except TemplateError as exc:
            self.add(path, f"template error at character {exc.offset + 1}: {exc.message}")
            return None

    def unique(self, path: DocPath, value: str, seen: dict[str, int], what: str) -> bool:
        """Report `value` (at `path`) when an earlier entry had it; False then."""
        if value in seen:
            self.add(path, f"duplicate {what} '{value}' (first at line {seen[value]})")
            return False
        place = self.doc.position(path)
        seen[value] = place.line if place else 0
        return True
