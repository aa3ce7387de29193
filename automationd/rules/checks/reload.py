"""The `reload:` section: how saves of the rules file are picked up."""

from __future__ import annotations

from typing import Any

from automationd.rules.checks.core import Checker
from automationd.rules.model import ReloadConfig


def reload(check: Checker, raw: dict[str, Any]) -> ReloadConfig:
    """The reload settings (the defaults where the section is wrong)."""
    default = ReloadConfig()
    if not check.clean(("reload",)):
        return default
    return ReloadConfig(check.seconds(("reload", "settle"), raw.get("settle"), default.settle))
