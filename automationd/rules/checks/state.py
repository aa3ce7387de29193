"""The `state:` section: the state store (only SQLite in this version), the journal, and
how long event ids (for duplicates) and finished records are kept."""

from __future__ import annotations

from pathlib import Path

from automationd.rules.checks.core import Checker
from automationd.rules.model import StateConfig


def state(check: Checker, raw: object, base: Path) -> StateConfig | None:
    """The state settings, a relative path under `base`; None when the section is absent
    or wrong."""
    if not isinstance(raw, dict) or not check.clean(("state",)):
        return None
    url = str(raw.get("url", "sqlite:///state.db"))
    if not url.startswith("sqlite:///"):
        check.add(("state", "url"), "only sqlite:/// state stores are available in this version")
        return None
    default = StateConfig(Path())
    return StateConfig(
        base / url.removeprefix("sqlite:///"),
        journal=bool(raw.get("journal", True)),
        dedup_window=check.seconds(
            ("state", "dedup_window"), raw.get("dedup_window"), default.dedup_window
        ),
        retention=check.seconds(("state", "retention"), raw.get("retention"), default.retention),
    )
