"""The `automations:` section: names unique, the event types of `on:` known, and every part
the schema found sound checked against those types (matchers, the condition, the cooldown's
key, each action) before an Automation is built."""

from __future__ import annotations

import difflib
from typing import Any

from automationd.events import BUILTIN_TYPES, EventType, EventTypeResolver
from automationd.globs import is_glob
from automationd.rules.checks.actions import Surroundings, action
from automationd.rules.checks.attributes import check_fields, matchers
from automationd.rules.checks.conditions import condition
from automationd.rules.checks.core import Checker, DocPath
from automationd.rules.model import Automation, Cooldown, Matcher


def automations(
    check: Checker, raw: object, resolver: EventTypeResolver, around: Surroundings
) -> tuple[Automation, ...] | None:
    """Every automation; None when any of them is wrong."""
    if not isinstance(raw, list):
        return None
    built: list[Automation] = []
    names: dict[str, int] = {}
    ok = True
    for i, item in enumerate(raw):
        path: DocPath = ("automations", i)
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            ok = check.unique((*path, "name"), item["name"], names, "automation name") and ok
        one = _automation(check, path, item, resolver, around) if isinstance(item, dict) else None
        if one is None:
            ok = False
        else:
            built.append(one)
    return tuple(built) if ok else None


def _automation(
    check: Checker,
    path: DocPath,
    raw: dict[str, Any],
    resolver: EventTypeResolver,
    around: Surroundings,
) -> Automation | None:
    """Check every part the schema found sound; build the Automation if all of it is."""
    before = len(check.problems)
    on_raw = raw.get("on")
    types = None
    if on_raw is not None and check.clean((*path, "on")):
        types = _event_types_of(check, path, on_raw, resolver)
    found: tuple[Matcher, ...] = ()
    if check.clean((*path, "match")):
        found = matchers(check, (*path, "match"), raw.get("match"), types)
    compiled = None
    when = raw.get("when")
    if isinstance(when, str) and check.clean((*path, "when")):
        compiled = condition(check, (*path, "when"), when, types)
    cooldown = _cooldown(check, path, raw.get("cooldown"), types)
    actions = []
    blocks = raw.get("actions")
    for j, block in enumerate(blocks if isinstance(blocks, list) else []):
        if isinstance(block, dict) and len(block) == 1:
            built = action(check, (*path, "actions", j), block, types, around)
            if built is not None:
                actions.append(built)
    if len(check.problems) > before or not check.clean(path):
        return None
    place = check.doc.position(path)
    return Automation(
        name=raw["name"],
        on=(on_raw,) if isinstance(on_raw, str) else tuple(on_raw or ()),
        match=found,
        when=when,
        condition=compiled,
        actions=tuple(actions),
        enabled=bool(raw.get("enabled", True)),
        description=str(raw.get("description", "")),
        line=place.line if place else 0,
        cooldown=cooldown,
    )


def _cooldown(
    check: Checker, path: DocPath, spec: object, types: list[EventType] | None
) -> Cooldown | None:
    """The automation's `cooldown:`, its key naming only attributes of `types`."""
    if not isinstance(spec, dict) or not check.clean((*path, "cooldown")):
        return None
    seconds = check.seconds((*path, "cooldown", "for"), spec["for"], 60.0)
    key = check.template((*path, "cooldown", "key"), str(spec.get("key", "")))
    if key is None:
        return None
    check_fields(check, (*path, "cooldown", "key"), key, types)
    return Cooldown(seconds, key)


def _event_types_of(
    check: Checker, path: DocPath, on: str | list[str], resolver: EventTypeResolver
) -> list[EventType] | None:
    """The types whose attributes templates must find; None when any attribute may come."""
    types: list[EventType] = []
    unrestricted = False
    for k, name in enumerate([on] if isinstance(on, str) else on):
        if is_glob(name):
            unrestricted = True
            continue
        known = resolver.known(name)
        if known is not None:
            types.append(known)
            continue
        near = difflib.get_close_matches(name, list(BUILTIN_TYPES), n=1, cutoff=0.85)
        if near:
            check.add(
                (*path, "on") if isinstance(on, str) else (*path, "on", k),
                f"unknown event type '{name}'; did you mean '{near[0]}'? "
                "(declare it under event_types: if it is a custom type)",
            )
        unrestricted = True
    return None if unrestricted else types
