"""The rules file: YAML text in, validated frozen objects (or every problem, located) out.

Three passes, each reporting every problem it finds with `file:line:column`: YAML syntax
(`yamldoc`), the JSON Schema (`rules.schema`, the authority on the format), then the
checks a schema cannot make (`rules.checks`: duplicate names, JMESPath syntax, durations,
templates naming attributes their event types do not provide). The only I/O is reading:
the schema (once), the rules file (`load_config`) and the files the rules name (the tokens
file, CA files, and `file` and `credential` secrets unless `resolve_secrets` is off); a file
that cannot be read is a problem reported like any other, so every bad-file case is a plain
unit test.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

from automationd import yamldoc
from automationd.rules.build import build
from automationd.rules.checks.core import Checker
from automationd.rules.model import Config
from automationd.rules.schema import check_schema
from automationd.yamldoc import Position, Problem


class ConfigError(Exception):
    """A rules file that cannot be used, with every problem found and where it is."""

    def __init__(self, filename: str, problems: Sequence[Problem]) -> None:
        self.filename = filename
        self.problems = sorted(problems, key=lambda p: (p.position or Position(0, 0), p.message))
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        """One `file:line:column: message` line per problem."""
        return [p.render(self.filename) for p in self.problems]


def load_config(path: Path, *, environ: Mapping[str, str], resolve_secrets: bool = True) -> Config:
    """Read and parse a rules file; raises ConfigError (also for an unreadable file).

    `environ` (the process environment, injected) is where `env` secrets,
    `$CREDENTIALS_DIRECTORY` and `$STATE_DIRECTORY` come from. See `parse_config` for
    `resolve_secrets`."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        problem = Problem(None, f"cannot read the file: {exc.strerror}")
        raise ConfigError(str(path), [problem]) from None
    return parse_config(data, path, environ=environ, resolve_secrets=resolve_secrets)


def parse_config(
    data: bytes,
    source: Path,
    *,
    environ: Mapping[str, str] | None = None,
    resolve_secrets: bool = True,
) -> Config:
    """Parse rules from bytes; raises ConfigError listing every problem.

    Relative paths resolve against `$STATE_DIRECTORY` (the first systemd names), else the
    directory of `source`; secrets resolve from `environ`, and a missing one, or one of the
    wrong shape (a webhook secret that is not an http(s) URL), is a problem. With
    `resolve_secrets=False` (`check` on a machine without them, `test`) none is looked up:
    references must still name declared secrets, and `Config.secrets` holds
    `Secret.unresolved` placeholders, fit for showing masked but never for sending."""
    environ = environ or {}
    filename = str(source)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            filename, [Problem(None, f"the file is not UTF-8 (byte {exc.start})")]
        ) from None
    try:
        doc = yamldoc.load(text)
    except yamldoc.YamlError as exc:
        raise ConfigError(filename, exc.problems) from None
    check = Checker(doc, source, environ, resolve_secrets=resolve_secrets)
    check_schema(check)
    config = build(check, hashlib.sha256(data).hexdigest(), state_base(source, environ))
    if check.problems or config is None:
        raise ConfigError(filename, check.problems)
    return config


def state_base(source: Path, environ: Mapping[str, str]) -> Path:
    """Where relative state and audit paths resolve: the first directory systemd names in
    `$STATE_DIRECTORY`, else the directory of the rules file `source`. The daemon and the
    commands that find its files without loading the rules (`audit`) both go by it."""
    state_directory = environ.get("STATE_DIRECTORY", "").split(":", 1)[0]
    return Path(state_directory) if state_directory else source.parent
