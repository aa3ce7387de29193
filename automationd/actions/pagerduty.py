"""`pagerduty`: trigger an incident through PagerDuty's Events API v2.

The `dedup_key` is stable per event, automation and action, so a retried (or, after a crash,
repeated) trigger updates the same incident instead of opening a second one. The routing key
is written in the rules (`routing_key`) or held by a secret (`routing_key_secret`), whose
value is put in the request body only when it is sent: previews show it masked.
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
from automationd.secrets import MASK
from automationd.templating import Template

DEFAULT_MESSAGE = "{message}"
SUMMARY_LIMIT = 1024


@dataclass(frozen=True, slots=True)
class PagerDutyAction:
    """POST `{routing_key, event_action: trigger, dedup_key, payload}` to /v2/enqueue; 202."""

    kind: ClassVar[str] = "pagerduty"
    routing_key: str | None
    routing_key_secret: str | None
    severity: str
    message: Template

    def templates(self) -> Iterator[tuple[Path, Template]]:
        yield ("message",), self.message

    def describe(self) -> str:
        return f"pagerduty {self.severity} trigger"

    def destination(self) -> str:
        return "pagerduty"

    def body(self, ctx: ActionContext, *, reveal: bool = True) -> dict[str, object]:
        """The Events API v2 request for the event of `ctx`; without `reveal`, a routing key
        held by a secret is masked (for previews)."""
        if self.routing_key_secret is None:
            routing_key = str(self.routing_key)
        elif reveal:
            routing_key = ctx.secret(self.routing_key_secret)
        else:
            routing_key = f"{MASK} (secret '{self.routing_key_secret}')"
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
            "routing_key": routing_key,
            "event_action": "trigger",
            "dedup_key": ctx.idempotency_key,
            "payload": payload,
        }

    def preview(self, ctx: ActionContext) -> dict[str, object]:
        url = ctx.services.endpoints.pagerduty.rstrip("/") + "/v2/enqueue"
        return {"method": "POST", "url": url, "json": self.body(ctx, reveal=False)}

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
    if ("routing_key" in options) == ("routing_key_secret" in options):  # the schema says so too
        reader.problems.append(((), "give exactly one of routing_key and routing_key_secret"))
    secret = options.get("routing_key_secret")
    action = PagerDutyAction(
        reader.text("routing_key") if "routing_key" in options else None,
        str(secret) if secret is not None else None,
        reader.text("severity", "error"),
        reader.template("message", DEFAULT_MESSAGE),
    )
    reader.done()
    return action
