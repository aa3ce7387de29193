"""Index by type, matchers, JMESPath conditions."""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from automationd.jmescompile import is_truthy
from automationd.matching import AutomationIndex, judge
from automationd.rules import Automation, Matcher
from automationd.rules.load import parse_config


def automations(rules: str) -> tuple[Automation, ...]:
    text = "version: 1\nautomations:\n" + textwrap.indent(textwrap.dedent(rules), "  ")
    return parse_config(text.encode(), Path("/r.yaml")).automations


def index(rules: str) -> AutomationIndex:
    return AutomationIndex(automations(rules))


def fired(idx: AutomationIndex, event: Mapping[str, object]) -> list[str]:
    return [a.name for a, verdict in idx.judge_candidates(event) if verdict.fired]


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
    assert fired(idx, {"type": "agent_heartbeat"}) == ["other-type", "any"]
    assert fired(idx, {"type": "deploy"}) == ["any"]


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
    rules = f"- {{name: a, on: [job], match: {{state: [Failed]}}, {HOOK}}}"
    event = {"type": "job", "state": "Running"}
    assert index(rules).judge_candidates(event) == []  # ruled out by the index, unjudged
    (automation,) = automations(rules)
    verdict = judge(automation, event)
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
    verdicts = {a.name: v for a, v in idx.judge_candidates({"type": "job", "count": 3})}
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


SCALARS = st.sampled_from([0, 1, 1.0, True, False, None, "a", "b", "1", ""])
PATHS = st.sampled_from([("flow_name",), ("tags",), ("labels", "env")])


@st.composite
def matchers(draw: st.DrawFn) -> Matcher:
    values = draw(st.lists(SCALARS | st.lists(SCALARS, max_size=2), min_size=1, max_size=3))
    return Matcher(draw(PATHS), tuple(values))


EVENT_VALUES = SCALARS | st.lists(SCALARS | st.dictionaries(st.just("x"), SCALARS), max_size=3)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.lists(matchers(), max_size=2), min_size=1, max_size=8),
    st.fixed_dictionaries(
        {},
        optional={
            "flow_name": EVENT_VALUES,
            "tags": EVENT_VALUES,
            "labels": st.fixed_dictionaries({}, optional={"env": EVENT_VALUES}) | SCALARS,
        },
    ),
)
def test_the_value_index_fires_exactly_what_judging_every_automation_fires(
    match_lists: list[list[Matcher]], event: dict[str, object]
) -> None:
    """No false negatives, nothing out of order: the index only skips automations that
    could not have fired (values equal in Python but not in JSON, 1 and true, included)."""
    (template,) = automations(f"- {{name: t, on: [job], {HOOK}}}")
    every = [
        dataclasses.replace(template, name=f"a{i}", match=tuple(match))
        for i, match in enumerate(match_lists)
    ]
    event = {"type": "job", **event}
    expected = [a.name for a in every if judge(a, event).fired]
    assert fired(AutomationIndex(every), event) == expected
