"""Events: the built-in types of the contract, the type resolver, and normalisation.

Every event the daemon handles, received or emitted, passes through `normalise`, which fills
`id`, `timestamp`, `event_name`, `message` and the base attributes, and checks the types of
the attributes the contract defines; a malformed one raises an `EventError` naming the
field. Request bodies are read into raw events by wire.py.
"""

from __future__ import annotations

import functools
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from automationd.templating import Template, lookup

MAX_TYPE_LENGTH = 200
MAX_ID_LENGTH = 200

BASE_ATTRIBUTES = ("id", "type", "event_name", "message", "tenant_id", "tenant_slug", "timestamp")

STR = "a string"
NUMBER = "a number"
INTEGER = "an integer"
LIST = "a list"
ANY = "any JSON value"
TIMESTAMP = "an RFC 3339 timestamp"

_FLOW_RUN_ATTRIBUTES = {
    "flow_id": STR,
    "flow_name": STR,
    "flow_group_id": STR,
    "flow_link": STR,
    "flow_run_id": STR,
    "flow_run_name": STR,
    "state": STR,
    "state_message": STR,
    "flow_run_link": STR,
    "scheduled_start_time": TIMESTAMP,
    "state_type": STR,
    "tags": LIST,
    "deployment_id": STR,
    "deployment_name": STR,
    "work_pool_name": STR,
    "work_queue_name": STR,
}
"""What a flow run state change carries (and a flow SLA failure of the run): the contract's
attributes, plus what Prefect users route on (tags, deployment, work pool and queue)."""


@dataclass(frozen=True, slots=True)
class EventType:
    """What the daemon knows of one event type: its readable name, message and attributes.

    `attributes` maps each known attribute to the JSON kind it must have; None means a custom
    type nobody declared, which accepts any attribute.
    """

    type: str
    event_name: str
    message: Template
    attributes: Mapping[str, str] | None

    def provides(self, attribute: str) -> bool:
        """Whether events of this type can carry `attribute` (for load-time template checks)."""
        return (
            self.attributes is None or attribute in BASE_ATTRIBUTES or attribute in self.attributes
        )


BUILTIN_TYPES: Mapping[str, EventType] = {
    t.type: t
    for t in (
        EventType(
            "flow_run_state_change",
            "Flow run state change",
            Template.parse(
                "Run {flow_run_name} of flow {flow_name} entered state {state} with message "
                "{state_message}. See {flow_run_link} for more details."
            ),
            _FLOW_RUN_ATTRIBUTES,
        ),
        EventType(
            "flow_sla_failure",
            "Flow SLA failure",
            Template.parse(
                "Run {flow_run_name} ({flow_run_id}) of flow {flow_name} failed {kind} SLA "
                "({flow_sla_config_id}) after {duration_seconds} seconds. "
                "See {flow_run_link} for more details."
            ),
            {
                **_FLOW_RUN_ATTRIBUTES,
                "flow_sla_config_id": STR,
                "kind": STR,
                "duration_seconds": NUMBER,
            },
        ),
        EventType(
            "agent_heartbeat",
            "Agent heartbeat",
            Template.parse("Agent {agent_id} of config {agent_config_id} is polling for work."),
            {"agent_id": STR, "agent_config_id": STR},
        ),
        EventType(
            "agent_sla_failure",
            "Agent SLA failure",
            Template.parse(
                "Agents sharing the config {agent_config_id} have failed the minimum healthy "
                "count of {sla_min_healthy}. The following agents are unhealthy: {agent_ids}"
            ),
            {
                "healthy_agent_ids": LIST,
                "unhealthy_agent_ids": LIST,
                "agent_ids": LIST,
                "sla_min_healthy": INTEGER,
                "agent_config_id": STR,
            },
        ),
        EventType(
            "agent_sla_recovered",
            "Agent SLA recovered",
            Template.parse(
                "Agents sharing the config {agent_config_id} are healthy again: {healthy_agent_ids}"
            ),
            {
                "healthy_agent_ids": LIST,
                "unhealthy_agent_ids": LIST,
                "agent_ids": LIST,
                "sla_min_healthy": INTEGER,
                "agent_config_id": STR,
            },
        ),
    )
}
"""The contract's types, plus `agent_sla_recovered`, which the daemon emits too."""


def _phrases(*choices: tuple[str, ...]) -> tuple[tuple[Template, ...], ...]:
    return tuple(tuple(Template.parse(text) for text in choice) for choice in choices)


_OF_RUN = ("Run {flow_run_name} of flow {flow_name}", "Run {flow_run_name}")
_AGENTS = ("Agents sharing the config {agent_config_id}", "Agents sharing a config")
DEFAULT_PHRASES: Mapping[str, tuple[tuple[Template, ...], ...]] = {
    "flow_run_state_change": _phrases(
        (*_OF_RUN, "A run of flow {flow_name}", "A flow run"),
        (" entered state {state}", " changed state"),
        (" with message {state_message}", ""),
        (".",),
        (" See {flow_run_link} for more details.", ""),
    ),
    "flow_sla_failure": _phrases(
        (
            "Run {flow_run_name} ({flow_run_id}) of flow {flow_name}",
            "Run {flow_run_name} ({flow_run_id})",
            *_OF_RUN,
            "Run {flow_run_id} of flow {flow_name}",
            "Run {flow_run_id}",
            "A run of flow {flow_name}",
            "A flow run",
        ),
        (
            " failed {kind} SLA ({flow_sla_config_id})",
            " failed {kind} SLA",
            " failed SLA {flow_sla_config_id}",
            " failed an SLA",
        ),
        (" after {duration_seconds} seconds", ""),
        (".",),
        (" See {flow_run_link} for more details.", ""),
    ),
    "agent_heartbeat": _phrases(
        ("Agent {agent_id} of config {agent_config_id}", "Agent {agent_id}", "An agent"),
        (" is polling for work.",),
    ),
    "agent_sla_failure": _phrases(
        _AGENTS,
        (
            " have failed the minimum healthy count of {sla_min_healthy}.",
            " have failed their minimum healthy count.",
        ),
        (" The following agents are unhealthy: {agent_ids}", ""),
    ),
    "agent_sla_recovered": _phrases(
        _AGENTS, (" are healthy again: {healthy_agent_ids}", " are healthy again.")
    ),
}
"""How a built-in type's default message reads when the event lacks some of its fields:
phrase after phrase, the first choice whose fields all have a value (not null, "" or []).
The first choices together are the type's message, so a complete event reads exactly so;
a missing name becomes "A flow run", and a clause with nothing to say is left out, rather
than "Run  of flow  ... See  for more details." (Templates in rules keep empty text.)"""


def _default_message(spec: EventType, event: Mapping[str, object]) -> str:
    """The event's message: a built-in type's readable sentence, or the type's template."""
    phrases = DEFAULT_PHRASES.get(spec.type)
    builtin = BUILTIN_TYPES.get(spec.type)
    if phrases is None or builtin is None or spec.message != builtin.message:
        return spec.message.render(event)
    return "".join(
        next(
            (
                choice.render(event)
                for choice in choices
                if all(lookup(event, f.path) not in (None, "", []) for f in choice.fields())
            ),
            "",
        )
        for choices in phrases
    )


def readable_name(event_type: str) -> str:
    """`deploy_finished` -> `Deploy finished`: the event_name of a custom type."""
    words = re.sub(r"[_\-.:/]+", " ", event_type).strip()
    return words[:1].upper() + words[1:] if words else event_type


@functools.lru_cache(maxsize=4096)
def custom_type(event_type: str) -> EventType:
    """An undeclared custom type: any attribute, `{type}` as its message (made once per name
    while it is in use: the names come from senders, so the cache is bounded)."""
    return EventType(event_type, readable_name(event_type), Template.parse("{type}"), None)


class EventError(ValueError):
    """A received body or event that cannot be accepted, naming the offending field."""

    def __init__(self, message: str, field: str | None = None, index: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.index = index

    def in_batch(self, index: int, item: str = "event") -> EventError:
        """This error as item `index` of a batch: "event 2 of the batch: ..." with the field
        at "[2].type", so the sender knows which of its events to fix."""
        where = f"[{index}]" + (f".{self.field}" if self.field else "")
        return EventError(f"{item} {index} of the batch: {self.message}", where, index)


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, as every timestamp the daemon writes."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@functools.lru_cache(maxsize=4)
def _formatted(moment: datetime) -> str:
    """format_timestamp for the time of a request, once for all the events of a batch."""
    return format_timestamp(moment)


def parse_timestamp(text: str) -> datetime:
    """An RFC 3339 timestamp with its offset; raises ValueError otherwise."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError("it has no time zone offset (add Z or +00:00)")
    return moment


_KIND_CHECKS: Mapping[str, tuple[type, ...]] = {
    STR: (str,),
    NUMBER: (int, float),
    INTEGER: (int,),
    LIST: (list,),
}


def kind_of(value: object) -> str:
    """How an error message names the JSON kind of `value` ("a string", "an object")."""
    if isinstance(value, bool):
        return "a boolean"
    return {str: STR, int: INTEGER, float: NUMBER, list: LIST, dict: "an object"}.get(
        type(value), type(value).__name__
    )


def _has_kind(value: object, kind: str) -> bool:
    return not isinstance(value, bool) and isinstance(value, _KIND_CHECKS[kind])


_ids = random.Random()  # seeded from os.urandom; ids must be unique, not unpredictable


def new_id() -> str:
    """A time-ordered (version 7, RFC 9562) UUID: 48 bits of Unix milliseconds, then 74
    random bits (without the system call uuid.uuid4() makes per id). Ids made one after
    another sort together, so the state store's index takes them at its end, not on a random
    page each."""
    random_bits = _ids.getrandbits(74)
    value = (
        (time.time_ns() // 1_000_000) << 80
        | 0x7 << 76
        | (random_bits >> 62) << 64
        | 0b10 << 62
        | random_bits & ((1 << 62) - 1)
    )
    text = f"{value:032x}"  # str(uuid.UUID(int=value)) without building the object
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _check_timestamp(name: str, value: object) -> datetime:
    if not isinstance(value, str):
        raise EventError(f"'{name}' must be an RFC 3339 string, got {kind_of(value)}", name)
    try:
        return parse_timestamp(value)
    except ValueError as exc:
        raise EventError(f"'{name}' is not RFC 3339: {exc}", name) from None


def normalise(
    raw: object,
    resolve: EventTypeResolver,
    now: datetime,
) -> dict[str, object]:
    """The event the daemon works with: defaults filled, contract types checked, message set.

    `resolve` maps a type name to its EventType (built-in, declared or undeclared custom).
    Raises EventError naming the field when the event breaks the contract.
    """
    if not isinstance(raw, dict):
        raise EventError(f"an event must be a JSON object, got {kind_of(raw)}")
    event_type = raw.get("type")
    if event_type is None:
        raise EventError("the event has no 'type'", "type")
    if not isinstance(event_type, str):
        raise EventError(f"'type' must be a string, got {kind_of(event_type)}", "type")
    if not event_type.strip() or len(event_type) > MAX_TYPE_LENGTH:
        raise EventError(f"'type' must be 1 to {MAX_TYPE_LENGTH} characters", "type")
    spec = resolve(event_type)
    event = dict(raw)
    event_id = event.get("id")
    if event_id is None:
        event["id"] = new_id()
    elif not isinstance(event_id, str) or not event_id.strip() or len(event_id) > MAX_ID_LENGTH:
        raise EventError(
            f"'id' must be a non-empty string of at most {MAX_ID_LENGTH} characters", "id"
        )
    stamp = event.get("timestamp")
    if stamp is None:
        event["timestamp"] = _formatted(now)
    else:
        event["timestamp"] = format_timestamp(_check_timestamp("timestamp", stamp))
    for name in ("event_name", "message", "tenant_id", "tenant_slug"):
        value = event.get(name)
        if value is not None and not isinstance(value, str):
            raise EventError(f"'{name}' must be a string, got {kind_of(value)}", name)
    event.setdefault("tenant_id", None)
    event.setdefault("tenant_slug", None)
    if spec.attributes is not None:
        for name, kind in spec.attributes.items():
            value = event.get(name)
            if value is None:
                event[name] = None
            elif kind == TIMESTAMP:
                _check_timestamp(name, value)
            elif kind != ANY and not _has_kind(value, kind):
                raise EventError(f"'{name}' must be {kind}, got {kind_of(value)}", name)
    if event.get("event_name") is None:
        event["event_name"] = spec.event_name
    if event.get("message") is None:
        event["message"] = _default_message(spec, event)
    return event


class EventTypeResolver:
    """Type name -> EventType: built-ins, then the rules file's `event_types:`, else custom."""

    def __init__(self, declared: Mapping[str, EventType] | None = None) -> None:
        self._types = {**BUILTIN_TYPES, **(declared or {})}

    def __call__(self, event_type: str) -> EventType:
        found = self._types.get(event_type)
        return found if found is not None else custom_type(event_type)

    def names(self) -> list[str]:
        """Every built-in and declared type name."""
        return list(self._types)

    def known(self, event_type: str) -> EventType | None:
        """The built-in or declared type of that name, if there is one."""
        return self._types.get(event_type)
