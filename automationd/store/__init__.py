"""The store: what the daemon must remember across restarts, behind one typed interface.

`Store` names every operation the rest of the code asks of the database: the journal's
writes (events, their progress, duplicate ids), resuming what was not finished, pruning,
dead letters, cooldowns, deadlines (each of a `kind`, so a trigger is handed its own), the
agents' heartbeats and SLA state, the flow SLAs' fingerprints, the Prefect position, the
`/readyz` write probe and the backup copy. Each has typed methods backed by a table of its
own. Nothing outside this package imports a database driver or writes SQL.

`sqlite.py` is the implementation (`state.url: sqlite:///state.db`, SQLite in WAL mode);
another backend stands beside it and passes the same tests (`tests/store/`, parametrised
over backends). Every method raises StoreError when the database refuses (a full disk, an
I/O error, a lock held too long), with the database's own message.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol


class StoreError(Exception):
    """The store cannot be opened, read or written; the message says why."""


class BrokenCopy(StoreError):
    """A backup copy was made but fails the database's own check."""


class JournalError(Exception):
    """The journal cannot be written: the events were not made durable. Here, beside the
    journal's writes, so the journal, the audit trail and the event sources that raise or
    catch it import it from a leaf."""

    reason = "journal_unwritable"
    """The `reason` of automationd_events_rejected_total."""


@dataclass(frozen=True, slots=True)
class LetterFilter:
    """Which dead letters an operator means: by id, automation (a glob), action kind and
    failing before a time (Unix seconds); every field given must hold."""

    ids: tuple[int, ...] = ()
    automation: str | None = None
    action: str | None = None
    before: float | None = None


@dataclass(frozen=True, slots=True)
class Deadline:
    """One armed deadline: its `kind` says which trigger owns it (e.g. "flow_sla"), `key`
    tells it apart from the others of that kind, `payload` is what the owner needs when it
    passes (Unix time `due`)."""

    kind: str
    key: str
    due: float
    payload: dict[str, object]


class Unfinished(NamedTuple):
    """A journaled event whose actions are not all finished."""

    event: dict[str, object]
    matched: list[str] | None
    """The automations it fired; None when it was never matched."""
    finished: set[tuple[str, int]]
    """(automation, action index) of the actions already done."""
    accepted: float
    """When it was accepted (Unix time)."""


class JournaledEvent(NamedTuple):
    """An accepted event as the journal writes it: `body` is its JSON ("" once finished:
    nothing reads it again, only its id, for duplicates)."""

    id: str
    accepted: float
    body: str
    done: bool


@dataclass(frozen=True, slots=True)
class Matched:
    """Progress: the automations an event fired (`done` when nothing is left to run)."""

    event_id: str
    automations: tuple[str, ...]
    done: bool


@dataclass(frozen=True, slots=True)
class Outcome:
    """Progress: how one action of an event ended ("succeeded" or "failed")."""

    event_id: str
    automation: str
    index: int
    outcome: str


Progress = Matched | Outcome


@dataclass(frozen=True, slots=True)
class Holdings:
    """What a backup copy holds, counted in the copy."""

    events: int
    unfinished: int
    dead_letters: int
    deadlines: int


class JournalWriter(Protocol):
    """The journal thread's own connection. It alone writes events and their progress, so
    the event loop never waits for its lock; the progress rides on the writes events make
    anyway."""

    def accepted_at(self, ids: Collection[str]) -> dict[str, float]:
        """When each of `ids` already stored was accepted (Unix time)."""
        ...

    def write(
        self, events: Sequence[JournaledEvent], progress: Sequence[Progress], done: Sequence[str]
    ) -> None:
        """In one transaction (not synced): insert `events` (an id already stored within the
        dedup window keeps its row; an older one is taken over), apply `progress` in order,
        mark the events `done` finished."""
        ...

    def sync(self) -> None:
        """One fully synced commit: every commit before it is durable."""
        ...

    def close(self) -> None: ...


class Store(Protocol):
    """Everything the daemon keeps across restarts. All methods but `copy_to` are quick (a
    few indexed statements, committed at once), and all raise StoreError when the database
    refuses."""

    def open(self) -> None:
        """Open (and create, or bring up to date) the store; StoreError says why not."""
        ...

    def close(self) -> None: ...

    def writable(self) -> bool:
        """Whether the store is open and takes writes (GET /readyz's `state_writable`), asked
        often and cheaply: a full disk, a read-only file system or an I/O error refuses writes
        while reads still answer, and a busy database is still writable."""
        ...

    # --- the journal and the progress of journaled events

    def journal_writer(self, dedup_window: float) -> JournalWriter:
        """A connection of its own for the journal thread; an id accepted within
        `dedup_window` seconds is a duplicate."""
        ...

    def unfinished(self) -> Iterator[Unfinished]:
        """Journaled events whose actions are not all finished, oldest first."""
        ...

    def prune(self, before: float) -> int:
        """Forget finished events accepted before `before` (and their outcomes); how many."""
        ...

    # --- deadlines

    def put_deadline(self, deadline: Deadline) -> None:
        """Arm or re-arm one deadline."""
        ...

    def put_deadlines(self, deadlines: Sequence[Deadline]) -> None:
        """Arm or re-arm many deadlines in one transaction."""
        ...

    def delete_deadline(self, kind: str, key: str) -> None: ...

    def deadline(self, kind: str, key: str) -> Deadline | None: ...

    def deadline_times(self) -> Iterator[tuple[str, str, float]]:
        """Every armed deadline's kind, key and due time (to rebuild the schedule on start)."""
        ...

    def deadlines(self, kind: str, prefix: str = "") -> Iterator[Deadline]:
        """The armed deadlines of `kind` whose key starts with `prefix`, soonest first."""
        ...

    # --- cooldowns

    def cooldown_until(self, automation: str, key: str) -> float | None:
        """When the cooldown of `automation` for the rendered `key` ends (Unix time)."""
        ...

    def set_cooldown(self, automation: str, key: str, until: float) -> None: ...

    def prune_cooldowns(self, before: float) -> int:
        """Forget the cooldowns that ended before `before`; how many."""
        ...

    # --- dead letters

    def add_dead_letter(
        self,
        event: dict[str, object],
        automation: str,
        index: int,
        action: str,
        error: str,
        at: float,
        attempts: int,
    ) -> int:
        """Keep a failed action (its event, the error, when, after how many attempts);
        its letter id."""
        ...

    def dead_letters(
        self, which: LetterFilter | None = None, *, after: int = 0, limit: int = -1
    ) -> list[dict[str, object]]:
        """Dead letters with an id above `after` (and selected by `which`), oldest first, at
        most `limit` (-1: all): `id`, `event_id`, `automation`, `action_index`, `action`,
        `error`, `failed_at`, `runs` (how often the action ran: 1 + retries) and `attempts`
        (over all runs, as the audit trail's records add up; None when unknown)."""
        ...

    def count_dead_letters(self, which: LetterFilter | None = None) -> int: ...

    def drop_dead_letters(self, which: LetterFilter, *, limit: int) -> list[tuple[int, str, str]]:
        """Forget the oldest `limit` dead letters `which` selects; their id, event id and
        automation, by id."""
        ...

    def dead_letter(self, letter_id: int) -> tuple[dict[str, object], str, int] | None:
        """The event, automation and action index of one dead letter."""
        ...

    def retried_dead_letter(self, letter_id: int, error: str | None, attempts: int) -> None:
        """A retry succeeded (error None: the letter goes) or failed again (counted, with
        its `attempts`)."""
        ...

    # --- agents and SLAs

    def put_heartbeat(self, agent_config_id: str, agent_id: str, seen: float) -> None: ...

    def heartbeats(self, agent_config_id: str) -> dict[str, float]:
        """Agent id -> time of its last heartbeat, for one agent config."""
        ...

    def agent_sla_failing(self, agent_config_id: str) -> str | None:
        """Since when (a timestamp) the agent SLA of `agent_config_id` is failing; None
        while it holds."""
        ...

    def set_agent_sla_failing(self, agent_config_id: str, since: str | None) -> None: ...

    def flow_sla_fingerprints(self) -> dict[str, str]:
        """Flow SLA id -> the fingerprint of its definition as last configured (to see on
        start which SLAs changed)."""
        ...

    def set_flow_sla_fingerprint(self, sla_id: str, fingerprint: str | None) -> None: ...

    # --- the Prefect subscription

    def prefect_position(self) -> str | None:
        """The timestamp of the last Prefect event taken; None before the first one."""
        ...

    def set_prefect_position(self, stamp: str) -> None: ...

    # --- backup

    def copy_to(self, target: Path) -> Holdings:
        """A consistent copy of the whole store at one moment, into the new file `target`,
        while the daemon goes on writing (needs no open()). BrokenCopy when the copy fails
        the database's check."""
        ...
