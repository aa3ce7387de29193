"""`slack`: a message to a Slack incoming webhook (the URL is a secret)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar

from automationd.actions import ActionContext, ActionError, ActionResult, OptionReader, Path
from automationd.actions.http import send
from automationd.templating import Template

DEFAULT_MESSAGE = "{message}"


@dataclass(frozen=True, slots=True)
class SlackAction:
    """POST `{"text": message}`; Slack answers 200 with the body `ok`. Its documented errors
    (`invalid_payload`, `channel_not_found`, `no_service`, ...) come with 4xx statuses and are
    permanent; 429 and 5xx are retried."""

    kind: ClassVar[str] = "slack"
    webhook_url_secret: str
    message: Template

    def templates(self) -> Iterator[tuple[Path, Template]]:
        yield ("message",), self.message

    def describe(self) -> str:
        return f"slack via the webhook in secret '{self.webhook_url_secret}'"

    def destination(self) -> str:
        return f"slack:{self.webhook_url_secret}"

    def preview(self, ctx: ActionContext) -> dict[str, object]:
        url = f"******** (secret '{self.webhook_url_secret}')"
        return {"method": "POST", "url": url, "json": {"text": self.message.render(ctx.event)}}

    async def run(self, ctx: ActionContext) -> ActionResult:
        result = await send(
            ctx.services.http,
            ctx.secret(self.webhook_url_secret),
            name="Slack",
            json_body={"text": self.message.render(ctx.event)},
        )
        if result.detail.strip() != "ok":
            raise ActionError(
                f"Slack answered {result.status} without 'ok'",
                retryable=False,
                status=result.status,
                detail=result.detail,
            )
        return result


def parse(options: Mapping[str, object]) -> SlackAction:
    reader = OptionReader(options)
    action = SlackAction(
        reader.text("webhook_url_secret"), reader.template("message", DEFAULT_MESSAGE)
    )
    reader.done()
    return action
