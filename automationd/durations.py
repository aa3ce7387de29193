"""Durations as operators write them: `500ms`, `30s`, `15m`, `2h`, `7d`, `1h30m`, or seconds."""

from __future__ import annotations

import re

_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> float:
    """Seconds in `value`; raises ValueError saying what a duration looks like."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration (write e.g. 30s, 15m, 2h, 1h30m)")
    if isinstance(value, int | float):
        if value < 0 or value != value or value == float("inf"):
            raise ValueError(f"{value!r} is not a duration: it must be a finite number >= 0")
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        pos, total = 0, 0.0
        for part in _PART.finditer(text):
            if part.start() != pos:
                break
            total += float(part.group(1)) * _UNIT_SECONDS[part.group(2)]
            pos = part.end()
        if text and pos == len(text):
            return total
    raise ValueError(f"{value!r} is not a duration (write e.g. 500ms, 30s, 15m, 2h, 1h30m, 7d)")
