"""Events: the built-in types of the contract, strict JSON intake, and normalisation.

Every event the daemon handles, received or emitted, passes through `normalise`, which fills
`id`, `timestamp`, `event_name`, `message` and the base attributes, and checks the types of
the attributes the contract defines. Bodies are parsed by `parse_json`, which turns every
malformed input into an `EventError` naming the field instead of an exception deep inside.
"""

from __future__ import annotations

import functools
import json
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from automationd.templating import Template, lookup

MAX_DEPTH = 32
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


class _Rejected(Exception):
    def __init__(self, message: str, field: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise _Rejected(f"duplicate key '{_printable(key)}' in a JSON object", _printable(key))
        result[key] = value
    return result


def _no_constant(name: str) -> object:
    raise _Rejected(f"{name} is not valid JSON (numbers must be finite)", None)


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _Rejected(f"number {text[:40]} is out of range", None)
    return value


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _printable(text: str) -> str:
    return _SURROGATE.sub("\ufffd", text)


def parse_json(body: bytes) -> object:
    """Strict JSON: UTF-8, no NaN/Infinity, no duplicate keys, no lone surrogates, bounded depth."""
    if not body.strip():
        raise EventError("the body is empty: send a JSON event object or an array of them")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EventError(f"the body is not valid UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(
            text,
            object_pairs_hook=_no_duplicate_keys,
            parse_constant=_no_constant,
            parse_float=_finite_float,
        )
    except _Rejected as exc:
        raise EventError(exc.message, exc.field) from None
    except json.JSONDecodeError as exc:
        raise EventError(
            f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise EventError(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise EventError(f"malformed JSON: {exc}") from None
    if _SURROGATE_ESCAPE.search(body) or (
        body.count(b"[") + body.count(b"{") > MAX_DEPTH and _nests_deeper(body, MAX_DEPTH)
    ):
        _check_tree(value)  # finds the offending value and names its path
    return value


_STRUCTURE = bytes(range(256)).translate(None, b'[]{}"\\')
"""Every byte but brackets, quotes and backslashes: what `_nests_deeper` drops first."""
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_INNERMOST = re.compile(rb"[\[{][\]}]")


def _nests_deeper(body: bytes, limit: int) -> bool:
    """Whether the brackets of a JSON text that parsed nest deeper than `limit` (brackets
    inside strings do not count): the depth check of a batch without walking every value.
    Without strings and scalars only brackets are left; each pass removes the innermost
    pairs, one level of every container."""
    brackets = _STRING.sub(b"", body.translate(None, _STRUCTURE))
    for _ in range(limit):
        if not brackets:
            return False
        brackets = _INNERMOST.sub(b"", brackets)
    return bool(brackets)


def _check_tree(root: object) -> None:
    """Depth and lone-surrogate check, iteratively so hostile input cannot exhaust the stack."""
    stack: list[tuple[object, str, int]] = [(root, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise EventError(f"JSON nested deeper than {MAX_DEPTH} levels", path or None)
        if isinstance(value, str):
            if _SURROGATE.search(value):
                raise EventError("a string contains a lone UTF-16 surrogate", path or None)
        elif isinstance(value, dict):
            for key, item in value.items():
                where = f"{path}.{_printable(key)}" if path else _printable(key)
                if _SURROGATE.search(key):
                    raise EventError("a key contains a lone UTF-16 surrogate", where)
                stack.append((item, where, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))


def split_batch(value: object) -> tuple[list[object], bool]:
    """The events of a parsed body, and whether it was a batch (an array)."""
    if isinstance(value, list):
        if not value:
            raise EventError("the batch is empty: send at least one event")
        return value, True
    return [value], False


CLOUDEVENT_ENVELOPE = frozenset(
    {"specversion", "datacontenttype", "dataschema", "data", "data_base64"}
)
"""CloudEvent attributes about the envelope, not the event: not copied into it."""


def from_cloudevent(cloudevent: object) -> dict[str, object]:
    """A CloudEvents 1.0 event (structured form) as a daemon event: `type`, `id`, `source`,
    `subject` and extensions become attributes, `time` the `timestamp`, and object `data` is
    merged in (other data is kept under `data`). `id` is required: without it duplicate
    detection could not work."""
    if not isinstance(cloudevent, dict):
        raise EventError(f"a CloudEvent must be a JSON object, got {_kind_of(cloudevent)}")
    if cloudevent.get("specversion") != "1.0":
        raise EventError("only CloudEvents specversion 1.0 is accepted", "specversion")
    for name in ("id", "type", "source"):
        value = cloudevent.get(name)
        if not isinstance(value, str) or not value:
            raise EventError(f"the CloudEvent attribute '{name}' is required (a string)", name)
    event: dict[str, object] = {}
    data = cloudevent.get("data")
    if isinstance(data, dict):
        event.update(data)
    elif data is not None:
        event["data"] = data
    for name, value in cloudevent.items():
        if name not in CLOUDEVENT_ENVELOPE:
            event[name] = value
    if "time" in event:
        event["timestamp"] = event.pop("time")
    return event


def cloudevent_from_headers(
    headers: Mapping[str, str], body: bytes, content_type: str
) -> dict[str, object]:
    """A binary-mode CloudEvent (attributes in `ce-*` headers, data in the body)."""
    attributes: dict[str, object] = {
        name.lower().removeprefix("ce-"): value
        for name, value in headers.items()
        if name.lower().startswith("ce-")
    }
    if not attributes.get("id"):
        raise EventError(
            "a binary CloudEvent needs a ce-id header (duplicate detection depends on it)", "ce-id"
        )
    if body.strip():
        if content_type == "application/json" or content_type.endswith("+json"):
            attributes["data"] = parse_json(body)
        elif content_type in ("", "application/octet-stream"):
            # undeclared (or a client's default): JSON when it parses, as the SDK sends it
            try:
                attributes["data"] = parse_json(body)
            except EventError:
                attributes["data"] = body.decode("utf-8", "replace")
        else:
            try:
                attributes["data"] = body.decode("utf-8")
            except UnicodeDecodeError:
                raise EventError("the CloudEvent data is not UTF-8 text", "data") from None
    return from_cloudevent(attributes)


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


def _kind_of(value: object) -> str:
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
        raise EventError(f"'{name}' must be an RFC 3339 string, got {_kind_of(value)}", name)
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
        raise EventError(f"an event must be a JSON object, got {_kind_of(raw)}")
    event_type = raw.get("type")
    if event_type is None:
        raise EventError("the event has no 'type'", "type")
    if not isinstance(event_type, str):
        raise EventError(f"'type' must be a string, got {_kind_of(event_type)}", "type")
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
            raise EventError(f"'{name}' must be a string, got {_kind_of(value)}", name)
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
                raise EventError(f"'{name}' must be {kind}, got {_kind_of(value)}", name)
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
