"""The store's tests run against the `Store` interface, once per backend: a new backend
joins BACKENDS (and `backend` below) and must pass them all unchanged."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from automationd.store import Store
from automationd.store.sqlite import SqliteStore

BACKENDS = ["sqlite"]


@dataclass(frozen=True, slots=True)
class Backend:
    """How a test reaches a backend."""

    make: Callable[[Path], Store]
    """A store (not opened yet) on the database named by a path."""
    path: Path
    """The test's own database."""

    def new(self) -> Store:
        """Another store on the test's database, as after a restart (not opened yet)."""
        return self.make(self.path)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    makers: dict[str, Callable[[Path], Store]] = {"sqlite": SqliteStore}
    return Backend(makers[request.param], tmp_path / "state.db")


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    """An open store on an empty database."""
    opened = backend.new()
    opened.open()
    yield opened
    opened.close()
