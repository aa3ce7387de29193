"""Action kind -> its declaration: the parser of its spec and what else the rules must
check it has. Schema, README and tests check it is complete; the rules ask it, and know no
kind by name."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

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
from automationd.rules import ClientTls

Block = Literal["smtp", "prefect"]
"""A top-level block of the rules that some kinds cannot run without."""


@dataclass(frozen=True, slots=True)
class ActsOn:
    """An event attribute a kind acts on (an id): the action's own option of that name
    stands in for it, else every event type of the automation must carry it."""

    attribute: str
    instead: str = ""
    """How the action can name its own, said after the problem; none if it cannot."""


@dataclass(frozen=True, slots=True)
class Kind:
    """What the rules need to know of one action kind."""

    parse: Callable[[Mapping[str, object]], ActionSpec]
    """The spec of an action block (schema-checked), or SpecProblems."""
    needs: Block | None = None
    """The block the kind sends through."""
    acts_on: tuple[ActsOn, ...] = ()
    with_tls: Callable[[ActionSpec, ClientTls | None], ActionSpec] | None = None
    """For a kind with a `tls:` option: the spec checking certificates as the rules say
    (reading the CA file is the rules' job, not the parser's)."""


FLOW_RUN = ActsOn("flow_run_id")
DEPLOYMENT = ActsOn("flow_group_id", instead="name the deployment: flow_group_id: ...")

KINDS: Mapping[str, Kind] = {
    webhook.WebhookAction.kind: Kind(webhook.parse, with_tls=webhook.with_tls),
    slack.SlackAction.kind: Kind(slack.parse),
    teams.TeamsAction.kind: Kind(teams.parse),
    email.EmailAction.kind: Kind(email.parse, needs="smtp"),
    twilio.TwilioAction.kind: Kind(twilio.parse),
    pagerduty.PagerDutyAction.kind: Kind(pagerduty.parse),
    orchestrator.CancelFlowRunAction.kind: Kind(
        orchestrator.parse_cancel, needs="prefect", acts_on=(FLOW_RUN,)
    ),
    orchestrator.PauseScheduleAction.kind: Kind(
        orchestrator.parse_pause, needs="prefect", acts_on=(DEPLOYMENT,)
    ),
    orchestrator.StartFlowRunAction.kind: Kind(
        orchestrator.parse_start, needs="prefect", acts_on=(DEPLOYMENT,)
    ),
}
"""The kinds this build can run."""

ALL_KINDS = tuple(KINDS)
"""Every action kind of the rules format, in the schema's order."""
