"""JSON text on the hot path: orjson where it can, the standard library where it cannot.

Every accepted event is encoded once for the journal and the audit trail, and every audit
record once more; json.dumps spends most of that time setting up its encoder in Python.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import orjson

_OPTIONS = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)
"""Datetimes, dataclasses and subclasses of str, int, dict and list go to `default` (or
json), as json.dumps would treat them, rather than orjson's own way."""


def dumps(value: object, *, default: Callable[[object], object] | None = None) -> str:
    """Compact JSON (no spaces; non-ASCII characters as they are): the value
    `json.dumps(value, ensure_ascii=False, separators=(",", ":"))` writes, faster. What
    orjson refuses (a lone surrogate, an integer beyond 64 bits, a key that is not a string)
    goes through json."""
    try:
        return orjson.dumps(value, default=default, option=_OPTIONS).decode()
    except TypeError:  # orjson.JSONEncodeError is one
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=default)
