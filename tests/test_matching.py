"""Index by type, matchers, JMESPath conditions."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest

from automationd.config import parse_config
from automationd.jmescompile import is_truthy
from automationd.matching import AutomationIndex


def index(rules: str) -> AutomationIndex:
    text = "version: 1\nautomations:\n" + textwrap.indent(textwrap.dedent(rules), "  ")
    return AutomationIndex(parse_config(text.encode(), Path("/r.yaml")).automations)


def fired(idx: AutomationIndex, event: Mapping[str, object]) -> list[str]:
    return [a.name for a, verdict in idx.judge_all(event) if verdict.fired]


HOOK = "actions: [{webhook: {url: 'http://127.0.0.1:1/'}}]"


def test_only_automations_of_the_event_type_are_met_and_all_fire_in_file_order() -> None:
    idx = index(f"""\
        - {{name: glob-first, on: ["flow_*"], {HOOK}}}
        - {{name: failed, on: [flow_run_state_change], match: {{state: [Failed, Crashed]}}, {HOOK}}}
        - {{name: other-type, on: [agent_heartbeat], {HOOK}}}
        - {{name: any, on: "*", {HOOK}}}
        - {{name: disabled, on: [flow_run_state_change], enabled: false, {HOOK}}}
    """)
    event = {"type": "flow_run_state_change", "state": "Crashed"}
    assert fired(idx, event) == ["glob-first", "failed", "any"]
    assert [a.name for a in idx.candidates("agent_heartbeat")] == ["other-type", "any"]
    assert [a.name for a in idx.candidates("deploy")] == ["any"]


def test_matchers_on_nested_paths_lists_and_json_types() -> None:
    idx = index(f"""\
        - {{name: env, on: [job], match: {{labels.env: prod}}, {HOOK}}}
        - {{name: tag, on: [job], match: {{tags: urgent}}, {HOOK}}}
        - {{name: one, on: [job], match: {{code: 1}}, {HOOK}}}
        - {{name: yes, on: [job], match: {{flag: true}}, {HOOK}}}
    """)
    assert fired(idx, {"type": "job", "labels": {"env": "prod"}}) == ["env"]
    assert fired(idx, {"type": "job", "labels": "prod"}) == []
    assert fired(idx, {"type": "job", "tags": ["a", "urgent"]}) == ["tag"]
    assert fired(idx, {"type": "job", "code": 1.0}) == ["one"]
    assert fired(idx, {"type": "job", "code": True}) == []  # true is not 1
    assert fired(idx, {"type": "job", "flag": 1}) == []
    assert fired(idx, {"type": "job", "flag": True}) == ["yes"]


def test_non_match_says_why() -> None:
    idx = index(f"""\
        - {{name: a, on: [job], match: {{state: [Failed]}}, {HOOK}}}
    """)
    ((_, verdict),) = idx.judge_all({"type": "job", "state": "Running"})
    assert not verdict.fired
    assert verdict.reason == "match state: expected one of ['Failed'], saw 'Running'"


def test_conditions_use_jmespath_truthiness() -> None:
    idx = index(f"""\
        - {{name: count, on: [job], when: "count", {HOOK}}}
        - {{name: prod, on: [job], when: "contains(tags || `[]`, 'prod')", {HOOK}}}
        - {{name: bad-type, on: [job], when: "length(count)", {HOOK}}}
    """)
    assert fired(idx, {"type": "job", "count": 0, "tags": ["prod"]}) == ["count", "prod"]
    assert fired(idx, {"type": "job", "count": None}) == []
    verdicts = {a.name: v for a, v in idx.judge_all({"type": "job", "count": 3})}
    assert not verdicts["bad-type"].fired
    assert "invalid type" in verdicts["bad-type"].error


@pytest.mark.parametrize(
    ("value", "truthy"),
    [
        (0, True),
        (False, False),
        (None, False),
        ("", False),
        ([], False),
        ({}, False),
        ("x", True),
        ([0], True),
    ],
)
def test_is_truthy(value: object, truthy: bool) -> None:
    assert is_truthy(value) is truthy
