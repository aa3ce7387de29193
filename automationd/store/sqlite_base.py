"""What every part of the SQLite store stands on: one way to connect, transactions,
SQLite's errors raised as the store's own, and the write probe behind GET /readyz."""

from __future__ import annotations

import functools
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ParamSpec, TypeVar

from automationd.store import StoreError

P = ParamSpec("P")
R = TypeVar("R")

BUSY_TIMEOUT_MS = 5000
"""How long a statement waits for another connection's lock before SQLITE_BUSY."""


def connect(path: Path) -> sqlite3.Connection:
    """A connection as every part of the store uses it: each statement commits at once
    (outside an explicit transaction), WAL, synchronous=NORMAL, waiting up to 5 s for a lock."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    except sqlite3.Error:
        db.close()
        raise
    return db


@contextmanager
def driver_errors() -> Iterator[None]:
    """Within it, sqlite3.Error is raised as StoreError (for generators, which `translated`
    cannot cover: their statements run as they are iterated)."""
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreError(str(exc)) from exc


def translated(method: Callable[P, R]) -> Callable[P, R]:
    """`method`, raising StoreError with SQLite's message instead of sqlite3.Error."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with driver_errors():
            return method(*args, **kwargs)

    return wrapper


def table_names(db: sqlite3.Connection) -> set[str]:
    """The tables the database holds (an older version's store may lack some)."""
    return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


@contextmanager
def transaction(db: sqlite3.Connection, begin: str = "BEGIN") -> Iterator[sqlite3.Connection]:
    """Statements in one transaction: committed together, or rolled back on any error (unless
    SQLite has already rolled it back itself, as after a full disk)."""
    db.execute(begin)
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


PAGE_BYTES = 4096
"""SQLite's default page size, which the store keeps."""


def takes_a_write(db: sqlite3.Connection) -> bool:
    """Whether one row can be rewritten; a database another writer holds counts as
    writable, at once (the probe does not wait for the lock on the event loop)."""
    try:
        db.execute("PRAGMA busy_timeout=0")
        try:
            db.execute(
                "INSERT INTO readyz_probe (id, at) VALUES (1, ?) "
                "ON CONFLICT (id) DO UPDATE SET at = excluded.at",
                (time.time(),),
            )
        finally:
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    except sqlite3.OperationalError as exc:  # busy: another writer, not a broken disk
        return exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    except sqlite3.Error:
        return False
    return True


def room_for_a_frame(folder: Path) -> bool:
    """Whether `folder`'s file system has room for two more pages (one frame of the
    write-ahead log), counting only the blocks anyone may use: root's reserve is not
    always root's to use (containers, ext4's resuid)."""
    try:
        space = os.statvfs(folder)
    except OSError:
        return False
    return space.f_bavail * space.f_frsize >= 2 * PAGE_BYTES
