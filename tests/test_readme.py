"""The README and example stay true: its commands exist and its walkthrough really works."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

from automationd.actions.registry import ALL_KINDS
from automationd.rules.load import parse_config
from tests.support import LISTENING, audit_records, daemon, start_automationd

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def test_the_two_commands_are_there_and_ci_runs_the_test_command() -> None:
    shell = code_blocks("sh")
    assert any("automationd run --config rules.example.yaml" in block for block in shell)
    assert "./scripts/test\n" in shell
    assert "exec ./scripts/test" in (ROOT / ".ci/run").read_text()


def test_the_example_rules_are_valid() -> None:
    example = ROOT / "rules.example.yaml"
    config = parse_config(example.read_bytes(), example)
    assert [a.name for a in config.automations] == [
        "notify-on-failed-run",
        "notify-on-late-run",
        "record-production-deploys",
    ]
    assert [sla.id for sla in config.flow_slas] == ["nightly-start"]


def test_every_action_kind_is_documented_and_in_the_schema() -> None:
    schema = json.loads((ROOT / "schema/rules.schema.json").read_text())
    for kind in ALL_KINDS:
        assert f"`{kind}`" in README, kind
        assert kind in schema["$defs"], kind


async def test_the_curl_walkthrough_works_as_written(tmp_path: Path) -> None:
    (curl,) = [block for block in code_blocks("sh") if block.startswith("curl ")]
    receive = await start_automationd(
        "receive", "--listen", "127.0.0.1:0", stdout=asyncio.subprocess.PIPE
    )
    assert receive.stdout is not None
    assert receive.stderr is not None
    try:
        receiver_url = ""
        while not receiver_url:
            line = (await asyncio.wait_for(receive.stderr.readline(), 20)).decode()
            assert line, "automationd receive exited"
            if match := LISTENING.search(line):
                receiver_url = match.group(1)
        rules = tmp_path / "rules.example.yaml"
        example = (ROOT / "rules.example.yaml").read_text()
        assert '"127.0.0.1:8787"' in example
        assert "http://127.0.0.1:8788" in example
        rules.write_text(
            example.replace('"127.0.0.1:8787"', '"127.0.0.1:0"').replace(
                "http://127.0.0.1:8788", receiver_url
            )
        )
        async with daemon(rules) as proc:
            command = curl.replace("http://127.0.0.1:8787", proc.url)
            shell = await asyncio.create_subprocess_exec(
                "bash", "-c", command, stdout=asyncio.subprocess.PIPE
            )
            out, _ = await asyncio.wait_for(shell.communicate(), 20)
            assert shell.returncode == 0
            (event_id,) = json.loads(out)["accepted"]
            webhook = json.loads(await asyncio.wait_for(receive.stdout.readline(), 20))
            # and its `automationd send` twin, as written, against this daemon
            (send,) = [b for b in code_blocks("sh") if b.startswith(".venv/bin/automationd send")]
            command = send.replace(".venv/bin/automationd", f"{sys.executable} -m automationd")
            shell = await asyncio.create_subprocess_exec(
                "bash",
                "-c",
                command,
                stdout=asyncio.subprocess.PIPE,
                env={**os.environ, "AUTOMATIOND_URL": proc.url},
            )
            out, _ = await asyncio.wait_for(shell.communicate(), 20)
            assert shell.returncode == 0
            twin = json.loads(await asyncio.wait_for(receive.stdout.readline(), 20))
            assert twin["body"] == {**webhook["body"], "event_id": json.loads(out)["accepted"][0]}
            assert await proc.stop() == 0
    finally:
        receive.terminate()
        await receive.wait()
    assert webhook["path"] == "/alerts"
    assert webhook["headers"]["X-PREFECT-EVENT-ID"] == event_id
    assert webhook["body"]["text"] == (
        "Run brave-otter of flow nightly-etl entered state Failed with message exit code 1. "
        "See http://127.0.0.1:4200/runs/flow-run/1 for more details."
    )
    assert webhook["body"]["text"] in README
    records = audit_records(tmp_path / "audit.jsonl")
    story = [r for r in records if r.get("event_id") == event_id]
    assert [r["kind"] for r in story] == [
        "event.accepted",
        "automation.matched",
        "action.attempt",
        "action.succeeded",
    ]
    assert story[3]["status"] == 200


def test_the_yaml_examples_are_valid_rules(tmp_path: Path) -> None:
    """Every YAML example of the README loads (secret files and variables provided)."""
    (tmp_path / "teams-url").write_text("https://example.webhook.office.com/x\n")
    (tmp_path / "twilio").write_text("token")
    (tmp_path / "slack-webhook").write_text("https://hooks.slack.com/services/T/B/y")
    (tmp_path / "pagerduty").write_text("R0UTINGKEY")
    environ = {
        "SLACK_OPS_WEBHOOK": "https://hooks.slack.com/services/T/B/x",
        "SMTP_PASSWORD": "pw",
        "PREFECT_API_KEY": "pnu_example",
        "CREDENTIALS_DIRECTORY": str(tmp_path),
    }
    examples = code_blocks("yaml")
    # Every ```yaml fence opens an example that is checked here (a fence written so the
    # pattern misses it would leave its example unchecked), and the count is pinned: a new
    # example must be seen to land here, and one taken out must be a decision.
    fences = [line for line in README.splitlines() if line.lstrip().startswith("```yaml")]
    assert len(examples) == len(fences) == 5
    for example in examples:
        text = example if example.startswith("version:") else "version: 1\n" + example
        if "automations:" not in text:
            text += "automations: []\n"
        text = text.replace("/etc/automationd/", f"{tmp_path}/")
        parse_config(text.encode(), tmp_path / "rules.yaml", environ=environ)
