"""Compiled JMESPath conditions give exactly what jmespath gives: a differential test.

Hypothesis writes expressions from a grammar covering every node type (compiled ones and
those left to jmespath's interpreter) over a small set of names, and JSON documents over the
same names, so that paths usually lead somewhere. For each pair the compiled closure must
return jmespath's result (same value and same JSON type: `true` is not `1`), or raise the
same exception type when jmespath raises.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jmespath
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from automationd.jmescompile import compile_expression
from automationd.matching import judge
from automationd.rules.load import parse_config

NAMES = ["a", "b", "tags", "count", "state"]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(-3, 3, allow_nan=False)
    | st.sampled_from(["", "x", "Failed", "prod", "a"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(NAMES), inner),
    max_leaves=20,
)
documents = st.dictionaries(st.sampled_from(NAMES), json_values)

literals = st.sampled_from(
    ["`1`", "`0`", "`2.5`", "`true`", "`false`", "`null`", '`"x"`', "`[1, 2]`", "`{}`", "'prod'"]
)
fields = st.sampled_from([*NAMES, "@"])


def combine(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    two = st.tuples(inner, inner)
    return st.one_of(
        st.tuples(inner, fields).map(lambda p: f"{p[0]}.{p[1]}" if p[1] != "@" else p[0]),
        st.tuples(inner, st.integers(-2, 2)).map(lambda p: f"{p[0]}[{p[1]}]"),
        st.tuples(inner, fields).map(lambda p: f"{p[0]}[*].{p[1]}" if p[1] != "@" else p[0]),
        inner.map(lambda e: f"{e}[]"),
        inner.map(lambda e: f"{e}.*"),
        st.tuples(inner, inner).map(lambda p: f"{p[0]}[?{p[1]}]"),
        inner.map(lambda e: f"{e}[1:3]"),
        st.tuples(two, st.sampled_from(["==", "!=", "<", "<=", ">", ">="])).map(
            lambda p: f"({p[0][0]} {p[1]} {p[0][1]})"
        ),
        two.map(lambda p: f"({p[0]} && {p[1]})"),
        two.map(lambda p: f"({p[0]} || {p[1]})"),
        inner.map(lambda e: f"!({e})"),
        two.map(lambda p: f"{p[0]} | {p[1]}"),
        inner.map(lambda e: f"length({e})"),
        two.map(lambda p: f"contains({p[0]}, {p[1]})"),
        two.map(lambda p: f"starts_with({p[0]}, {p[1]})"),
        inner.map(lambda e: f"to_string({e})"),
        inner.map(lambda e: f"sort_by({e}, &count)"),
        two.map(lambda p: f"{{k: {p[0]}, v: {p[1]}}}"),
        two.map(lambda p: f"[{p[0]}, {p[1]}]"),
    )


expressions = st.recursive(fields | literals, combine, max_leaves=8)


def outcome(run: Any) -> tuple[str, object]:
    try:
        value = run()
    except Exception as exc:
        return ("raised", type(exc).__name__)
    return ("value", json.dumps(value, sort_keys=True))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions, documents)
def test_compiled_gives_what_jmespath_gives(expression: str, document: dict[str, Any]) -> None:
    try:
        parsed = jmespath.compile(expression)
    except jmespath.exceptions.JMESPathError:
        return  # the grammar can write what jmespath refuses to parse: nothing to compare
    compiled = compile_expression(parsed)
    assert outcome(lambda: compiled(document)) == outcome(lambda: parsed.search(document)), (
        expression
    )


@pytest.mark.parametrize(
    ("expression", "document", "expected"),
    [
        ("count > `10`", {"count": 11}, True),
        ("count > `10`", {"count": [11]}, None),  # ordering a list: null
        ("!count", {"count": 0}, False),  # jmespath: 0 is true
        ("a == `1`", {"a": True}, False),  # true is not 1
        ("contains(tags || `[]`, 'prod')", {"tags": ["prod"]}, True),
        ("contains(tags || `[]`, 'prod')", {}, False),
        ("tags[?starts_with(@, 'p')] | length(@)", {"tags": ["prod", "dev", "pre"]}, 2),
        ("a.b[0].state", {"a": {"b": [{"state": "Failed"}]}}, "Failed"),
    ],
)
def test_typical_conditions(expression: str, document: dict[str, Any], expected: object) -> None:
    parsed = jmespath.compile(expression)
    assert compile_expression(parsed)(document) == expected == parsed.search(document)


def test_ordering_a_string_against_a_number_is_an_error_verdict_not_a_crash() -> None:
    """jmespath lets Python's TypeError out of `'11' > 10`; the compiled form does the same,
    and an automation with such a condition does not fire and says why."""
    parsed = jmespath.compile("count > `10`")
    with pytest.raises(TypeError):
        parsed.search({"count": "11"})
    with pytest.raises(TypeError):
        compile_expression(parsed)({"count": "11"})
    rules = b"""\
version: 1
automations:
  - {name: big, on: [batch_done], when: "count > `10`", actions: [{webhook: {url: "http://127.0.0.1:1/"}}]}
"""
    (automation,) = parse_config(rules, Path("rules.yaml")).automations
    verdict = judge(automation, {"type": "batch_done", "count": "11"})
    assert not verdict.fired
    assert verdict.error == "'>' not supported between instances of 'str' and 'int'"
