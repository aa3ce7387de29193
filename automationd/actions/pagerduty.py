"""`pagerduty`: trigger an incident through PagerDuty's Events API v2.

The `dedup_key` is stable per event, automation and action, so a retried (or, after a crash,
repeated) trigger updates the same incident instead of opening a second one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar

from automationd.actions import (
    ActionContext,
    ActionResult,
    OptionReader,
    Path,
    client_ssl,
    shorten,
)
from automationd.actions.http import send
from automationd.templating import Template

DEFAULT_MESSAGE = "{message}"
SUMMARY_LIMIT = 1024


@dataclass(frozen=True, slots=True)
class PagerDutyAction:
    """POST `{routing_key, event_action: trigger, dedup_key, payload}` to /v2/enqueue; 202."""

    kind: ClassVar[str] = "pagerduty"
    routing_key: str
    severity: str
    message: Template

    def templates(self) -> Iterator[tuple[Path, Template]]:
        yield ("message",), self.message

    def describe(self) -> str:
        return f"pagerduty {self.severity} trigger"

    def destination(self) -> str:
        return "pagerduty"

    def body(self, ctx: ActionContext) -> dict[str, object]:
        """The Events API v2 request for the event of `ctx`."""
        payload: dict[str, object] = {
            "summary": shorten(self.message.render(ctx.event), SUMMARY_LIMIT) or "automationd",
            "source": f"automationd/{ctx.automation}",
            "severity": self.severity,
            "timestamp": ctx.event.get("timestamp"),
            "class": ctx.event.get("type"),
            "custom_details": dict(ctx.event),
        }
        if ctx.event.get("flow_name"):
            payload["component"] = ctx.event["flow_name"]
        return {
            "routing_key": self.routing_key,
            "event_action": "trigger",
            "dedup_key": ctx.idempotency_key,
            "payload": payload,
        }

    def preview(self, ctx: ActionContext) -> dict[str, object]:
        url = ctx.services.endpoints.pagerduty.rstrip("/") + "/v2/enqueue"
        return {"method": "POST", "url": url, "json": self.body(ctx)}

    async def run(self, ctx: ActionContext) -> ActionResult:
        url = ctx.services.endpoints.pagerduty.rstrip("/") + "/v2/enqueue"
        return await send(
            ctx.services.http,
            url,
            name="PagerDuty",
            json_body=self.body(ctx),
            tls=client_ssl(ctx.services.endpoints.tls),
        )


def parse(options: Mapping[str, object]) -> PagerDutyAction:
    reader = OptionReader(options)
    action = PagerDutyAction(
        reader.text("routing_key"),
        reader.text("severity", "error"),
        reader.template("message", DEFAULT_MESSAGE),
    )
    reader.done()
    return action
