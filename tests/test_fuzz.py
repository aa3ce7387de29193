"""Property tests and an API fuzzer: whatever comes in, only the expected errors come out."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from automationd import yamldoc
from automationd.events import (
    EventError,
    EventTypeResolver,
    format_timestamp,
    normalise,
    parse_timestamp,
)
from automationd.rules.load import ConfigError, parse_config
from automationd.templating import Template, TemplateError, compile_json, render_json
from automationd.wire import parse_json, split_batch
from tests.support import daemon, receiver

NOW = datetime(2026, 11, 27, tzinfo=UTC)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
event_like = (
    st.dictionaries(
        st.sampled_from(
            [
                "type",
                "id",
                "timestamp",
                "message",
                "state",
                "flow_run_id",
                "duration_seconds",
                "agent_ids",
                "scheduled_start_time",
                "x",
            ]
        ),
        json_values,
        max_size=8,
    )
    | json_values
)


@SETTINGS
@given(st.binary(max_size=300))
def test_any_body_parses_or_is_an_event_error(body: bytes) -> None:
    try:
        parse_json(body)
    except EventError as exc:
        problem: EventError | None = exc
    else:
        problem = None
    assert problem is None or problem.message


@SETTINGS
@given(event_like, st.sampled_from(["flow_run_state_change", "agent_sla_failure", "deploy", None]))
def test_any_event_normalises_or_is_an_event_error(raw: object, event_type: str | None) -> None:
    if isinstance(raw, dict) and event_type is not None:
        raw = {**raw, "type": event_type}
    try:
        items, _ = split_batch(raw)
        events = [normalise(item, EventTypeResolver(), NOW) for item in items]
    except EventError as exc:
        problem: str | None = exc.message
    else:
        problem = None
    if problem is not None:
        assert problem  # a refusal says why
        return
    # Accepted: one event per item sent, each keeping what it was sent, defaults filled in.
    assert len(events) == (len(raw) if isinstance(raw, list) else 1)
    for item, event in zip(items, events, strict=True):
        assert isinstance(item, dict)
        json.dumps(event, ensure_ascii=False).encode("utf-8")  # the audit can write it
        for name, value in item.items():
            if name != "timestamp" and value is not None:
                assert event[name] == value, name
        assert event["type"] == item["type"]
        assert isinstance(event["id"], str)
        assert event["id"]
        stamp = item.get("timestamp")
        expected = NOW if stamp is None else parse_timestamp(str(stamp))
        assert event["timestamp"] == format_timestamp(expected)
        assert isinstance(event["message"], str)


@SETTINGS
@given(st.text(max_size=60), json_values)
def test_templates_parse_or_fail_cleanly_and_render_anything(text: str, value: object) -> None:
    try:
        template = Template.parse(text)
    except TemplateError as exc:
        offset: int | None = exc.offset
    else:
        offset = None
    if offset is not None:
        assert 0 <= offset <= len(text)
        return
    event = {"a": value, "b": {"c": value}, "type": "x"}
    assert isinstance(template.render(event), str)
    render_json(compile_json({"k": text, text: [text]}), event)


yaml_scalars = st.sampled_from(
    ["1", "-1", "x", "''", "null", "true", "[]", "{}", "5m", "'{id}'", "'{'", "on", "*"]
)
yaml_keys = st.sampled_from(
    [
        "version",
        "automations",
        "name",
        "on",
        "match",
        "when",
        "actions",
        "webhook",
        "url",
        "slack",
        "server",
        "listen",
        "flow_slas",
        "id",
        "kind",
        "duration",
        "secrets",
        "env",
        "retry",
        "attempts",
        "payload",
        "x",
    ]
)


@st.composite
def yaml_documents(draw: st.DrawFn, depth: int = 0) -> str:
    lines = []
    for key in draw(st.lists(yaml_keys, max_size=5)):
        indent = "  " * depth
        if depth < 3 and draw(st.booleans()):
            lines.append(f"{indent}{key}:")
            lines.append(draw(yaml_documents(depth + 1)))
        elif draw(st.booleans()):
            lines.append(f"{indent}{key}: [{draw(yaml_scalars)}, {draw(yaml_scalars)}]")
        else:
            lines.append(f"{indent}{key}: {draw(yaml_scalars)}")
    return "\n".join(line for line in lines if line)


@st.composite
def rules_documents(draw: st.DrawFn) -> str:
    """Near-valid rules (a version, automations, maybe more keys): some load, so the
    success path below is taken too."""
    names = draw(st.lists(st.sampled_from(["a", "b", "''", "'{id}'", "1", "null"]), max_size=3))
    lines = [f"version: {draw(st.just('1') | yaml_scalars)}"]
    lines.append("automations:" if names else "automations: []")
    for name in names:
        lines.append(f"  - {{name: {name}, on: [x], actions: [{{webhook: {{url: 'http://h/'}}}}]}}")
    if draw(st.booleans()):
        lines.append(draw(yaml_documents()))
    return "\n".join(lines) + "\n"


@SETTINGS
@given(st.one_of(yaml_documents(), rules_documents(), st.text(max_size=200)))
def test_any_rules_text_loads_or_is_a_config_error(text: str) -> None:
    try:
        config = parse_config(text.encode(), Path("/r.yaml"))
    except ConfigError as exc:
        lines = exc.lines()
        assert lines
        assert all(line.startswith("/r.yaml") for line in lines)
        return
    # Accepted: only a document of version 1 whose automations are the ones loaded.
    doc = yamldoc.load(text).data
    assert isinstance(doc, dict)
    assert doc["version"] == 1
    automations = doc.get("automations") or []
    assert isinstance(automations, list)
    assert [a.name for a in config.automations] == [a["name"] for a in automations]


FUZZ_SECONDS = 90
"""The run takes about 10 s; the daemon's start (at most 20 s) and this fit in the per-test
timeout (120 s), so a hung run fails with this wait's message, not pytest-timeout's."""


async def test_schemathesis_finds_no_server_error(tmp_path: Path) -> None:
    """Schemathesis generates requests from GET /openapi.json against the real daemon."""
    st_command = shutil.which("st", path=str(Path(sys.executable).parent))
    if st_command is None:  # a dev dependency: missing means a broken environment
        pytest.fail(f"schemathesis's `st` command is not in {Path(sys.executable).parent}")
    async with receiver() as recv:
        rules = tmp_path / "rules.yaml"
        rules.write_text(
            f"version: 1\nserver: {{listen: '127.0.0.1:0'}}\nautomations:\n"
            f"  - {{name: a, on: ['*'], actions: [{{webhook: {{url: '{recv.url}/x'}}}}]}}\n"
        )
        async with daemon(rules) as proc:
            fuzz = await asyncio.create_subprocess_exec(
                st_command,
                "run",
                f"{proc.url}/openapi.json",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                "40",
                "--seed",
                "1",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            try:
                out, _ = await asyncio.wait_for(fuzz.communicate(), FUZZ_SECONDS)
            except TimeoutError:
                fuzz.kill()
                await fuzz.wait()
                pytest.fail(f"schemathesis did not finish within {FUZZ_SECONDS} s")
            report = out.decode()
            assert fuzz.returncode == 0, report
            assert "Server error" not in report
            status, _ = await proc.post({"type": "still-alive"})
            assert status == 202
            assert await proc.stop() == 0
    assert not any("Traceback" in line for line in proc.log), "\n".join(proc.log)
