"""Request bodies: strict JSON, batches and CloudEvents, turned into raw events.

`parse_json` turns every malformed body into an `EventError` naming the field instead of an
exception deep inside; a CloudEvent (structured or binary) becomes a daemon event, which is
then normalised like any other (events.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from automationd.events import EventError, kind_of

MAX_DEPTH = 32


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
        raise EventError(f"a CloudEvent must be a JSON object, got {kind_of(cloudevent)}")
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
