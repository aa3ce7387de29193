"""Dead letters in the store: kept with their event, listed and counted by filter, paged by
id, dropped oldest first, retried (counted) and resolved."""

from __future__ import annotations

from automationd.store import LetterFilter, Store


def fill(store: Store) -> list[int]:
    """Four letters of two automations and two action kinds, failing at 10, 20, 30, 40."""
    return [
        store.add_dead_letter({"id": "e1", "type": "x"}, "nightly-a", 0, "webhook", "500", 10.0, 3),
        store.add_dead_letter(
            {"id": "e2", "type": "x"}, "nightly-b", 1, "email", "refused", 20.0, 1
        ),
        store.add_dead_letter(
            {"id": "e3", "type": "x"}, "hourly", 0, "webhook", "timeout", 30.0, 2
        ),
        store.add_dead_letter({"id": "e4", "type": "y"}, "nightly-a", 0, "webhook", "503", 40.0, 5),
    ]


def test_a_letter_is_kept_with_everything_about_its_failure(store: Store) -> None:
    event: dict[str, object] = {"id": "e1", "type": "job_done", "nested": {"a": [1, None]}}
    letter = store.add_dead_letter(event, "forward", 2, "webhook", "answered 500", 12.5, 4)
    assert store.dead_letters() == [
        {
            "id": letter,
            "event_id": "e1",
            "automation": "forward",
            "action_index": 2,
            "action": "webhook",
            "error": "answered 500",
            "failed_at": 12.5,
            "runs": 1,
            "attempts": 4,
        }
    ]
    assert store.dead_letter(letter) == (event, "forward", 2)
    assert store.dead_letter(letter + 1) is None


def test_letters_are_numbered_in_order(store: Store) -> None:
    ids = fill(store)
    assert ids == sorted(ids)
    assert len(set(ids)) == 4
    assert [letter["id"] for letter in store.dead_letters()] == ids


def test_letters_are_selected_by_each_filter_field(store: Store) -> None:
    """Ids, an automation glob, the action kind, failing before a time; all that are given
    must hold."""
    e1, e2, e3, e4 = fill(store)

    def selected(which: LetterFilter) -> list[object]:
        return [letter["event_id"] for letter in store.dead_letters(which)]

    assert selected(LetterFilter(ids=(e2, e4))) == ["e2", "e4"]
    assert selected(LetterFilter(automation="nightly-*")) == ["e1", "e2", "e4"]
    assert selected(LetterFilter(automation="nightly-?")) == ["e1", "e2", "e4"]
    assert selected(LetterFilter(automation="Nightly-*")) == []  # a glob is case-sensitive
    assert selected(LetterFilter(action="webhook")) == ["e1", "e3", "e4"]
    assert selected(LetterFilter(before=30.0)) == ["e1", "e2"]
    assert selected(LetterFilter(automation="nightly-*", action="webhook", before=40.0)) == ["e1"]
    assert selected(LetterFilter(ids=(e1, e3), automation="hourly")) == ["e3"]
    assert store.count_dead_letters() == 4
    assert store.count_dead_letters(LetterFilter(automation="nightly-*")) == 3
    assert store.count_dead_letters(LetterFilter(ids=(e1, e2), action="email")) == 1
    assert store.count_dead_letters(LetterFilter(automation="none")) == 0


def test_letters_are_paged_by_id(store: Store) -> None:
    e1, e2, e3, e4 = fill(store)
    assert [x["id"] for x in store.dead_letters(limit=2)] == [e1, e2]
    assert [x["id"] for x in store.dead_letters(after=e2, limit=2)] == [e3, e4]
    assert [x["id"] for x in store.dead_letters(after=e4)] == []
    assert [x["id"] for x in store.dead_letters(LetterFilter(action="webhook"), after=e1)] == [
        e3,
        e4,
    ]


def test_dropping_takes_the_oldest_selected_first(store: Store) -> None:
    e1, e2, e3, e4 = fill(store)
    nightly = LetterFilter(automation="nightly-*")
    assert store.drop_dead_letters(nightly, limit=2) == [
        (e1, "e1", "nightly-a"),
        (e2, "e2", "nightly-b"),
    ]
    assert store.drop_dead_letters(nightly, limit=2) == [(e4, "e4", "nightly-a")]
    assert store.drop_dead_letters(nightly, limit=2) == []
    assert [x["id"] for x in store.dead_letters()] == [e3]
    assert store.drop_dead_letters(LetterFilter(ids=(e3,)), limit=5) == [(e3, "e3", "hourly")]
    assert store.count_dead_letters() == 0


def test_a_retry_that_fails_again_is_counted_and_one_that_succeeds_resolves(store: Store) -> None:
    e1, e2, _, _ = fill(store)
    store.retried_dead_letter(e1, "answered 502", 2)
    store.retried_dead_letter(e1, "answered 504", 3)
    (letter,) = store.dead_letters(LetterFilter(ids=(e1,)))
    assert (letter["error"], letter["runs"], letter["attempts"], letter["failed_at"]) == (
        "answered 504",
        3,
        8,
        10.0,
    )
    store.retried_dead_letter(e2, None, 1)
    assert store.dead_letter(e2) is None
    assert store.count_dead_letters() == 3
