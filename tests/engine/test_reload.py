"""changes_between without an engine: the typed changes of one rules file to the next, and
the JSON and log words built from them."""

from __future__ import annotations

from pathlib import Path

from automationd.reload import Changes, changes_between
from automationd.rules import Config
from automationd.rules.load import parse_config

SOURCE = Path("/etc/automationd/rules.yaml")


def rules(*automations: str, extra: str = "") -> Config:
    """Rules with an automation per `name:url-path`, and `extra` top-level lines."""
    lines = ["version: 1", extra, "automations:"]
    for automation in automations:
        name, path = automation.split(":")
        lines += [
            f"  - name: {name}",
            "    on: [ping]",
            f'    actions: [{{webhook: {{url: "http://127.0.0.1:9/{path}"}}}}]',
        ]
    return parse_config("\n".join(lines).encode(), SOURCE)


def test_the_same_rules_change_nothing() -> None:
    changes = changes_between(rules("a:x", "b:y"), rules("a:x", "b:y"))
    assert changes == Changes()
    assert changes.describe() == "no automation changed"


def test_automations_added_changed_removed_and_kept() -> None:
    old = rules("kept:x", "changed:x", "removed:x", "gone:x")
    new = rules("kept:x", "changed:y", "new:x", "added:x")
    changes = changes_between(old, new)
    assert changes == Changes(
        automations_added=("added", "new"),
        automations_removed=("gone", "removed"),
        automations_changed=("changed",),
    )
    assert changes.as_json() == {
        "automations_added": ["added", "new"],
        "automations_removed": ["gone", "removed"],
        "automations_changed": ["changed"],
        "sections_changed": [],
        "restart_needed": [],
    }
    assert list(changes.as_json()) == [
        "automations_added",
        "automations_removed",
        "automations_changed",
        "sections_changed",
        "restart_needed",
    ]
    assert changes.describe() == (
        "automations added: added, new; automations removed: gone, removed; "
        "automations changed: changed"
    )


def test_sections_and_what_waits_for_a_restart() -> None:
    old = rules("a:x")
    new = rules("a:x", extra='retry: {attempts: 2}\nserver: {listen: "127.0.0.1:1"}')
    changes = changes_between(old, new)
    # the automation's action takes the default retry policy: it changes with it
    assert changes == Changes(
        automations_changed=("a",), sections_changed=("retry",), restart_needed=("server",)
    )
    assert changes.describe() == (
        "automations changed: a; sections changed: retry; restart needed: server"
    )


def test_new_tokens_are_taken_without_a_restart(tmp_path: Path) -> None:
    old_tokens, new_tokens = tmp_path / "old", tmp_path / "new"
    old_tokens.write_text("first-token-of-enough-length\n")
    new_tokens.write_text("second-token-of-enough-length\n")
    old = rules("a:x", extra=f"server: {{tokens_file: {old_tokens}}}")
    new = rules("a:x", extra=f"server: {{tokens_file: {new_tokens}}}")
    assert old.server != new.server
    assert changes_between(old, new) == Changes()
