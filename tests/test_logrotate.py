"""The shipped logrotate file, run by the real logrotate against the real daemon's audit trail:
records keep flowing into the new file, the old one keeps the earlier ones, the next rotation
compresses it, and `automationd audit` reads the plain files."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.recipes import ROOT
from tests.support import audit_records, daemon, run_cli, until, write_rules

SHIPPED = ROOT / "systemd" / "automationd.logrotate"
LOGROTATE = shutil.which("logrotate") or next(
    (p for p in ("/usr/sbin/logrotate", "/sbin/logrotate") if os.access(p, os.X_OK)), None
)
RELOAD = "if systemctl is-active --quiet automationd; then systemctl reload automationd; fi"

pytestmark = pytest.mark.skipif(LOGROTATE is None, reason="logrotate is not installed")


def rotate(config: Path, state: Path) -> None:
    """What the daily logrotate run does, forced."""
    assert LOGROTATE is not None
    result = subprocess.run(
        [LOGROTATE, "-f", "-s", str(state), str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def ids(records: list[dict[str, object]]) -> set[object]:
    return {r["event_id"] for r in records if r.get("kind") == "event.accepted"}


async def test_the_shipped_logrotate_file_rotates_the_live_trail(tmp_path: Path) -> None:
    # as under DynamicUser=: /var/lib/automationd is a link to /var/lib/private/automationd
    private = tmp_path / "private" / "automationd"
    private.mkdir(parents=True)
    state = tmp_path / "automationd"
    state.symlink_to(private, target_is_directory=True)
    trail = state / "audit.jsonl"
    rules = write_rules(tmp_path, "audit: {path: audit.jsonl}\nautomations: []\n")
    shipped = SHIPPED.read_text()
    assert "/var/lib/automationd/audit.jsonl {" in shipped
    assert RELOAD in shipped

    async with daemon(rules, env={"STATE_DIRECTORY": str(state)}) as proc:
        config = tmp_path / "automationd.logrotate"
        config.write_text(
            shipped.replace("/var/lib/automationd/audit.jsonl", str(trail)).replace(
                RELOAD, f"kill -HUP {proc.process.pid}"
            )
        )

        async def send(prefix: str) -> set[object]:
            names = [f"{prefix}{i}" for i in range(5)]
            sent: set[object] = set(names)
            for event_id in names:
                status, _ = await proc.post({"type": "job_done", "id": event_id})
                assert status == 202
            await until(lambda: asyncio.sleep(0, sent <= ids(audit_records(trail))))
            return sent

        async def reopened() -> bool:
            """The new file is there, opened by the reload (its record comes first)."""
            if not trail.exists():
                return False
            return any(r.get("trigger") == "SIGHUP" for r in audit_records(trail))

        first = await send("a")
        await asyncio.to_thread(rotate, config, tmp_path / "logrotate.state")
        rotated = private / "audit.jsonl.1"
        assert rotated.is_file()
        await until(reopened)  # the reload's own record opens the new file
        second = await send("b")
        assert ids(audit_records(rotated)) == first
        assert ids(audit_records(trail)) == second

        code, out, _ = await run_cli("audit", "--file", str(trail), "--json")
        assert code == 0
        assert ids([json.loads(line) for line in out.splitlines()]) == first | second

        await asyncio.to_thread(rotate, config, tmp_path / "logrotate.state")
        await until(reopened)
        third = await send("c")
        assert await proc.stop() == 0

    # delaycompress: the newest rotated file stays plain, the one before is gzipped
    with gzip.open(private / "audit.jsonl.2.gz", "rt") as older:
        assert ids([json.loads(line) for line in older]) == first
    assert ids(audit_records(private / "audit.jsonl.1")) == second
    assert ids(audit_records(trail)) == third
    assert sorted(p.name for p in private.iterdir() if p.name.startswith("audit")) == [
        "audit.jsonl",
        "audit.jsonl.1",
        "audit.jsonl.2.gz",
    ]
    code, out, _ = await run_cli("audit", "--file", str(trail), "--json")
    assert code == 0
    assert ids([json.loads(line) for line in out.splitlines()]) == second | third
