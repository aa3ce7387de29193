"""How actions are delivered: the `delivery:` bounds per destination and the `retry:`
policy (top-level, and per action over it)."""

from __future__ import annotations

from typing import Any

from automationd.rules.checks.core import Checker, DocPath
from automationd.rules.model import DeliveryConfig, RetryPolicy


def delivery(check: Checker, raw: dict[str, Any]) -> DeliveryConfig:
    """The delivery bounds (the defaults where the section is wrong)."""
    default = DeliveryConfig()
    if not check.clean(("delivery",)):
        return default
    return DeliveryConfig(
        int(raw.get("max_pending_per_destination", default.max_pending_per_destination)),
        int(raw.get("concurrency_per_destination", default.concurrency_per_destination)),
        check.seconds(
            ("delivery", "give_up_after"), raw.get("give_up_after"), default.give_up_after
        ),
    )


def retry(check: Checker, path: DocPath, raw: object, base: RetryPolicy) -> RetryPolicy | None:
    """A retry block over `base` (the top-level policy, for per-action overrides)."""
    if raw is None:
        return base
    if not isinstance(raw, dict) or not check.clean(path):
        return None
    policy = RetryPolicy(
        attempts=int(raw.get("attempts", base.attempts)),
        initial=check.seconds((*path, "initial"), raw.get("initial"), base.initial),
        max=check.seconds((*path, "max"), raw.get("max"), base.max),
    )
    if policy.max < policy.initial:
        check.add((*path, "max"), "must not be shorter than initial")
    return policy
