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
