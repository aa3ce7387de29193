"""Dead letters an operator can manage, through the real daemon and `automationd
dead-letters list|retry|drop`: RFC 3339 times, attempts that add up as the audit trail's,
one or many dropped (each audited), and no accidental wipe."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path

import aiohttp

from tests.support import (
    Daemon,
    audit_records,
    daemon,
    forwarding_rules,
    free_port,
    receiver,
    run_cli,
    until,
    write_rules,
)


def rules_for(tmp_path: Path, url: str) -> Path:
    return write_rules(
        tmp_path,
        f"""\
audit: {{path: audit.jsonl}}
retry: {{initial: 10ms, max: 10ms}}
automations:
  - name: a-refused
    on: [job_done]
    match: {{target: a}}
    actions: [{{webhook: {{url: "{url}/refused"}}}}]
  - name: b-failing
    on: [job_done]
    match: {{target: b}}
    actions: [{{webhook: {{url: "{url}/failing", retry: {{attempts: 2}}}}}}]
""",
    )


async def listed(proc: Daemon, *args: str) -> list[dict[str, object]]:
    code, out, err = await run_cli("dead-letters", "list", "--json", "--url", proc.url, *args)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def failed_attempts(tmp_path: Path, event_id: str) -> int:
    """The attempts of every run of the event's action, as the audit trail has them."""
    return sum(
        int(str(r["attempts"]))
        for r in audit_records(tmp_path / "audit.jsonl")
        if r["kind"] == "action.failed" and r["event_id"] == event_id
    )


async def test_list_retry_and_drop_against_the_running_daemon(tmp_path: Path) -> None:
    async with receiver() as recv:
        recv.status["/refused"] = 400  # permanent: one attempt
        recv.status["/failing"] = 503  # retryable: both attempts
        async with daemon(rules_for(tmp_path, recv.url)) as proc:
            events = [{"type": "job_done", "id": f"a{i}", "target": "a"} for i in range(3)]
            events += [{"type": "job_done", "id": f"b{i}", "target": "b"} for i in range(2)]
            assert (await proc.post(events))[0] == 202

            async def five() -> bool:
                return len(await listed(proc)) == 5

            await until(five, within=15)
            letters = {str(letter["event_id"]): letter for letter in await listed(proc)}
            for event_id, letter in letters.items():
                stamp = str(letter["failed_at"])
                assert stamp.endswith("Z")
                assert datetime.fromisoformat(stamp).tzinfo is not None
                assert letter["runs"] == 1
                assert letter["attempts"] == failed_attempts(tmp_path, event_id)
            assert [letters[f"a{i}"]["attempts"] for i in range(3)] == [1, 1, 1]
            assert [letters[f"b{i}"]["attempts"] for i in range(2)] == [2, 2]
            only_b = await listed(proc, "--automation", "b-*")
            assert sorted(str(letter["event_id"]) for letter in only_b) == ["b0", "b1"]

            # a retry that fails again: one more run, its attempts added
            b0 = letters["b0"]["id"]
            code, out, err = await run_cli("dead-letters", "retry", str(b0), "--url", proc.url)
            assert (code, out.strip()) == (0, f"retrying {b0}"), err

            async def retried() -> bool:
                letter = next(x for x in await listed(proc) if x["id"] == b0)
                return letter["runs"] == 2

            await until(retried, within=15)
            (again,) = [x for x in await listed(proc) if x["id"] == b0]
            assert again["attempts"] == 4 == failed_attempts(tmp_path, "b0")

            # one by id, then a filter, then the rest
            a0 = letters["a0"]["id"]
            code, out, _ = await run_cli("dead-letters", "drop", str(a0), "--url", proc.url)
            assert (code, out.strip()) == (0, f"dropped {a0}")
            code, out, _ = await run_cli(
                "dead-letters", "drop", "--automation", "b-*", "--url", proc.url
            )
            assert (code, out.strip()) == (0, "dropped 2")
            code, _, err = await run_cli("dead-letters", "drop", "--url", proc.url)
            assert code == 2
            assert "give one of: IDs, a filter" in err
            assert len(await listed(proc)) == 2  # nothing was dropped by that
            code, out, _ = await run_cli("dead-letters", "drop", "--all", "--url", proc.url)
            assert (code, out.strip()) == (0, "dropped 2")
            code, out, _ = await run_cli("dead-letters", "list", "--url", proc.url)
            assert (code, out.strip()) == (0, "0 dead letters")
            code, _, err = await run_cli("dead-letters", "drop", str(a0), "--url", proc.url)
            assert code == 1
            assert f"{a0}: no dead letter {a0}" in err
    dropped = [
        r for r in audit_records(tmp_path / "audit.jsonl") if r["kind"] == "dead_letter.dropped"
    ]
    assert sorted(str(r["event_id"]) for r in dropped) == ["a0", "a1", "a2", "b0", "b1"]
    assert next(r for r in dropped if r["event_id"] == "a0")["letter"] == a0


async def test_the_http_api_refuses_a_bare_delete_and_bad_filters(tmp_path: Path) -> None:
    async with (
        receiver() as recv,
        daemon(rules_for(tmp_path, recv.url)) as proc,
        aiohttp.ClientSession() as session,
    ):
        for query, status, field in [
            ("", 400, None),  # no filter and no all=true: nothing is dropped by mistake
            ("?before=yesterday", 400, "before"),
            ("?all=maybe", 400, "all"),
            ("?all=true", 200, None),
        ]:
            async with session.delete(f"{proc.url}/dead-letters{query}") as response:
                answer = await response.json()
                assert response.status == status, (query, answer)
                if status == 400:
                    assert answer["field"] == field
        async with session.delete(f"{proc.url}/dead-letters/999") as response:
            assert response.status == 404


async def test_an_unreachable_daemon_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, _, err = await run_cli("dead-letters", "list", "--url", url)
    assert code == 1
    assert f"automationd dead-letters list: cannot reach {url}" in err


async def test_dead_letters_are_listed_and_retried(tmp_path: Path) -> None:
    async with receiver() as recv:
        recv.status["/hook"] = 400
        rules = forwarding_rules(tmp_path, recv.url)
        async with daemon(rules) as proc:
            await proc.post({"type": "job_done", "id": "doomed"})
            await recv.wait_for(1)
            async with aiohttp.ClientSession() as session:
                async with asyncio.timeout(15):
                    while True:
                        async with session.get(f"{proc.url}/dead-letters") as response:
                            letters = (await response.json())["dead_letters"]
                        if letters:
                            break
                        await asyncio.sleep(0.02)
                (letter,) = letters
                assert (
                    letter["event_id"],
                    letter["automation"],
                    letter["action"],
                    letter["runs"],
                    letter["attempts"],
                ) == ("doomed", "forward", "webhook", 1, 1)
                assert "answered 400" in letter["error"]
                recv.status["/hook"] = 200
                async with session.post(
                    f"{proc.url}/dead-letters/{letter['id']}/retry"
                ) as response:
                    assert response.status == 202
                await recv.wait_for(2)
                async with asyncio.timeout(15):
                    while letters:
                        async with session.get(f"{proc.url}/dead-letters") as response:
                            letters = (await response.json())["dead_letters"]
                        await asyncio.sleep(0.02)
                async with session.post(f"{proc.url}/dead-letters/999/retry") as response:
                    assert response.status == 404
            assert await proc.stop() == 0
    kinds = [r["kind"] for r in audit_records(tmp_path / "audit.jsonl")]
    assert "action.dead_lettered" in kinds
    assert "dead_letter.resolved" in kinds
