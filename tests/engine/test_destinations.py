"""A hanging destination through the real daemon: its backlog is bounded, every action
reaches an outcome within its life, and /metrics and /readyz say which destination is
backing up, while other destinations are served as usual."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from tests.support import Daemon, audit_records, daemon, receiver, until, write_rules


@asynccontextmanager
async def hanging_server() -> AsyncIterator[str]:
    """A real loopback server that accepts connections, reads what comes and never answers
    (a destination that hangs); yields its host:port."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while await reader.read(65536):
            pass
        held.remove(writer)
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        for writer in held:
            writer.close()
        server.close()


async def get_json(proc: Daemon, path: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as session, session.get(proc.url + path) as response:
        answer = await response.json()
        assert isinstance(answer, dict)
        return response.status, answer


async def pending_gauge(proc: Daemon, destination: str) -> float | None:
    async with aiohttp.ClientSession() as session, session.get(proc.url + "/metrics") as response:
        text = await response.text()
    line = re.search(
        rf'^automationd_actions_pending\{{destination="{re.escape(destination)}"\}} (\S+)$',
        text,
        re.MULTILINE,
    )
    return None if line is None else float(line.group(1))


def failures(tmp_path: Path) -> dict[str, dict[str, object]]:
    """The action.failed record of each event, by event id."""
    return {
        str(r["event_id"]): r
        for r in audit_records(tmp_path / "audit.jsonl")
        if r["kind"] == "action.failed"
    }


async def test_a_full_backlog_dead_letters_new_actions_at_once(tmp_path: Path) -> None:
    async with hanging_server() as hanging, receiver() as healthy:
        rules = write_rules(
            tmp_path,
            f"""\
audit: {{path: audit.jsonl}}
delivery: {{max_pending_per_destination: 5, concurrency_per_destination: 2}}
automations:
  - name: to-hanging
    on: [job_done]
    actions: [{{webhook: {{url: "http://{hanging}/hook", timeout: 60s}}}}]
  - name: to-healthy
    on: [report_done]
    actions: [{{webhook: {{url: "{healthy.url}/hook"}}}}]
""",
        )
        async with daemon(rules) as proc:
            events = [{"type": "job_done", "id": f"e{i:02d}"} for i in range(12)]
            status, _ = await proc.post(events)
            assert status == 202

            async def seven_refused() -> bool:
                return len(failures(tmp_path)) == 7

            await until(seven_refused, within=10)
            refused = failures(tmp_path)
            # the first 5 were admitted; each later one was dead-lettered on arrival
            assert sorted(refused) == [f"e{i:02d}" for i in range(5, 12)]
            for record in refused.values():
                assert record["automation"] == "to-hanging"
                assert record["attempts"] == 0
                assert record["error"] == (
                    f"destination backlog full: 5 actions pending for {hanging}"
                )
            _, letters = await get_json(proc, "/dead-letters")
            listed = letters["dead_letters"]
            assert isinstance(listed, list)
            assert len(listed) == 7
            assert letters["total"] == 7
            assert "next_after" not in letters
            # a page at a time: a dead destination can leave too many to answer at once
            pages: list[list[object]] = []
            after = 0
            while True:
                status, page = await get_json(proc, f"/dead-letters?after={after}&limit=3")
                assert status == 200
                assert page["total"] == 7
                letters_of_page = page["dead_letters"]
                assert isinstance(letters_of_page, list)
                pages.append([letter["event_id"] for letter in letters_of_page])
                if "next_after" not in page:
                    break
                assert page["next_after"] == letters_of_page[-1]["id"]
                after = int(str(page["next_after"]))
            assert pages == [["e05", "e06", "e07"], ["e08", "e09", "e10"], ["e11"]]
            status, bad = await get_json(proc, "/dead-letters?limit=0")
            assert status == 400
            assert bad["field"] == "limit"
            assert await pending_gauge(proc, hanging) == 5
            status, ready = await get_json(proc, "/readyz")
            assert status == 200  # a dead destination does not stop events being accepted
            listing = ready["destinations_backing_up"]
            assert isinstance(listing, list)
            (backing_up,) = listing
            assert isinstance(backing_up, dict)
            assert {k: v for k, v in backing_up.items() if k != "oldest_pending_s"} == {
                "destination": hanging,
                "pending": 5,
                "waiting_for_a_slot": 3,
                "max_pending": 5,
                "full": True,
            }
            assert isinstance(backing_up["oldest_pending_s"], float)
            assert backing_up["oldest_pending_s"] >= 0
            warnings = [line for line in proc.log if "backlog full" in line]
            assert len(warnings) == 1, warnings  # once per episode, not once per action
            # another destination is served as usual meanwhile
            status, _ = await proc.post([{"type": "report_done", "id": f"r{i}"} for i in range(4)])
            assert status == 202
            await healthy.wait_for(4)


async def test_every_action_reaches_an_outcome_within_its_life(tmp_path: Path) -> None:
    """`give_up_after` bounds an action's whole life: the one holding the destination's only
    slot has its attempt cut when its life ends (4 s), and the two waiting for the slot give
    up when theirs end (2 s), never having had it. The holder is admitted alone first and
    lives 2 s longer, so which action holds the slot does not depend on scheduling."""
    async with hanging_server() as hanging:
        rules = write_rules(
            tmp_path,
            f"""\
audit: {{path: audit.jsonl}}
delivery: {{concurrency_per_destination: 1}}
automations:
  - name: holder
    on: [hold]
    actions:
      - webhook: {{url: "http://{hanging}/hook", timeout: 60s, give_up_after: 4s}}
  - name: to-hanging
    on: [job_done]
    actions:
      - webhook: {{url: "http://{hanging}/hook", timeout: 60s, give_up_after: 2s}}
""",
        )
        async with daemon(rules) as proc:
            started = asyncio.get_running_loop().time()
            assert (await proc.post({"type": "hold", "id": "e0"}))[0] == 202

            async def holding() -> bool:  # admitted, and the slot was free: it holds it
                return await pending_gauge(proc, hanging) == 1

            await until(holding)
            status, _ = await proc.post([{"type": "job_done", "id": f"e{i}"} for i in (1, 2)])
            assert status == 202

            async def all_failed() -> bool:
                return len(failures(tmp_path)) == 3

            await until(all_failed, within=20)
            took = asyncio.get_running_loop().time() - started
            # the holder gave up 4 s after it fired, with margin for a loaded machine
            assert took < 10, took
            outcome = failures(tmp_path)
            # e0 held the one slot: its attempt was cut at the end of its life, and it was
            # not retried
            first = outcome["e0"]
            assert first["attempts"] == 1
            assert str(first["error"]).startswith(
                "gave up after 4 s (delivery.give_up_after): the attempt was cut after "
            )
            for waiting in ("e1", "e2"):  # never got the slot
                assert outcome[waiting]["attempts"] == 0
                assert outcome[waiting]["error"] == (
                    "gave up after 2 s (delivery.give_up_after) waiting for a free slot at "
                    f"{hanging}"
                )
            assert await pending_gauge(proc, hanging) == 0
            _, letters = await get_json(proc, "/dead-letters")
            assert len(letters["dead_letters"]) == 3  # type: ignore[arg-type]
            _, ready = await get_json(proc, "/readyz")
            assert "destinations_backing_up" not in ready
    attempts = [r for r in audit_records(tmp_path / "audit.jsonl") if r["kind"] == "action.attempt"]
    assert [r["event_id"] for r in attempts] == ["e0"]
    assert json.dumps(attempts[0]["retryable"]) == "false"
