"""The rules file: every problem at once, each at its file:line:column."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from automationd import yamldoc
from automationd.actions.webhook import WebhookAction
from automationd.events import ANY, BUILTIN_TYPES, EventError, normalise
from automationd.matching import matcher_holds
from automationd.rules import Config, RetryPolicy
from automationd.rules.load import ConfigError, parse_config

SOURCE = Path("/etc/automationd/rules.yaml")


def parse(text: str, environ: dict[str, str] | None = None) -> Config:
    return parse_config(textwrap.dedent(text).encode(), SOURCE, environ=environ)


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    return caught.value.lines()


GOOD = """\
    version: 1
    server: {listen: "127.0.0.1:9999", max_body_bytes: 2048}
    audit: {path: trail.jsonl, fsync: always}
    event_types:
      deploy_finished: {message: "Deployed {app} {version}", attributes: [app, version]}
    automations:
      - name: page
        on: [flow_run_state_change]
        match: {state: [Failed, Crashed], flow_name: nightly}
        when: "contains(tags || `[]`, 'prod')"
        actions:
          - webhook:
              url: http://127.0.0.1:1/hook
              payload: {text: "{flow_run_name} {state}", link: "{flow_run_link}"}
              headers: {X-Run: "{flow_run_id}"}
              timeout: 1.5s
      - name: deploys
        on: deploy_finished
        enabled: false
        actions:
          - webhook: {url: "https://example.com/x"}
      - name: ci
        on: [ci_job]
        match: {labels.env: prod}
        actions:
          - webhook: {url: "http://127.0.0.1:1/ci", payload: {env: "{labels.env}"}}
      - name: everything
        on: ["*"]
        actions:
          - webhook: {url: "http://127.0.0.1:1/all", payload: {any: "{whatever.nested}"}}
"""


def test_a_good_file_becomes_frozen_objects() -> None:
    config = parse(GOOD)
    assert config.server.port == 9999
    assert config.server.max_body_bytes == 2048
    assert config.audit.path == SOURCE.parent / "trail.jsonl"
    assert config.audit.fsync == "always"
    page, deploys, ci, everything = config.automations
    assert page.on == ("flow_run_state_change",)
    assert [(m.path, m.values) for m in page.match] == [
        (("state",), ("Failed", "Crashed")),
        (("flow_name",), ("nightly",)),
    ]
    assert [(m.path, m.values) for m in ci.match] == [(("labels", "env"), ("prod",))]
    assert page.condition is not None
    (action,) = page.actions
    assert isinstance(action.spec, WebhookAction)
    assert action.timeout == 1.5
    assert action.retry == RetryPolicy(attempts=5, initial=1.0, max=300.0)
    assert deploys.on == ("deploy_finished",)
    assert not deploys.enabled
    assert everything.on == ("*",)
    assert len(config.sha256) == 64
    with pytest.raises(AttributeError):
        config.server = config.server  # type: ignore[misc]


def test_defaults_and_state_directory() -> None:
    config = parse(
        "version: 1\nautomations: []\n",
        environ={"STATE_DIRECTORY": "/var/lib/automationd:/var/lib/other"},
    )
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8787)
    assert config.server.max_body_bytes == 1024 * 1024
    assert config.audit.path == Path("/var/lib/automationd/audit.jsonl")
    assert config.audit.fsync == "batch"


def test_empty_and_half_written_files_are_invalid_never_no_rules() -> None:
    assert problems("") == [f"{SOURCE}:1:1: the file is empty (no YAML document)"]
    assert problems("version: 1\n") == [
        f"{SOURCE}:1:1: the file: 'automations' is a required property"
    ]
    half = (
        "version: 1\nautomations:\n  - name: a\n    on: [x]\n    actions:\n      - webhook: {url: "
    )
    (line,) = problems(half)
    assert line.startswith(f"{SOURCE}:6:24: invalid YAML")


def test_every_problem_is_reported_at_its_line_and_column() -> None:
    text = """\
        version: 1
        bogus: true
        automations:
          - name: a
            on: [flow_run_state_change]
            match: {state: Failed, flow_nme: x}
            when: "a[?"
            actions:
              - webhook:
                  url: http://127.0.0.1:1/x
                  payload: {text: "{flow_run_nam}", n: "{id} {oops"}
              - slak: {}
          - name: a
            on: flow_run_state_changed
            actions:
              - webhook: {url: "http://x", timeout: 5x, bogus: 1}
              - {}
    """
    assert problems(text) == [
        f"{SOURCE}:2:1: bogus: unknown key 'bogus'",
        f"{SOURCE}:6:28: automations[0].match.flow_nme: 'flow_nme' is not an attribute of "
        "flow_run_state_change events; did you mean 'flow_name'?",
        f"{SOURCE}:7:11: automations[0].when: invalid JMESPath condition: the expression ends "
        "too early (at character 4)",
        f"{SOURCE}:11:27: automations[0].actions[0].webhook.payload.text: 'flow_run_nam' is not "
        "an attribute of flow_run_state_change events; did you mean 'flow_run_name'?",
        f"{SOURCE}:11:48: automations[0].actions[0].webhook.payload.n: template error at "
        "character 6: '{' is never closed (write '{{' for a literal brace)",
        f"{SOURCE}:12:9: automations[0].actions[1].slak: unknown action kind 'slak'; did you "
        "mean 'slack'? (kinds: webhook, slack, teams, email, twilio, pagerduty, cancel_flow_run, "
        "pause_schedule, start_flow_run)",
        f"{SOURCE}:13:11: automations[1].name: duplicate automation name 'a' (first at line 4)",
        f"{SOURCE}:14:9: automations[1].on: unknown event type 'flow_run_state_changed'; did you "
        "mean 'flow_run_state_change'? (declare it under event_types: if it is a custom type)",
        f'{SOURCE}:16:45: automations[1].actions[0].webhook.timeout: "5x" is not valid: A '
        "duration: 500ms, 30s, 15m, 2h, 7d, combinations like 1h30m, or a number of seconds.",
        f"{SOURCE}:16:49: automations[1].actions[0].webhook.bogus: unknown key 'bogus'",
        f"{SOURCE}:17:9: automations[1].actions[1]: an action needs exactly one key naming its "
        "kind, e.g. webhook: {url: ...}",
    ]


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ("foo bar", "invalid JMESPath condition: unexpected 'bar' (at character 5)"),
        ("a == `1", "invalid JMESPath condition: Unclosed ` delimiter (at character 6)"),
        ("lenght(tags) > `1`", "unknown JMESPath function 'lenght'; did you mean 'length'?"),
    ],
)
def test_conditions_are_checked_at_load(when: str, message: str) -> None:
    text = f"""\
        version: 1
        automations:
          - name: a
            on: [x]
            when: '{when}'
            actions: [{{webhook: {{url: "http://127.0.0.1:1/"}}}}]
    """
    assert problems(text) == [f"{SOURCE}:5:11: automations[0].when: {message}"]


def test_templates_are_checked_against_every_event_type_listed() -> None:
    text = """\
        version: 1
        automations:
          - name: a
            on: [flow_run_state_change, flow_sla_failure]
            actions:
              - webhook: {url: "http://127.0.0.1:1/", payload: {k: "{kind}"}}
    """
    (line,) = problems(text)
    assert "'kind' is not an attribute of flow_run_state_change events" in line


def test_declared_custom_types_are_checked_and_undeclared_accept_anything() -> None:
    text = """\
        version: 1
        event_types:
          deploy_finished: {message: "Deployed {ap}", attributes: [app]}
          flow_run_state_change: {message: "x"}
        automations:
          - name: a
            on: [deploy_finished]
            actions: [{webhook: {url: "http://127.0.0.1:1/", payload: {v: "{version}"}}}]
          - name: b
            on: [backup_done]
            actions: [{webhook: {url: "http://127.0.0.1:1/", payload: {v: "{anything.at.all}"}}}]
    """
    lines = problems(text)
    assert lines == [
        f"{SOURCE}:3:30: event_types.deploy_finished.message: 'ap' is not an attribute of "
        "deploy_finished events; did you mean 'app'?",
        f"{SOURCE}:4:27: event_types.flow_run_state_change.message: flow_run_state_change is a "
        "built-in event type and keeps its message; under event_types: it only takes attributes: "
        "to add",
        f"{SOURCE}:8:67: automations[0].actions[0].webhook.payload.v: 'version' is not an "
        "attribute of deploy_finished events",
    ]


@pytest.mark.parametrize(
    ("snippet", "words"),
    [
        ("version: 2\nautomations: []\n", "1 was expected"),
        ("version: 1\nautomations: {}\n", "is not of type 'array'"),
        ("version: 1\nautomations: []\nserver: {listen: nowhere}\n", "does not match"),
        ("version: 1\nautomations: []\nserver: {listen: '0.0.0.0:8787'}\n", "not a loopback"),
        ("version: 1\nautomations: []\naudit: {fsync: sometimes}\n", "is not one of"),
        (
            "version: 1\nautomations: []\nprefect: {api_url: 'http://h/api', api_key_secret: k}\n",
            "prefect.api_key_secret: unknown secret 'k'",
        ),
        ("version: 1\nautomations: []\nprefect: {api_url: 'h/api'}\n", "does not match"),
        ("version: 1\nautomations: []\nstate: {url: 'postgresql://h/db'}\n", "only sqlite:///"),
        (
            "version: 1\nautomations: []\nserver: {tokens_file: /nonexistent/x}\n",
            "cannot read the tokens file /nonexistent/x",
        ),
        ("- just\n- a list\n", "is not of type 'object'"),
    ],
)
def test_whole_file_problems(snippet: str, words: str) -> None:
    lines = problems(snippet)
    assert any(words in line for line in lines), lines


def test_non_loopback_listen_needs_explicit_consent() -> None:
    config = parse(
        "version: 1\nautomations: []\n"
        "server: {listen: '0.0.0.0:8787', allow_unauthenticated: true}\n"
    )
    assert config.server.host == "0.0.0.0"
    config = parse("version: 1\nautomations: []\nserver: {listen: '[::1]:8787'}\n")
    assert config.server.host == "::1"


def test_orchestrator_actions_need_prefect_and_ids_their_events_carry() -> None:
    text = """\
        version: 1
        automations:
          - name: a
            on: [flow_run_state_change]
            actions:
              - cancel_flow_run: {}
          - name: b
            on: [agent_sla_failure, flow_sla_failure]
            actions:
              - cancel_flow_run: {message: "over {duration_seconds} s"}
              - pause_schedule: {}
              - start_flow_run: {flow_group_id: d-1, parameters: {n: "{agent_config_id}"}}
    """
    assert problems(text) == [
        f"{SOURCE}:6:9: automations[0].actions[0].cancel_flow_run: cancel_flow_run actions "
        "need a prefect: block (api_url)",
        f"{SOURCE}:10:9: automations[1].actions[0].cancel_flow_run: cancel_flow_run actions "
        "need a prefect: block (api_url)",
        f"{SOURCE}:10:9: automations[1].actions[0].cancel_flow_run: cancel_flow_run acts on "
        "the event's flow_run_id, which agent_sla_failure events never carry",
        f"{SOURCE}:10:36: automations[1].actions[0].cancel_flow_run.message: 'duration_seconds' "
        "is not an attribute of agent_sla_failure events",
        f"{SOURCE}:11:9: automations[1].actions[1].pause_schedule: pause_schedule actions need "
        "a prefect: block (api_url)",
        f"{SOURCE}:11:9: automations[1].actions[1].pause_schedule: pause_schedule acts on the "
        "event's flow_group_id, which agent_sla_failure events never carry (or name the "
        "deployment: flow_group_id: ...)",
        f"{SOURCE}:12:9: automations[1].actions[2].start_flow_run: start_flow_run actions need "
        "a prefect: block (api_url)",
        f"{SOURCE}:12:62: automations[1].actions[2].start_flow_run.parameters.n: "
        "'agent_config_id' is not an attribute of flow_sla_failure events; did you mean "
        "'flow_sla_config_id'?",
    ]


def test_prefect_block_and_orchestrator_actions_load() -> None:
    config = parse(
        """\
        version: 1
        secrets: {pk: {env: PK}}
        prefect: {api_url: "http://127.0.0.1:4200/api/", api_key_secret: pk, subscribe: true}
        automations:
          - name: a
            on: [flow_sla_failure]
            actions:
              - cancel_flow_run: {}
              - pause_schedule: {}
              - start_flow_run: {parameters: {reason: "{kind}", n: 3}}
    """,
        environ={"PK": "s3cret"},
    )
    assert config.prefect is not None
    assert config.prefect.api_url == "http://127.0.0.1:4200/api"
    assert (config.prefect.api_key_secret, config.prefect.subscribe) == ("pk", True)
    assert [a.kind for a in config.automations[0].actions] == [
        "cancel_flow_run",
        "pause_schedule",
        "start_flow_run",
    ]


def test_the_schema_describes_every_action_kind_and_is_2020_12() -> None:
    schema = json.loads(Path("schema/rules.schema.json").read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    from automationd.actions.registry import ALL_KINDS

    assert set(schema["$defs"]["action"]["properties"]) == set(ALL_KINDS)
    assert schema["$defs"]["action"]["propertyNames"]["enum"] == list(ALL_KINDS)


def _paths(value: object, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _paths(item, (*path, i))
    return found


def _replace(value: object, path: tuple[str | int, ...], new: object) -> object:
    if not path:
        return new
    copy = json.loads(json.dumps(value))
    node = copy
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = new
    return copy


WRONG_VALUES: list[object] = [None, 0, -1, 1.5, "", "x{", True, [], [None], {}, {"x": None}]
_SCALARS: list[object] = [None, 0, -1, 1.5, "", "x{", True]
_MATCH_VALUE = [*_SCALARS, [None]]  # a match compares to any scalar, or a non-empty list of them
_PAYLOAD = [w for w in WRONG_VALUES if w != "x{"]  # any JSON whose strings are good templates
STILL_VALID: dict[tuple[str | int, ...], list[object]] = {
    # each mutation of GOOD (a path set to one of WRONG_VALUES) the rules still accept
    ("server",): [{}],
    ("audit",): [{}],
    ("audit", "path"): ["x{"],
    ("event_types",): [{}],
    ("event_types", "deploy_finished"): [{}],
    ("event_types", "deploy_finished", "message"): [""],
    ("automations",): [[]],
    ("automations", 0, "name"): ["x{"],
    ("automations", 0, "on"): ["x{"],
    ("automations", 0, "on", 0): ["x{"],
    ("automations", 0, "match"): [{}],
    ("automations", 0, "match", "state"): _MATCH_VALUE,
    ("automations", 0, "match", "state", 0): _SCALARS,
    ("automations", 0, "match", "state", 1): _SCALARS,
    ("automations", 0, "match", "flow_name"): _MATCH_VALUE,
    ("automations", 0, "actions", 0, "webhook", "payload"): _PAYLOAD,
    ("automations", 0, "actions", 0, "webhook", "payload", "text"): _PAYLOAD,
    ("automations", 0, "actions", 0, "webhook", "payload", "link"): _PAYLOAD,
    ("automations", 0, "actions", 0, "webhook", "headers"): [{}],
    ("automations", 0, "actions", 0, "webhook", "headers", "X-Run"): [""],
    ("automations", 0, "actions", 0, "webhook", "timeout"): [1.5],
    ("automations", 1, "name"): ["x{"],
    ("automations", 1, "on"): ["x{"],
    ("automations", 1, "enabled"): [True],
    ("automations", 2, "name"): ["x{"],
    ("automations", 2, "on"): ["x{"],
    ("automations", 2, "on", 0): ["x{"],
    ("automations", 2, "match"): [{}, {"x": None}],  # ci_job is undeclared: any attribute
    ("automations", 2, "match", "labels.env"): _MATCH_VALUE,
    ("automations", 2, "actions", 0, "webhook", "payload"): _PAYLOAD,
    ("automations", 2, "actions", 0, "webhook", "payload", "env"): _PAYLOAD,
    ("automations", 3, "name"): ["x{"],
    ("automations", 3, "on"): ["x{"],
    ("automations", 3, "on", 0): ["x{"],
    ("automations", 3, "actions", 0, "webhook", "payload"): _PAYLOAD,
    ("automations", 3, "actions", 0, "webhook", "payload", "any"): _PAYLOAD,
}


def test_any_wrong_value_anywhere_is_a_config_error_never_a_crash() -> None:
    good = yamldoc.load(textwrap.dedent(GOOD)).data
    parse_config(json.dumps(good).encode(), SOURCE)  # the unchanged file is valid
    accepted: dict[tuple[str | int, ...], list[object]] = {}
    rejected = 0
    for path in _paths(good):
        for wrong in WRONG_VALUES:
            text = json.dumps(_replace(good, path, wrong))
            found: list[yamldoc.Problem] = []
            try:
                parse_config(text.encode(), SOURCE)
            except ConfigError as exc:
                found = exc.problems
                rejected += 1
            else:
                accepted.setdefault(path, []).append(wrong)
            assert all(p.position is not None for p in found), found
    # Every mutation breaks the file (reported, located) except the ones still valid.
    assert accepted == STILL_VALID
    still_valid = sum(len(values) for values in STILL_VALID.values())
    assert rejected == len(_paths(good)) * len(WRONG_VALUES) - still_valid == 582


def test_templates_of_every_notification_kind_are_checked() -> None:
    text = """\
        version: 1
        secrets: {s: {env: S}}
        smtp: {host: 127.0.0.1, from: a@example.com}
        automations:
          - name: a
            on: [flow_run_state_change]
            actions:
              - slack: {webhook_url_secret: s, message: "{flow_name"}
              - teams: {webhook_url_secret: s, title: "{flw_name}"}
              - email: {to_emails: [b@example.com], subject: "{stat}", body: "ok {x:>3}"}
              - twilio: {account_sid: A, auth_token_secret: s, messaging_service_sid: M, phone_numbers: ["+15550100"], message: "{kind}"}
              - pagerduty: {routing_key: R, message: "{{literal}} {state_mesage}"}
    """
    with pytest.raises(ConfigError) as caught:
        parse_config(textwrap.dedent(text).encode(), SOURCE, environ={"S": "https://hooks/x"})
    assert caught.value.lines() == [
        f"{SOURCE}:8:49: automations[0].actions[0].slack.message: template error at character 1: '{{' is never closed (write '{{{{' for a literal brace)",
        f"{SOURCE}:9:47: automations[0].actions[1].teams.title: 'flw_name' is not an attribute of flow_run_state_change events; did you mean 'flow_name'?",
        f"{SOURCE}:10:54: automations[0].actions[2].email.subject: 'stat' is not an attribute of flow_run_state_change events; did you mean 'state'?",
        f"{SOURCE}:10:70: automations[0].actions[2].email.body: template error at character 4: field '{{x:>3}}': conversions and format specs are not supported",
        f"{SOURCE}:11:121: automations[0].actions[3].twilio.message: 'kind' is not an attribute of flow_run_state_change events; did you mean 'id'?",
        f"{SOURCE}:12:46: automations[0].actions[4].pagerduty.message: 'state_mesage' is not an attribute of flow_run_state_change events; did you mean 'state_message'?",
    ]


def test_tags_deployments_and_work_pools_pass_the_template_and_match_checks() -> None:
    config = parse(
        """\
        version: 1
        flow_slas:
          - {id: prod-runtime, kind: STARTED_NOT_FINISHED, duration: 1h, match: {tags: prod}}
        automations:
          - name: prod
            on: [flow_run_state_change, flow_sla_failure]
            match: {tags: prod, work_pool_name: k8s, work_queue_name: default}
            actions:
              - webhook:
                  url: http://127.0.0.1:1/hook
                  payload: {text: "{deployment_name} ({deployment_id}) {tags}"}
        """
    )
    (automation,) = config.automations
    tags, pool, queue = automation.match
    # a list attribute matches when one of its items is the value
    assert matcher_holds(tags, {"tags": ["team-a", "prod"]})
    assert not matcher_holds(tags, {"tags": ["nonprod"]})
    assert not matcher_holds(tags, {"tags": None})
    assert matcher_holds(pool, {"work_pool_name": "k8s"})
    assert matcher_holds(queue, {"work_queue_name": "default"})
    assert config.flow_slas[0].match[0].path == ("tags",)


def test_event_types_may_add_attributes_to_a_built_in_type_and_its_message_stays() -> None:
    config = parse(
        """\
        version: 1
        event_types:
          flow_run_state_change: {attributes: [team, state]}
        automations:
          - name: team
            on: [flow_run_state_change]
            match: {team: data}
            actions: [{webhook: {url: "http://127.0.0.1:1/", payload: {t: "{team} {state}"}}}]
        """
    )
    resolve = config.resolver()
    extended = resolve("flow_run_state_change")
    builtin = BUILTIN_TYPES["flow_run_state_change"]
    assert (extended.event_name, extended.message) == (builtin.event_name, builtin.message)
    assert extended.attributes == {**(builtin.attributes or {}), "team": ANY}
    event = normalise(
        {"type": "flow_run_state_change", "team": {"lead": "ann"}, "state": "Failed"},
        resolve,
        datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert event["team"] == {"lead": "ann"}
    assert event["message"] == "A flow run entered state Failed."
    # the built-in attributes keep their kinds
    with pytest.raises(EventError, match="'state' must be a string"):
        normalise({"type": "flow_run_state_change", "state": 3}, resolve, datetime.now(UTC))
    assert resolve("flow_sla_failure") is BUILTIN_TYPES["flow_sla_failure"]


def test_a_flow_sla_may_match_an_attribute_added_to_the_flow_run_type() -> None:
    config = parse(
        """\
        version: 1
        event_types:
          flow_run_state_change: {attributes: [team]}
        flow_slas:
          - {id: data-start, kind: SCHEDULED_NOT_STARTED, duration: 5m, match: {team: data}}
        automations:
          - name: a
            on: [flow_sla_failure]
            actions: [{webhook: {url: "http://127.0.0.1:1/"}}]
        """
    )
    assert [m.attribute for m in config.flow_slas[0].match] == ["team"]


def test_an_attribute_not_added_to_a_built_in_type_is_still_refused() -> None:
    text = """\
        version: 1
        event_types:
          flow_run_state_change: {attributes: [team]}
        automations:
          - name: a
            on: [flow_run_state_change]
            match: {teem: data}
            actions: [{webhook: {url: "http://127.0.0.1:1/", payload: {t: "{owner}"}}}]
    """
    assert problems(text) == [
        f"{SOURCE}:7:13: automations[0].match.teem: 'teem' is not an attribute of "
        "flow_run_state_change events; did you mean 'team'?",
        f"{SOURCE}:8:67: automations[0].actions[0].webhook.payload.t: 'owner' is not an "
        "attribute of flow_run_state_change events",
    ]


def test_a_message_for_a_built_in_type_is_refused_saying_the_built_in_one_stays() -> None:
    text = """\
        version: 1
        event_types:
          flow_sla_failure: {attributes: [team], message: "SLA {team}"}
        automations: []
    """
    assert problems(text) == [
        f"{SOURCE}:3:42: event_types.flow_sla_failure.message: flow_sla_failure is a built-in "
        "event type and keeps its message; under event_types: it only takes attributes: to add",
    ]


def test_check_reports_a_misspelt_required_key_once_as_its_did_you_mean(tmp_path: Path) -> None:
    """One problem per mistake: a misspelt required key is not also reported missing."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        textwrap.dedent(
            """\
            version: 1
            secrets:
              slack-ops: {env: SLACK_OPS_WEBHOOK}
            automations:
              - name: a
                on: [flow_run_state_change]
                actions:
                  - slack: {webhook_url_secrte: slack-ops, message: hi}
                  - webhook: {ulr: "http://127.0.0.1:1/"}
                  - teams: {webhook_url_secret: slack-ops, titel: x}
              - nme: b
                on: [x]
                actions: [{email: {subject: x}}]
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "automationd", "check", str(rules)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "SLACK_OPS_WEBHOOK": "https://hooks.slack.com/services/T/B/x"},
    )
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{rules}:8:17: automations[0].actions[0].slack.webhook_url_secrte: unknown key "
        "'webhook_url_secrte'; did you mean 'webhook_url_secret'?",
        f"{rules}:9:19: automations[0].actions[1].webhook.ulr: unknown key 'ulr'; did you mean "
        "'url'?",
        f"{rules}:10:48: automations[0].actions[2].teams.titel: unknown key 'titel'; did you "
        "mean 'title'?",
        f"{rules}:11:5: automations[1].nme: unknown key 'nme'; did you mean 'name'?",
        f"{rules}:13:23: automations[1].actions[0].email: 'to_emails' is a required property",
    ]
    assert result.stderr == f"{rules}: 5 problem(s)\n"


def test_an_automation_without_a_name_is_a_problem_even_with_an_insecure_webhook() -> None:
    """The insecure-TLS warning names the automation; one without a name is reported as
    the schema's problem instead of crashing the loader with a KeyError."""
    assert problems(
        """\
        version: 1
        automations:
          - on: [flow_run_failed]
            actions:
              - webhook: {url: "https://127.0.0.1:9/x", tls: {insecure: true}}
        """
    ) == ["/etc/automationd/rules.yaml:3:5: automations[0]: 'name' is a required property"]
