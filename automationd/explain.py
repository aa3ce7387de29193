"""What the rules would do with an event, without doing it: `automationd test` and POST /explain.

For every automation, in file order: whether it fires and, if not, the first reason (disabled,
another event type, the matcher that failed and the value it saw, the condition and what it
gave, a cooldown); for those that fire, each action as it would be sent, secrets masked.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from fnmatch import fnmatchcase
from typing import cast

import aiohttp

from automationd.actions import ActionContext, Services
from automationd.config import Automation, Config
from automationd.events import normalise
from automationd.matching import judge

CooldownCheck = Callable[[Automation, dict[str, object]], tuple[str, float] | None]
"""(key, seconds left) when a cooldown would hold the automation back."""


def explain(
    config: Config, raw: object, now: datetime, cooldown: CooldownCheck | None = None
) -> dict[str, object]:
    """The normalised event and a verdict per automation. Raises EventError for a bad event."""
    event = normalise(raw, config.resolver(), now)
    event_type = str(event["type"])
    # preview never sends: the HTTP client is not needed, only secrets' names and settings
    services = Services(
        cast(aiohttp.ClientSession, None),
        config.secrets,
        config.endpoints,
        config.smtp,
        config.prefect,
    )
    verdicts: list[dict[str, object]] = []
    for automation in config.automations:
        verdict: dict[str, object] = {"automation": automation.name, "fires": False}
        held = None
        if not automation.enabled:
            verdict["reason"] = "disabled (enabled: false)"
        elif not any(fnmatchcase(event_type, pattern) for pattern in automation.on):
            verdict["reason"] = f"type {event_type!r} is not in on: {list(automation.on)}"
        elif not (judged := judge(automation, event)).fired:
            verdict["reason"] = judged.reason + (f" ({judged.error})" if judged.error else "")
        elif cooldown is not None and (held := cooldown(automation, event)) is not None:
            verdict["reason"] = f"cooldown: key {held[0]!r} is held for {held[1]:g} s more"
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
