"""YAML with positions and YAML 1.2 scalars."""

from __future__ import annotations

from pathlib import Path

import pytest

from automationd import yamldoc


def test_yaml_1_1_booleans_dates_and_sexagesimals_stay_text() -> None:
    doc = yamldoc.load(
        "on: [a]\nno: yes\nday: 2026-01-01\nt: 1:30\nz: 007\nb: true\nf: 1.5\ni: -4\n"
    )
    assert doc.data == {
        "on": ["a"],
        "no": "yes",
        "day": "2026-01-01",
        "t": "1:30",
        "z": "007",
        "b": True,
        "f": 1.5,
        "i": -4,
    }


def test_positions_of_values_and_keys() -> None:
    doc = yamldoc.load("a:\n  b: [x, y]\n  c: 1\n")
    assert doc.values[("a", "b", 1)] == yamldoc.Position(2, 10)
    assert doc.keys[("a", "c")] == yamldoc.Position(3, 3)
    assert doc.position(("a", "b", 1, "deeper")) == yamldoc.Position(2, 10)


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        ("", 1, 1, "empty"),
        ("# only a comment\n", 1, 1, "empty"),
        ("a: [1\n", 2, 1, "invalid YAML"),
        ("a: 1\nb: 2\na: 3\n", 3, 1, "duplicate key 'a' (first at line 1)"),
        ("a: 1\n---\nb: 2\n", 2, 1, "single document"),
        ("a: *nope\n", 1, 4, "undefined alias"),
        ("a:\n  b: 1\n c: 2\n", 3, 2, "invalid YAML"),
        ("a: 1\nb: x\x1fy\n", 2, 5, "(U+001F) is not allowed"),
    ],
)
def test_problems_are_located(text: str, line: int, column: int, words: str) -> None:
    with pytest.raises(yamldoc.YamlError) as caught:
        yamldoc.load(text)
    (problem,) = caught.value.problems
    assert problem.position == yamldoc.Position(line, column)
    assert words in problem.message


TEXTS = [
    (Path(__file__).parent.parent / "rules.example.yaml").read_text(),
    "a: yes\nb: [1, 0x1F, 1e3, .inf, ~, 2026-11-27, 1:30]\nc:\n  d: 'é ✓ x'\n  e: |\n    two\n    lines\n",
    "# comment\nlist:\n  - {name: ünï, on: [x]}\n  - &anchor {k: v}\n  - *anchor\nmerged: {<<: {m: 1}, n: 2}\n",
]


@pytest.mark.parametrize("text", TEXTS)
def test_libyaml_gives_the_same_values_and_places_as_the_python_parser(text: str) -> None:
    fast = yamldoc._load(text, yamldoc._FastLoader)
    slow = yamldoc._load(text, yamldoc._Loader)
    assert fast.data == slow.data
    assert fast.values == slow.values
    assert fast.keys == slow.keys


@pytest.mark.parametrize(
    ("text", "line", "column", "message"),
    [
        (  # a key at the level of the list's '-' items
            "automations:\n  - name: a\n    on: [x]\n  actions: []\n",
            4,
            3,
            "while parsing a block collection expected <block end>, but found '?' "
            "(the line is probably indented differently from the ones above it)",
        ),
        (
            "a:\n  b: 1\n c: 2\n",
            3,
            2,
            "while parsing a block mapping expected <block end>, but found "
            "'<block mapping start>' (the line is probably indented differently from the ones "
            "above it)",
        ),
        (
            "a: 1\n  b: 2\n",
            2,
            4,
            "mapping values are not allowed here (the line is probably indented more than the "
            "one above it)",
        ),
        (
            "a:\n\tb: 1\n",
            2,
            1,
            "while scanning for the next token found character '\\t' that cannot start any "
            "token (a tab: YAML indents with spaces only)",
        ),
        (
            'a: "abc\nb: 1\n',
            3,
            1,
            "while scanning a quoted scalar found unexpected end of stream (the quote at "
            "line 1, column 4 is never closed)",
        ),
        (
            "a: [1, 2\nb: 1\n",
            2,
            2,
            "while parsing a flow sequence expected ',' or ']', but got ':' (the '[' at "
            "line 1, column 4 is never closed, or a ',' is missing)",
        ),
        (
            "a: {x: 1\n",
            2,
            1,
            "while parsing a flow mapping expected ',' or '}', but got '<stream end>' (the '{' "
            "at line 1, column 4 is never closed, or a ',' is missing)",
        ),
        (
            "name: a\non [x]\nactions: []\n",
            3,
            1,
            "while scanning a simple key could not find expected ':' (line 2 probably misses "
            "the ':' after its key)",
        ),
        (
            "a:\n  b 1\n  c: 2\n",
            3,
            4,
            "mapping values are not allowed here (line 2 probably misses the ':' after its key)",
        ),
        (
            "a:\n  - x\n  -y\n",
            4,
            1,
            "while scanning a simple key could not find expected ':' (line 3 probably misses "
            "the space after its '-')",
        ),
        (
            "a: [1, 2]]\n",
            1,
            10,
            "while parsing a block mapping expected <block end>, but found ']' (a ']' that "
            "closes nothing)",
        ),
        (
            "a: x: y\n",
            1,
            5,
            "mapping values are not allowed here (a value holding ': ' must be put in quotes)",
        ),
        (
            "a:\n  - x\n - y\n",
            3,
            2,
            "while parsing a block mapping expected <block end>, but found "
            "'<block sequence start>' (a '-' item at the wrong level: the items of one list "
            "line up, under their key)",
        ),
        (
            "a:\n  b: 1\n  - c\n",
            3,
            3,
            "while parsing a block mapping expected <block end>, but found '-' (a '-' item at "
            "the wrong level: the items of one list line up, under their key)",
        ),
        (
            "message: {flow_name} failed\n",
            1,
            22,
            "while parsing a block mapping expected <block end>, but found '<scalar>' (a value "
            "starting with '{' is read as a YAML mapping: put a template in quotes)",
        ),
        (
            'message: "{flow_name}" failed\n',
            1,
            24,
            "while parsing a block mapping expected <block end>, but found '<scalar>' (text "
            "after a closing quote: put the whole value in quotes)",
        ),
        (
            "on: *\n",
            1,
            6,
            "while scanning an alias expected alphabetic or numeric character, but found "
            "'\\n' (a value starting with '*' is read as a YAML alias: put it in quotes)",
        ),
        (
            "on: [flow_run_state_change, *_failure]\n",
            1,
            29,
            "found undefined alias '_failure' (a value starting with '*' is read as a YAML "
            "alias: put it in quotes)",
        ),
        (
            'url: "C:\\path"\n',
            1,
            10,
            "while scanning a double-quoted scalar found unknown escape character 'p' (in "
            "double quotes a '\\' starts an escape: write '\\\\', or use single quotes)",
        ),
        (
            "when: `x`\n",
            1,
            7,
            "while scanning for the next token found character '`' that cannot start any "
            "token (a value starting with '`' must be put in quotes)",
        ),
    ],
)
def test_syntax_errors_keep_the_parsers_words_and_add_a_plain_hint(
    text: str, line: int, column: int, message: str
) -> None:
    with pytest.raises(yamldoc.YamlError) as caught:
        yamldoc.load(text)
    (problem,) = caught.value.problems
    assert (problem.position, problem.message) == (
        yamldoc.Position(line, column),
        f"invalid YAML: {message}",
    )


def test_an_error_without_a_common_cause_has_no_hint() -> None:
    with pytest.raises(yamldoc.YamlError) as caught:
        yamldoc.load("a: &\n")
    assert caught.value.problems[0].message == (
        "invalid YAML: while scanning an anchor expected alphabetic or numeric character, "
        "but found '\\n'"
    )
