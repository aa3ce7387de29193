"""YAML into plain data plus the line and column of every node, so errors can point at them.

YAML 1.1, which PyYAML speaks, turns `on`, `no` and `yes` into booleans, `1:30` into 90 and
`2026-01-01` into a date, and silently keeps the last of duplicate keys. A rules file wants
none of that: this loader resolves only `true`/`false` as booleans, plain decimal numbers as
numbers, never timestamps, and reports duplicate keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import yaml
import yaml.reader
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """A 1-based line and column in a file."""

    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a file, where it is, and what."""

    position: Position | None
    message: str

    def render(self, filename: str) -> str:
        """`file:line:column: message`, the form editors and compilers use."""
        if self.position is None:
            return f"{filename}: {self.message}"
        return f"{filename}:{self.position.line}:{self.position.column}: {self.message}"


@dataclass(slots=True)
class Document:
    """Parsed YAML data, with the position of each value and of each mapping key by path."""

    data: object
    values: dict[Path, Position] = field(default_factory=dict)
    keys: dict[Path, Position] = field(default_factory=dict)

    def position(self, path: Path) -> Position | None:
        """Where the value at `path` starts, or the nearest enclosing value that has one."""
        while True:
            if path in self.values:
                return self.values[path]
            if not path:
                return None
            path = path[:-1]

    def key_position(self, path: Path) -> Position | None:
        """Where the key naming the value at `path` is written, else the value's position."""
        return self.keys.get(path) or self.position(path)


class YamlError(Exception):
    """The text is not one well-formed YAML document; `problems` says where and why."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.problems = problems


_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core scalars: no yes/no/on/off, no sexagesimal, no dates. Pure
    Python: its error messages point at the offending place (used to explain a failure)."""


class _FastLoader(yaml.CSafeLoader):
    """The same on libyaml's parser: several times faster (a rules file of 10,000
    automations), used first; its errors can point past the offending place."""


for _loader in (_Loader, _FastLoader):
    _loader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _INT, _FLOAT, _TIMESTAMP)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    _loader.add_implicit_resolver(
        _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
    )
    _loader.add_implicit_resolver(
        _INT, re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789")
    )
    _loader.add_implicit_resolver(
        _FLOAT,
        re.compile(
            r"^(?:[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?[0-9]+[eE][-+]?[0-9]+"
            r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
        ),
        list("-+0123456789."),
    )


def _position(node: Node) -> Position:
    mark = node.start_mark
    return Position(mark.line + 1, mark.column + 1)


def load(text: str) -> Document:
    """Parse one YAML document; raises YamlError with every problem found, each located."""
    try:
        return _load(text, _FastLoader)
    except YamlError:
        return _load(text, _Loader)  # again, for the messages and places this parser gives


def _load(text: str, kind: type[_Loader] | type[_FastLoader]) -> Document:
    try:
        loader = kind(text)
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        before = text[: exc.position]
        at = Position(before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1)
        code = (
            exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "?")
        )
        message = f"invalid YAML: character {chr(code)!r} (U+{code:04X}) is not allowed in YAML"
        raise YamlError([Problem(at, message)]) from None
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = Position(mark.line + 1, mark.column + 1) if mark else None
            what = " ".join(str(s) for s in (exc.context, exc.problem) if s)
            hint = _hint(exc, text)
            message = f"invalid YAML: {what}" + (f" ({hint})" if hint else "")
            raise YamlError([Problem(where, message)]) from None
        except yaml.YAMLError as exc:
            raise YamlError([Problem(None, f"invalid YAML: {exc}")]) from None
        if root is None:
            raise YamlError([Problem(Position(1, 1), "the file is empty (no YAML document)")])
        doc = Document(None)
        problems: list[Problem] = []
        doc.data = _build(loader, root, (), doc, problems)
        if problems:
            raise YamlError(problems)
        return doc
    finally:
        loader.dispose()


_VALUE = re.compile(r"""\s*(?:-\s+)*(?:[^\s:{\['"][^:]*:\s+)?""")
"""The start of a line up to its value: indentation, `- ` items, a `key: `."""


def _at(mark: yaml.Mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def _hint(exc: yaml.MarkedYAMLError, text: str) -> str:
    """The common mistake behind a parser error, in plain words ('' when none fits): the
    parser's own words name a token (`expected <block end>, but found '?'`), not the mistake."""
    context, problem = exc.context or "", exc.problem or ""
    mark, opened = exc.problem_mark, exc.context_mark
    lines = text.splitlines()
    line = lines[mark.line] if mark is not None and mark.line < len(lines) else ""
    column = mark.column if mark is not None else 0
    value = _VALUE.match(line)
    starts = value.end() if value else 0
    template = line[starts : starts + 1] in ("{", "[") and column > starts
    if "'\\t'" in problem or "tab character" in problem:
        return "a tab: YAML indents with spaces only"
    if "cannot start any token" in problem:
        return f"a value starting with {line[column : column + 1]!r} must be put in quotes"
    if "an alias" in context or "undefined alias" in problem:
        return "a value starting with '*' is read as a YAML alias: put it in quotes"
    if "unknown escape character" in problem:
        return "in double quotes a '\\' starts an escape: write '\\\\', or use single quotes"
    if "quoted scalar" in context and "end of stream" in problem and opened is not None:
        return f"the quote at {_at(opened)} is never closed"
    if context.startswith("while parsing a flow") and opened is not None:
        bracket = "[" if "sequence" in context else "{"
        return f"the {bracket!r} at {_at(opened)} is never closed, or a ',' is missing"
    if "could not find expected ':'" in problem and opened is not None:
        key = lines[opened.line][opened.column :] if opened.line < len(lines) else ""
        if re.match(r"-[^\s-]", key):
            return f"line {opened.line + 1} probably misses the space after its '-'"
        return f"line {opened.line + 1} probably misses the ':' after its key"
    found = problem.rpartition("but found ")[2]
    if found in ("']'", "'}'"):
        return f"a {found} that closes nothing"
    if template and ("mapping values" in problem or "expected <block end>" in problem):
        return (
            f"a value starting with {line[starts]!r} is read as a YAML mapping: "
            "put a template in quotes"
        )
    if "mapping values are not allowed" in problem and mark is not None:
        if ":" in line[:starts] and column >= starts:  # a second ': ' on a `key: value` line
            return "a value holding ': ' must be put in quotes"
        above = [
            n
            for n in range(mark.line)
            if lines[n].strip() and not lines[n].lstrip().startswith("#")
        ]
        if above and ":" not in lines[above[-1]] and not lines[above[-1]].lstrip().startswith("-"):
            return f"line {above[-1] + 1} probably misses the ':' after its key"
        return "the line is probably indented more than the one above it"
    if "expected <block end>" not in problem:
        return ""
    if found in ("'?'", "'<block mapping start>'"):
        return "the line is probably indented differently from the ones above it"
    if found in ("'-'", "'<block sequence start>'"):
        return "a '-' item at the wrong level: the items of one list line up, under their key"
    if found == "'<scalar>'" and line[:column].rstrip().endswith(("'", '"')):
        return "text after a closing quote: put the whole value in quotes"
    return ""


def _build(
    loader: _Loader | _FastLoader, node: Node, path: Path, doc: Document, problems: list[Problem]
) -> object:
    doc.values[path] = _position(node)
    if isinstance(node, MappingNode):
        loader.flatten_mapping(node)
        result: dict[str, object] = {}
        first_seen: dict[str, Position] = {}
        for key_node, value_node in node.value:
            where = _position(key_node)
            if not isinstance(key_node, ScalarNode):
                problems.append(Problem(where, "a mapping key must be plain text"))
                continue
            key = str(key_node.value)
            if key in first_seen:
                first = first_seen[key]
                problems.append(
                    Problem(where, f"duplicate key '{key}' (first at line {first.line})")
                )
                continue
            first_seen[key] = where
            doc.keys[(*path, key)] = where
            result[key] = _build(loader, value_node, (*path, key), doc, problems)
        return result
    if isinstance(node, SequenceNode):
        return [
            _build(loader, item, (*path, i), doc, problems) for i, item in enumerate(node.value)
        ]
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        problems.append(Problem(_position(node), f"invalid value: {exc}"))
        return None
