"""`when:` conditions are checked at load like templates: an attribute the automation's event
types do not provide is an error with a "did you mean" hint, at the condition's position.

Only the attributes a condition reads from the event itself are checked: names read from the
elements of a projection or filter, from an `&expression`'s elements, or past the first key of
`labels.team` cannot be known at load, so they are never reported.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import jmespath
import pytest

from automationd.jmescompile import event_attributes
from automationd.rules import Config
from automationd.rules.load import ConfigError, parse_config

ROOT = Path(__file__).resolve().parents[2]
SOURCE = Path("/etc/automationd/rules.yaml")
WEBHOOK = '[{webhook: {url: "http://127.0.0.1:1/"}}]'


def rules(when: str, on: str = "[deploy_finished]") -> str:
    """A file with one automation whose condition is at line 7, column 11."""
    return textwrap.dedent(f"""\
        version: 1
        event_types:
          deploy_finished: {{attributes: [app, environment, tags, labels, items, count]}}
        automations:
          - name: a
            on: {on}
            when: {json.dumps(when)}
            actions: {WEBHOOK}
        """)


def parse(text: str) -> Config:
    return parse_config(text.encode(), SOURCE)


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    return caught.value.lines()


def test_the_issues_typo_is_an_error_with_a_hint() -> None:
    assert problems(rules("contains(tgas || `[]`, 'prod')")) == [
        f"{SOURCE}:7:11: automations[0].when: 'tgas' is not an attribute of deploy_finished "
        "events; did you mean 'tags'?"
    ]


@pytest.mark.parametrize(
    ("when", "attribute", "hint"),
    [
        ("stat == 'Failed'", "stat", "state"),
        ("flow_nme == 'nightly'", "flow_nme", "flow_name"),
        ("contains(['Failed', 'Crashed'], sate)", "sate", "state"),
        ("flw_name.team == 'data'", "flw_name", "flow_name"),
    ],
)
def test_typos_of_built_in_attributes(when: str, attribute: str, hint: str) -> None:
    assert problems(rules(when, on="[flow_run_state_change]")) == [
        f"{SOURCE}:7:11: automations[0].when: '{attribute}' is not an attribute of "
        f"flow_run_state_change events; did you mean '{hint}'?"
    ]


VALID = [
    "contains(tags || `[]`, 'prod')",
    "environment == 'production'",
    "environment == 'production' && app != 'legacy'",
    "tags[?starts_with(@, 'e')]",
    "tags[?starts_with(@, 'p')] | length(@)",
    "tags[1:3]",
    "tags[0] == 'prod'",
    "items[*].name",
    "items[].tags[]",
    "items[?state == 'Failed'].name | [0]",
    "items[0].state",
    "labels.team == 'data'",
    "labels.\"k8s.io/name\" == 'api'",
    "*.team",
    "@.app == 'web'",
    "@ | app",
    "length(@) > `3`",
    "`true`",
    "'a raw string'",
    "!(count > `10`) || count == `0`",
    "sort_by(items, &name)[0].name",
    "max_by(items, &count).name",
    "map(&name, items)",
    "{a: app, e: environment}.a == 'web'",
    "[app, environment][?@ == 'x']",
    "to_string(count)",
    "type == 'deploy_finished' && id != '' && message",
    "app | length(@)",
    "[?region == 'eu']",
]


@pytest.mark.parametrize("when", VALID)
def test_valid_conditions_load(when: str) -> None:
    (automation,) = parse(rules(when)).automations
    assert automation.when == when
    assert automation.condition is not None


@pytest.mark.parametrize(
    ("when", "attributes"),
    [
        ("contains(tgas || `[]`, 'prod')", ("tgas",)),
        ("a.b[0].c", ("a",)),
        ("items[?name == 'x'].value | [0].other", ("items",)),
        ("*.team", ()),
        ("[?region == 'eu']", ()),
        ("@.app", ("app",)),
        ("@ | app", ("app",)),
        ("app | environment", ("app",)),
        ("sort_by(items, &name)", ("items",)),
        ("{x: b, y: c.d, z: b}", ("b", "c")),
        ("[a, `1`, 'x', @]", ("a",)),
        ("!a && (b || c > `1`)", ("a", "b", "c")),
        ("tags[]", ("tags",)),
        ("a.*.b", ("a",)),
        ('"quoted key"', ("quoted key",)),
    ],
)
def test_the_attributes_a_condition_reads_from_the_event(
    when: str, attributes: tuple[str, ...]
) -> None:
    assert event_attributes(jmespath.compile(when)) == attributes


def test_an_error_per_bad_attribute_at_its_condition() -> None:
    text = textwrap.dedent(f"""\
        version: 1
        event_types:
          deploy_finished: {{attributes: [app, environment, tags]}}
        automations:
          - name: one
            on: [deploy_finished]
            when: "enviroment == 'production' && contains(tgas, 'x') && tgas[0] && app"
            actions: {WEBHOOK}
          - {{name: two, on: [flow_run_state_change], when: "stat == 'Failed'", actions: {WEBHOOK}}}
          - name: three
            on: [deploy_finished]
            when: >-
              labels.team == 'data'
            actions: {WEBHOOK}
        """)
    assert problems(text) == [
        f"{SOURCE}:7:11: automations[0].when: 'enviroment' is not an attribute of "
        "deploy_finished events; did you mean 'environment'?",
        f"{SOURCE}:7:11: automations[0].when: 'tgas' is not an attribute of deploy_finished "
        "events; did you mean 'tags'?",
        f"{SOURCE}:9:52: automations[1].when: 'stat' is not an attribute of "
        "flow_run_state_change events; did you mean 'state'?",
        f"{SOURCE}:12:11: automations[2].when: 'labels' is not an attribute of "
        "deploy_finished events",
    ]


def test_every_event_type_listed_must_provide_the_attribute() -> None:
    when = "agent_id == 'a1'"
    assert problems(rules(when, on="[agent_heartbeat, flow_run_state_change]")) == [
        f"{SOURCE}:7:11: automations[0].when: 'agent_id' is not an attribute of "
        "flow_run_state_change events; did you mean 'tenant_id'?"
    ]


@pytest.mark.parametrize("on", ['["*"]', '["flow_*"]', "[ci_job]", "[deploy_finished, ci_job]"])
def test_globs_and_undeclared_custom_types_accept_any_attribute(on: str) -> None:
    (automation,) = parse(rules("contains(tgas || `[]`, 'prod') && whatever.x", on=on)).automations
    assert automation.condition is not None


def test_check_exits_1_naming_the_attribute(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(rules("contains(tgas || `[]`, 'prod')"))
    result = subprocess.run(
        [sys.executable, "-m", "automationd", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{path}:7:11: automations[0].when: 'tgas' is not an attribute of deploy_finished "
        "events; did you mean 'tags'?"
    ]


def test_the_readme_and_example_conditions_load() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "when:" in b]
    assert blocks
    for block in blocks:
        config = parse_config(block.encode(), ROOT / "rules.yaml")
        assert any(a.condition is not None for a in config.automations)
    example = ROOT / "rules.example.yaml"
    config = parse_config(example.read_bytes(), example)
    assert any(a.condition is not None for a in config.automations)
