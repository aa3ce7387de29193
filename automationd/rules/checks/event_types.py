"""The `event_types:` section: custom types with their message and attributes, and
attributes added to built-in types (whose name, message and attributes' kinds stay), so that
templates and matchers naming them are checked at load like the built-in ones."""

from __future__ import annotations

from automationd.events import ANY, BUILTIN_TYPES, EventType, readable_name
from automationd.rules.checks.attributes import check_fields
from automationd.rules.checks.core import Checker, DocPath
from automationd.templating import Template


def event_types(check: Checker, raw: object) -> dict[str, EventType]:
    """Type name -> the declared (or extended built-in) type."""
    declared: dict[str, EventType] = {}
    if not isinstance(raw, dict):
        return declared
    for name, spec in raw.items():
        path: DocPath = ("event_types", name)
        if not check.clean(path):
            continue
        attributes = {str(a): ANY for a in spec.get("attributes", [])}
        builtin = BUILTIN_TYPES.get(name)
        if builtin is None:
            declared[name] = _custom(check, path, name, spec, attributes)
        elif "message" in spec:
            check.add(
                (*path, "message"),
                f"{name} is a built-in event type and keeps its message; under "
                "event_types: it only takes attributes: to add",
                at_key=True,
            )
        else:
            known = builtin.attributes or {}
            added = {a: kind for a, kind in attributes.items() if a not in known}
            declared[name] = EventType(
                name, builtin.event_name, builtin.message, {**known, **added}
            )
    return declared


def _custom(
    check: Checker, path: DocPath, name: str, spec: dict[str, object], attributes: dict[str, str]
) -> EventType:
    """A custom type; its message may name only its own attributes."""
    message = check.template((*path, "message"), str(spec.get("message", "{type}")))
    event_type = EventType(
        name, readable_name(name), message or Template.parse("{type}"), attributes
    )
    if message is not None:
        check_fields(check, (*path, "message"), message, [event_type])
    return event_type
