"""`twilio`: one SMS per phone number through Twilio's Messages API.

Each number is its own request; a retry only texts the numbers that did not get theirs yet.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar
from urllib.parse import quote

from automationd.actions import (
    ActionContext,
    ActionResult,
    OptionReader,
    Path,
    client_ssl,
    shorten,
)
from automationd.actions.http import basic_auth, send
from automationd.templating import Template

DEFAULT_MESSAGE = "{message}"
BODY_LIMIT = 1600


@dataclass(frozen=True, slots=True)
class TwilioAction:
    """POST form-encoded `To`, `MessagingServiceSid`, `Body` with HTTP Basic auth; 201 each."""

    kind: ClassVar[str] = "twilio"
    account_sid: str
    auth_token_secret: str
    messaging_service_sid: str
    phone_numbers: tuple[str, ...]
    message: Template

    def templates(self) -> Iterator[tuple[Path, Template]]:
        yield ("message",), self.message

    def describe(self) -> str:
        return f"twilio SMS to {', '.join(self.phone_numbers)}"

    def destination(self) -> str:
        return "twilio"

    def _url(self, ctx: ActionContext) -> str:
        base = ctx.services.endpoints.twilio.rstrip("/")
        return f"{base}/2010-04-01/Accounts/{quote(self.account_sid, safe='')}/Messages.json"

    def preview(self, ctx: ActionContext) -> dict[str, object]:
        body = shorten(self.message.render(ctx.event), BODY_LIMIT)
        return {
            "method": "POST",
            "url": self._url(ctx),
            "auth": f"{self.account_sid}:******** (secret '{self.auth_token_secret}')",
            "forms": [
                {"To": n, "MessagingServiceSid": self.messaging_service_sid, "Body": body}
                for n in self.phone_numbers
            ],
        }

    async def run(self, ctx: ActionContext) -> ActionResult:
        url = self._url(ctx)
        auth = {"Authorization": basic_auth(self.account_sid, ctx.secret(self.auth_token_secret))}
        body = shorten(self.message.render(ctx.event), BODY_LIMIT)
        done = ctx.progress.setdefault("texted", [])
        assert isinstance(done, list)
        status: int | None = None
        for number in self.phone_numbers:
            if number in done:
                continue
            result = await send(
                ctx.services.http,
                url,
                name=f"Twilio (to {number})",
                form={
                    "To": number,
                    "MessagingServiceSid": self.messaging_service_sid,
                    "Body": body,
                },
                headers=auth,
                tls=client_ssl(ctx.services.endpoints.tls),
            )
            done.append(number)
            status = result.status
        return ActionResult(status, f"texted {', '.join(self.phone_numbers)}")


def parse(options: Mapping[str, object]) -> TwilioAction:
    reader = OptionReader(options)
    action = TwilioAction(
        reader.text("account_sid"),
        reader.text("auth_token_secret"),
        reader.text("messaging_service_sid"),
        reader.texts("phone_numbers"),
        reader.template("message", DEFAULT_MESSAGE),
    )
    reader.done()
    return action
