"""The audit trail: one JSON line per thing that happened, appended, never rewritten.

Records go to the file through a raw `O_APPEND` descriptor; the records written in one turn
of the event loop go out in one write at its end and carry the time of the first. What the
file does not take (disk full, a file size limit, an I/O error) is kept in memory, in order,
and tried again every RETRY_SECONDS until it is written: never dropped silently. Meanwhile
`healthy` is False, so the daemon answers 503 to new events and /readyz fails, as it does
when the journal cannot be written. A write cut short leaves the start of a line in the file;
its rest is the first thing written once space is back, so the line is completed (a reader
tailing the file leaves a line without its newline for later). A line a crash left torn is
cut off when the file is next opened. At most MAX_UNWRITTEN_BYTES wait; records beyond that
are dropped, counted and logged as errors.

`fsync`: `always` syncs after every write, `batch` at most once a second, `never` leaves it
to the OS; a crash (kill -9) loses what was still waiting in memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path

from automationd import jsontext
from automationd.events import format_timestamp
from automationd.store import JournalError

log = logging.getLogger("automationd.audit")

BATCH_FSYNC_SECONDS = 1.0
RETRY_SECONDS = 1.0
"""How often records the file did not take are tried again."""
MAX_UNWRITTEN_BYTES = 64 << 20
"""Records kept in memory while the file cannot be written; beyond this, new ones are
dropped (counted, logged)."""
TAIL_STEP = 64 << 10
SCAN_STEP = 1 << 20
MAX_SCAN_BYTES = 256 << 20
"""How far back from its end the trail is searched for records of resumed events (about a
third of a second)."""
ACCEPTED = re.compile(
    rb'\n\{"time":"([^"]*)","kind":"event\.accepted","event_id":("(?:[^"\\]|\\.)*")'
)
"""The start of an `event.accepted` record as `write` lays it out (time, kind, then the
first field, which the engine makes `event_id`), at the start of a line: a nested object
inside an event cannot look like it."""


class AuditUnwritable(JournalError):
    """The audit trail cannot be written: new events are refused (503), as when the journal
    cannot be written, for an event accepted now would have no record of it."""

    reason = "audit_unwritable"
    """The `reason` of automationd_events_rejected_total."""


class AuditLog:
    """Appends audit records to a JSON Lines file."""

    def __init__(self, path: Path, *, fsync: str, clock: Callable[[], datetime]) -> None:
        self.path = path
        self.fsync = fsync
        self._clock = clock
        self._fd: int | None = None
        self._dirty = False
        self._buffer: list[str] = []
        self._stamp = ""
        self._flush_scheduled = False
        self._unwritten = bytearray()
        """Encoded records the file has not taken yet, oldest first."""
        self._torn = 0
        """How many bytes of the first unwritten line are already in the file."""
        self._retry: asyncio.TimerHandle | None = None
        self._dropped = 0
        self._reopening = False
        """A reopen failed: records are kept, and opening is tried again with the retry."""
        self._sync_failed = False
        self.healthy = False
        """Whether everything written so far reached the file (GET /readyz; while False,
        new events are refused)."""

    def open(self) -> None:
        """Open (and create) the file for appending; raises OSError when it cannot. A last
        line a crash left torn is cut off; records kept from a failing file go first."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o666)
        try:
            _cut_torn_tail(fd, self.path)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        if self._unwritten:  # healthy once they are written
            self._write_unwritten()
        else:
            self.healthy = True

    def ensure_writable(self) -> None:
        """Raise AuditUnwritable while records are kept because the file did not take them:
        the daemon then refuses new events rather than accept events it cannot record."""
        if not self.healthy:
            raise AuditUnwritable("the audit trail cannot be written")

    def write(self, kind: str, raw: Mapping[str, str] | None = None, /, **fields: object) -> None:
        """Append one record. `raw` holds fields already encoded as JSON (an event the
        journal encoded), spliced in rather than encoded twice.

        Records written within one turn of the event loop go out in one write at its end
        (each still a whole line); what a failing file does not take is kept and retried."""
        if "time" in fields or "kind" in fields:
            raise ValueError("'time' and 'kind' are the audit record's own fields")
        if not self._buffer:  # the records of one turn of the loop carry its time
            self._stamp = format_timestamp(self._clock())
        record = {"time": self._stamp, "kind": kind, **fields}
        line = jsontext.dumps(record, default=str)
        if raw:
            line = line[:-1] + "".join(f',"{key}":{value}' for key, value in raw.items()) + "}"
        if self._fd is None and not self._reopening:
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
        """Write what is buffered, in one write (after what earlier writes left over). While
        the file is failing, records only join those kept: the retry writes them."""
        self._flush_scheduled = False
        if self._fd is None and not self._reopening:
            return
        if self._buffer:
            data = "".join(self._buffer).encode("utf-8", "backslashreplace")
            count, self._buffer = len(self._buffer), []
            if len(self._unwritten) + len(data) > MAX_UNWRITTEN_BYTES:
                if not self._dropped:
                    log.error(
                        "dropping audit records: more than %d MiB wait to be written to %s",
                        MAX_UNWRITTEN_BYTES >> 20,
                        self.path,
                    )
                self._dropped += count
            else:
                self._unwritten += data
        if self._retry is None:
            self._write_unwritten()

    def _write_unwritten(self) -> None:
        """Write the kept records; a write cut short leaves the rest for the next try."""
        fd = self._fd
        if fd is None or not (self._unwritten or (self._dirty and self.fsync == "always")):
            return
        try:
            while self._unwritten:
                written = os.write(fd, self._unwritten)
                end = self._unwritten.rfind(b"\n", 0, written)
                self._torn = self._torn + written if end < 0 else written - end - 1
                del self._unwritten[:written]
            self._dirty = True
            if self.fsync == "always":
                os.fsync(fd)
                self._dirty = False
        except OSError as exc:
            self._failed(exc)
            return
        if not self.healthy:
            log.warning(
                "the audit file %s can be written again; the records kept meanwhile are in it",
                self.path,
            )
        if self._dropped:
            log.error(
                "%d audit records were dropped while %s could not be written",
                self._dropped,
                self.path,
            )
            self._dropped = 0
        self.healthy = not self._sync_failed

    def _failed(self, exc: OSError) -> None:
        if self.healthy:
            log.error(
                "cannot write the audit file %s: %s; %d bytes of records kept and tried "
                "again every %g s; new events are refused until then",
                self.path,
                exc.strerror or exc,
                len(self._unwritten),
                RETRY_SECONDS,
            )
        self.healthy = False
        if self._retry is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop to retry on: the next flush (or close) tries again
            self._retry = loop.call_later(RETRY_SECONDS, self._try_again)

    def _try_again(self) -> None:
        self._retry = None
        if self._reopening:
            self._open_again()
            return
        self._write_unwritten()

    def _open_again(self) -> None:
        """Open the file after a failed reopen; keep trying every RETRY_SECONDS."""
        try:
            self.open()
        except OSError as exc:
            self._failed(exc)
            return
        self._reopening = False

    async def sync_periodically(self) -> None:
        """With fsync: batch, fsync at most once a second while records arrive."""
        if self.fsync != "batch":
            return
        while True:
            await asyncio.sleep(BATCH_FSYNC_SECONDS)
            await asyncio.to_thread(self.sync)

    def sync(self) -> None:
        """fsync what was written since the last sync. A volume that reports a full disk or
        an I/O error only here (NFS, quotas, thin provisioning) makes the trail unhealthy,
        so new events are refused, until an fsync succeeds again."""
        if self._fd is None or not self._dirty:
            return
        self._dirty = False
        try:
            os.fsync(self._fd)
        except (OSError, ValueError) as exc:
            self._dirty = True  # tried again at the next sync
            if not self._sync_failed:
                log.error(
                    "cannot fsync the audit file %s: %s; new events are refused until it "
                    "can (records written since the last good fsync may be lost)",
                    self.path,
                    exc,
                )
            self._sync_failed = True
            self.healthy = False
            return
        if self._sync_failed:
            self._sync_failed = False
            log.warning("the audit file %s can be synced again", self.path)
            if not self._unwritten and not self._reopening:
                self.healthy = True

    def reopen(self) -> None:
        """Close and open the file again: after logrotate moved it, records go to a new one."""
        if self._fd is None:
            return
        self.close()
        self._reopening = True
        self._open_again()

    def close(self) -> None:
        """Flush, sync and close. Records the file still does not take stay in memory (for
        a reopen) and are logged; the start of a torn line goes back with them."""
        fd = self._fd
        if fd is None:
            return
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self.flush()
        if self._unwritten:
            log.error(
                "closing the audit file %s with %d bytes of records not written",
                self.path,
                len(self._unwritten),
            )
            self._take_back_torn(fd)
        try:
            if self.fsync != "never":
                os.fsync(fd)
        except OSError as exc:
            log.error("cannot flush the audit file %s: %s", self.path, exc)
        self._dirty = False
        os.close(fd)
        self._fd = None

    def recorded_acceptances(
        self, earliest: Mapping[str, datetime], *, max_bytes: int = MAX_SCAN_BYTES
    ) -> set[str]:
        """Which of the event ids in `earliest` have an `event.accepted` record in the file
        no older than the time given for each (the earliest their acceptance can be: an
        older record is an earlier use of the same id).

        The file is read from its end backwards, a chunk at a time, looking only at lines
        that start like an `event.accepted` record; the search stops once every id is found,
        once the records are older than the earliest time given, or after `max_bytes` (an id
        not found by then counts as not recorded). Records still in memory are not seen."""
        found: set[str] = set()
        if not earliest:
            return found
        raw = {jsontext.dumps(i).encode("utf-8", "backslashreplace"): i for i in earliest}
        floor = min(earliest.values())
        try:
            with self.path.open("rb") as trail:
                end = trail.seek(0, os.SEEK_END)
                carry = b""
                while end > 0 and len(found) < len(earliest) and max_bytes > 0:
                    start = max(0, end - min(SCAN_STEP, max_bytes))
                    trail.seek(start)
                    chunk = trail.read(end - start) + carry
                    max_bytes -= end - start
                    end = start
                    if start > 0:  # the chunk's first line began in the chunk before
                        first = chunk.find(b"\n")
                        carry, chunk = (chunk, b"") if first < 0 else _split(chunk, first)
                    oldest = _scan(b"\n" + chunk, raw, earliest, found)
                    if oldest is not None and oldest < floor:
                        break
        except OSError as exc:
            log.error("cannot read the audit file %s: %s", self.path, exc)
        return found

    def _take_back_torn(self, fd: int) -> None:
        """Cut the start of a torn line off the file and keep it with its rest."""
        if not self._torn:
            return
        try:
            size = os.fstat(fd).st_size
            head = os.pread(fd, self._torn, size - self._torn)
            os.ftruncate(fd, size - self._torn)
        except OSError as exc:
            log.error("cannot cut a torn record off the audit file %s: %s", self.path, exc)
            return
        self._unwritten[:0] = head
        self._torn = 0


def _split(chunk: bytes, first: int) -> tuple[bytes, bytes]:
    return chunk[: first + 1], chunk[first + 1 :]


def _scan(
    chunk: bytes, raw: Mapping[bytes, str], earliest: Mapping[str, datetime], found: set[str]
) -> datetime | None:
    """Add to `found` the ids whose `event.accepted` record is in `chunk` (whole lines, each
    after a newline) and recent enough; the time of the chunk's first such record."""
    oldest = None
    for match in ACCEPTED.finditer(chunk):
        stamp, key = match.groups()
        event_id = raw.get(key)
        if event_id is None and b"\\" in key:  # escaped differently than dumps does
            try:
                decoded = json.loads(key)
            except ValueError:
                continue
            event_id = decoded if decoded in earliest else None
        if oldest is None or event_id is not None:
            try:
                at = datetime.fromisoformat(stamp.decode())
            except ValueError:
                continue
            if oldest is None:
                oldest = at
            if event_id is not None and at >= earliest[event_id]:
                found.add(event_id)
    return oldest


def _cut_torn_tail(fd: int, path: Path) -> None:
    """Cut a last line without its newline (a crash tore it) off the file."""
    size = os.fstat(fd).st_size
    end = size
    while end > 0:
        start = max(0, end - TAIL_STEP)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            end = start + newline + 1
            break
        end = start
    if end < size:
        os.ftruncate(fd, end)
        log.warning("cut a torn last line (%d bytes) off the audit file %s", size - end, path)
