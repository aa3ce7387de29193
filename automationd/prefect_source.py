"""The Prefect subscription's life in the daemon: started when the rules ask for it
(`prefect: {subscribe: true}`), stopped at the end, started anew when a reload changes
`prefect:` or the secrets; its events accepted like a batch from HTTP, its position kept in
the store for the catch-up after a restart. The subscription itself is prefect_events.py.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import aiohttp

from automationd.audit import AuditLog
from automationd.events import EventError
from automationd.metrics import Metrics
from automationd.prefect_events import PrefectSubscription
from automationd.rules import Config
from automationd.store import Store, StoreError

log = logging.getLogger("automationd.engine")
"""The engine's logger: these lines were the engine's, and keep their logger name."""

Accept = Callable[[list[dict[str, object]], bool], Awaitable[object]]
"""Accepts events (and whether they are a batch) from Prefect; raises EventError for an
event the contract refuses, JournalError when they could not be made durable."""


class PrefectSource:
    """The subscription of the live rules, if they ask for one."""

    def __init__(self, *, audit: AuditLog, metrics: Metrics, store: Store, accept: Accept) -> None:
        self.audit = audit
        self.metrics = metrics
        self.store = store
        self.accept = accept
        self.subscription: PrefectSubscription | None = None

    def start(self, config: Config, http: aiohttp.ClientSession | None) -> None:
        """Follow the Prefect server's flow run events when `prefect: {subscribe: true}`
        (with `http`, the engine's client, open by then)."""
        self.subscription = None
        if config.prefect is None or not config.prefect.subscribe:
            return
        assert http is not None
        self.subscription = PrefectSubscription(
            config.prefect,
            config.secrets,
            http,
            self._ingest,
            (self.store.prefect_position, self._save_position),
        )
        self.subscription.start()

    async def stop(self) -> None:
        """Stop following (the position is kept)."""
        if self.subscription is not None:
            await self.subscription.stop()

    def connected(self) -> float | None:
        """For the metrics: 1.0 while connected, 0.0 when not, None without a subscription."""
        if self.subscription is None:
            return None
        return float(self.subscription.state == "connected")

    def _save_position(self, stamp: str) -> None:
        try:
            self.store.set_prefect_position(stamp)
        except StoreError as exc:  # the catch-up after a restart starts earlier, no loss
            log.error("cannot keep the Prefect event position: %s", exc)

    async def _ingest(self, events: list[dict[str, object]]) -> None:
        """Accept events from the Prefect server like a batch from HTTP. One the contract
        refuses is logged and audited and the rest go on; a journal failure propagates, so
        the subscription reconnects and catches up from before them."""
        self.metrics.prefect_events.inc(len(events))
        try:
            await self.accept(events, True)
            return
        except EventError:
            pass
        for event in events:
            try:
                await self.accept([event], False)
            except EventError as exc:
                log.error("Prefect event %s refused: %s", event.get("id"), exc.message)
                self.metrics.events_rejected.labels("invalid_event").inc()
                self.audit.write(
                    "event.rejected", source="prefect", event_id=event.get("id"), error=exc.message
                )
