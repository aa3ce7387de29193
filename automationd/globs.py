"""Event type globs: an automation's `on:` names its types exactly or with the shell's `*`,
`?` and `[...]` (case-sensitive, `*` crossing dots). The rules check, the matching index and
the metrics' list of known types must agree on which names are globs, so they ask here.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

_GLOB_CHARS = frozenset("*?[")


def is_glob(pattern: str) -> bool:
    """Whether `pattern` selects types by a glob rather than naming one type."""
    return not _GLOB_CHARS.isdisjoint(pattern)


def selects(patterns: Iterable[str], event_type: str) -> bool:
    """Whether one of `patterns` (exact names or globs) selects `event_type`."""
    return any(fnmatchcase(event_type, pattern) for pattern in patterns)
