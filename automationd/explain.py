"""What the rules would do with an event, without doing it: `automationd test` and POST /explain.

For every automation, in file order: whether it fires and, if not, the first reason (disabled,
another event type, the matcher that failed and the value it saw, the condition and what it
gave, a cooldown); for those that fire, each action as it would be sent, secrets masked.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import cast

from jmespath.exceptions import JMESPathError, JMESPathTypeError

from automationd.actions import ActionContext, Services
from automationd.events import normalise
from automationd.globs import selects
from automationd.matching import judge, matcher_holds
from automationd.rules import Automation, Config
from automationd.templating import lookup

CooldownCheck = Callable[[Automation, dict[str, object]], tuple[str, float] | None]
"""(key, seconds left) when a cooldown would hold the automation back."""


def explain(
    config: Config, raw: object, now: datetime, cooldown: CooldownCheck | None = None
) -> dict[str, object]:
    """The normalised event and a verdict per automation. Raises EventError for a bad event."""
    event = normalise(raw, config.resolver(), now)
    event_type = str(event["type"])
    # preview never sends: no HTTP client, only secrets' names and settings
    services = Services(None, config.secrets, config.endpoints, config.smtp, config.prefect)
    verdicts: list[dict[str, object]] = []
    for automation in config.automations:
        verdict: dict[str, object] = {"automation": automation.name, "fires": False}
        held = None
        if not automation.enabled:
            verdict["reason"] = "disabled (enabled: false)"
        elif not selects(automation.on, event_type):
            verdict["reason"] = f"type {_json(event_type)} is not in on: {_json(automation.on)}"
        elif not judge(automation, event, why=False).fired:
            verdict["reason"] = _why_not(automation, event)
        elif cooldown is not None and (held := cooldown(automation, event)) is not None:
            verdict["reason"] = f"cooldown: key {_json(held[0])} is held for {held[1]:g} s more"
        else:
            verdict["fires"] = True
            verdict["actions"] = [
                {
                    "kind": action.kind,
                    "action_index": index,
                    **action.spec.preview(ActionContext(event, automation.name, index, services)),
                }
                for index, action in enumerate(automation.actions)
            ]
        verdicts.append(verdict)
    return {"event": event, "automations": verdicts}


def _json(value: object) -> str:
    """A value as the rules and events write it: JSON (`false`, `null`, `"text"`), never
    Python's repr (`False`, `None`, `'text'`)."""
    return json.dumps(value, ensure_ascii=False, default=str)


def _why_not(automation: Automation, event: dict[str, object]) -> str:
    """Why `judge` did not fire the automation, every value in JSON form (its own reasons
    show Python's repr): the first matcher that fails and the value it saw, else the
    condition and what it gave, or the error it raised."""
    for matcher in automation.match:
        if not matcher_holds(matcher, event):
            seen = lookup(event, matcher.path)
            return (
                f"match {matcher.attribute}: expected one of {_json(matcher.values)}, "
                f"saw {_json(seen)}"
            )
    condition = f"condition {_json(automation.when)}"
    if automation.condition is None:  # judge fires an automation with no failing matcher
        return "no matcher or condition failed"
    try:
        result = automation.condition(event)
    except JMESPathTypeError as exc:  # its message shows the value in Python's repr
        return (
            f"{condition} failed (In function {exc.function_name}(), invalid type for value: "
            f"{_json(exc.current_value)}, expected one of: {_json(exc.expected_types)}, "
            f"received: {_json(exc.actual_type)})"
        )
    except (JMESPathError, TypeError) as exc:
        return f"{condition} failed ({exc})"
    return f"{condition} gave {_json(result)}"


def as_text(explained: dict[str, object]) -> str:
    """A readable report of one explained event."""
    event = cast(dict[str, object], explained["event"])
    lines = [f"event {event['id']} ({event['type']}): {event['message']}"]
    for verdict in cast(list[dict[str, object]], explained["automations"]):
        if not verdict["fires"]:
            lines.append(f"  - {verdict['automation']}: no, {verdict['reason']}")
            continue
        lines.append(f"  + {verdict['automation']}: FIRES")
        for action in cast(list[dict[str, object]], verdict["actions"]):
            details = {k: v for k, v in action.items() if k not in ("kind", "action_index")}
            lines.append(f"      {action['action_index']}. {action['kind']}")
            for key, value in details.items():
                shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
                lines.append(f"         {key}: {shown}")
    return "\n".join(lines)
