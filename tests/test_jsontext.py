"""The hot path's JSON text: the same values as the standard library, whatever it is given."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from automationd.jsontext import dumps

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),  # lone surrogates included: orjson refuses them, json does not
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)


def has_float(value: object) -> bool:
    if isinstance(value, list):
        return any(has_float(item) for item in value)
    if isinstance(value, dict):
        return any(has_float(item) for item in value.values())
    return isinstance(value, float)


@given(JSON)
def test_the_same_value_as_json_dumps(value: object) -> None:
    text = dumps(value)
    assert json.loads(text) == value
    if not has_float(value):  # floats: the same number, maybe spelt otherwise (1e16, 1e+16)
        assert text == json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def test_compact_and_unescaped_like_json_with_those_options() -> None:
    value = {"a": [1, 2.5, None, True], "é": "ünïcode ✓", "n": 2**70, "s": "\ud800"}
    assert dumps(value) == json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    assert dumps({"b": 1, "a": 2}) == '{"b":1,"a":2}'  # key order kept


def test_what_json_would_hand_to_default_goes_to_default() -> None:
    moment = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    assert dumps({"at": moment}, default=str) == json.dumps(
        {"at": moment}, separators=(",", ":"), default=str
    )
    assert dumps({1: "x"}) == '{"1":"x"}'  # a key json turns into a string
