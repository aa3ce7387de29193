"""`teams`: an Adaptive Card to a Microsoft Teams Workflows webhook (the URL is a secret).

The old Office 365 MessageCard connectors are retired; the Workflows "when a webhook request
is received" trigger takes a message with an Adaptive Card attachment and answers 202.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar

from automationd.actions import ActionContext, ActionResult, OptionReader, Path
from automationd.actions.http import send
from automationd.templating import Template

DEFAULT_TITLE = "{event_name}"
DEFAULT_MESSAGE = "{message}"


def adaptive_card(title: str, message: str) -> dict[str, object]:
    """The Teams message: the title as a bold TextBlock, the message as a wrapped one."""
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.2",
                    "body": [
                        {
                            "type": "TextBlock",
                            "text": title,
                            "weight": "Bolder",
                            "size": "Medium",
                            "wrap": True,
                        },
                        {"type": "TextBlock", "text": message, "wrap": True},
                    ],
                },
            }
        ],
    }


@dataclass(frozen=True, slots=True)
class TeamsAction:
    """POST an Adaptive Card; any 2xx (Teams answers 202) is success."""

    kind: ClassVar[str] = "teams"
    webhook_url_secret: str
    title: Template
    message: Template

    def templates(self) -> Iterator[tuple[Path, Template]]:
        yield ("title",), self.title
        yield ("message",), self.message

    def describe(self) -> str:
        return f"teams via the webhook in secret '{self.webhook_url_secret}'"

    def destination(self) -> str:
        return f"teams:{self.webhook_url_secret}"

    def preview(self, ctx: ActionContext) -> dict[str, object]:
        card = adaptive_card(self.title.render(ctx.event), self.message.render(ctx.event))
        url = f"******** (secret '{self.webhook_url_secret}')"
        return {"method": "POST", "url": url, "json": card}

    async def run(self, ctx: ActionContext) -> ActionResult:
        card = adaptive_card(self.title.render(ctx.event), self.message.render(ctx.event))
        return await send(
            ctx.services.http, ctx.secret(self.webhook_url_secret), name="Teams", json_body=card
        )


def parse(options: Mapping[str, object]) -> TeamsAction:
    reader = OptionReader(options)
    action = TeamsAction(
        reader.text("webhook_url_secret"),
        reader.template("title", DEFAULT_TITLE),
        reader.template("message", DEFAULT_MESSAGE),
    )
    reader.done()
    return action
