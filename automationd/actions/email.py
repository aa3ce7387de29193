"""`email`: one message to all `to_emails` through the SMTP server of the `smtp:` block.

SMTP answers are classified like HTTP ones: 4xx and connection problems are retried, 5xx
(535 authentication failed, 550 no such mailbox, ...) are permanent. When the server accepts
some recipients and refuses others, the message went out: the action succeeds and says who
was refused (a retry would mail the others twice).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import ClassVar

import aiosmtplib

from automationd.actions import ActionContext, ActionError, ActionResult, OptionReader, Path
from automationd.templating import Template

DEFAULT_SUBJECT = "{event_name}"
DEFAULT_BODY = "{message}"


@dataclass(frozen=True, slots=True)
class EmailAction:
    """Mail the rendered subject and body to every address of `to_emails`."""

    kind: ClassVar[str] = "email"
    to_emails: tuple[str, ...]
    subject: Template
    body: Template

    def templates(self) -> Iterator[tuple[Path, Template]]:
        yield ("subject",), self.subject
        yield ("body",), self.body

    def describe(self) -> str:
        return f"email to {', '.join(self.to_emails)}"

    def destination(self) -> str:
        return "smtp"

    def message(self, ctx: ActionContext, sender: str) -> EmailMessage:
        """The email this action sends for the event of `ctx`."""
        message = EmailMessage()
        message["From"] = sender
        message["To"] = ", ".join(self.to_emails)
        message["Subject"] = " ".join(self.subject.render(ctx.event).split())  # no line breaks
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(idstring=ctx.idempotency_key, domain="automationd")
        message.set_content(self.body.render(ctx.event))
        return message

    def preview(self, ctx: ActionContext) -> dict[str, object]:
        smtp = ctx.services.smtp
        sender = smtp.sender if smtp else ""
        message = self.message(ctx, sender)
        return {
            "smtp": f"{smtp.host}:{smtp.port}" if smtp else None,
            "from": sender,
            "to": list(self.to_emails),
            "subject": message["Subject"],
            "body": self.body.render(ctx.event),
        }

    async def run(self, ctx: ActionContext) -> ActionResult:
        smtp = ctx.services.smtp
        if smtp is None:  # the rules refuse email actions without an smtp: block
            raise ActionError("no smtp: block is configured", retryable=False)
        password = ctx.secret(smtp.password_secret) if smtp.password_secret else None
        try:
            refused, answer = await aiosmtplib.send(
                self.message(ctx, smtp.sender),
                hostname=smtp.host,
                port=smtp.port,
                username=smtp.username,
                password=password,
                start_tls=smtp.starttls,
                timeout=smtp.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            listed = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
            raise ActionError(
                f"the SMTP server refused every recipient ({listed})",
                retryable=all(400 <= code < 500 for code in codes),
                status=codes[0] if codes else None,
            ) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise ActionError(
                f"the SMTP server answered {exc.code} {exc.message}",
                retryable=400 <= exc.code < 500,
                status=exc.code,
            ) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise ActionError(f"SMTP {smtp.host}:{smtp.port}: {exc}", retryable=True) from None
        detail = answer
        if refused:
            detail += "; refused: " + "; ".join(
                f"{who}: {r.code} {r.message}" for who, r in refused.items()
            )
        return ActionResult(250, detail)


def parse(options: Mapping[str, object]) -> EmailAction:
    reader = OptionReader(options)
    action = EmailAction(
        reader.texts("to_emails"),
        reader.template("subject", DEFAULT_SUBJECT),
        reader.template("body", DEFAULT_BODY),
    )
    reader.done()
    return action
