"""`automationd backup` and the README's backup and restore recipes, against the real daemon
while it takes events: the copy opens with sqlite3, holds every event accepted before it
began, and a daemon started on the restored folder resumes them."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from automationd.backup import BackupError, backup
from tests.recipes import runnable, sh_block
from tests.support import daemon, free_port, receiver, run_cli, until, write_rules

BACKUP = sh_block("automationd backup")
RESTORE = sh_block("systemctl stop automationd")
AUTOMATIOND = "/opt/automationd/bin/automationd"


def rules_for(tmp_path: Path, destination: str) -> Path:
    return write_rules(
        tmp_path,
        f"""\
retry: {{attempts: 100, initial: 50ms, max: 1s}}
automations:
  - name: forward
    on: [job_done]
    actions: [{{webhook: {{url: "{destination}/hook"}}}}]
""",
    )


def run_recipe(script: str) -> str:
    result = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, script + result.stdout + result.stderr
    return result.stdout


def names(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir()}


def held_ids(folder: Path) -> set[str]:
    """The event ids a backup folder holds: in its database, and in its journal segments."""
    db = sqlite3.connect(folder / "state.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        ids = {row[0] for row in db.execute("SELECT id FROM events")}
    finally:
        db.close()
    for segment in (folder / "state.db-events").glob("*.log"):
        for line in segment.read_text().splitlines():
            ids.add(json.loads(line)[0])
    return ids


async def test_backup_of_the_running_daemon_and_restore_as_the_readme_says(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"  # stands for /: /var/lib and /var/backups go in here
    live = root / "var/lib/automationd"
    live.mkdir(parents=True)
    rules = rules_for(tmp_path, f"http://127.0.0.1:{free_port()}")  # down
    accepted: list[str] = []
    async with daemon(rules, env={"STATE_DIRECTORY": str(live)}) as proc:
        stop = asyncio.Event()

        async def send(sender: int) -> None:
            batch = 0
            async with aiohttp.ClientSession() as session:
                while not stop.is_set():
                    events = [
                        {"type": "job_done", "id": f"s{sender}-{batch}-{i}"} for i in range(5)
                    ]
                    async with session.post(f"{proc.url}/events", json=events) as response:
                        assert response.status == 202
                        accepted.extend((await response.json())["accepted"])
                    batch += 1
                    await asyncio.sleep(0.01)

        senders = [asyncio.create_task(send(n)) for n in range(4)]
        await until(lambda: asyncio.sleep(0, len(accepted) >= 200), within=20)
        before = set(accepted)  # answered 202 before the backup began
        script = runnable(BACKUP, root, {AUTOMATIOND: f"{sys.executable} -m automationd"})
        out = await asyncio.to_thread(run_recipe, script)
        stop.set()
        await asyncio.gather(*senders)
        assert len(accepted) > len(before)  # events kept coming while it ran
        proc.process.kill()  # its actions are still pending: they must be in the backup
        await proc.process.wait()

    assert out.startswith("backed up ")
    backups = root / "var/backups/automationd"
    (folder,) = backups.iterdir()  # the one new folder, no .partial left
    assert before <= held_ids(folder)
    assert f"to {folder}\n" in out

    # restore into a fresh state folder (as StateDirectory= leaves it), start there
    restored = tmp_path / "restored"
    (restored / "var/lib/automationd").mkdir(parents=True)
    script = runnable(RESTORE, restored, {"/var/backups/automationd/20250131-030000": str(folder)})
    await asyncio.to_thread(run_recipe, script)
    state = restored / "var/lib/automationd"
    assert (state / "state.db").is_file()
    async with receiver() as recv:
        rules = rules_for(tmp_path, recv.url)
        async with daemon(rules, env={"STATE_DIRECTORY": str(state)}) as proc:

            def delivered() -> set[str]:
                return {r.body["id"] for r in recv.requests if isinstance(r.body, dict)}

            await until(lambda: asyncio.sleep(0, before <= delivered()), within=60)
            status, answer = await proc.post({"type": "job_done", "id": sorted(before)[0]})
            assert status == 202
            assert isinstance(answer, dict)
            assert answer.get("duplicate") is True
            assert await proc.stop() == 0


async def test_backup_of_a_killed_daemon_adds_nothing_to_its_folder(tmp_path: Path) -> None:
    rules = rules_for(tmp_path, f"http://127.0.0.1:{free_port()}")
    async with daemon(rules) as proc:
        status, _ = await proc.post({"type": "job_done", "id": "one"})
        assert status == 202
        proc.process.kill()  # no clean stop: a segment is left, maybe a WAL file too
        await proc.process.wait()
    before = names(tmp_path)
    code, out, err = await run_cli("backup", "--config", str(rules), str(tmp_path / "copy"))
    assert (code, err) == (0, "")
    assert out.startswith("backed up ")
    assert "one" in held_ids(tmp_path / "copy")
    # nothing new beside the database (SQLite may have folded its WAL file in and removed it)
    assert names(tmp_path) - before == {"copy"}


async def test_backup_finds_the_database_without_the_secrets(tmp_path: Path) -> None:
    """Outside the service its credentials are not there: --config needs no secret."""
    rules = rules_for(tmp_path, "http://127.0.0.1:9")
    rules.write_text(rules.read_text() + "secrets: {key: {credential: key}}\n")
    sqlite3.connect(tmp_path / "state.db").close()
    code, out, err = await run_cli(
        "backup", "--config", str(rules), str(tmp_path / "copy"), env={"PATH": "/usr/bin:/bin"}
    )
    assert (code, err) == (0, "")
    assert (
        out
        == f"backed up 0 events (0 not finished), 0 dead letters, 0 deadlines and 0 journal segment(s) holding 0 events to {tmp_path}/copy\n"
    )
    assert (tmp_path / "copy" / "state.db").is_file()


async def test_backup_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    code, _, err = await run_cli("backup", "--state", str(tmp_path / "state.db"), "x")
    assert code == 1
    assert err == f"automationd backup: there is no state database at {tmp_path}/state.db\n"
    sqlite3.connect(tmp_path / "state.db").close()
    code, _, err = await run_cli(
        "backup", "--state", str(tmp_path / "state.db"), str(tmp_path / "taken")
    )
    assert code == 1
    assert err == f"automationd backup: {tmp_path}/taken already exists: name a new folder\n"
    with pytest.raises(BackupError, match="already exists"):
        backup(tmp_path / "state.db", tmp_path / "taken")
    assert not (tmp_path / "taken.partial").exists()
