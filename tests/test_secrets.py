"""Secrets: resolution from env, file and systemd credentials; never shown."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from automationd.rules.load import ConfigError, parse_config
from automationd.secrets import Redactor, Secret, SecretError, SecretSource, resolve

SOURCE = Path("/etc/automationd/rules.yaml")


def test_a_secret_never_prints_its_value() -> None:
    secret = Secret("slack", "https://hooks.slack.com/services/T/B/xyz")
    assert "xyz" not in repr(secret)
    assert str(secret) == "********"
    assert f"{secret}" == "********"
    assert secret.reveal().endswith("/xyz")


def test_sources(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-file\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "pagerduty").write_text("from-credential")
    environ = {"TOKEN": "from-env", "CREDENTIALS_DIRECTORY": str(creds)}
    assert resolve(SecretSource("a", "env", "TOKEN"), environ).reveal() == "from-env"
    assert (
        resolve(SecretSource("b", "file", str(tmp_path / "token")), environ).reveal() == "from-file"
    )
    assert (
        resolve(SecretSource("c", "credential", "pagerduty"), environ).reveal() == "from-credential"
    )


@pytest.mark.parametrize(
    ("source", "environ", "words"),
    [
        (SecretSource("a", "env", "NOPE"), {}, "secret 'a': environment variable NOPE is not set"),
        (
            SecretSource("a", "env", "EMPTY"),
            {"EMPTY": ""},
            "secret 'a': environment variable EMPTY is empty",
        ),
        (
            SecretSource("b", "file", "/nonexistent/x"),
            {},
            "secret 'b': cannot read file /nonexistent/x",
        ),
        (
            SecretSource("c", "credential", "pd"),
            {},
            "secret 'c': $CREDENTIALS_DIRECTORY is not set",
        ),
        (
            SecretSource("c", "credential", "pd"),
            {"CREDENTIALS_DIRECTORY": "/nonexistent"},
            "secret 'c': cannot read systemd credential pd",
        ),
    ],
)
def test_missing_secrets_are_named(
    source: SecretSource, environ: dict[str, str], words: str
) -> None:
    with pytest.raises(SecretError, match=words.replace("$", r"\$")):
        resolve(source, environ)


def test_redactor_masks_values_and_their_url_quoted_form() -> None:
    redact = Redactor([Secret("a", "s3cr3t/v@lue"), Secret("b", "other")])
    assert redact("x s3cr3t/v@lue y s3cr3t%2Fv%40lue z other") == "x ******** y ******** z ********"
    assert Redactor([])("unchanged") == "unchanged"


def problems(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(textwrap.dedent(text).encode(), SOURCE, environ=environ)
    return caught.value.lines()


def test_config_errors_name_the_secret_never_its_value(tmp_path: Path) -> None:
    text = """\
        version: 1
        secrets:
          slack-prod: {env: SLACK_PROD}
          pd: {file: /nonexistent/pd}
        automations:
          - name: a
            on: [x]
            actions:
              - slack: {webhook_url_secret: slack-prd}
              - pagerduty: {routing_key: R, api_token_secret: pd}
              - email: {to_emails: [a@example.com]}
    """
    lines = problems(text, {"SLACK_PROD_OTHER": "https://hooks.slack.com/services/T/B/zzz"})
    assert lines == [
        f"{SOURCE}:3:3: secrets.slack-prod: secret 'slack-prod': environment variable SLACK_PROD is not set",
        f"{SOURCE}:4:3: secrets.pd: secret 'pd': cannot read file /nonexistent/pd (No such file or directory)",
        f"{SOURCE}:9:37: automations[0].actions[0].slack.webhook_url_secret: unknown secret 'slack-prd'; "
        "did you mean 'slack-prod'? (declare it under secrets:)",
        f"{SOURCE}:11:9: automations[0].actions[2].email: email actions need an smtp: block (host, from)",
    ]


def test_smtp_password_needs_a_declared_secret_and_a_username() -> None:
    text = """\
        version: 1
        smtp: {host: 127.0.0.1, from: a@example.com, password_secret: nope}
        automations: []
    """
    assert problems(text) == [
        f"{SOURCE}:2:63: smtp.password_secret: a password needs a username too",
        f"{SOURCE}:2:63: smtp.password_secret: unknown secret 'nope' (declare it under secrets:)",
    ]


def test_retry_blocks_are_checked() -> None:
    text = """\
        version: 1
        retry: {attempts: 3, initial: 10s, max: 1s}
        automations:
          - name: a
            on: [x]
            actions: [{webhook: {url: "http://h/", retry: {attempts: 0}, timeout: 0s}}]
    """
    assert problems(text) == [
        f"{SOURCE}:2:41: retry.max: must not be shorter than initial",
        f"{SOURCE}:6:62: automations[0].actions[0].webhook.retry.attempts: 0 is less than the minimum of 1",
        f"{SOURCE}:6:75: automations[0].actions[0].webhook.timeout: must be longer than 0",
    ]


def test_rules_read_without_secrets_hold_placeholders_that_never_reveal() -> None:
    text = """\
        version: 1
        secrets: {slack: {env: SLACK}, pd: {file: /nonexistent/pd}, tw: {credential: tw}}
        automations:
          - name: a
            on: [x]
            actions: [{slack: {webhook_url_secret: slack}}, {pagerduty: {routing_key_secret: pd}}]
    """
    config = parse_config(textwrap.dedent(text).encode(), SOURCE, resolve_secrets=False)
    assert sorted(config.secrets) == ["pd", "slack", "tw"]
    assert not any(secret.resolved for secret in config.secrets.values())
    assert str(config.secrets["pd"]) == "********"
    with pytest.raises(SecretError, match="secret 'pd' is not resolved"):
        config.secrets["pd"].reveal()
    assert Redactor(config.secrets.values())("unchanged") == "unchanged"
    assert problems(text) == [  # resolved, as the daemon loads them: each missing one named
        f"{SOURCE}:2:11: secrets.slack: secret 'slack': environment variable SLACK is not set",
        f"{SOURCE}:2:32: secrets.pd: secret 'pd': cannot read file /nonexistent/pd "
        "(No such file or directory)",
        f"{SOURCE}:2:61: secrets.tw: secret 'tw': $CREDENTIALS_DIRECTORY is not set "
        "(systemd sets it for LoadCredential=)",
    ]


@pytest.mark.parametrize(
    "value",
    [
        "hooks.slack.com/services/T/B/x",
        "ftp://hooks.slack.com/x",
        "https://",
        "https://hooks.slack.com/services/T/B/x y",
        "http://[::1/x",
    ],
)
def test_a_webhook_secret_must_be_an_http_url(value: str) -> None:
    text = """\
        version: 1
        secrets: {hook: {env: HOOK}}
        automations:
          - {name: a, on: [x], actions: [{teams: {webhook_url_secret: hook}}]}
    """
    assert problems(text, {"HOOK": value}) == [
        f"{SOURCE}:4:63: automations[0].actions[0].teams.webhook_url_secret: secret 'hook' "
        "(environment variable HOOK) is not an http(s) URL, which a teams webhook_url_secret "
        "must be (its value is not shown)"
    ]
    config = parse_config(
        textwrap.dedent(text).encode(), SOURCE, environ={"HOOK": "HTTPS://x.example/h?a=1"}
    )
    assert config.secrets["hook"].reveal() == "HTTPS://x.example/h?a=1"


def test_pagerduty_parse_takes_exactly_one_routing_key() -> None:
    from automationd.actions import SpecProblems, pagerduty

    for options in ({}, {"routing_key": "R", "routing_key_secret": "pd"}):
        with pytest.raises(SpecProblems, match="exactly one of routing_key and routing_key_secret"):
            pagerduty.parse(options)
    action = pagerduty.parse({"routing_key_secret": "pd"})
    assert (action.routing_key, action.routing_key_secret) == (None, "pd")
