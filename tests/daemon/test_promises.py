"""Promises of the README that had no test of their own (issue 16): the API description
matches the routes, POST /reload reopens a rotated audit file, and `state: {journal: false}`
does what the README says, for better and worse."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from automationd.engine import Engine
from automationd.openapi import OPENAPI
from automationd.rules.load import parse_config
from automationd.server import create_app
from tests.support import audit_records, daemon, receiver, until

RULES = 'version: 1\nserver: {listen: "127.0.0.1:0"}\naudit: {path: audit.jsonl}\n'


def test_every_route_is_described_and_every_description_is_a_route(tmp_path: Path) -> None:
    """GET /openapi.json names exactly the routes the app serves, method by method (a new
    route without a description, or a description of a route that is gone, fails here)."""
    config = parse_config((RULES + "automations: []\n").encode(), tmp_path / "rules.yaml")
    app = create_app(Engine(config))
    served = {
        (route.resource.canonical, route.method.lower())
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    paths = OPENAPI["paths"]
    assert isinstance(paths, dict)
    described = {(path, method) for path, operations in paths.items() for method in operations}
    assert served == described


async def test_post_reload_reopens_an_audit_file_moved_away(tmp_path: Path) -> None:
    """logrotate without a signal: the file is renamed, POST /reload opens a new one, records
    go on in it, and the old one keeps what came before."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES + "automations: []\n")
    trail, rotated = tmp_path / "audit.jsonl", tmp_path / "audit.jsonl.1"
    async with daemon(rules) as proc:
        assert (await proc.post({"type": "before_rotation", "id": "b"}))[0] == 202

        async def recorded(path: Path, event_id: str) -> bool:
            try:
                return any(r.get("event_id") == event_id for r in audit_records(path))
            except FileNotFoundError:  # the new file appears with its first record
                return False

        await until(lambda: recorded(trail, "b"))
        trail.rename(rotated)
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{proc.url}/reload") as response,
        ):
            assert response.status == 200
        assert (await proc.post({"type": "after_rotation", "id": "a"}))[0] == 202
        await until(lambda: recorded(trail, "a"))
        assert await proc.stop() == 0
    old_ids = {r.get("event_id") for r in audit_records(rotated)}
    new_ids = {r.get("event_id") for r in audit_records(trail)}
    assert "b" in old_ids
    assert "a" not in old_ids
    assert "a" in new_ids
    assert "b" not in new_ids


async def test_without_the_journal_events_act_but_nothing_is_journaled(tmp_path: Path) -> None:
    """`state: {journal: false}`: events are accepted and acted on, no segment folder is
    written, and, as the README warns, a repeated id is not detected as a duplicate."""
    async with receiver() as recv:
        rules = tmp_path / "rules.yaml"
        rules.write_text(
            RULES
            + "state: {journal: false}\n"
            + "automations:\n"
            + "  - name: forward\n    on: [job_done]\n"
            + f'    actions: [{{webhook: {{url: "{recv.url}/hook"}}}}]\n'
        )
        async with daemon(rules) as proc:
            for _ in range(2):
                status, answer = await proc.post({"type": "job_done", "id": "same"})
                assert status == 202
                assert answer == {"accepted": ["same"]}  # no "duplicate": it is not detected
            delivered = await recv.wait_for(2)
            assert [r.path for r in delivered] == ["/hook", "/hook"]
            assert await proc.stop() == 0
    assert not (tmp_path / "state.db-events").exists()
    kinds = [r["kind"] for r in audit_records(tmp_path / "audit.jsonl")]
    assert kinds.count("event.accepted") == 2
    assert "event.duplicate" not in kinds


async def get_text(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def test_dead_letters_survive_a_restart(tmp_path: Path) -> None:
    async with receiver() as recv:
        recv.status["/hook"] = 400
        rules = tmp_path / "rules.yaml"
        rules.write_text(
            RULES
            + "automations:\n  - name: forward\n    on: [job_done]\n"
            + f'    actions: [{{webhook: {{url: "{recv.url}/hook"}}}}]\n'
        )
        async with daemon(rules) as proc:
            assert (await proc.post({"type": "job_done", "id": "doomed"}))[0] == 202

            async def lettered() -> bool:
                text = (await get_text(f"{proc.url}/dead-letters"))[1]
                return [d["event_id"] for d in json.loads(text)["dead_letters"]] == ["doomed"]

            await until(lettered)
            assert await proc.stop() == 0
        async with daemon(rules) as proc:
            status, text = await get_text(f"{proc.url}/dead-letters")
            assert status == 200
            listing = json.loads(text)
            assert [d["event_id"] for d in listing["dead_letters"]] == ["doomed"]
            assert listing["total"] == 1
            assert await proc.stop() == 0


async def test_a_condition_that_fails_is_audited_and_the_others_still_act(tmp_path: Path) -> None:
    """jmespath raises TypeError for '11' > 10: an `automation.error` record for that one
    automation (not only a verdict in explain), and the next automation still fires."""
    async with receiver() as recv:
        rules = tmp_path / "rules.yaml"
        rules.write_text(
            RULES
            + "event_types: {job_done: {attributes: [count]}}\n"
            + "automations:\n"
            + "  - name: broken\n    on: [job_done]\n    when: 'count > `10`'\n"
            + f'    actions: [{{webhook: {{url: "{recv.url}/broken"}}}}]\n'
            + "  - name: fine\n    on: [job_done]\n"
            + f'    actions: [{{webhook: {{url: "{recv.url}/fine"}}}}]\n'
        )
        async with daemon(rules) as proc:
            assert (await proc.post({"type": "job_done", "id": "e1", "count": "11"}))[0] == 202
            (got,) = await recv.wait_for(1)
            assert got.path == "/fine"
            assert await proc.stop() == 0
    (error,) = [
        r for r in audit_records(tmp_path / "audit.jsonl") if r["kind"] == "automation.error"
    ]
    assert (error["event_id"], error["automation"]) == ("e1", "broken")
    assert error["error"] == (
        "condition 'count > `10`' failed: '>' not supported between instances of 'str' and 'int'"
    )


async def test_suppressed_firings_are_counted_on_metrics(tmp_path: Path) -> None:
    async with receiver() as recv:
        rules = tmp_path / "rules.yaml"
        rules.write_text(
            RULES
            + "automations:\n  - name: page\n    on: [job_done]\n"
            + '    cooldown: {for: 1h, key: "{flow}"}\n'
            + f'    actions: [{{webhook: {{url: "{recv.url}/page"}}}}]\n'
        )
        async with daemon(rules) as proc:
            for n, flow in enumerate(("f1", "f1", "f1", "f2")):
                assert (await proc.post({"type": "job_done", "id": f"e{n}", "flow": flow}))[
                    0
                ] == 202
            await recv.wait_for(2)

            async def counted() -> bool:
                text = (await get_text(f"{proc.url}/metrics"))[1]
                return 'automationd_automations_suppressed_total{automation="page"} 2.0' in text

            await until(counted, within=10)
            assert await proc.stop() == 0


async def test_a_reload_says_what_changed_and_what_needs_a_restart(tmp_path: Path) -> None:
    """POST /reload's outcome (and the config.applied record): automations added, removed
    and changed, and a new `server:` listed under restart_needed while the old one stays."""

    def automation(name: str, url: str) -> str:
        return f"  - {{name: {name}, on: [job_done], actions: [{{webhook: {{url: '{url}'}}}}]}}\n"

    rules = tmp_path / "rules.yaml"
    rules.write_text(
        RULES
        + "automations:\n"
        + automation("kept", "http://127.0.0.1:9/k")
        + automation("changed", "http://127.0.0.1:9/a")
        + automation("removed", "http://127.0.0.1:9/r")
    )
    async with daemon(rules) as proc:
        port = proc.url.rsplit(":", 1)[1]
        rules.write_text(
            RULES.replace('"127.0.0.1:0"', '"127.0.0.1:1"')  # another port: needs a restart
            + "automations:\n"
            + automation("kept", "http://127.0.0.1:9/k")
            + automation("changed", "http://127.0.0.1:9/b")
            + automation("added", "http://127.0.0.1:9/n")
        )
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{proc.url}/reload") as response,
        ):
            assert response.status == 200
            outcome = await response.json()
        assert outcome["outcome"] == "applied"
        assert outcome["changes"] == {
            "automations_added": ["added"],
            "automations_removed": ["removed"],
            "automations_changed": ["changed"],
            "sections_changed": [],
            "restart_needed": ["server"],
        }
        # still listening where it was
        assert (await get_text(f"http://127.0.0.1:{port}/healthz"))[0] == 200
        assert await proc.stop() == 0
    (applied,) = [
        r for r in audit_records(tmp_path / "audit.jsonl") if r["kind"] == "config.applied"
    ]
    assert applied["restart_needed"] == ["server"]
    assert applied["automations_removed"] == ["removed"]
