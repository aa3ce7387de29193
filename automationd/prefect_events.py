"""Prefect as a live event source: flow run state changes from a Prefect server's event stream.

With `prefect: {subscribe: true}` the daemon connects to the server's websocket
`/events/out` (the "prefect" subprotocol: an `auth` message, then a `filter` for
`prefect.flow-run.*`) and turns every flow run state event into a `flow_run_state_change`
event, which takes the same path as one received over HTTP: journal, duplicate check by id
(the Prefect event id), audit, matching, SLAs.

Nothing is missed across a disconnection or a restart: the time of the last event handed
over is kept in the state store, and after every (re)connection the stream is opened first
and then the events since that time are read through `POST /events/filter`; events seen
twice (in both, or again after a crash) are dropped as duplicates by their id. The first
connection ever starts from now: the server's history is not replayed. Reconnections back
off exponentially with jitter, up to a minute.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from automationd.actions import client_ssl
from automationd.backoff import doubled, equal_jitter
from automationd.events import format_timestamp
from automationd.rules import PrefectSettings
from automationd.secrets import Secret
from automationd.store import JournalError
from automationd.templating import Template

log = logging.getLogger("automationd.prefect")

PREFIX = "prefect.flow-run."
PAGE_SIZE = 50
"""The most `POST /events/filter` gives per page."""
RUN_PATH = Template.parse("/flow_runs/{flow_run_id}")
"""Where a run is read; its id percent-encoded, and refused if it would change the path."""
FIRST_BACKOFF = 0.5
LONGEST_BACKOFF = 60.0
STEADY_AFTER = 30.0
"""A connection up this long (or one that delivered an event) had worked: the next outage
backs off from the first step again. One that drops sooner goes on backing off, so a server
that accepts and then drops each connection is not hammered."""
REMEMBERED_IDS = 10_000
POSITION_EVERY = 1.0
CATCH_UP_MARGIN = timedelta(minutes=1)

Ingest = Callable[[list[dict[str, object]]], Awaitable[None]]
"""Hands events to the engine; returns once they are durable (journaled)."""


class SubscriptionError(Exception):
    """The server refused or broke the subscription."""


def _related(event: Mapping[str, Any], role: str) -> tuple[str, str]:
    """(id, name) of the related resource with `role` (flow, deployment, work-pool,
    work-queue), else empty."""
    for resource in event.get("related") or ():
        if isinstance(resource, dict) and resource.get("prefect.resource.role") == role:
            rid = str(resource.get("prefect.resource.id", ""))
            return rid.removeprefix(f"prefect.{role}."), str(
                resource.get("prefect.resource.name", "")
            )
    return "", ""


def _tags(event: Mapping[str, Any]) -> list[str]:
    """The run's tags: Prefect relates each as a resource `prefect.tag.NAME` with the role
    `tag` (the run's own together with its flow's and deployment's, as its automations see
    them), sorted and once each."""
    tags = {
        str(resource["prefect.resource.id"]).removeprefix("prefect.tag.")
        for resource in event.get("related") or ()
        if isinstance(resource, dict)
        and resource.get("prefect.resource.role") == "tag"
        and str(resource.get("prefect.resource.id", "")).startswith("prefect.tag.")
    }
    return sorted(tags)


def flow_run_event(raw: Mapping[str, Any], ui_url: str | None) -> dict[str, object] | None:
    """The `flow_run_state_change` event of one Prefect flow run state event; None for any
    other Prefect event."""
    name = raw.get("event")
    resource = raw.get("resource")
    if not isinstance(name, str) or not name.startswith(PREFIX) or not isinstance(resource, dict):
        return None
    run_id = str(resource.get("prefect.resource.id", "")).removeprefix(PREFIX)
    state = resource.get("prefect.state-name")
    if not run_id or not isinstance(state, str):
        return None
    flow_id, flow_name = _related(raw, "flow")
    deployment_id, deployment_name = _related(raw, "deployment")
    _, work_pool_name = _related(raw, "work-pool")
    _, work_queue_name = _related(raw, "work-queue")
    ui = (ui_url or "").rstrip("/")
    event: dict[str, object] = {
        "id": str(raw.get("id")),
        "type": "flow_run_state_change",
        "timestamp": raw.get("occurred"),
        "flow_run_id": run_id,
        "flow_run_name": str(resource.get("prefect.resource.name", "")),
        "flow_id": flow_id,
        "flow_name": flow_name,
        "flow_group_id": deployment_id,
        "state": state,
        "state_type": str(resource.get("prefect.state-type", "")),
        "state_message": str(resource.get("prefect.state-message", "")),
        "flow_link": f"{ui}/flows/flow/{flow_id}" if ui and flow_id else "",
        "flow_run_link": f"{ui}/runs/flow-run/{run_id}" if ui else "",
        "tags": _tags(raw),
        "deployment_id": deployment_id,
        "deployment_name": deployment_name,
        "work_pool_name": work_pool_name,
        "work_queue_name": work_queue_name,
        "tenant_id": "",
        "tenant_slug": "",
    }
    return event


def _parse(stamp: str) -> datetime:
    value = datetime.fromisoformat(stamp)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class PrefectSubscription:
    """One subscription to a Prefect server's flow run events, kept up until stopped."""

    def __init__(
        self,
        settings: PrefectSettings,
        secrets: Mapping[str, Secret],
        http: aiohttp.ClientSession,
        ingest: Ingest,
        position: tuple[Callable[[], str | None], Callable[[str], None]],
    ) -> None:
        self.settings = settings
        self._secrets = secrets
        self._http = http
        self._ingest = ingest
        self._load_position, self._save_position = position
        self.state = "connecting"
        self.error: str | None = None
        self.connected_since: str | None = None
        self._up_at: float | None = None  # loop time the current connection came up
        self._delivered = False  # whether the current connection has delivered an event
        self.last_event: str | None = None
        self.received = 0
        self.reconnects = 0
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._position: str | None = None
        self._position_saved = 0.0
        self._task: asyncio.Task[None] | None = None
        self.rng = random.Random()

    def start(self) -> None:
        self._position = self._load_position()
        self._task = asyncio.create_task(self._run_forever(), name="automationd-prefect")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._store_position(force=True)
        self.state = "stopped"

    def status(self) -> dict[str, object]:
        """For /readyz and the metrics: the subscription's state and what it last saw."""
        return {
            "state": self.state,
            "api_url": self.settings.api_url,
            "connected_since": self.connected_since,
            "last_event": self.last_event,
            "events_received": self.received,
            "reconnects": self.reconnects,
            "error": self.error,
        }

    def _headers(self) -> dict[str, str]:
        return self.settings.auth_headers(self._secrets)

    def _token(self) -> str | None:
        key = self.settings.api_key_secret
        return self._secrets[key].reveal() if key else None

    async def _run_forever(self) -> None:
        failures = 0
        while True:
            try:
                await self._subscribe_once()
                # a clean close by the server: at once if the connection had worked
                failures = 0 if self._worked() else failures + 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever broke, the stream is tried again
                if self._worked():
                    failures = 0  # it had worked: this outage backs off from the first step
                failures += 1
                error, self.error = self.error, str(exc) or type(exc).__name__
                expected = (
                    aiohttp.ClientError,
                    OSError,
                    SubscriptionError,
                    ValueError,
                    JournalError,  # the journal or the audit trail cannot be written now
                )
                if not isinstance(exc, expected):
                    log.exception("Prefect event stream %s failed", self.settings.api_url)
                elif self.state == "connected" or self.error != error:  # not every retry
                    log.warning(
                        "Prefect event stream %s: %s; reconnecting", self.settings.api_url, exc
                    )
            self.state = "disconnected"
            self.connected_since = None
            self._up_at = None
            self.reconnects += 1
            # the exponent stops growing past the cap (2.0 ** 1024 would overflow)
            base = doubled(FIRST_BACKOFF, min(max(0, failures - 1), 16), LONGEST_BACKOFF)
            await asyncio.sleep(equal_jitter(base, self.rng))

    def _worked(self) -> bool:
        """Whether the connection that just ended had worked: it delivered an event, or it
        stayed up for STEADY_AFTER seconds."""
        if self._up_at is None:
            return False
        return self._delivered or asyncio.get_running_loop().time() - self._up_at >= STEADY_AFTER

    async def _subscribe_once(self) -> None:
        self.state = "connecting"
        url = self.settings.api_url.replace("http", "ws", 1) + "/events/out"
        async with self._http.ws_connect(
            url,
            protocols=("prefect",),
            headers=self._headers(),
            heartbeat=30,
            ssl=client_ssl(self.settings.tls),
        ) as socket:
            await socket.send_json({"type": "auth", "token": self._token()})
            answer = await socket.receive(timeout=30)
            if answer.type != aiohttp.WSMsgType.TEXT:
                raise SubscriptionError(f"the server closed the stream: {socket.close_code}")
            greeting = json.loads(answer.data)
            if greeting.get("type") != "auth_success":
                reason = greeting.get("reason") or answer.data
                raise SubscriptionError(f"authentication failed: {reason}")
            now = datetime.now(UTC)
            await socket.send_json(
                {
                    "type": "filter",
                    "backfill": False,
                    "filter": {
                        "event": {"prefix": [PREFIX]},
                        "occurred": {
                            "since": format_timestamp(now - timedelta(minutes=1)),
                            "until": format_timestamp(now + timedelta(days=3650)),
                        },
                    },
                }
            )
            # subscribed first, then catch up: what happens meanwhile is in both, and the
            # duplicate check drops the second copy
            await self._catch_up(now)
            self.state = "connected"
            self.error = None
            self.connected_since = format_timestamp(datetime.now(UTC))
            self._up_at, self._delivered = asyncio.get_running_loop().time(), False
            log.info("subscribed to Prefect events at %s", self.settings.api_url)
            async for message in socket:
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                data = json.loads(message.data)
                if data.get("type") == "event" and isinstance(data.get("event"), dict):
                    self._delivered = True
                    await self._hand_over([data["event"]])
            if socket.close_code not in (None, aiohttp.WSCloseCode.OK):
                raise SubscriptionError(f"the server closed the stream ({socket.close_code})")

    async def _catch_up(self, now: datetime) -> None:
        """Read the events since the last one handed over, page by page, oldest first."""
        if self._position is None:  # the first connection ever: from now on
            self._position = format_timestamp(now)
            self._store_position(force=True)
            return
        # events reach the server out of order by up to their senders' clock skew: look back
        since = format_timestamp(_parse(self._position) - CATCH_UP_MARGIN)
        body = {
            "filter": {
                "event": {"prefix": [PREFIX]},
                "occurred": {"since": since, "until": format_timestamp(now + timedelta(days=1))},
                "order": "ASC",
            },
            "limit": PAGE_SIZE,
        }
        request = self._http.post(
            self.settings.api_url + "/events/filter",
            json=body,
            headers=self._headers(),
            ssl=client_ssl(self.settings.tls),
        )
        caught = 0
        while True:
            async with request as response:
                if response.status != 200:
                    text = (await response.text())[:200]
                    raise SubscriptionError(f"catching up failed: {response.status} {text}")
                page = await response.json()
            events = [e for e in page.get("events") or () if isinstance(e, dict)]
            caught += await self._hand_over(events)
            next_page = page.get("next_page")
            if not isinstance(next_page, str) or not events:
                break
            request = self._http.get(
                next_page, headers=self._headers(), ssl=client_ssl(self.settings.tls)
            )
        if caught:
            log.info("caught up on %d Prefect events since %s", caught, since)

    async def _hand_over(self, raw_events: list[dict[str, Any]]) -> int:
        """Ingest the flow run state events not seen yet; how many."""
        events = []
        for raw in raw_events:
            event_id = str(raw.get("id"))
            if event_id in self._seen:
                continue
            event = flow_run_event(raw, self.settings.ui_url)
            if event is None:
                continue
            if event["state_type"] == "SCHEDULED":
                event["scheduled_start_time"] = await self._scheduled_time(event)
            events.append(event)
        if not events:
            return 0
        # shielded: a stop or reload cancelling the subscription meanwhile must not leave
        # the events journaled but never queued; the next catch-up sees them as duplicates
        await asyncio.shield(self._ingest(events))
        for event in events:
            self._seen[str(event["id"])] = None
            if len(self._seen) > REMEMBERED_IDS:
                self._seen.popitem(last=False)
        self.received += len(events)
        self.last_event = str(events[-1]["timestamp"])
        latest = max(_parse(str(e["timestamp"])) for e in events)
        if self._position is None or latest > _parse(self._position):
            self._position = format_timestamp(latest)
        self._store_position()
        return len(events)

    async def _scheduled_time(self, event: dict[str, object]) -> object:
        """When a Scheduled (or Late) run is due to start: the run's scheduled time, which the
        state event does not carry; the event's time if the server cannot tell."""
        try:
            url = self.settings.api_url + RUN_PATH.render_url(event)
            async with self._http.get(
                url, headers=self._headers(), ssl=client_ssl(self.settings.tls)
            ) as response:
                run = await response.json() if response.status == 200 else {}
        except (aiohttp.ClientError, ValueError) as exc:  # UnsafeUrl is a ValueError
            log.warning("cannot read flow run %s: %s", event["flow_run_id"], exc)
            run = {}
        state = run.get("state") if isinstance(run, dict) else None
        details = state.get("state_details") if isinstance(state, dict) else None
        for value in (
            details.get("scheduled_time") if isinstance(details, dict) else None,
            run.get("expected_start_time") if isinstance(run, dict) else None,
        ):
            if isinstance(value, str) and value:
                return value
        return event["timestamp"]

    def _store_position(self, *, force: bool = False) -> None:
        if self._position is None:
            return
        now = time.monotonic()
        if force or now - self._position_saved >= POSITION_EVERY:
            self._save_position(self._position)
            self._position_saved = now
