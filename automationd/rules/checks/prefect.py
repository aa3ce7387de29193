"""The `prefect:` section: the Prefect server orchestrator actions call, and whose event
stream is subscribed to."""

from __future__ import annotations

from automationd.rules.checks.core import Checker
from automationd.rules.checks.secrets import Secrets
from automationd.rules.checks.tls import client_tls
from automationd.rules.model import PrefectSettings


def prefect(check: Checker, secrets: Secrets, raw: object) -> PrefectSettings | None:
    """The Prefect settings; None when the section is absent or wrong."""
    if not isinstance(raw, dict) or not check.clean(("prefect",)):
        return None
    key = raw.get("api_key_secret")
    secrets.ref(("prefect", "api_key_secret"), key)
    ui_url = raw.get("ui_url")
    api_url = str(raw["api_url"]).rstrip("/")
    return PrefectSettings(
        api_url,
        api_key_secret=str(key) if key is not None else None,
        ui_url=str(ui_url).rstrip("/") if ui_url is not None else None,
        subscribe=bool(raw.get("subscribe", False)),
        tls=client_tls(check, ("prefect", "tls"), raw.get("tls"), f"prefect: {api_url}"),
    )
