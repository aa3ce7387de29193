"""What events carry: every attribute a template, matcher or condition names must be one
its event types provide, else it would read nothing on every event; the hint names the
closest attribute they do provide."""

from __future__ import annotations

from automationd.events import BASE_ATTRIBUTES, EventType
from automationd.rules.checks.core import Checker, DocPath, suggest
from automationd.rules.model import Matcher
from automationd.templating import Template


def check_attribute(
    check: Checker,
    path: DocPath,
    attribute: str,
    types: list[EventType] | None,
    *,
    at_key: bool = False,
) -> None:
    """`attribute` (its first part) is one every type of `types` provides; None: any."""
    if types is None:
        return
    first = attribute.split(".", 1)[0]
    for event_type in types:
        if not event_type.provides(first):
            hint = suggest(first, [*BASE_ATTRIBUTES, *(event_type.attributes or {})])
            message = f"'{first}' is not an attribute of {event_type.type} events{hint}"
            check.add(path, message, at_key=at_key)
            return


def check_fields(
    check: Checker, path: DocPath, template: Template, types: list[EventType] | None
) -> None:
    """Every field of `template` is an attribute of `types`."""
    for template_field in template.fields():
        check_attribute(check, path, template_field.name, types)


def matchers(
    check: Checker, path: DocPath, raw: object, types: list[EventType] | None
) -> tuple[Matcher, ...]:
    """`match:` entries, each attribute checked against the event types."""
    built = []
    for attribute, expected in (raw if isinstance(raw, dict) else {}).items():
        check_attribute(check, (*path, attribute), attribute, types, at_key=True)
        values = tuple(expected) if isinstance(expected, list) else (expected,)
        built.append(Matcher(tuple(attribute.split(".")), values))
    return tuple(built)
