"""Event type globs: which names are globs, and which types they select."""

from __future__ import annotations

from automationd.globs import is_glob, selects


def test_a_name_is_a_glob_by_its_special_characters() -> None:
    assert [is_glob(name) for name in ("flow.failed", "flow.*", "flow.?", "flow.[ab]")] == [
        False,
        True,
        True,
        True,
    ]
    assert is_glob("") is False
    assert is_glob("a]b") is False


def test_patterns_select_types_case_sensitively() -> None:
    assert selects(["flow.failed"], "flow.failed") is True
    assert selects(["flow.*"], "flow.run.failed") is True  # `*` crosses dots
    assert selects(["flow.*"], "Flow.failed") is False
    assert selects(["a.?", "b"], "a.x") is True
    assert selects(["a.?", "b"], "a.xy") is False
    assert selects(["[ab].x"], "b.x") is True
    assert selects([], "a") is False
