"""Which automations an event fires: an index by event type, then matchers, then the condition.

An event only meets the automations selecting its type (exact names through a dict, `*`
globs through a per-type cache), so a thousand automations on other types cost nothing. Among
those, each automation is filed under the values of its first `match:` entry (when they are
plain JSON scalars), so an event only meets the automations whose first matcher its own value
at that path can meet, plus those with no such matcher: a thousand automations on one type,
each for another flow, cost a dict lookup, not a thousand comparisons.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import jmespath.exceptions

from automationd.globs import is_glob, selects
from automationd.jmescompile import is_truthy
from automationd.rules import Automation, Matcher
from automationd.templating import lookup


def _same(expected: object, actual: object) -> bool:
    """JSON equality: `true` never equals `1`."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    return expected == actual


def matcher_holds(matcher: Matcher, event: Mapping[str, object]) -> bool:
    """Whether the event's value at the matcher's path equals one of its values.

    When the event's value is a list (e.g. tags), one of its items must equal one.
    """
    actual = lookup(event, matcher.path)
    items = actual if isinstance(actual, list) else [actual]
    return any(_same(expected, item) for expected in matcher.values for item in items)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether an automation fires for an event, and if not, the first reason why."""

    fired: bool
    reason: str = ""
    error: str = ""


FIRED = Verdict(True)
MISSED = Verdict(False, "missed")


def judge(automation: Automation, event: Mapping[str, object], *, why: bool = True) -> Verdict:
    """Matchers in file order, then the condition. A condition that fails to evaluate (e.g. a
    function given the wrong type, or jmespath ordering a number against a string, which it
    lets through as Python's TypeError) does not fire and says why in `error`. With `why`
    false, a plain miss comes without its reason (matching every event has no use for it)."""
    for matcher in automation.match:
        if not matcher_holds(matcher, event):
            if not why:
                return MISSED
            seen = lookup(event, matcher.path)
            expected = list(matcher.values)
            return Verdict(
                False, f"match {matcher.attribute}: expected one of {expected!r}, saw {seen!r}"
            )
    if automation.condition is not None:
        try:
            result = automation.condition(event)
        except (jmespath.exceptions.JMESPathError, TypeError) as exc:
            return Verdict(False, f"condition {automation.when!r} failed", error=str(exc))
        if not is_truthy(result):
            if not why:
                return MISSED
            return Verdict(False, f"condition {automation.when!r} gave {result!r}")
    return FIRED


Candidate = tuple[int, Automation]
"""An automation with its position in the file (verdicts go in file order)."""


def _hashable(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


@dataclass(frozen=True, slots=True)
class _TypeIndex:
    """The automations selecting one event type: those filed under the values of their first
    matcher (path -> value -> automations), and the rest, which every event of the type
    meets."""

    by_value: dict[tuple[str, ...], dict[object, list[Candidate]]]
    always: tuple[Candidate, ...]

    @classmethod
    def of(cls, candidates: list[Candidate]) -> _TypeIndex:
        by_value: dict[tuple[str, ...], dict[object, list[Candidate]]] = {}
        always = []
        for candidate in candidates:
            first = candidate[1].match[0] if candidate[1].match else None
            if first is None or not all(_hashable(v) for v in first.values):
                always.append(candidate)
                continue
            values = by_value.setdefault(first.path, {})
            for value in set(first.values):
                values.setdefault(value, []).append(candidate)
        return cls(by_value, tuple(always))

    def meeting(self, event: Mapping[str, object]) -> list[Automation]:
        """The automations whose first matcher may hold for `event` (a superset: a value
        equal in Python but not in JSON, `1` and `true`, is sorted out by `judge`), in file
        order."""
        found = list(self.always)
        for path, values in self.by_value.items():
            actual = lookup(event, path)
            for item in actual if isinstance(actual, list) else (actual,):
                if _hashable(item):
                    found += values.get(item, ())
        if len(found) > 1:  # one automation may be met through several items of a list
            found = sorted({candidate[0]: candidate for candidate in found}.values())
        return [automation for _, automation in found]


class AutomationIndex:
    """The enabled automations of one config, indexed by the event types they select and
    the values of their first matcher."""

    def __init__(self, automations: Sequence[Automation]) -> None:
        self._exact: dict[str, list[Candidate]] = {}
        self._globs: list[Candidate] = []
        for position, automation in enumerate(automations):
            if not automation.enabled:
                continue
            if any(is_glob(pattern) for pattern in automation.on):
                self._globs.append((position, automation))
            else:
                for event_type in automation.on:
                    self._exact.setdefault(event_type, []).append((position, automation))
        self._of_type = lru_cache(maxsize=4096)(self._type_index)

    def _type_index(self, event_type: str) -> _TypeIndex:
        found = list(self._exact.get(event_type, ()))
        found += [
            (position, automation)
            for position, automation in self._globs
            if selects(automation.on, event_type)
        ]
        found.sort(key=lambda pair: pair[0])
        return _TypeIndex.of(found)

    def judge_candidates(self, event: Mapping[str, object]) -> list[tuple[Automation, Verdict]]:
        """The verdicts of the automations that may fire for the event, in file order; every
        other automation has been ruled out by its type or first matcher. A miss says no more
        than that (`judge` says why); an error says what failed."""
        event_type = event.get("type")
        if not isinstance(event_type, str):
            return []
        return [
            (automation, judge(automation, event, why=False))
            for automation in self._of_type(event_type).meeting(event)
        ]
