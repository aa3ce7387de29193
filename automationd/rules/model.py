"""The rules as the daemon uses them: frozen objects, built once per load and never changed.

Everything a loaded rules file says lives here, the settings of the services actions call
(`RetryPolicy`, `ClientTls`, `Endpoints`, `SmtpSettings`, `PrefectSettings`) included, so the
rest of the daemon reads one model. Nothing here reads a file or checks a value: `build`
makes these objects from what the `checks` found sound, and `load` hands them out only when
every check passed.
"""

from __future__ import annotations

import random
import ssl
from collections.abc import Mapping
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from automationd.backoff import doubled, equal_jitter
from automationd.events import EventType, EventTypeResolver
from automationd.jmescompile import Compiled
from automationd.secrets import Secret
from automationd.templating import Template

if TYPE_CHECKING:
    from automationd.actions import Action

DEFAULT_LISTEN = "127.0.0.1:8787"
DEFAULT_MAX_BODY = 1024 * 1024
DEFAULT_QUEUE_SIZE = 10_000
DEFAULT_TIMEOUT = 10.0
"""Seconds one attempt of an action may take, unless its block says otherwise."""
DEFAULT_GIVE_UP_AFTER = 3600.0
"""Seconds one run of an action may live, unless `delivery:` or its block says otherwise."""
LONGEST_RETRY_AFTER = 3600.0


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
class RetryPolicy:
    """How often and how patiently an action is retried: exponential backoff with jitter."""

    attempts: int = 5
    initial: float = 1.0
    max: float = 300.0

    def delay(self, failed_attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait after attempt number `failed_attempt` (1-based) failed.

        The backoff doubles from `initial` up to `max`, with "equal jitter" (half fixed, half
        random) so that many actions failing together do not retry in lockstep. A
        destination's Retry-After is honoured when it asks for longer (up to an hour)."""
        backoff = equal_jitter(doubled(self.initial, failed_attempt - 1, self.max), rng)
        if retry_after is not None:
            return max(backoff, min(retry_after, LONGEST_RETRY_AFTER))
        return backoff


@dataclass(frozen=True)
class ClientTls:
    """How the certificate of an HTTPS destination is checked (`tls: {ca_file, insecure}`):
    against the CA certificates in `ca_file` instead of the system's, or (`insecure`) not
    at all. The rules build the SSL context once at load (reading the file is their job);
    it is kept out of the fields, so equality, repr and `dataclasses.asdict` (GET /rules
    shows the prefect: block) see only the settings."""

    ca_file: str | None = None
    insecure: bool = False
    context: InitVar[ssl.SSLContext | None] = None
    _context: ClassVar[ssl.SSLContext | None] = None  # set per instance by __post_init__

    def __post_init__(self, context: ssl.SSLContext | None) -> None:
        object.__setattr__(self, "_context", context)


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Base URLs of the services actions call; configurable for proxies and tests, with
    how their certificates are checked (`tls`)."""

    twilio: str = "https://api.twilio.com"
    pagerduty: str = "https://events.pagerduty.com"
    tls: ClientTls | None = None


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """The SMTP server email actions send through (the `smtp:` block)."""

    host: str
    sender: str
    port: int = 25
    starttls: bool = False
    username: str | None = None
    password_secret: str | None = None
    timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class PrefectSettings:
    """The Prefect server (the `prefect:` block): orchestrator actions call its REST API, and
    with `subscribe` its event stream is a source of flow run state changes."""

    api_url: str
    api_key_secret: str | None = None
    ui_url: str | None = None
    subscribe: bool = False
    tls: ClientTls | None = None

    def auth_headers(self, secrets: Mapping[str, Secret]) -> dict[str, str]:
        """`Authorization: Bearer <api key>` when an API key is configured."""
        if self.api_key_secret is None:
            return {}
        return {"Authorization": f"Bearer {secrets[self.api_key_secret].reveal()}"}


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
