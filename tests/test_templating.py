"""Templates: fields from the event only, never str.format."""

from __future__ import annotations

import pytest

from automationd.templating import (
    JsonTemplateError,
    Template,
    TemplateError,
    compile_json,
    json_templates,
    render_json,
)

EVENT = {
    "flow_name": "etl",
    "count": 3,
    "ratio": 0.5,
    "ok": True,
    "none": None,
    "tags": ["a", "b", 7],
    "labels": {"env": "prod", "team": {"name": "data"}},
}


def test_fields_literals_and_nested_paths() -> None:
    template = Template.parse("{flow_name} in {labels.env} ({labels.team.name})")
    assert template.render(EVENT) == "etl in prod (data)"
    assert [f.name for f in template.fields()] == ["flow_name", "labels.env", "labels.team.name"]


def test_doubled_braces_are_literal() -> None:
    assert Template.parse("{{x}} {flow_name} }}").render(EVENT) == "{x} etl }"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{count}", "3"),
        ("{ratio}", "0.5"),
        ("{ok}", "true"),
        ("{none}", ""),
        ("{missing}", ""),
        ("{tags}", "a, b, 7"),
        ("{labels}", '{"env":"prod","team":{"name":"data"}}'),
        ("{flow_name.deeper}", ""),
    ],
)
def test_values_read_as_text(text: str, expected: str) -> None:
    assert Template.parse(text).render(EVENT) == expected


@pytest.mark.parametrize(
    ("text", "offset", "words"),
    [
        ("{0.__class__}", 0, "positional"),
        ("a {flow_name!r}", 2, "conversions"),
        ("{flow_name:>10}", 0, "format specs"),
        ("{tags[0]}", 0, "indexing"),
        ("{}", 0, "empty field"),
        ("open {flow_name", 5, "never closed"),
        ("close }", 6, "single '}'"),
        ("{a b}", 0, "not a plain name"),
        ("{a.}", 0, "not a plain name"),
    ],
)
def test_anything_but_plain_fields_is_refused(text: str, offset: int, words: str) -> None:
    with pytest.raises(TemplateError) as caught:
        Template.parse(text)
    assert caught.value.offset == offset
    assert words in caught.value.message


def test_lookup_never_reaches_python_objects() -> None:
    # A dunder path is just a missing key of the event's dicts.
    assert Template.parse("{flow_name.__class__}").render(EVENT) == ""
    assert Template.parse("{__class__}").render(EVENT) == ""


def test_json_payload_keeps_types_of_single_field_values() -> None:
    node = compile_json(
        {
            "text": "Run {flow_name}",
            "{flow_name}_count": "{count}",
            "tags": "{tags}",
            "n": [1, "{ok}"],
        }
    )
    assert render_json(node, EVENT) == {
        "text": "Run etl",
        "etl_count": 3,
        "tags": ["a", "b", 7],
        "n": [1, True],
    }


def test_json_template_errors_say_where() -> None:
    with pytest.raises(JsonTemplateError) as caught:
        compile_json({"a": [{"b": "{bad"}]})
    assert caught.value.path == ("a", 0, "b")


def test_json_templates_lists_every_template_with_its_path() -> None:
    node = compile_json({"k{id}": {"v": "{state}"}})
    paths = {(path, t.source) for path, t in json_templates(node)}
    assert paths == {(("k{id}",), "k{id}"), (("k{id}", "v"), "v"), (("k{id}", "v"), "{state}")}
