"""Which store a rules file's `state:` names: the one place that picks the backend, so the
engine and its parts know only the `Store` interface."""

from __future__ import annotations

from automationd.rules import StateConfig
from automationd.store import Store
from automationd.store.sqlite import SqliteStore


def open_store(state: StateConfig) -> Store:
    """The store `state:` names (not yet opened)."""
    return SqliteStore(state.path)
