"""Templates over events: `{name}` and `{a.b}` fields, `{{`/`}}` for literal braces.

Operators write templates in `rules.yaml`, so they are user text. `str.format` on user text
reaches Python objects (`{0.__class__.__mro__}`), so templates are parsed here into literal
and field parts, and fields are looked up in the event's dicts only: a template can never
reach anything but the event's JSON values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import quote

_NAME = r"[A-Za-z_][A-Za-z0-9_-]*"
_FIELD_RE = re.compile(rf"{_NAME}(?:\.{_NAME})*")


class UnsafeUrl(ValueError):
    """A URL whose rendered values would change its path (a `.` or `..` segment)."""


class TemplateError(ValueError):
    """A template that cannot be parsed; `offset` is the 0-based position in its text."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


@dataclass(frozen=True, slots=True)
class Field:
    """One `{a.b}` field: the dotted path into the event."""

    path: tuple[str, ...]

    @property
    def name(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: literal text and fields, rendered against an event."""

    source: str
    parts: tuple[str | Field, ...]

    @classmethod
    def parse(cls, text: str) -> Template:
        """Parse `text`; raises TemplateError naming the first problem and its offset."""
        parts: list[str | Field] = []
        literal: list[str] = []
        i, n = 0, len(text)
        while i < n:
            ch = text[i]
            if ch == "{":
                if text.startswith("{{", i):
                    literal.append("{")
                    i += 2
                    continue
                end = text.find("}", i + 1)
                if end < 0:
                    raise TemplateError("'{' is never closed (write '{{' for a literal brace)", i)
                inner = text[i + 1 : end]
                _check_field(inner, i)
                if literal:
                    parts.append("".join(literal))
                    literal = []
                parts.append(Field(tuple(inner.split("."))))
                i = end + 1
            elif ch == "}":
                if text.startswith("}}", i):
                    literal.append("}")
                    i += 2
                    continue
                raise TemplateError("single '}' (write '}}' for a literal brace)", i)
            else:
                literal.append(ch)
                i += 1
        if literal:
            parts.append("".join(literal))
        return cls(text, tuple(parts))

    def fields(self) -> tuple[Field, ...]:
        """The fields this template reads, in order."""
        return tuple(p for p in self.parts if isinstance(p, Field))

    def render(self, event: Mapping[str, object]) -> str:
        """The text of this template for `event`; missing fields render as empty text."""
        return "".join(
            p if isinstance(p, str) else to_text(lookup(event, p.path)) for p in self.parts
        )

    def render_url(self, event: Mapping[str, object]) -> str:
        """The URL this template names for `event`: the literal text as written, each field's
        text percent-encoded with nothing kept (`/`, `?`, `#`, `&`, `=` too), so a value is
        data in the URL and never its structure.

        Clients and servers resolve `.` and `..` path segments, even written as `%2E`, and
        some servers and proxies decode `%2F` before they do, so a value in the path that
        would make one, or that holds one between its own slashes (`a/../b`), raises UnsafeUrl
        instead of pointing somewhere else."""
        text = ""
        spans: list[tuple[int, int, Field, str]] = []
        for part in self.parts:
            if isinstance(part, str):
                text += part
                continue
            raw = to_text(lookup(event, part.path))
            value = quote(raw, safe="")
            spans.append((len(text), len(text) + len(value), part, raw))
            text += value
        if spans:
            _check_dot_segments(text, spans)
        return text

    def fixed_origin(self) -> bool:
        """Whether the scheme and host:port of this URL template are literal text: fields
        may fill the path, query and fragment, never choose where a request goes."""
        if not self.fields():
            return True
        first = self.parts[0] if isinstance(self.parts[0], str) else ""
        _, sep, rest = first.partition("://")
        return bool(sep) and any(c in rest for c in "/?#")

    def render_value(self, event: Mapping[str, object]) -> object:
        """Like render(), but a template that is exactly one field keeps the field's JSON type."""
        if len(self.parts) == 1 and isinstance(self.parts[0], Field):
            return lookup(event, self.parts[0].path)
        return self.render(event)


def _check_dot_segments(text: str, spans: list[tuple[int, int, Field, str]]) -> None:
    """Raise UnsafeUrl when a field's value is part of a `.` or `..` segment of the path, or
    is placed in the path and holds such a segment between its own slashes."""
    scheme = text.find("://")
    start = 0 if scheme < 0 else text.find("/", scheme + 3)
    ends = [i for i in (text.find("?"), text.find("#")) if i >= 0]
    end = min(ends, default=len(text))
    if start < 0 or start >= end:
        return
    for value_start, _, part, raw in spans:
        inner = re.split(r"[/\\]", raw)  # one part: the segment check below is enough
        if start <= value_start < end and len(inner) > 1 and {".", ".."} & set(inner):
            raise UnsafeUrl(
                f"the value of {{{part.name}}} holds a '.' or '..' path segment, which servers "
                "that decode %2F resolve to another path ('.' or '..' segments are not sent)"
            )
    segment_start = start
    for segment in text[start:end].split("/"):
        segment_end = segment_start + len(segment)
        if segment in (".", ".."):
            for value_start, value_end, part, _ in spans:
                if value_start <= segment_end and value_end >= segment_start:
                    raise UnsafeUrl(
                        f"the value of {{{part.name}}} would make the path segment "
                        f"'{segment}', which clients and servers resolve to another path "
                        "('.' or '..' segments are not sent)"
                    )
        segment_start = segment_end + 1


def _check_field(inner: str, offset: int) -> None:
    if _FIELD_RE.fullmatch(inner):
        return
    if not inner:
        raise TemplateError("empty field '{}' (write '{{}}' for literal braces)", offset)
    if "{" in inner:
        raise TemplateError("'{' inside a field (write '{{' for a literal brace)", offset)
    if any(c in inner for c in "!:"):
        raise TemplateError(
            f"field '{{{inner}}}': conversions and format specs are not supported", offset
        )
    if "[" in inner or "]" in inner:
        raise TemplateError(f"field '{{{inner}}}': indexing is not supported", offset)
    if inner[0].isdigit():
        raise TemplateError(
            f"field '{{{inner}}}': positional fields are not supported, name an attribute",
            offset,
        )
    raise TemplateError(
        f"field '{{{inner}}}' is not a plain name or dotted path (letters, digits, '_', '-')",
        offset,
    )


def lookup(event: Mapping[str, object], path: tuple[str, ...]) -> object:
    """The value at a dotted path through nested objects, or None when any step is missing."""
    value: object = event
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def to_text(value: object) -> str:
    """How a JSON value reads inside text: strings as they are, lists joined with ', '."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ", ".join(to_text(v) for v in value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# --- JSON structures whose keys and string values are templates (webhook payloads, headers)


@dataclass(frozen=True, slots=True)
class ObjectNode:
    """A JSON object whose keys and values are templated."""

    items: tuple[tuple[Template, JsonNode], ...]


@dataclass(frozen=True, slots=True)
class ArrayNode:
    """A JSON array whose items are templated."""

    items: tuple[JsonNode, ...]


JsonNode = Template | ObjectNode | ArrayNode | int | float | bool | None


class JsonTemplateError(ValueError):
    """A template inside a JSON structure failed; `path` says where (keys and indexes)."""

    def __init__(self, path: tuple[str | int, ...], error: TemplateError) -> None:
        super().__init__(error.message)
        self.path = path
        self.error = error


def compile_json(
    value: object,
    path: tuple[str | int, ...] = (),
    errors: list[JsonTemplateError] | None = None,
) -> JsonNode:
    """Compile a YAML/JSON value: every string (key or value) becomes a Template.

    A bad template raises JsonTemplateError, or, when `errors` is given, is appended to it
    (and kept as literal text) so that every bad template is found in one pass."""

    def parse(text: str, where: tuple[str | int, ...]) -> Template:
        try:
            return Template.parse(text)
        except TemplateError as exc:
            if errors is None:
                raise JsonTemplateError(where, exc) from None
            errors.append(JsonTemplateError(where, exc))
            return Template(text, (text,))

    if isinstance(value, str):
        return parse(value, path)
    if isinstance(value, Mapping):
        return ObjectNode(
            tuple(
                (parse(str(key), (*path, str(key))), compile_json(item, (*path, str(key)), errors))
                for key, item in value.items()
            )
        )
    if isinstance(value, list):
        return ArrayNode(
            tuple(compile_json(item, (*path, i), errors) for i, item in enumerate(value))
        )
    if value is None or isinstance(value, bool | int | float):
        return value
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def render_json(node: JsonNode, event: Mapping[str, object]) -> object:
    """The JSON value of a compiled structure for `event`."""
    if isinstance(node, Template):
        return node.render_value(event)
    if isinstance(node, ObjectNode):
        return {key.render(event): render_json(value, event) for key, value in node.items}
    if isinstance(node, ArrayNode):
        return [render_json(item, event) for item in node.items]
    return node


def json_templates(
    node: JsonNode, path: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], Template]]:
    """Every template in a compiled structure with its path, for load-time field checks."""
    if isinstance(node, Template):
        yield path, node
    elif isinstance(node, ObjectNode):
        for key, value in node.items:
            yield (*path, key.source), key
            yield from json_templates(value, (*path, key.source))
    elif isinstance(node, ArrayNode):
        for i, item in enumerate(node.items):
            yield from json_templates(item, (*path, i))
