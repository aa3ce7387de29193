"""Prometheus metrics of one daemon, in a registry of its own (no process-global state).

Event types come from clients, so the `type` label only takes the types the rules know
(built-in, declared, or named in an automation's `on:`); anything else counts as `other`,
which keeps the number of series bounded whatever is sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series only add noise

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class OptionalGauge(Collector):
    """A gauge read when scraped that has no sample while its function answers None: for
    something that may not be set up at all (a Prefect subscription), where a 0 would read
    as "down" to an alert on 0."""

    def __init__(self, name: str, documentation: str, *, registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.function: Callable[[], float | None] = lambda: None
        registry.register(self)

    def set_function(self, function: Callable[[], float | None]) -> None:
        self.function = function

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(self.name, self.documentation)]

    def collect(self) -> Iterable[Metric]:
        value = self.function()
        if value is None:
            return []
        return [GaugeMetricFamily(self.name, self.documentation, value=value)]


class Metrics:
    """The daemon's counters, gauges and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events_received = Counter(
            "automationd_events_received", "Events accepted, by type.", ["type"], registry=r
        )
        self.events_rejected = Counter(
            "automationd_events_rejected",
            "Requests or events refused, by reason.",
            ["reason"],
            registry=r,
        )
        self.automations_matched = Counter(
            "automationd_automations_matched",
            "Automations that fired, by automation.",
            ["automation"],
            registry=r,
        )
        self.automations_suppressed = Counter(
            "automationd_automations_suppressed",
            "Firings held back by a cooldown, by automation.",
            ["automation"],
            registry=r,
        )
        self.actions = Counter(
            "automationd_actions",
            "Actions finished, by kind and outcome (succeeded, failed).",
            ["kind", "outcome"],
            registry=r,
        )
        self.attempts = Counter(
            "automationd_action_attempts",
            "Action attempts, by kind and outcome (ok, failed).",
            ["kind", "outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "automationd_action_latency_seconds",
            "Time of one action attempt, by kind.",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.sla_failures = Counter(
            "automationd_sla_failures",
            "SLA failure events emitted, by type.",
            ["type"],
            registry=r,
        )
        self.reload_successful = Gauge(
            "automationd_config_last_reload_successful",
            "1 when the last load of the rules succeeded, else 0.",
            registry=r,
        )
        self.reload_timestamp = Gauge(
            "automationd_config_last_reload_timestamp_seconds",
            "When the rules were last loaded successfully (Unix time).",
            registry=r,
        )
        self.journal_commits = Counter(
            "automationd_journal_commits",
            "Journal commits (each one fsync), each covering one or more requests.",
            registry=r,
        )
        self.journal_events = Counter(
            "automationd_journal_events", "Events written to the journal.", registry=r
        )
        self.queue_depth = Gauge(
            "automationd_queue_depth", "Events accepted but not yet matched.", registry=r
        )
        self.actions_pending = Gauge(
            "automationd_actions_pending",
            "Actions admitted at a destination and not yet finished (waiting for a slot, "
            "in an attempt or backing off), by destination.",
            ["destination"],
            registry=r,
        )
        self._pending: dict[str, Gauge] = {}
        self.connections_open = Gauge(
            "automationd_connections_open",
            "Client connections open (TLS handshakes under way included).",
            registry=r,
        )
        self.connections_closed = Counter(
            "automationd_connections_closed",
            "Client connections the daemon closed itself, by reason: refused (past "
            "server.max_connections), header_timeout (no whole request line and headers in "
            "time).",
            ["reason"],
            registry=r,
        )
        self.deadlines_armed = Gauge(
            "automationd_sla_deadlines_armed", "SLA deadlines armed.", registry=r
        )
        self.prefect_up = OptionalGauge(
            "automationd_prefect_subscription_up",
            "1 while subscribed to the Prefect server's event stream, 0 while the subscription "
            "is down; no sample without a subscription.",
            registry=r,
        )
        self.prefect_events = Counter(
            "automationd_prefect_events",
            "Flow run state events taken from the Prefect server (stream and catch-up).",
            registry=r,
        )
        self._known_types: frozenset[str] = frozenset()
        self._received: dict[str, Counter] = {}

    def know_types(self, types: Iterable[str]) -> None:
        """The event types that get their own `type` label value."""
        self._known_types = frozenset(types)
        self._received = {}

    def received(self, event_type: str) -> None:
        """Count one accepted event (its labelled counter found once per type, not per
        event: `labels()` takes a lock and builds a key each time)."""
        counter = self._received.get(event_type)
        if counter is None:
            counter = self.events_received.labels(self.type_label(event_type))
            if len(self._received) < 10_000:  # type names come from senders
                self._received[event_type] = counter
        counter.inc()

    def pending_changed(self, destination: str, pending: int) -> None:
        """Set the pending actions of one destination (its labelled gauge found once)."""
        gauge = self._pending.get(destination)
        if gauge is None:
            gauge = self._pending[destination] = self.actions_pending.labels(destination)
        gauge.set(pending)

    def connection_closed(self, reason: str) -> None:
        """Count a connection the daemon closed itself."""
        self.connections_closed.labels(reason).inc()

    def type_label(self, event_type: str) -> str:
        return event_type if event_type in self._known_types else "other"

    def watch(
        self,
        queue_depth: Callable[[], float],
        deadlines: Callable[[], float],
        prefect_up: Callable[[], float | None],
    ) -> None:
        """Gauges read when scraped; `prefect_up` answers None when there is no
        subscription, and its gauge then has no sample."""
        self.queue_depth.set_function(queue_depth)
        self.deadlines_armed.set_function(deadlines)
        self.prefect_up.set_function(prefect_up)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
