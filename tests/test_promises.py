"""Promises of the README that had no test of their own (issue 16): the API description
matches the routes, POST /reload reopens a rotated audit file, and `state: {journal: false}`
does what the README says, for better and worse."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from automationd.config import parse_config
from automationd.engine import Engine
from automationd.openapi import OPENAPI
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
