"""Which automations an event fires: an index by event type, then matchers, then the condition.

An event only meets the automations selecting its type (exact names through a dict, `*`
globs through a per-type cache), so a thousand automations on other types cost nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import lru_cache

import jmespath.exceptions

from automationd.config import Automation, Matcher
from automationd.jmescompile import is_truthy
from automationd.templating import lookup

_GLOB_CHARS = frozenset("*?[")


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


def judge(automation: Automation, event: Mapping[str, object]) -> Verdict:
    """Matchers in file order, then the condition. A condition that fails to evaluate (e.g. a
    function given the wrong type, or jmespath ordering a number against a string, which it
    lets through as Python's TypeError) does not fire and says why in `error`."""
    for matcher in automation.match:
        if not matcher_holds(matcher, event):
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
            return Verdict(False, f"condition {automation.when!r} gave {result!r}")
    return FIRED


class AutomationIndex:
    """The enabled automations of one config, indexed by the event types they select."""

    def __init__(self, automations: Sequence[Automation]) -> None:
        self._exact: dict[str, list[tuple[int, Automation]]] = {}
        self._globs: list[tuple[int, Automation]] = []
        for position, automation in enumerate(automations):
            if not automation.enabled:
                continue
            if any(_GLOB_CHARS & set(pattern) for pattern in automation.on):
                self._globs.append((position, automation))
            else:
                for event_type in automation.on:
                    self._exact.setdefault(event_type, []).append((position, automation))
        self.candidates = lru_cache(maxsize=4096)(self._candidates)

    def _candidates(self, event_type: str) -> tuple[Automation, ...]:
        """The automations selecting `event_type`, in file order."""
        found = list(self._exact.get(event_type, ()))
        found += [
            (position, automation)
            for position, automation in self._globs
            if any(fnmatchcase(event_type, pattern) for pattern in automation.on)
        ]
        found.sort(key=lambda pair: pair[0])
        return tuple(automation for _, automation in found)

    def judge_all(self, event: Mapping[str, object]) -> list[tuple[Automation, Verdict]]:
        """Every candidate automation of the event's type with its verdict, in file order."""
        event_type = event.get("type")
        if not isinstance(event_type, str):
            return []
        return [
            (automation, judge(automation, event)) for automation in self.candidates(event_type)
        ]
