"""The `endpoints:` section: the base URLs of the services actions call (Twilio,
PagerDuty), for proxies and tests, and how their certificates are checked."""

from __future__ import annotations

from automationd.rules.checks.core import Checker
from automationd.rules.checks.tls import client_tls
from automationd.rules.model import Endpoints


def endpoints(check: Checker, raw: object) -> Endpoints:
    """The endpoints (the defaults where the section is absent or wrong)."""
    if not isinstance(raw, dict) or not check.clean(("endpoints",)):
        return Endpoints()
    default = Endpoints()
    twilio = str(raw.get("twilio", default.twilio))
    pagerduty = str(raw.get("pagerduty", default.pagerduty))
    return Endpoints(
        twilio=twilio,
        pagerduty=pagerduty,
        tls=client_tls(
            check, ("endpoints", "tls"), raw.get("tls"), f"endpoints: {twilio} and {pagerduty}"
        ),
    )
