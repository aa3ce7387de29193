"""`automationd audit` over a real trail written by the daemon, rotated files, and --follow."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support import audit_records, daemon, interruptible, receiver, write_rules


def audit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "automationd", "audit", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


async def make_trail(tmp_path: Path) -> Path:
    async with receiver() as recv:
        recv.status["/broken"] = 400
        rules = write_rules(
            tmp_path,
            f"""\
retry: {{attempts: 2, initial: 10ms}}
automations:
  - name: good
    on: [job_done]
    actions: [{{webhook: {{url: "{recv.url}/ok"}}}}]
  - name: bad
    on: [job_done]
    match: {{env: prod}}
    actions: [{{webhook: {{url: "{recv.url}/broken"}}}}]
""",
        )
        async with daemon(rules) as proc:
            await proc.post({"type": "job_done", "id": "j1", "env": "prod"})
            await proc.post({"type": "job_done", "id": "j2", "env": "dev"})
            await recv.wait_for(2)
            assert await proc.stop() == 0  # lets every action finish, and writes its records
    return rules


async def test_filters_and_one_events_story(tmp_path: Path) -> None:
    rules = await make_trail(tmp_path)
    result = await asyncio.to_thread(audit, "--config", str(rules), "--event", "j1")
    assert result.returncode == 0, result.stderr
    kinds = [line.split()[2] for line in result.stdout.splitlines()]
    assert kinds[:2] == ["event.accepted", "automation.matched"]
    assert kinds.count("action.succeeded") == 1
    assert kinds.count("action.failed") == 1
    assert "j2" not in result.stdout
    assert "status=400" in result.stdout

    result = await asyncio.to_thread(
        audit, "--file", str(tmp_path / "audit.jsonl"), "--kind", "action", "--json"
    )
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records
    assert {str(r["kind"]).split(".")[0] for r in records} == {"action"}

    result = await asyncio.to_thread(audit, "--config", str(rules), "--failed", "--json")
    failed = [json.loads(line) for line in result.stdout.splitlines()]
    assert {r["kind"] for r in failed} == {
        "action.failed",
        "action.attempt",
        "action.dead_lettered",
    }
    assert all(r["event_id"] == "j1" for r in failed)

    result = await asyncio.to_thread(
        audit, "--config", str(rules), "--automation", "good", "--json"
    )
    assert {json.loads(line)["automation"] for line in result.stdout.splitlines()} == {"good"}

    result = await asyncio.to_thread(audit, "--config", str(rules), "--since", "1h", "--json")
    assert len(result.stdout.splitlines()) == len(audit_records(tmp_path / "audit.jsonl"))
    await asyncio.sleep(0.1)
    result = await asyncio.to_thread(audit, "--config", str(rules), "--since", "50ms")
    assert result.stdout == ""
    assert (
        await asyncio.to_thread(audit, "--config", str(rules), "--since", "soon")
    ).returncode == 2
    assert (await asyncio.to_thread(audit, "--file", str(tmp_path / "nope.jsonl"))).returncode == 1


async def test_rotated_files_are_read_oldest_first(tmp_path: Path) -> None:
    rules = await make_trail(tmp_path)
    os.replace(tmp_path / "audit.jsonl", tmp_path / "audit.jsonl.1")
    (tmp_path / "audit.jsonl").write_text(
        json.dumps({"time": "2099-01-01T00:00:00Z", "kind": "event.accepted", "event_id": "later"})
        + "\n"
    )
    result = await asyncio.to_thread(
        audit, "--config", str(rules), "--json", "--kind", "event.accepted"
    )
    ids = [json.loads(line)["event_id"] for line in result.stdout.splitlines()]
    assert ids == ["j1", "j2", "later"]


async def test_follow_survives_rotation(tmp_path: Path) -> None:
    trail = tmp_path / "audit.jsonl"
    trail.write_text(json.dumps({"time": "2026-01-01T00:00:00Z", "kind": "old"}) + "\n")
    follower = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "automationd",
        "audit",
        "--file",
        str(trail),
        "--follow",
        "--json",
        stdout=asyncio.subprocess.PIPE,
        preexec_fn=interruptible,
    )
    assert follower.stdout is not None
    try:
        assert json.loads(await asyncio.wait_for(follower.stdout.readline(), 10))["kind"] == "old"
        with trail.open("a") as out:
            out.write(json.dumps({"time": "2026-01-01T00:00:01Z", "kind": "new"}) + "\n")
        assert json.loads(await asyncio.wait_for(follower.stdout.readline(), 10))["kind"] == "new"
        os.replace(trail, tmp_path / "audit.jsonl.1")  # logrotate moves it
        trail.write_text(
            json.dumps({"time": "2026-01-01T00:00:02Z", "kind": "after-rotation"}) + "\n"
        )
        assert (
            json.loads(await asyncio.wait_for(follower.stdout.readline(), 10))["kind"]
            == "after-rotation"
        )
    finally:
        follower.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(follower.wait(), 10)
        except TimeoutError:  # fail, but leave no follower running behind the test
            follower.kill()
            await follower.wait()
            raise


async def test_event_takes_a_unique_id_prefix_and_lists_the_candidates_of_an_ambiguous_one(
    tmp_path: Path,
) -> None:
    rules = write_rules(tmp_path, "automations: []\n")
    async with daemon(rules) as proc:
        for event_id in ("3f2c0a11-0001", "3f2c0b22-0002", "3f2"):
            assert (await proc.post({"type": "job_done", "id": event_id}))[0] == 202
        status, answer = await proc.post({"type": "deploy_finished"})
        assert status == 202
        assert isinstance(answer, dict)
        (generated,) = answer["accepted"]
        assert await proc.stop() == 0  # each event.accepted was written before its 202
    accepted = {
        r["event_id"]: r["time"]
        for r in audit_records(tmp_path / "audit.jsonl")
        if r["kind"] == "event.accepted"
    }

    def story(*args: str) -> list[str]:
        result = audit("--config", str(rules), "--json", "--event", *args)
        assert (result.returncode, result.stderr) == (0, "")
        return [json.loads(line)["event_id"] for line in result.stdout.splitlines()]

    assert await asyncio.to_thread(story, "3f2c0b") == ["3f2c0b22-0002"]
    assert await asyncio.to_thread(story, generated[:8]) == [generated]
    assert await asyncio.to_thread(story, "3f2c0a11-0001") == ["3f2c0a11-0001"]
    assert await asyncio.to_thread(story, "3f2") == ["3f2"]  # a whole id, however short

    result = await asyncio.to_thread(audit, "--config", str(rules), "--event", "3f2c")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        "automationd audit: --event 3f2c matches 2 events; give more of the id:\n"
        f"  3f2c0a11-0001  {accepted['3f2c0a11-0001']}  job_done\n"
        f"  3f2c0b22-0002  {accepted['3f2c0b22-0002']}  job_done\n"
    )
    result = await asyncio.to_thread(audit, "--config", str(rules), "--event", "3f2c9")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"automationd audit: no event whose id is or starts with 3f2c9 in {tmp_path}/audit.jsonl\n"
    )
    result = await asyncio.to_thread(audit, "--config", str(rules), "--event", "3f")
    assert result.returncode == 1
    assert result.stderr == (
        f"automationd audit: no event with the id 3f in {tmp_path}/audit.jsonl "
        "(an id prefix needs at least 4 characters)\n"
    )
