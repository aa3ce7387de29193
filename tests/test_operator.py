"""Operator tools: cooldowns through the daemon, `automationd send` and `automationd schema`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.support import audit_records, daemon, free_port, receiver, run_cli, write_rules


async def test_a_cooldown_holds_repeats_per_key_across_a_restart(tmp_path: Path) -> None:
    async with receiver() as recv:
        rules = write_rules(
            tmp_path,
            f"""\
automations:
  - name: page
    on: [flow_run_state_change]
    cooldown: {{for: 1h, key: "{{flow_id}}"}}
    actions: [{{webhook: {{url: "{recv.url}/page"}}}}]
""",
        )
        failed = {"type": "flow_run_state_change", "state": "Failed"}
        async with daemon(rules) as proc:
            for flow in ("f1", "f1", "f2", "f1"):
                status, _ = await proc.post({**failed, "flow_id": flow})
                assert status == 202
            await recv.wait_for(2)
            assert await proc.stop() == 0
        async with daemon(rules) as proc:
            await proc.post({**failed, "flow_id": "f2"})
            await proc.post({**failed, "flow_id": "f3"})
            await recv.wait_for(3)
            assert await proc.stop() == 0
    assert len(recv.requests) == 3  # f1, f2, then f3 after the restart
    suppressed = [
        r for r in audit_records(tmp_path / "audit.jsonl") if r["kind"] == "automation.suppressed"
    ]
    assert [r["key"] for r in suppressed] == ["f1", "f1", "f2"]
    assert all(3500 < float(str(r["remaining_s"])) <= 3600 for r in suppressed)


async def test_send_posts_typed_values_and_tokens(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("t0k\n")
    async with receiver() as recv:
        rules = tmp_path / "rules.yaml"
        rules.write_text(
            f"version: 1\nserver: {{listen: '127.0.0.1:0', tokens_file: {tokens}}}\nautomations:\n"
            f"  - {{name: a, on: [job_done], actions: [{{webhook: {{url: '{recv.url}/x'}}}}]}}\n"
        )
        async with daemon(rules) as proc:
            code, out, _ = await run_cli(
                "send",
                "job_done",
                "count:=3",
                "ok:=true",
                "name=nightly",
                'tags:=["a"]',
                "note=not json",
                "--url",
                proc.url,
                "--token",
                "t0k",
            )
            assert code == 0
            assert json.loads(out)["accepted"]
            code, out, _ = await run_cli(
                "send",
                "--file",
                "-",
                stdin=b'[{"type": "job_done", "id": "from-stdin"}]',
                env={"AUTOMATIOND_URL": proc.url, "AUTOMATIOND_TOKEN": "t0k", "PATH": ""},
            )
            assert code == 0
            assert json.loads(out) == {"accepted": ["from-stdin"]}
            code, _, err = await run_cli("send", "job_done", "--url", proc.url)
            assert code == 1
            assert "answered 401" in err
            await recv.wait_for(2)
            assert await proc.stop() == 0
    first = recv.requests[0].body
    assert isinstance(first, dict)
    assert (first["count"], first["ok"], first["name"], first["tags"], first["note"]) == (
        3,
        True,
        "nightly",
        ["a"],
        "not json",
    )


async def test_send_usage_errors() -> None:
    code, _, err = await run_cli("send", "job_done", "novalue")
    assert code == 2
    assert "'novalue' is not key=value" in err
    code, _, err = await run_cli("send", "job_done", "--url", f"http://127.0.0.1:{free_port()}")
    assert code == 1
    assert "cannot reach" in err


SCHEMA = Path(__file__).resolve().parent.parent / "schema" / "rules.schema.json"


async def test_schema_prints_the_rules_schema() -> None:
    code, out, _ = await run_cli("schema")
    assert code == 0
    assert json.loads(out) == json.loads(await asyncio.to_thread(SCHEMA.read_text))
