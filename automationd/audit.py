"""The audit trail: one JSON line per thing that happened, appended, never rewritten.

Records are written whole (one `write` of one line, then a flush), so a reader tailing the
file never sees half a record, and a crash loses at most what the OS had not yet written
(see `fsync`: `always` syncs every record, `batch` at most once a second, `never` leaves it
to the OS). The records written in one turn of the event loop carry the time of the first.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TextIO

from automationd import jsontext
from automationd.events import format_timestamp

log = logging.getLogger("automationd.audit")

BATCH_FSYNC_SECONDS = 1.0


class AuditLog:
    """Appends audit records to a JSON Lines file."""

    def __init__(self, path: Path, *, fsync: str, clock: Callable[[], datetime]) -> None:
        self.path = path
        self.fsync = fsync
        self._clock = clock
        self._file: TextIO | None = None
        self._dirty = False
        self._buffer: list[str] = []
        self._stamp = ""
        self._flush_scheduled = False
        self.healthy = False
        """Whether the last write reached the file (GET /readyz)."""

    def open(self) -> None:
        """Open (and create) the file for appending; raises OSError when it cannot."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8", errors="backslashreplace")
        self.healthy = True

    def write(self, kind: str, raw: Mapping[str, str] | None = None, /, **fields: object) -> None:
        """Append one record. `raw` holds fields already encoded as JSON (an event the
        journal encoded), spliced in rather than encoded twice.

        Records written within one turn of the event loop go out in one write at its end
        (each still a whole line); a failing disk is logged, counted and survived."""
        if "time" in fields or "kind" in fields:
            raise ValueError("'time' and 'kind' are the audit record's own fields")
        if not self._buffer:  # the records of one turn of the loop carry its time
            self._stamp = format_timestamp(self._clock())
        record = {"time": self._stamp, "kind": kind, **fields}
        line = jsontext.dumps(record, default=str)
        if raw:
            line = line[:-1] + "".join(f',"{key}":{value}' for key, value in raw.items()) + "}"
        if self._file is None:
            raise RuntimeError("the audit log is not open")
        self._buffer.append(line + "\n")
        if self.fsync == "always":
            self.flush()
            return
        if not self._flush_scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._flush_scheduled = True
            loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write what is buffered, in one write."""
        self._flush_scheduled = False
        if not self._buffer or self._file is None:
            return
        lines, self._buffer = "".join(self._buffer), []
        try:
            self._file.write(lines)
            self._file.flush()
            if self.fsync == "always":
                os.fsync(self._file.fileno())
            else:
                self._dirty = True
            self.healthy = True
        except OSError as exc:
            self.healthy = False
            log.error("cannot write %d audit records to %s: %s", lines.count("\n"), self.path, exc)

    async def sync_periodically(self) -> None:
        """With fsync: batch, fsync at most once a second while records arrive."""
        if self.fsync != "batch":
            return
        while True:
            await asyncio.sleep(BATCH_FSYNC_SECONDS)
            await asyncio.to_thread(self.sync)

    def sync(self) -> None:
        """fsync what was written since the last sync."""
        if self._file is None or not self._dirty:
            return
        self._dirty = False
        try:
            os.fsync(self._file.fileno())
        except (OSError, ValueError) as exc:
            log.error("cannot fsync the audit file %s: %s", self.path, exc)

    def reopen(self) -> None:
        """Close and open the file again: after logrotate moved it, records go to a new one."""
        if self._file is None:
            return
        self.close()
        try:
            self.open()
        except OSError as exc:
            self.healthy = False
            log.error("cannot reopen the audit file %s: %s", self.path, exc)

    def close(self) -> None:
        """Flush, sync and close."""
        if self._file is None:
            return
        self.flush()
        try:
            self._file.flush()
            if self.fsync != "never":
                os.fsync(self._file.fileno())
        except OSError as exc:
            log.error("cannot flush the audit file %s: %s", self.path, exc)
        self._file.close()
        self._file = None
