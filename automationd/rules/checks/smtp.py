"""The `smtp:` section: the SMTP server email actions send through."""

from __future__ import annotations

from automationd.rules.checks.core import Checker
from automationd.rules.checks.secrets import Secrets
from automationd.rules.model import SmtpSettings


def smtp(check: Checker, secrets: Secrets, raw: object) -> SmtpSettings | None:
    """The SMTP settings; None when the section is absent or wrong."""
    if not isinstance(raw, dict) or not check.clean(("smtp",)):
        return None
    secrets.ref(("smtp", "password_secret"), raw.get("password_secret"))
    if raw.get("password_secret") and not raw.get("username"):
        check.add(("smtp", "password_secret"), "a password needs a username too")
    return SmtpSettings(
        host=str(raw["host"]),
        sender=str(raw["from"]),
        port=int(raw.get("port", 25)),
        starttls=bool(raw.get("starttls", False)),
        username=raw.get("username"),
        password_secret=raw.get("password_secret"),
        timeout=check.seconds(("smtp", "timeout"), raw.get("timeout"), 10.0),
    )
