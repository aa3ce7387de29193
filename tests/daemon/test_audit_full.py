"""A full audit volume, against the real daemon: no event is taken that cannot be recorded,
records already taken are kept and written once there is room again, without a restart."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from automationd import audit as audit_module
from automationd.audit import AuditLog, AuditUnwritable
from tests.support import (
    Daemon,
    audit_records,
    daemon,
    mount_small_tmpfs,
    receiver,
    until,
    write_rules,
)

RULES = """\
audit: {{path: "{audit}", fsync: {fsync}}}
automations:
  - name: forward
    on: [job_done]
    actions: [{{webhook: {{url: "{url}/hook"}}}}]
"""


async def get(url: str) -> tuple[int, dict[str, object], str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        text = await response.text()
        body = await response.json() if response.content_type == "application/json" else {}
        return response.status, body, text


@contextmanager
def file_size_limit(audit: Path) -> Iterator[Callable[[Daemon], Callable[[], None]]]:
    """A full disk without root: RLIMIT_FSIZE on the daemon process. A write crossing the
    limit is cut short, the next fails with EFBIG (CPython ignores SIGXFSZ). The audit file is
    filled to near the limit first, so it is the file that meets it (the state database and
    the journal's segments stay far below it)."""
    filler = json.dumps({"time": "2026-01-01T00:00:00Z", "kind": "filler", "pad": "x" * 900})
    audit.write_text((filler + "\n") * 8_000)  # about 7.5 MiB
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)

    def fill(proc: Daemon) -> Callable[[], None]:
        pid = proc.process.pid
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (audit.stat().st_size + 4096, hard))

        def make_room() -> None:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))

        return make_room

    yield fill


@contextmanager
def small_tmpfs(audit: Path) -> Iterator[Callable[[Daemon], Callable[[], None]]]:
    """A really full file system (ENOSPC): a 1 MiB tmpfs holding only the audit trail, filled
    up by another file, which is deleted to make room. Needs root to mount: skipped unless
    root; as root (as in CI) a refused mount is an error that says what mount said."""
    disk = audit.parent
    mount_small_tmpfs(disk, "1m", "the file size limit test runs anyway")
    filler = disk / "filler"

    def fill(_: Daemon) -> Callable[[], None]:
        subprocess.run(
            ["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True, check=False
        )
        return filler.unlink

    try:
        yield fill
    finally:
        subprocess.run(["umount", str(disk)], check=False)


@pytest.mark.parametrize(
    ("fsync", "full"),
    [("batch", "fsize"), ("always", "fsize"), ("batch", "tmpfs")],
)
async def test_a_full_audit_volume_refuses_events_and_keeps_every_record(
    tmp_path: Path, fsync: str, full: str
) -> None:
    audit = tmp_path / ("disk" if full == "tmpfs" else "") / "audit.jsonl"
    disk = file_size_limit(audit) if full == "fsize" else small_tmpfs(audit)
    with disk as fill:
        async with receiver() as recv:
            rules = write_rules(tmp_path, RULES.format(audit=audit, fsync=fsync, url=recv.url))
            async with daemon(rules) as proc:
                assert (await proc.post({"type": "job_done", "id": "before"}))[0] == 202
                make_room = fill(proc)
                accepted = ["before"]
                refused = None
                for n in range(200):
                    status, answer = await proc.post(
                        {"type": "job_done", "id": f"e{n}", "pad": "y" * 1500}
                    )
                    if status == 503:
                        refused = answer
                        break
                    assert status == 202, answer
                    accepted.append(f"e{n}")
                assert isinstance(refused, dict), "no event was refused while the audit was full"
                assert "audit trail cannot be written" in str(refused["error"])
                status, _ = await proc.post({"type": "job_done", "id": "refused-too"})
                assert status == 503
                status, ready, _ = await get(f"{proc.url}/readyz")
                assert status == 503
                checks = ready["checks"]
                assert isinstance(checks, dict)
                assert checks["audit_writable"] is False
                assert checks["journal_writable"] is True
                _, _, metrics = await get(f"{proc.url}/metrics")
                assert 'automationd_events_rejected_total{reason="audit_unwritable"} 2.0' in metrics
                # actions of accepted events keep going; their records wait in memory
                await recv.wait_for(len(accepted), within=20)

                torn = not audit.read_bytes().endswith(b"\n")  # a write was cut short mid-line
                make_room()  # the daemon is not restarted

                async def ready_again() -> bool:
                    return (await get(f"{proc.url}/readyz"))[0] == 200

                await until(ready_again, within=20)
                assert (await proc.post({"type": "job_done", "id": "after"}))[0] == 202
                accepted.append("after")

                def recorded(kind: str) -> set[object]:
                    return {r.get("event_id") for r in audit_records(audit) if r["kind"] == kind}

                async def all_recorded() -> bool:
                    return set(accepted) <= recorded("event.accepted") and set(
                        accepted
                    ) <= recorded("action.succeeded")

                await until(all_recorded, within=20)
                assert await proc.stop() == 0
            assert any("cannot write the audit file" in line for line in proc.log)
            assert any("can be written again" in line for line in proc.log)
            text = audit.read_text("utf-8")  # before the tmpfs goes
    assert text.endswith("\n")
    records = [json.loads(line) for line in text.splitlines()]  # every line whole JSON
    ids = [r["event_id"] for r in records if r["kind"] == "event.accepted"]
    assert sorted(ids) == sorted(accepted)  # each exactly once; the refused ones not at all
    print(
        f"\n{len(accepted)} events got 202 around the outage; every one recorded once"
        f"{' (a torn line was completed)' if torn else ''}"
    )


def test_records_beyond_the_bound_are_dropped_counted_and_the_rest_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """In process, on /dev/full (every write fails with ENOSPC: a real full device, no
    mock); reopening on a real file (what logrotate's reload does) writes what was kept."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    monkeypatch.setattr(audit_module, "MAX_UNWRITTEN_BYTES", 2_000)
    trail = AuditLog(Path("/dev/full"), fsync="never", clock=lambda: datetime.now(UTC))
    trail.open()
    for n in range(40):
        trail.write("test.record", n=n, pad="z" * 50)
    assert not trail.healthy
    with pytest.raises(AuditUnwritable):
        trail.ensure_writable()
    assert "dropping audit records" in caplog.text
    trail.path = tmp_path / "audit.jsonl"
    trail.reopen()
    assert trail.healthy
    kept = [r["n"] for r in audit_records(trail.path)]
    assert kept == list(range(len(kept)))  # the oldest, in order
    assert 10 < len(kept) < 40
    assert f"{40 - len(kept)} audit records were dropped" in caplog.text
    trail.close()


REOPEN_WHILE_FULL = """
import json, resource, sys
from datetime import UTC, datetime
from pathlib import Path
from automationd.audit import AuditLog

path = Path(sys.argv[1])
path.write_text('{"kind":"old"}\\n' * 100)
trail = AuditLog(path, fsync="never", clock=lambda: datetime.now(UTC))
trail.open()
resource.setrlimit(resource.RLIMIT_FSIZE, (path.stat().st_size + 150, resource.RLIM_INFINITY))
for n in range(5):
    trail.write("test.record", n=n, pad="p" * 60)
assert not trail.healthy and not path.read_bytes().endswith(b"\\n"), "no torn line"
path.rename(path.with_name("audit.jsonl.1"))  # logrotate, then its reload
trail.reopen()  # the old file still cannot grow; the new one is small enough
assert trail.healthy
trail.close()
"""


async def test_a_torn_line_is_moved_whole_to_the_new_file_on_reopen(tmp_path: Path) -> None:
    """In a process of its own (a file size limit would hit the test runner's own files):
    records cut short in a file that still cannot grow go, whole, to the file a reopen makes,
    and the start of the torn line is cut off the old one."""
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", REOPEN_WHILE_FULL, str(tmp_path / "audit.jsonl")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rotated = (tmp_path / "audit.jsonl.1").read_text()
    fresh = (tmp_path / "audit.jsonl").read_text()
    assert rotated.endswith("\n")
    assert fresh.endswith("\n")
    numbers = [json.loads(line).get("n") for line in (rotated + fresh).splitlines()]
    assert numbers[100:] == [0, 1, 2, 3, 4]
    assert json.loads(fresh.splitlines()[0])["n"] > 0  # the torn one, whole


async def test_a_failed_reopen_keeps_records_and_opens_again_by_itself(tmp_path: Path) -> None:
    """logrotate's reload while the folder cannot take a new file (here its path is a
    plain file for a while): records are kept, new events are refused, and the file is
    opened again by the retry once it can be, without another reload."""
    folder = tmp_path / "logs"
    trail = AuditLog(folder / "audit.jsonl", fsync="batch", clock=lambda: datetime.now(UTC))
    trail.open()
    trail.write("before.rotation")
    trail.flush()
    folder.rename(tmp_path / "logs.1")  # logrotate moved it; then the path is taken
    folder.write_text("not a folder")
    trail.reopen()
    trail.write("during.outage", n=1)  # kept, not an exception
    with pytest.raises(AuditUnwritable):
        trail.ensure_writable()
    folder.unlink()

    async def reopened() -> bool:
        return trail.healthy

    await until(reopened, within=5)
    trail.write("after.outage")
    trail.close()
    kinds = [r["kind"] for r in audit_records(folder / "audit.jsonl")]
    assert kinds == ["during.outage", "after.outage"]
    assert [r["kind"] for r in audit_records(tmp_path / "logs.1" / "audit.jsonl")] == [
        "before.rotation"
    ]
