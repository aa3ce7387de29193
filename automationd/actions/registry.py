"""Action kind -> the parser of its spec. Schema, README and tests check it is complete."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from automationd.actions import (
    ActionSpec,
    email,
    orchestrator,
    pagerduty,
    slack,
    teams,
    twilio,
    webhook,
)

PARSERS: Mapping[str, Callable[[Mapping[str, object]], ActionSpec]] = {
    webhook.WebhookAction.kind: webhook.parse,
    slack.SlackAction.kind: slack.parse,
    teams.TeamsAction.kind: teams.parse,
    email.EmailAction.kind: email.parse,
    twilio.TwilioAction.kind: twilio.parse,
    pagerduty.PagerDutyAction.kind: pagerduty.parse,
    orchestrator.CancelFlowRunAction.kind: orchestrator.parse_cancel,
    orchestrator.PauseScheduleAction.kind: orchestrator.parse_pause,
    orchestrator.StartFlowRunAction.kind: orchestrator.parse_start,
}
"""The kinds this build can run."""

ALL_KINDS = tuple(PARSERS)
"""Every action kind of the rules format, in the schema's order."""
