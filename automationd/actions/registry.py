"""Action kind -> the parser of its spec. Schema, README and tests check it is complete."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from automationd.actions import ActionSpec, email, pagerduty, slack, teams, twilio, webhook

ALL_KINDS = (
    "webhook",
    "slack",
    "teams",
    "email",
    "twilio",
    "pagerduty",
    "cancel_flow_run",
    "pause_schedule",
    "start_flow_run",
)
"""Every kind of the rules format, implemented or not yet."""

PARSERS: Mapping[str, Callable[[Mapping[str, object]], ActionSpec]] = {
    webhook.WebhookAction.kind: webhook.parse,
    slack.SlackAction.kind: slack.parse,
    teams.TeamsAction.kind: teams.parse,
    email.EmailAction.kind: email.parse,
    twilio.TwilioAction.kind: twilio.parse,
    pagerduty.PagerDutyAction.kind: pagerduty.parse,
}
"""The kinds this build can run."""
