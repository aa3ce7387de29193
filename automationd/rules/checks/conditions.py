"""`when:` conditions: JMESPath syntax, its function names, and the attributes a condition
reads, checked at load, then compiled once."""

from __future__ import annotations

import jmespath
import jmespath.exceptions
import jmespath.functions
import jmespath.parser

from automationd.events import EventType
from automationd.jmescompile import Compiled, compile_expression, event_attributes
from automationd.rules.checks.attributes import check_attribute
from automationd.rules.checks.core import Checker, DocPath, suggest

JMESPATH_FUNCTIONS = frozenset(jmespath.functions.Functions().FUNCTION_TABLE)


def condition(
    check: Checker, path: DocPath, when: str, types: list[EventType] | None
) -> Compiled | None:
    """`when` compiled; None when it is not JMESPath. An unknown function or attribute is
    a problem, and the condition is still compiled (the problem stops the load)."""
    try:
        parsed = jmespath.compile(when)
    except jmespath.exceptions.JMESPathError as exc:
        check.add(path, f"invalid JMESPath condition: {_jmespath_message(exc)}")
        return None
    for name in sorted(_unknown_functions(parsed.parsed)):
        hint = suggest(name, JMESPATH_FUNCTIONS)
        check.add(path, f"unknown JMESPath function '{name}'{hint}")
    _check_attributes(check, path, parsed, types)
    return compile_expression(parsed)


def _check_attributes(
    check: Checker,
    path: DocPath,
    parsed: jmespath.parser.ParsedResult,
    types: list[EventType] | None,
) -> None:
    """A condition reading an attribute its event types never carry reads null on every
    event, so it silently never (or always) fires: an error at load, like a template
    naming it, with the same hint. Keys inside the attribute are not checked."""
    for attribute in event_attributes(parsed):
        if "." not in attribute:  # a quoted "a.b" is one key; `check_attribute` splits
            check_attribute(check, path, attribute, types)


def _unknown_functions(node: object) -> set[str]:
    """Function names in a parsed JMESPath expression that JMESPath does not have."""
    unknown: set[str] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if not isinstance(current, dict):
            continue
        if (
            current.get("type") == "function_expression"
            and current.get("value") not in JMESPATH_FUNCTIONS
        ):
            unknown.add(str(current.get("value")))
        stack.extend(current.get("children", []))
    return unknown


def _jmespath_message(exc: jmespath.exceptions.JMESPathError) -> str:
    """What is wrong with a JMESPath expression, and at which character."""
    position = getattr(exc, "lex_position", None)
    if isinstance(exc, jmespath.exceptions.IncompleteExpressionError):
        what = "the expression ends too early"
    elif isinstance(exc, jmespath.exceptions.LexerError):
        what = str(getattr(exc, "message", "cannot read the expression"))
    elif isinstance(exc, jmespath.exceptions.ParseError):
        token = getattr(exc, "token_value", None)
        what = f"unexpected {token!r}" if token not in (None, "") else "cannot parse it"
    else:
        what = str(exc).splitlines()[0]
    if isinstance(position, int):
        what += f" (at character {position + 1})"
    return what
