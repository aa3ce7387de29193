"""JMESPath conditions compiled into plain Python closures, from jmespath's own parse tree.

jmespath evaluates an expression by walking its tree with a visitor: a method lookup and a
dict access per node, every time. `when:` conditions are evaluated for every event their
automation sees, so each one is turned once, at load time, into nested closures that do
only the work of each node. Every node type is compiled the way jmespath's TreeInterpreter
evaluates it (including its quirks: `0` is true, `!0` is false, ordering comparisons of
anything but numbers and strings give null); a node type not compiled here (slices,
multi-selects, `&expressions` as function arguments, ...) is handed, with its subtree, to
jmespath's interpreter, so every expression jmespath accepts works and gives jmespath's
result. `tests/test_jmescompile.py` checks that on generated expressions and documents.
`event_attributes` reads the same tree for the rules file's load-time checks: which attributes
a condition asks of the event itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from numbers import Number
from typing import Any

from jmespath import functions
from jmespath.parser import ParsedResult
from jmespath.visitor import TreeInterpreter

Compiled = Callable[[Any], Any]
Node = Mapping[str, Any]

_INTERPRETER = TreeInterpreter()
_FUNCTIONS = functions.Functions()
_ORDERING: Mapping[str, Callable[[Any, Any], bool]] = {
    "lt": lambda x, y: x < y,
    "gt": lambda x, y: x > y,
    "lte": lambda x, y: x <= y,
    "gte": lambda x, y: x >= y,
}


def compile_expression(parsed: ParsedResult) -> Compiled:
    """A function of a document giving what `parsed.search(document)` gives."""
    return _compile(parsed.parsed)


def is_truthy(value: Any) -> bool:
    """JMESPath truthiness, as its interpreter decides it: `0` is true; null, false, "", []
    and {} are false."""
    return not (value == "" or value == [] or value == {} or value is None or value is False)


def _is_actual_number(value: Any) -> bool:
    return isinstance(value, Number) and not isinstance(value, bool)


def _is_comparable(value: Any) -> bool:
    """What jmespath lets `<`, `<=`, `>`, `>=` compare (and Python may still refuse)."""
    return _is_actual_number(value) or isinstance(value, str)


def _equals(x: Any, y: Any) -> bool:
    """jmespath's `==`: Python's, except that 0 and 1 never equal false and true."""
    if _is_actual_number(x) and x in (0, 1):
        special = isinstance(y, bool)
    elif _is_actual_number(y) and y in (0, 1):
        special = isinstance(x, bool)
    else:
        special = False
    return False if special else bool(x == y)


def _compile(node: Node) -> Compiled:
    build = _BUILDERS.get(node["type"])
    return build(node) if build is not None else _interpreted(node)


def _interpreted(node: Node) -> Compiled:
    visit = _INTERPRETER.visit
    tree: Any = node
    return lambda value: visit(tree, value)


def _field(node: Node) -> Compiled:
    name = node["value"]

    def field(value: Any) -> Any:
        try:
            return value.get(name)
        except AttributeError:
            return None

    return field


def _chain(node: Node) -> Compiled:
    """subexpression, index_expression and pipe: each child applied to the last's result."""
    steps = [_compile(child) for child in node["children"]]
    if len(steps) == 2:
        first, second = steps
        return lambda value: second(first(value))

    def chain(value: Any) -> Any:
        for step in steps:
            value = step(value)
        return value

    return chain


def _literal(node: Node) -> Compiled:
    constant = node["value"]
    return lambda value: constant


def _current(node: Node) -> Compiled:
    return lambda value: value


def _comparator(node: Node) -> Compiled:
    left, right = (_compile(child) for child in node["children"])
    operation = node["value"]
    if operation == "eq":
        return lambda value: _equals(left(value), right(value))
    if operation == "ne":
        return lambda value: not _equals(left(value), right(value))
    order = _ORDERING[operation]

    def compare(value: Any) -> Any:
        a, b = left(value), right(value)
        if not (_is_comparable(a) and _is_comparable(b)):
            return None
        return order(a, b)

    return compare


def _or(node: Node) -> Compiled:
    left, right = (_compile(child) for child in node["children"])

    def either(value: Any) -> Any:
        matched = left(value)
        return matched if is_truthy(matched) else right(value)

    return either


def _and(node: Node) -> Compiled:
    left, right = (_compile(child) for child in node["children"])

    def both(value: Any) -> Any:
        matched = left(value)
        return right(value) if is_truthy(matched) else matched

    return both


def _not(node: Node) -> Compiled:
    (inner,) = (_compile(child) for child in node["children"])

    def negate(value: Any) -> Any:
        result = inner(value)
        if _is_actual_number(result) and result == 0:
            return False
        return not result

    return negate


def _index(node: Node) -> Compiled:
    position = node["value"]

    def index(value: Any) -> Any:
        if not isinstance(value, list):
            return None
        try:
            return value[position]
        except IndexError:
            return None

    return index


def _length(args: list[Any]) -> Any:
    (subject,) = args
    return len(subject) if type(subject) in (str, list, dict) else _SLOW


def _contains(args: list[Any]) -> Any:
    subject, search = args
    if type(subject) is list or (type(subject) is str and type(search) is str):
        return search in subject
    return _SLOW


def _starts_with(args: list[Any]) -> Any:
    subject, prefix = args
    if type(subject) is str and type(prefix) is str:
        return subject.startswith(prefix)
    return _SLOW


def _ends_with(args: list[Any]) -> Any:
    subject, suffix = args
    if type(subject) is str and type(suffix) is str:
        return subject.endswith(suffix)
    return _SLOW


_SLOW = object()
"""What a fast path answers when the arguments are not its plain case."""

_FAST: Mapping[tuple[str, int], Callable[[list[Any]], Any]] = {
    ("length", 1): _length,
    ("contains", 2): _contains,
    ("starts_with", 2): _starts_with,
    ("ends_with", 2): _ends_with,
}
"""The functions conditions use most, for arguments of the types they accept: jmespath
checks every argument against the function's signature on every call, which costs more
than the function itself. Anything else (including every type error) takes jmespath's call."""


def _function(node: Node) -> Compiled:
    if any(child["type"] == "expref" for child in node["children"]):
        return _interpreted(node)  # sort_by, max_by, map, ... take an expression
    name = node["value"]
    arguments = [_compile(child) for child in node["children"]]
    call = _FUNCTIONS.call_function
    fast = _FAST.get((name, len(arguments)))
    if fast is None:
        return lambda value: call(name, [argument(value) for argument in arguments])

    def function(value: Any) -> Any:
        args = [argument(value) for argument in arguments]
        result = fast(args)
        return call(name, args) if result is _SLOW else result

    return function


def _projection(node: Node) -> Compiled:
    base, each = (_compile(child) for child in node["children"])

    def project(value: Any) -> Any:
        items = base(value)
        if not isinstance(items, list):
            return None
        return [result for item in items if (result := each(item)) is not None]

    return project


def _filter_projection(node: Node) -> Compiled:
    base, each, keep = (_compile(child) for child in node["children"])

    def filtered(value: Any) -> Any:
        items = base(value)
        if not isinstance(items, list):
            return None
        return [
            result for item in items if is_truthy(keep(item)) and (result := each(item)) is not None
        ]

    return filtered


def _flatten(node: Node) -> Compiled:
    (base,) = (_compile(child) for child in node["children"])

    def flatten(value: Any) -> Any:
        items = base(value)
        if not isinstance(items, list):
            return None
        merged: list[Any] = []
        for item in items:
            if isinstance(item, list):
                merged.extend(item)
            else:
                merged.append(item)
        return merged

    return flatten


_BUILDERS: Mapping[str, Callable[[Node], Compiled]] = {
    "field": _field,
    "subexpression": _chain,
    "index_expression": _chain,
    "pipe": _chain,
    "literal": _literal,
    "current": _current,
    "identity": _current,
    "comparator": _comparator,
    "or_expression": _or,
    "and_expression": _and,
    "not_expression": _not,
    "index": _index,
    "function_expression": _function,
    "projection": _projection,
    "filter_projection": _filter_projection,
    "flatten": _flatten,
}


_SAME_DOCUMENT = frozenset(
    {
        "comparator",
        "or_expression",
        "and_expression",
        "not_expression",
        "function_expression",
        "multi_select_list",
        "multi_select_dict",
        "key_val_pair",
        "flatten",
    }
)
"""Nodes that evaluate every child against the document they are given."""
_CHAINS = frozenset({"subexpression", "index_expression", "pipe"})
"""Nodes whose first child is given the document and each next one the last one's result."""
_ELEMENTS = frozenset({"projection", "value_projection", "filter_projection"})
"""Nodes whose first child is given the document and the others each element of its result."""


def event_attributes(parsed: ParsedResult) -> tuple[str, ...]:
    """The attributes a condition reads from the event itself, in order of first reading, so
    the rules file can check them against the automation's event types at load.

    Only names looked up in the event document count: `tags` in ``contains(tags, 'p')``,
    `labels` in `labels.team` (inner keys belong to the attribute's value, which no type
    describes), `items` in `items[*].name` and `sort_by(items, &name)` (`name` is read from
    the elements). A node type not listed here is not looked into, so a syntax newer than
    this code can leave an attribute unchecked but never reports a name the event is not
    asked for."""
    found: dict[str, None] = {}
    _read_from_event(parsed.parsed, found)
    return tuple(found)


def _read_from_event(node: Node, found: dict[str, None]) -> None:
    """Record in `found` the fields `node` reads, given the event as its document."""
    kind = node["type"]
    children = [child for child in node.get("children", ()) if isinstance(child, Mapping)]
    if kind == "field":
        found.setdefault(node["value"])
    elif kind in _SAME_DOCUMENT:
        for child in children:
            if child["type"] != "expref":  # an &expression is applied to elements, later
                _read_from_event(child, found)
    elif kind in _CHAINS:
        for child in children:
            _read_from_event(child, found)
            if child["type"] not in ("current", "identity"):
                break  # the next step reads what this one gave, not the event
    elif kind in _ELEMENTS and children:
        _read_from_event(children[0], found)
