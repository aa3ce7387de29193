"""`automationd check` and friends, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from automationd.cli import main


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "automationd", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_check_a_good_file_exits_0(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "version: 1\nautomations:\n  - {name: a, on: [x], actions: [{webhook: {url: 'http://h/'}}]}\n"
    )
    result = run("check", str(rules))
    assert result.returncode == 0
    assert result.stdout == f"{rules}: OK (1 automation)\n"


def test_check_reports_every_problem_of_every_file_and_exits_1(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("version: 1\nautomations: []\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\nautomations:\n  - name: a\n    on: [x]\n    actions: []\n    extra: 1\n"
    )
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    missing = tmp_path / "missing.yaml"
    result = run("check", str(good), str(bad), str(empty), str(missing))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{good}: OK (0 automations)",
        f"{bad}:5:14: automations[0].actions: [] should be non-empty",
        f"{bad}:6:5: automations[0].extra: unknown key 'extra'",
        f"{empty}:1:1: the file is empty (no YAML document)",
        f"{missing}: cannot read the file: No such file or directory",
    ]
    assert f"{bad}: 2 problem(s)" in result.stderr


def test_version_and_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.startswith("automationd 0.1.0")
    with pytest.raises(SystemExit) as caught:
        main([])
    assert caught.value.code == 2


def test_run_reads_the_config_path_from_the_environment(tmp_path: Path) -> None:
    """The file the variable names is the one read: its own problem, at its path, is the
    refusal. The default ./rules.yaml does not exist in the working directory, so a daemon
    that ignored the variable would name that file instead."""
    named = tmp_path / "from-env.yaml"
    named.write_text("version: 1\nautomations: []\nbogus: 1\n")
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "automationd", "run"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=workdir,
        env={**os.environ, "AUTOMATIOND_CONFIG": str(named)},
    )
    assert result.returncode == 1, result.stderr
    assert f"{named}:3:1: bogus: unknown key 'bogus'" in result.stderr
    assert f"not starting: {named} has 1 problem(s)" in result.stderr
    assert "rules.yaml" not in result.stderr.replace(str(named), "")


def test_receive_refuses_a_bad_listen_address() -> None:
    result = run("receive", "--listen", "nowhere")
    assert result.returncode == 2
    assert "'nowhere' is not host:port" in result.stderr


SECRET_RULES = """\
version: 1
secrets:
  slack-ops: {env: SLACK_OPS_URL}
  teams-ops: {file: TEAMS_FILE}
  pd-key: {credential: pagerduty}
automations:
  - name: page
    on: [flow_run_state_change]
    actions:
      - slack: {webhook_url_secret: slack-ops}
      - teams: {webhook_url_secret: teams-ops}
      - pagerduty: {routing_key_secret: pd-key}
"""


def run_env(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with exactly `env` as its environment (no secret leaks in from the tests')."""
    return subprocess.run(
        [sys.executable, "-m", "automationd", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": "", **env},
    )


def secret_rules(tmp_path: Path) -> Path:
    rules = tmp_path / "rules.yaml"
    rules.write_text(SECRET_RULES.replace("TEAMS_FILE", str(tmp_path / "teams-url")))
    return rules


def test_check_needs_no_secret_values_but_check_secrets_resolves_them(tmp_path: Path) -> None:
    """On a CI machine without the secrets, check passes the file's structure; --secrets
    is the strict form, run where the daemon runs: every secret must resolve."""
    rules = secret_rules(tmp_path)
    result = run_env({}, "check", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == (
        f"{rules}: OK (1 automation; 3 secrets not resolved, --secrets resolves them)\n"
    )
    strict = run_env({}, "check", "--secrets", str(rules))
    assert strict.returncode == 1
    assert strict.stdout.splitlines() == [
        f"{rules}:3:3: secrets.slack-ops: secret 'slack-ops': environment variable "
        "SLACK_OPS_URL is not set",
        f"{rules}:4:3: secrets.teams-ops: secret 'teams-ops': cannot read file "
        f"{tmp_path / 'teams-url'} (No such file or directory)",
        f"{rules}:5:3: secrets.pd-key: secret 'pd-key': $CREDENTIALS_DIRECTORY is not set "
        "(systemd sets it for LoadCredential=)",
    ]
    assert f"{rules}: 3 problem(s)" in strict.stderr


def test_check_without_secrets_still_refuses_an_undeclared_one(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(SECRET_RULES.replace("slack-ops}\n      - teams", "slack-opz}\n      - teams"))
    result = run_env({}, "check", str(rules))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{rules}:10:37: automations[0].actions[0].slack.webhook_url_secret: unknown secret "
        "'slack-opz'; did you mean 'slack-ops'? (declare it under secrets:)"
    ]


def test_check_secrets_checks_each_webhook_secret_is_an_http_url(tmp_path: Path) -> None:
    rules = secret_rules(tmp_path)
    (tmp_path / "teams-url").write_text("ftp://teams.example/hookVALUE\n")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "pagerduty").write_text("R0UTINGKEYVALUE")
    env = {"SLACK_OPS_URL": "hooks.slack.com/services/T/B/slackVALUE"}
    env["CREDENTIALS_DIRECTORY"] = str(credentials)
    result = run_env(env, "check", "--secrets", str(rules))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{rules}:10:37: automations[0].actions[0].slack.webhook_url_secret: secret "
        "'slack-ops' (environment variable SLACK_OPS_URL) is not an http(s) URL, which a "
        "slack webhook_url_secret must be (its value is not shown)",
        f"{rules}:11:37: automations[0].actions[1].teams.webhook_url_secret: secret "
        f"'teams-ops' (file {tmp_path / 'teams-url'}) is not an http(s) URL, which a "
        "teams webhook_url_secret must be (its value is not shown)",
    ]
    assert "VALUE" not in result.stdout + result.stderr
    (tmp_path / "teams-url").write_text("https://example.webhook.office.com/wf/hookVALUE\n")
    env["SLACK_OPS_URL"] = "https://hooks.slack.com/services/T/B/slackVALUE"
    good = run_env(env, "check", "--secrets", str(rules))
    assert good.returncode == 0, good.stdout
    assert good.stdout == f"{rules}: OK (1 automation; 3 secrets resolved)\n"
    assert "VALUE" not in good.stdout + good.stderr


def test_the_daemon_refuses_a_webhook_secret_that_is_not_a_url(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "version: 1\nsecrets: {s: {env: S}}\nautomations:\n"
        "  - {name: a, on: [x], actions: [{slack: {webhook_url_secret: s}}]}\n"
    )
    result = run_env({"S": "xoxb-notaurlVALUE"}, "run", "--config", str(rules))
    assert result.returncode == 1
    assert "secret 's' (environment variable S) is not an http(s) URL" in result.stderr
    assert "VALUE" not in result.stderr


@pytest.mark.parametrize(
    ("block", "column"),
    [
        ("{severity: critical}", 20),
        ("{routing_key: R1, routing_key_secret: pd-key}", 20),
    ],
)
def test_pagerduty_takes_exactly_one_routing_key(tmp_path: Path, block: str, column: int) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "version: 1\nsecrets: {pd-key: {env: PD}}\nautomations:\n  - name: a\n    on: [x]\n"
        f"    actions:\n      - pagerduty: {block}\n"
    )
    result = run_env({}, "check", str(rules))
    assert result.returncode == 1
    (line,) = result.stdout.splitlines()
    assert line.startswith(f"{rules}:7:{column}: automations[0].actions[0].pagerduty: ")
    assert line.endswith("give exactly one of routing_key and routing_key_secret")


def test_check_gives_a_plain_hint_for_a_yaml_syntax_error(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "version: 1\nautomations:\n  - name: a\n    on: [x]\n"
        '     actions: [{webhook: {url: "http://h/"}}]\n'
    )
    result = run("check", str(rules))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{rules}:5:6: invalid YAML: while parsing a block mapping expected <block end>, but "
        "found '<block mapping start>' (the line is probably indented differently from the "
        "ones above it)"
    ]
    assert result.stderr == f"{rules}: 1 problem(s)\n"


def test_an_attribute_added_to_a_built_in_type_routes_and_renders(tmp_path: Path) -> None:
    """`event_types:` adds `team` to flow_run_state_change: `automationd test` matches on it
    and renders it, and the built-in message stays."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "version: 1\nevent_types:\n  flow_run_state_change: {attributes: [team]}\n"
        "automations:\n  - name: by-team\n    on: [flow_run_state_change]\n"
        "    match: {team: data}\n"
        '    actions: [{webhook: {url: "http://127.0.0.1:9/x", payload: {text: "{team}: '
        '{message}"}}}]\n'
    )
    event = (
        '[{"type": "flow_run_state_change", "team": "data", "state": "Failed", '
        '"flow_name": "etl", "flow_run_name": "r1"}, '
        '{"type": "flow_run_state_change", "team": "web", "state": "Failed"}]'
    )
    result = subprocess.run(
        [sys.executable, "-m", "automationd", "test", str(rules), "-", "--json"],
        input=event,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    data, web = json.loads(result.stdout)
    (fired,) = [v for v in data["automations"] if v["automation"] == "by-team"]
    assert fired["fires"] is True
    assert fired["actions"][0]["json"] == {"text": "data: Run r1 of flow etl entered state Failed."}
    assert [v["fires"] for v in web["automations"]] == [False]
