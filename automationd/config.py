"""The rules file: YAML text in, validated frozen objects (or every problem, located) out.

Three passes, each reporting every problem it finds with `file:line:column`: YAML syntax
(`yamldoc`), the JSON Schema (`rules.schema.json`, the authority on the format), then the
checks a schema cannot make (duplicate names, JMESPath syntax, durations, templates naming
attributes their event types do not provide). The only I/O is reading: the schema (once),
the rules file (`load_config`) and the files the rules name (the tokens file, CA files, and
`file` and `credential` secrets unless `resolve_secrets` is off); a file that cannot be
read is a problem reported like any other, so every bad-file case is a plain unit test.
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import json
import logging
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jmespath
import jmespath.exceptions
import jmespath.functions
import jmespath.parser
import jsonschema
from jsonschema.exceptions import ValidationError

from automationd import yamldoc
from automationd.actions import (
    DEFAULT_GIVE_UP_AFTER,
    DEFAULT_TIMEOUT,
    Action,
    ActionSpec,
    ClientTls,
    Endpoints,
    PrefectSettings,
    RetryPolicy,
    SmtpSettings,
    SpecProblems,
    orchestrator,
    trusting,
    webhook,
)
from automationd.actions.http import host_of
from automationd.actions.registry import PARSERS
from automationd.durations import parse_duration
from automationd.events import (
    ANY,
    BASE_ATTRIBUTES,
    BUILTIN_TYPES,
    EventType,
    EventTypeResolver,
    readable_name,
)
from automationd.globs import is_glob
from automationd.jmescompile import Compiled, compile_expression, event_attributes
from automationd.secrets import Secret, SecretError, SecretSource, resolve
from automationd.templating import Template, TemplateError
from automationd.yamldoc import Document, Position, Problem

DocPath = yamldoc.Path

DEFAULT_LISTEN = "127.0.0.1:8787"
DEFAULT_MAX_BODY = 1024 * 1024
DEFAULT_QUEUE_SIZE = 10_000


class ConfigError(Exception):
    """A rules file that cannot be used, with every problem found and where it is."""

    def __init__(self, filename: str, problems: Sequence[Problem]) -> None:
        self.filename = filename
        self.problems = sorted(problems, key=lambda p: (p.position or Position(0, 0), p.message))
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        """One `file:line:column: message` line per problem."""
        return [p.render(self.filename) for p in self.problems]


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Where and how the HTTP server listens."""

    host: str
    port: int
    allow_unauthenticated: bool = False
    max_body_bytes: int = DEFAULT_MAX_BODY
    tokens: tuple[Secret, ...] = ()
    tls: tuple[Path, Path] | None = None
    queue_size: int = DEFAULT_QUEUE_SIZE
    header_timeout: float = 10.0
    """Seconds a client has for a request's line and headers (slowloris)."""
    body_timeout: float = 30.0
    """Seconds a client has for a request's body once its headers arrived."""
    idle_timeout: float = 30.0
    """Seconds an idle keep-alive connection stays open."""
    max_connections: int = 1000
    """Client connections open at once, at most (lowered below the open-file limit)."""


DEFAULT_SERVER = ServerConfig("127.0.0.1", 8787)


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    """Bounds on the actions of one destination, so a dead or hanging one cannot grow
    memory or hold actions forever."""

    max_pending_per_destination: int = 1000
    concurrency_per_destination: int = 8
    give_up_after: float = DEFAULT_GIVE_UP_AFTER
    """Default longest life of an action: waiting, attempts and back-offs."""


@dataclass(frozen=True, slots=True)
class ReloadConfig:
    """How saves of the rules file are picked up."""

    settle: float = 2.0
    """A file changed in place is read once it has been quiet this long."""


@dataclass(frozen=True, slots=True)
class AuditConfig:
    """Where the audit trail goes and how often it is fsynced."""

    path: Path
    fsync: str = "batch"


@dataclass(frozen=True, slots=True)
class StateConfig:
    """Where the state store lives (a SQLite file), and how accepted events are journaled."""

    path: Path
    journal: bool = True
    dedup_window: float = 24 * 3600.0
    retention: float = 7 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Matcher:
    """One `match:` entry: the value at `path` must equal one of `values`."""

    path: tuple[str, ...]
    values: tuple[object, ...]

    @property
    def attribute(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True, slots=True)
class Cooldown:
    """After firing, an automation stays quiet for `seconds` for the same rendered `key`."""

    seconds: float
    key: Template


@dataclass(frozen=True, slots=True)
class Automation:
    """A hook: event types, matchers, an optional condition, and actions."""

    name: str
    on: tuple[str, ...]
    match: tuple[Matcher, ...]
    when: str | None
    condition: Compiled | None = field(compare=False)
    """`when` compiled: the document (the event) -> JMESPath's result."""
    actions: tuple[Action, ...]
    enabled: bool = True
    description: str = ""
    line: int = field(default=0, compare=False)
    cooldown: Cooldown | None = None


@dataclass(frozen=True, slots=True)
class FlowSla:
    """A deadline on flow runs: SCHEDULED_NOT_STARTED or STARTED_NOT_FINISHED after `duration`."""

    id: str
    kind: str
    duration: float
    match: tuple[Matcher, ...] = ()


@dataclass(frozen=True, slots=True)
class AgentSla:
    """At least `min_healthy` agents of a config must have sent a heartbeat within `window`."""

    agent_config_id: str
    min_healthy: int
    window: float


@dataclass(frozen=True, slots=True)
class Config:
    """A loaded rules file."""

    source: Path
    sha256: str
    server: ServerConfig
    audit: AuditConfig
    event_types: Mapping[str, EventType]
    automations: tuple[Automation, ...]
    secrets: Mapping[str, Secret] = field(default_factory=dict)
    endpoints: Endpoints = field(default_factory=Endpoints)
    smtp: SmtpSettings | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    state: StateConfig = field(default_factory=lambda: StateConfig(Path("state.db")))
    flow_slas: tuple[FlowSla, ...] = ()
    agent_slas: tuple[AgentSla, ...] = ()
    prefect: PrefectSettings | None = None
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    reload: ReloadConfig = field(default_factory=ReloadConfig)

    def resolver(self) -> EventTypeResolver:
        """Type name -> EventType for this file's declared types."""
        return EventTypeResolver(self.event_types)


@cache
def schema() -> dict[str, Any]:
    """The rules JSON Schema shipped with the package."""
    text = resources.files("automationd").joinpath("rules.schema.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema())


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
    checker = _Checker(doc, environ, resolve_secrets=resolve_secrets)
    checker.check_schema()
    config = checker.build(source, hashlib.sha256(data).hexdigest())
    checker.check_secret_shapes()
    if checker.problems or config is None:
        raise ConfigError(filename, checker.problems)
    return config


def state_base(source: Path, environ: Mapping[str, str]) -> Path:
    """Where relative state and audit paths resolve: the first directory systemd names in
    `$STATE_DIRECTORY`, else the directory of the rules file `source`. The daemon and the
    commands that find its files without loading the rules (`audit`) both go by it."""
    state_directory = environ.get("STATE_DIRECTORY", "").split(":", 1)[0]
    return Path(state_directory) if state_directory else source.parent


def _where(path: DocPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "the file"


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, sorted(set(choices)), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _strings(values: object) -> list[str]:
    return [str(v) for v in values] if isinstance(values, list | tuple) else []


def _local_ref(ref: str) -> dict[str, Any]:
    node: Any = schema()
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    result: dict[str, Any] = node
    return result


def _allowed_keys(subschema: Mapping[str, Any]) -> set[str]:
    keys = set(subschema.get("properties", {}))
    ref = subschema.get("$ref")
    if isinstance(ref, str):
        keys |= _allowed_keys(_local_ref(ref))
    return keys


class _Checker:
    """Collects every problem of one document, then builds the Config if there are none."""

    def __init__(
        self, doc: Document, environ: Mapping[str, str], *, resolve_secrets: bool = True
    ) -> None:
        self.doc = doc
        self.environ = environ
        self.resolve_secrets = resolve_secrets
        self.problems: list[Problem] = []
        self.bad_paths: list[DocPath] = []
        self.secret_names: set[str] = set()
        self.secret_sources: dict[str, SecretSource] = {}
        self.resolved_secrets: dict[str, Secret] = {}
        self.secret_refs: list[tuple[DocPath, str]] = []
        """Every `*_secret` field naming a declared secret, for `check_secret_shapes`."""
        self.retry = RetryPolicy()
        self.give_up_after = DeliveryConfig().give_up_after
        self.has_smtp = False
        self.has_prefect = False
        self.source = Path()

    def add(self, path: DocPath, message: str, *, at_key: bool = False) -> None:
        where = self.doc.key_position(path) if at_key else self.doc.position(path)
        self.problems.append(Problem(where, f"{_where(path)}: {message}"))

    def clean(self, path: DocPath) -> bool:
        """Whether the schema found nothing wrong at or below `path`."""
        return not any(bad[: len(path)] == path for bad in self.bad_paths)

    # --- pass 2: the schema

    def check_schema(self) -> None:
        """Every schema violation, one problem per mistake: a required key that an unknown
        key's "did you mean" names is misspelt, not missing, so only the hint is reported."""
        errors = list(_validator().iter_errors(self.doc.data))
        meant: set[tuple[DocPath, str]] = set()
        for error in errors:
            if error.validator != "required":
                meant |= self._schema_error(error)
        for error in errors:
            if error.validator == "required":
                path: DocPath = tuple(error.absolute_path)
                missing = error.message.removesuffix(" is a required property")  # 'name'
                if (path, missing) in meant:
                    self.bad_paths.append(path)
                else:
                    self._schema_error(error)

    def _schema_error(self, error: ValidationError) -> set[tuple[DocPath, str]]:
        """Report one schema error; returns, for unknown keys, the object's path and each key
        their "did you mean" names, quoted (`'name'`) as jsonschema's messages quote it."""
        path: DocPath = tuple(error.absolute_path)
        self.bad_paths.append(path)
        if error.validator in ("additionalProperties", "unevaluatedProperties") and isinstance(
            error.instance, dict
        ):
            allowed = _allowed_keys(error.schema) if isinstance(error.schema, dict) else set()
            meant: set[tuple[DocPath, str]] = set()
            for key in error.instance:
                if key not in allowed:
                    hint = _suggest(key, allowed)  # "; did you mean 'name'?" or ""
                    self.add((*path, key), f"unknown key '{key}'{hint}", at_key=True)
                    if hint:
                        meant.add((path, hint.removeprefix("; did you mean ").removesuffix("?")))
            return meant
        if "propertyNames" in error.absolute_schema_path and isinstance(error.instance, str):
            key = error.instance
            if error.validator == "enum":
                choices = _strings(error.validator_value)
                listed = ", ".join(choices)
                message = f"unknown action kind '{key}'{_suggest(key, choices)} (kinds: {listed})"
            else:
                message = f"'{key}' is not an allowed name here ({error.message})"
            self.add((*path, key), message, at_key=True)
            return set()
        message = error.message
        if error.validator in ("anyOf", "oneOf") and isinstance(error.schema, dict):
            description = error.schema.get("description")
            if description:
                message = f"{json.dumps(error.instance)[:80]} is not valid: {description}"
        elif error.validator == "enum" and isinstance(error.instance, str):
            message += _suggest(error.instance, _strings(error.validator_value))
        elif error.validator in ("minProperties", "maxProperties") and path[-2:-1] == ("actions",):
            message = "an action needs exactly one key naming its kind, e.g. webhook: {url: ...}"
        self.add(path, message)
        return set()

    # --- pass 3: what the schema cannot say, then the frozen objects

    def build(self, source: Path, sha256: str) -> Config | None:
        self.source = source
        data = self.doc.data
        if not isinstance(data, dict):
            return None
        base = state_base(source, self.environ)
        server = self._server(data.get("server") or {})
        audit = self._audit(data.get("audit") or {}, base)
        secrets = self._secrets(data.get("secrets"))
        smtp = self._smtp(data.get("smtp"))
        prefect = self._prefect(data.get("prefect"))
        endpoints = self._endpoints(data.get("endpoints"))
        retry = self._retry(("retry",), data.get("retry"), RetryPolicy()) or RetryPolicy()
        delivery = self._delivery(data.get("delivery") or {})
        reload = self._reload(data.get("reload") or {})
        self.give_up_after = delivery.give_up_after
        event_types = self._event_types(data.get("event_types") or {})
        resolver = EventTypeResolver(event_types)
        self.retry, self.has_smtp, self.has_prefect = retry, smtp is not None, prefect is not None
        automations = self._automations(data.get("automations"), resolver)
        state = self._state(data.get("state"), base)
        flow_slas = self._flow_slas(data.get("flow_slas"), resolver)
        agent_slas = self._agent_slas(data.get("agent_slas"))
        if server is None or audit is None or automations is None or self.problems:
            return None
        return Config(
            source,
            sha256,
            server,
            audit,
            event_types,
            automations,
            secrets,
            endpoints,
            smtp,
            retry,
            state or StateConfig(base / "state.db"),
            flow_slas,
            agent_slas,
            prefect,
            delivery,
            reload,
        )

    def _state(self, raw: object, base: Path) -> StateConfig | None:
        if not isinstance(raw, dict) or not self.clean(("state",)):
            return None
        url = str(raw.get("url", "sqlite:///state.db"))
        if not url.startswith("sqlite:///"):
            self.add(("state", "url"), "only sqlite:/// state stores are available in this version")
            return None
        default = StateConfig(Path())
        return StateConfig(
            base / url.removeprefix("sqlite:///"),
            journal=bool(raw.get("journal", True)),
            dedup_window=self._seconds(
                ("state", "dedup_window"), raw.get("dedup_window"), default.dedup_window
            ),
            retention=self._seconds(
                ("state", "retention"), raw.get("retention"), default.retention
            ),
        )

    def _unique(self, path: DocPath, value: str, seen: dict[str, int], what: str) -> bool:
        """Report `value` (at `path`) when an earlier entry had it; False then."""
        if value in seen:
            self.add(path, f"duplicate {what} '{value}' (first at line {seen[value]})")
            return False
        where = self.doc.position(path)
        seen[value] = where.line if where else 0
        return True

    def _matchers(
        self, path: DocPath, raw: object, types: list[EventType] | None
    ) -> tuple[Matcher, ...]:
        """`match:` entries, each attribute checked against the event types."""
        matchers = []
        for attribute, expected in (raw if isinstance(raw, dict) else {}).items():
            self._check_attribute((*path, attribute), attribute, types, at_key=True)
            values = tuple(expected) if isinstance(expected, list) else (expected,)
            matchers.append(Matcher(tuple(attribute.split(".")), values))
        return tuple(matchers)

    def _flow_slas(self, raw: object, resolver: EventTypeResolver) -> tuple[FlowSla, ...]:
        slas: list[FlowSla] = []
        first: dict[str, int] = {}
        flow_run = [resolver("flow_run_state_change")]  # with attributes event_types: added
        for i, item in enumerate(raw if isinstance(raw, list) else []):
            path: DocPath = ("flow_slas", i)
            if not isinstance(item, dict) or not self.clean(path):
                continue
            sla_id = str(item["id"])
            self._unique((*path, "id"), sla_id, first, "flow SLA id")
            matchers = self._matchers((*path, "match"), item.get("match"), flow_run)
            duration = self._seconds((*path, "duration"), item["duration"], 1.0)
            slas.append(FlowSla(sla_id, str(item["kind"]), duration, matchers))
        return tuple(slas)

    def _agent_slas(self, raw: object) -> tuple[AgentSla, ...]:
        slas: list[AgentSla] = []
        first: dict[str, int] = {}
        for i, item in enumerate(raw if isinstance(raw, list) else []):
            path: DocPath = ("agent_slas", i)
            if not isinstance(item, dict) or not self.clean(path):
                continue
            config_id = str(item["agent_config_id"])
            self._unique((*path, "agent_config_id"), config_id, first, "agent SLA for")
            window = self._seconds((*path, "window"), item["window"], 1.0)
            slas.append(AgentSla(config_id, int(item["min_healthy"]), window))
        return tuple(slas)

    def _secrets(self, raw: object) -> dict[str, Secret]:
        """Resolve every declared secret; a missing one is a problem naming it, never its value.
        Without `resolve_secrets`, each is an unresolved placeholder and nothing is read."""
        resolved: dict[str, Secret] = {}
        if not isinstance(raw, dict):
            return resolved
        for name, spec in raw.items():
            self.secret_names.add(name)
            if not self.clean(("secrets", name)) or not isinstance(spec, dict):
                continue
            ((kind, ref),) = spec.items()
            source = SecretSource(name, kind, str(ref))
            self.secret_sources[name] = source
            if not self.resolve_secrets:
                resolved[name] = Secret.unresolved(name)
                continue
            try:
                resolved[name] = resolve(source, self.environ)
            except SecretError as exc:
                self.add(("secrets", name), str(exc), at_key=True)
        self.resolved_secrets = resolved
        return resolved

    def _secret_ref(self, path: DocPath, name: object) -> None:
        """A `*_secret` field must name a declared secret."""
        if not isinstance(name, str):
            return
        if name not in self.secret_names:
            hint = _suggest(name, self.secret_names)
            self.add(path, f"unknown secret '{name}'{hint} (declare it under secrets:)")
            return
        self.secret_refs.append((path, name))

    def check_secret_shapes(self) -> None:
        """Each resolved secret a field needs in a given shape (a webhook URL) has it; a
        problem at every field naming one that does not, with the secret's name and source,
        never its value."""
        for path, name in self.secret_refs:
            shape = SECRET_SHAPES.get(str(path[-1]))
            secret = self.resolved_secrets.get(name)
            if shape is None or secret is None or not secret.resolved:
                continue
            what, fits = shape
            if not fits(secret.reveal()):
                source = self.secret_sources[name].describe()
                self.add(
                    path,
                    f"secret '{name}' ({source}) is not {what}, which a {path[-2]} "
                    f"{path[-1]} must be (its value is not shown)",
                )

    def _seconds(
        self, path: DocPath, raw: object, default: float, *, positive: bool = True
    ) -> float:
        if raw is None:
            return default
        try:
            seconds = parse_duration(raw)
        except ValueError as exc:
            self.add(path, str(exc))
            return default
        if positive and seconds <= 0:
            self.add(path, "must be longer than 0")
        return seconds

    def _smtp(self, raw: object) -> SmtpSettings | None:
        if not isinstance(raw, dict) or not self.clean(("smtp",)):
            return None
        self._secret_ref(("smtp", "password_secret"), raw.get("password_secret"))
        if raw.get("password_secret") and not raw.get("username"):
            self.add(("smtp", "password_secret"), "a password needs a username too")
        return SmtpSettings(
            host=str(raw["host"]),
            sender=str(raw["from"]),
            port=int(raw.get("port", 25)),
            starttls=bool(raw.get("starttls", False)),
            username=raw.get("username"),
            password_secret=raw.get("password_secret"),
            timeout=self._seconds(("smtp", "timeout"), raw.get("timeout"), 10.0),
        )

    def _prefect(self, raw: object) -> PrefectSettings | None:
        if not isinstance(raw, dict) or not self.clean(("prefect",)):
            return None
        key = raw.get("api_key_secret")
        self._secret_ref(("prefect", "api_key_secret"), key)
        ui_url = raw.get("ui_url")
        api_url = str(raw["api_url"]).rstrip("/")
        return PrefectSettings(
            api_url,
            api_key_secret=str(key) if key is not None else None,
            ui_url=str(ui_url).rstrip("/") if ui_url is not None else None,
            subscribe=bool(raw.get("subscribe", False)),
            tls=self._client_tls(("prefect", "tls"), raw.get("tls"), f"prefect: {api_url}"),
        )

    def _endpoints(self, raw: object) -> Endpoints:
        if not isinstance(raw, dict) or not self.clean(("endpoints",)):
            return Endpoints()
        default = Endpoints()
        twilio = str(raw.get("twilio", default.twilio))
        pagerduty = str(raw.get("pagerduty", default.pagerduty))
        return Endpoints(
            twilio=twilio,
            pagerduty=pagerduty,
            tls=self._client_tls(
                ("endpoints", "tls"), raw.get("tls"), f"endpoints: {twilio} and {pagerduty}"
            ),
        )

    def _client_tls(self, path: DocPath, raw: object, who: str) -> ClientTls | None:
        """A `tls: {ca_file, insecure}` block: the CA file read and its SSL context built
        now, so a missing or bad file stops the load. `insecure` is logged as a warning at
        every load and reload (`who` names what it applies to), never silently taken."""
        if not isinstance(raw, dict) or not self.clean(path):
            return None
        insecure = bool(raw.get("insecure", False))
        if "ca_file" not in raw:
            if insecure:
                where = self.doc.position((*path, "insecure"))
                line = f":{where.line}" if where else ""
                logging.getLogger("automationd.config").warning(
                    "%s%s: %s: tls.insecure is true: the server's certificate is NOT verified, "
                    "so anyone on the network path can read and change these requests",
                    self.source,
                    line,
                    who,
                )
            return ClientTls(insecure=insecure)
        ca_file = self._path(raw["ca_file"])
        if insecure:
            self.add(
                (*path, "insecure"),
                "insecure: true turns off the verification that ca_file is for; give one of them",
            )
            return None
        context = self._trust((*path, "ca_file"), ca_file)
        return None if context is None else ClientTls(str(ca_file), context=context)

    def _trust(self, path: DocPath, ca_file: Path) -> ssl.SSLContext | None:
        """A client SSL context trusting the CA certificates (PEM) of `ca_file`."""
        try:
            pem = ca_file.read_bytes().decode("ascii", errors="replace")
        except OSError as exc:
            self.add(path, f"cannot read the CA file {ca_file}: {exc.strerror}")
            return None
        if "-----BEGIN CERTIFICATE-----" not in pem:
            self.add(path, f"the CA file {ca_file} holds no PEM certificate")
            return None
        try:
            return trusting(pem)
        except ssl.SSLError as exc:
            reason = exc.reason or str(exc)
            self.add(path, f"the CA file {ca_file} is not a valid PEM certificate ({reason})")
            return None

    def _retry(self, path: DocPath, raw: object, base: RetryPolicy) -> RetryPolicy | None:
        """A retry block over `base` (the top-level policy, for per-action overrides)."""
        if raw is None:
            return base
        if not isinstance(raw, dict) or not self.clean(path):
            return None
        policy = RetryPolicy(
            attempts=int(raw.get("attempts", base.attempts)),
            initial=self._seconds((*path, "initial"), raw.get("initial"), base.initial),
            max=self._seconds((*path, "max"), raw.get("max"), base.max),
        )
        if policy.max < policy.initial:
            self.add((*path, "max"), "must not be shorter than initial")
        return policy

    def _delivery(self, raw: dict[str, Any]) -> DeliveryConfig:
        default = DeliveryConfig()
        if not self.clean(("delivery",)):
            return default
        return DeliveryConfig(
            int(raw.get("max_pending_per_destination", default.max_pending_per_destination)),
            int(raw.get("concurrency_per_destination", default.concurrency_per_destination)),
            self._seconds(
                ("delivery", "give_up_after"), raw.get("give_up_after"), default.give_up_after
            ),
        )

    def _reload(self, raw: dict[str, Any]) -> ReloadConfig:
        default = ReloadConfig()
        if not self.clean(("reload",)):
            return default
        return ReloadConfig(self._seconds(("reload", "settle"), raw.get("settle"), default.settle))

    def _server(self, raw: dict[str, Any]) -> ServerConfig | None:
        if not self.clean(("server",)):
            return None
        listen = str(raw.get("listen", DEFAULT_LISTEN))
        host, _, port_text = listen.rpartition(":")
        host = host.strip("[]")
        port = int(port_text)
        if not 0 <= port <= 65535:
            self.add(("server", "listen"), f"port {port} is out of range (0-65535)")
            return None
        allow = bool(raw.get("allow_unauthenticated", False))
        tokens = self._tokens(raw.get("tokens_file"))
        if not _is_loopback(host) and not allow and not tokens:
            self.add(
                ("server", "listen"),
                f"listening on {host}, which is not a loopback address, exposes the event API "
                "without authentication; set server.tokens_file, or "
                "server.allow_unauthenticated: true to do it anyway",
            )
            return None
        tls = raw.get("tls")
        default = DEFAULT_SERVER
        return ServerConfig(
            host,
            port,
            allow,
            int(raw.get("max_body_bytes", DEFAULT_MAX_BODY)),
            tokens,
            (self._path(tls["cert"]), self._path(tls["key"])) if isinstance(tls, dict) else None,
            int(raw.get("queue_size", DEFAULT_QUEUE_SIZE)),
            header_timeout=self._seconds(
                ("server", "header_timeout"), raw.get("header_timeout"), default.header_timeout
            ),
            body_timeout=self._seconds(
                ("server", "body_timeout"), raw.get("body_timeout"), default.body_timeout
            ),
            idle_timeout=self._seconds(
                ("server", "idle_timeout"), raw.get("idle_timeout"), default.idle_timeout
            ),
            max_connections=int(raw.get("max_connections", default.max_connections)),
        )

    def _path(self, value: object) -> Path:
        path = Path(str(value))
        return path if path.is_absolute() else self.source.parent / path

    def _tokens(self, raw: object) -> tuple[Secret, ...]:
        """Bearer tokens, one per line (blank lines and # comments skipped)."""
        if raw is None:
            return ()
        path = self._path(raw)
        try:
            lines = path.read_text("utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
            self.add(("server", "tokens_file"), f"cannot read the tokens file {path} ({reason})")
            return ()
        tokens = tuple(
            Secret(f"token {n}", line.strip())
            for n, line in enumerate(lines, start=1)
            if line.strip() and not line.strip().startswith("#")
        )
        if not tokens:
            self.add(("server", "tokens_file"), f"the tokens file {path} holds no token")
        return tokens

    def _audit(self, raw: dict[str, Any], base: Path) -> AuditConfig | None:
        if not self.clean(("audit",)):
            return None
        return AuditConfig(
            base / str(raw.get("path", "audit.jsonl")), str(raw.get("fsync", "batch"))
        )

    def _event_types(self, raw: object) -> dict[str, EventType]:
        """`event_types:`: custom types with their message and attributes, and attributes
        added to built-in types (whose name, message and attributes' kinds stay), so that
        templates and matchers naming them are checked at load like the built-in ones."""
        declared: dict[str, EventType] = {}
        if not isinstance(raw, dict):
            return declared
        for name, spec in raw.items():
            path: DocPath = ("event_types", name)
            if not self.clean(path):
                continue
            attributes = {str(a): ANY for a in spec.get("attributes", [])}
            builtin = BUILTIN_TYPES.get(name)
            if builtin is not None:
                if "message" in spec:
                    self.add(
                        (*path, "message"),
                        f"{name} is a built-in event type and keeps its message; under "
                        "event_types: it only takes attributes: to add",
                        at_key=True,
                    )
                    continue
                known = builtin.attributes or {}
                added = {a: kind for a, kind in attributes.items() if a not in known}
                declared[name] = EventType(
                    name, builtin.event_name, builtin.message, {**known, **added}
                )
                continue
            message = self._template((*path, "message"), str(spec.get("message", "{type}")))
            event_type = EventType(
                name, readable_name(name), message or Template.parse("{type}"), attributes
            )
            if message is not None:
                self._check_fields((*path, "message"), message, [event_type])
            declared[name] = event_type
        return declared

    def _template(self, path: DocPath, text: str) -> Template | None:
        try:
            return Template.parse(text)
        except TemplateError as exc:
            self.add(path, f"template error at character {exc.offset + 1}: {exc.message}")
            return None

    def _automations(
        self, raw: object, resolver: EventTypeResolver
    ) -> tuple[Automation, ...] | None:
        if not isinstance(raw, list):
            return None
        built: list[Automation] = []
        names: dict[str, int] = {}
        ok = True
        for i, item in enumerate(raw):
            path: DocPath = ("automations", i)
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                ok = self._unique((*path, "name"), item["name"], names, "automation name") and ok
            automation = self._automation(path, item, resolver) if isinstance(item, dict) else None
            if automation is None:
                ok = False
            else:
                built.append(automation)
        return tuple(built) if ok else None

    def _automation(
        self, path: DocPath, raw: dict[str, Any], resolver: EventTypeResolver
    ) -> Automation | None:
        """Check every part the schema found sound; build the Automation if all of it is."""
        before = len(self.problems)
        on_raw = raw.get("on")
        types = None
        if on_raw is not None and self.clean((*path, "on")):
            types = self._event_types_of(path, on_raw, resolver)
        matchers: tuple[Matcher, ...] = ()
        if self.clean((*path, "match")):
            matchers = self._matchers((*path, "match"), raw.get("match"), types)
        condition = None
        when = raw.get("when")
        if isinstance(when, str) and self.clean((*path, "when")):
            try:
                parsed = jmespath.compile(when)
            except jmespath.exceptions.JMESPathError as exc:
                self.add((*path, "when"), f"invalid JMESPath condition: {_jmespath_message(exc)}")
            else:
                for name in sorted(_unknown_functions(parsed.parsed)):
                    hint = _suggest(name, JMESPATH_FUNCTIONS)
                    self.add((*path, "when"), f"unknown JMESPath function '{name}'{hint}")
                self._check_condition((*path, "when"), parsed, types)
                condition = compile_expression(parsed)
        cooldown = None
        spec = raw.get("cooldown")
        if isinstance(spec, dict) and self.clean((*path, "cooldown")):
            seconds = self._seconds((*path, "cooldown", "for"), spec["for"], 60.0)
            key = self._template((*path, "cooldown", "key"), str(spec.get("key", "")))
            if key is not None:
                self._check_fields((*path, "cooldown", "key"), key, types)
                cooldown = Cooldown(seconds, key)
        actions = []
        blocks = raw.get("actions")
        for j, block in enumerate(blocks if isinstance(blocks, list) else []):
            action_path = (*path, "actions", j)
            if isinstance(block, dict) and len(block) == 1:
                action = self._action(action_path, block, types)
                if action is not None:
                    actions.append(action)
        if len(self.problems) > before or not self.clean(path):
            return None
        where = self.doc.position(path)
        return Automation(
            name=raw["name"],
            on=(on_raw,) if isinstance(on_raw, str) else tuple(on_raw or ()),
            match=matchers,
            when=when,
            condition=condition,
            actions=tuple(actions),
            enabled=bool(raw.get("enabled", True)),
            description=str(raw.get("description", "")),
            line=where.line if where else 0,
            cooldown=cooldown,
        )

    def _event_types_of(
        self, path: DocPath, on: str | list[str], resolver: EventTypeResolver
    ) -> list[EventType] | None:
        """The types whose attributes templates must find; None when any attribute may come."""
        types: list[EventType] = []
        unrestricted = False
        for k, name in enumerate([on] if isinstance(on, str) else on):
            if is_glob(name):
                unrestricted = True
                continue
            known = resolver.known(name)
            if known is not None:
                types.append(known)
                continue
            near = difflib.get_close_matches(name, list(BUILTIN_TYPES), n=1, cutoff=0.85)
            if near:
                self.add(
                    (*path, "on") if isinstance(on, str) else (*path, "on", k),
                    f"unknown event type '{name}'; did you mean '{near[0]}'? "
                    "(declare it under event_types: if it is a custom type)",
                )
            unrestricted = True
        return None if unrestricted else types

    def _check_attribute(
        self, path: DocPath, attribute: str, types: list[EventType] | None, *, at_key: bool = False
    ) -> None:
        if types is None:
            return
        first = attribute.split(".", 1)[0]
        for event_type in types:
            if not event_type.provides(first):
                hint = _suggest(first, [*BASE_ATTRIBUTES, *(event_type.attributes or {})])
                message = f"'{first}' is not an attribute of {event_type.type} events{hint}"
                self.add(path, message, at_key=at_key)
                return

    def _check_fields(
        self, path: DocPath, template: Template, types: list[EventType] | None
    ) -> None:
        for template_field in template.fields():
            self._check_attribute(path, template_field.name, types)

    def _action(
        self, path: DocPath, block: dict[str, Any], types: list[EventType] | None
    ) -> Action | None:
        ((kind, options),) = block.items()
        options = options if isinstance(options, dict) else {}
        if kind not in PARSERS:
            return None  # the schema reported it
        for key, value in options.items():
            if key.endswith("_secret"):
                self._secret_ref((*path, kind, key), value)
        timeout = DEFAULT_TIMEOUT
        if self.clean((*path, kind, "timeout")):
            timeout = self._seconds((*path, kind, "timeout"), options.get("timeout"), timeout)
        retry = self._retry((*path, kind, "retry"), options.get("retry"), self.retry)
        give_up_after = self.give_up_after
        if self.clean((*path, kind, "give_up_after")):
            give_up_after = self._seconds(
                (*path, kind, "give_up_after"), options.get("give_up_after"), give_up_after
            )
        if not self.clean((*path, kind)):
            return None
        if kind == "email" and not self.has_smtp:
            self.add((*path, kind), "email actions need an smtp: block (host, from)", at_key=True)
        if kind in orchestrator.NEEDS:
            self._check_orchestrator((*path, kind), kind, options, types)
        spec: ActionSpec | None = None
        try:
            spec = PARSERS[kind](options)
            templates = list(spec.templates())
        except SpecProblems as exc:
            for sub, message in exc.problems:
                self.add((*path, kind, *sub), message)
            templates = exc.parsed
        for sub, template in templates:
            for template_field in template.fields():
                self._check_attribute((*path, kind, *sub), template_field.name, types)
        if isinstance(spec, webhook.WebhookAction) and "tls" in options:
            tls = self._client_tls((*path, kind, "tls"), options["tls"], self._naming(path, kind))
            spec = replace(spec, tls=tls)
        if spec is None or retry is None:
            return None
        return Action(spec, timeout, retry, give_up_after)

    def _naming(self, path: DocPath, kind: str) -> str:
        """How a log line names the action at `path`: its automation, index, kind and host."""
        data: Any = self.doc.data  # schema-checked: the automation and action at `path` exist
        automation = data["automations"][path[1]]
        url = str(automation["actions"][path[3]][kind].get("url", ""))
        return f"automation '{automation['name']}', action {path[3]} ({kind} to {host_of(url)})"

    def _check_orchestrator(
        self, path: DocPath, kind: str, options: dict[str, Any], types: list[EventType] | None
    ) -> None:
        """An orchestrator action needs the prefect: block and an id its events can carry."""
        if not self.has_prefect:
            self.add(path, f"{kind} actions need a prefect: block (api_url)", at_key=True)
        for attribute in orchestrator.NEEDS[kind]:
            if attribute in options:
                continue  # the action names its own (flow_group_id)
            for event_type in types or ():
                if not event_type.provides(attribute):
                    message = (
                        f"{kind} acts on the event's {attribute}, which {event_type.type} "
                        "events never carry"
                    )
                    if attribute == "flow_group_id":
                        message += " (or name the deployment: flow_group_id: ...)"
                    self.add(path, message, at_key=True)

    def _check_condition(
        self, path: DocPath, parsed: jmespath.parser.ParsedResult, types: list[EventType] | None
    ) -> None:
        """A condition reading an attribute its event types never carry reads null on every
        event, so it silently never (or always) fires: an error at load, like a template
        naming it, with the same hint. Keys inside the attribute are not checked."""
        for attribute in event_attributes(parsed):
            if "." not in attribute:  # a quoted "a.b" is one key; `_check_attribute` splits
                self._check_attribute(path, attribute, types)


def _is_http_url(value: str) -> bool:
    """An absolute http(s) URL with a host and no whitespace (Slack's and Teams' webhooks)."""
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(host) and not any(c.isspace() for c in value)


SECRET_SHAPES: Mapping[str, tuple[str, Callable[[str], bool]]] = {
    "webhook_url_secret": ("an http(s) URL", _is_http_url),
}
"""`*_secret` field -> what its secret's value must be, and the test of it."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


JMESPATH_FUNCTIONS = frozenset(jmespath.functions.Functions().FUNCTION_TABLE)


def _unknown_functions(node: object) -> set[str]:
    """Function names in a parsed JMESPath expression that JMESPath does not have."""
    unknown: set[str] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if not isinstance(current, dict):
            continue
        if (
            current.get("type") == "function_expression"
            and current.get("value") not in JMESPATH_FUNCTIONS
        ):
            unknown.add(str(current.get("value")))
        stack.extend(current.get("children", []))
    return unknown


def _jmespath_message(exc: jmespath.exceptions.JMESPathError) -> str:
    """What is wrong with a JMESPath expression, and at which character."""
    position = getattr(exc, "lex_position", None)
    if isinstance(exc, jmespath.exceptions.IncompleteExpressionError):
        what = "the expression ends too early"
    elif isinstance(exc, jmespath.exceptions.LexerError):
        what = str(getattr(exc, "message", "cannot read the expression"))
    elif isinstance(exc, jmespath.exceptions.ParseError):
        token = getattr(exc, "token_value", None)
        what = f"unexpected {token!r}" if token not in (None, "") else "cannot parse it"
    else:
        what = str(exc).splitlines()[0]
    if isinstance(position, int):
        what += f" (at character {position + 1})"
    return what
