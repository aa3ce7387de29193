"""The `audit:` section: where the audit trail is written and how often it is fsynced."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from automationd.rules.checks.core import Checker
from automationd.rules.model import AuditConfig


def audit(check: Checker, raw: dict[str, Any], base: Path) -> AuditConfig | None:
    """The audit settings, a relative path under `base` (see `load.state_base`)."""
    if not check.clean(("audit",)):
        return None
    return AuditConfig(base / str(raw.get("path", "audit.jsonl")), str(raw.get("fsync", "batch")))
