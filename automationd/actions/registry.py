"""Action kind -> the parser of its spec. Schema, README and tests check it is complete."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from automationd.actions import ActionSpec, webhook

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
}
"""The kinds this build can run."""
