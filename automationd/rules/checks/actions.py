"""One action block of an automation: the settings every kind shares (timeout, retry,
give_up_after), the `*_secret` fields, what its kind declares it needs (a block, an id the
events must carry, a `tls:` option), its own parse, and the attributes its templates name.
The kinds are asked through the registry; none is known here by name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from automationd.actions import Action, ActionSpec, SpecProblems
from automationd.actions.registry import KINDS, Block, Kind
from automationd.events import EventType
from automationd.rules.checks.attributes import check_attribute
from automationd.rules.checks.core import Checker, DocPath
from automationd.rules.checks.delivery import retry
from automationd.rules.checks.secrets import Secrets
from automationd.rules.checks.tls import client_tls
from automationd.rules.model import DEFAULT_TIMEOUT, RetryPolicy

BLOCKS: dict[Block, str] = {
    "smtp": "an smtp: block (host, from)",
    "prefect": "a prefect: block (api_url)",
}
"""A block a kind may need -> how a problem names it (with its required keys)."""


@dataclass(frozen=True, slots=True)
class Surroundings:
    """What an action is checked against beyond its own block."""

    secrets: Secrets
    retry: RetryPolicy
    """The top-level policy, which an action's `retry:` overrides."""
    give_up_after: float
    blocks: frozenset[Block]
    """The blocks the file has."""


def action(
    check: Checker,
    path: DocPath,
    block: dict[str, Any],
    types: list[EventType] | None,
    around: Surroundings,
) -> Action | None:
    """The action of `block` at `path`; None when anything about it is wrong."""
    ((name, options),) = block.items()
    options = options if isinstance(options, dict) else {}
    kind = KINDS.get(name)
    if kind is None:
        return None  # the schema reported it
    where: DocPath = (*path, name)
    for key, value in options.items():
        if key.endswith("_secret"):
            around.secrets.ref((*where, key), value)
    timeout = DEFAULT_TIMEOUT
    if check.clean((*where, "timeout")):
        timeout = check.seconds((*where, "timeout"), options.get("timeout"), timeout)
    policy = retry(check, (*where, "retry"), options.get("retry"), around.retry)
    give_up_after = around.give_up_after
    if check.clean((*where, "give_up_after")):
        give_up_after = check.seconds(
            (*where, "give_up_after"), options.get("give_up_after"), give_up_after
        )
    if not check.clean(where):
        return None
    _check_needs(check, where, name, kind, options, types, around.blocks)
    spec = _spec(check, where, kind, options, types)
    if spec is not None and kind.with_tls is not None and "tls" in options:
        who = _naming(check, path, name, spec)
        spec = kind.with_tls(spec, client_tls(check, (*where, "tls"), options["tls"], who))
    if spec is None or policy is None:
        return None
    return Action(spec, timeout, policy, give_up_after)


def _naming(check: Checker, path: DocPath, name: str, spec: ActionSpec) -> str:
    """How a log line names the action at `path`: its automation, index, kind and host."""
    data: Any = check.doc.data  # schema-checked: the automation and action at `path` exist
    title = data["automations"][path[1]].get("name")  # missing: the schema's problem, reported
    automation = f"automation '{title}'" if isinstance(title, str) else f"automations[{path[1]}]"
    return f"{automation}, action {path[3]} ({name} to {spec.destination()})"


def _spec(
    check: Checker,
    where: DocPath,
    kind: Kind,
    options: dict[str, Any],
    types: list[EventType] | None,
) -> ActionSpec | None:
    """The kind's spec of the block, and every attribute its templates name checked (those
    that parsed, when others did not)."""
    spec: ActionSpec | None = None
    try:
        spec = kind.parse(options)
        templates = list(spec.templates())
    except SpecProblems as exc:
        for sub, message in exc.problems:
            check.add((*where, *sub), message)
        templates = exc.parsed
    for sub, template in templates:
        for template_field in template.fields():
            check_attribute(check, (*where, *sub), template_field.name, types)
    return spec


def _check_needs(
    check: Checker,
    where: DocPath,
    name: str,
    kind: Kind,
    options: dict[str, Any],
    types: list[EventType] | None,
    blocks: frozenset[Block],
) -> None:
    """The block the kind needs is there, and every event type carries the ids it acts on
    (unless the action names its own)."""
    if kind.needs is not None and kind.needs not in blocks:
        check.add(where, f"{name} actions need {BLOCKS[kind.needs]}", at_key=True)
    for acts_on in kind.acts_on:
        if acts_on.attribute in options:
            continue
        for event_type in types or ():
            if not event_type.provides(acts_on.attribute):
                message = (
                    f"{name} acts on the event's {acts_on.attribute}, which {event_type.type} "
                    "events never carry"
                )
                if acts_on.instead:
                    message += f" (or {acts_on.instead})"
                check.add(where, message, at_key=True)
