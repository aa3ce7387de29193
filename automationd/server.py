"""The HTTP API: handlers only parse, hand events to the engine, and answer.

Every error is a JSON body `{"error": ..., "field": ...}` with a 4xx status; nothing a client
sends can produce a 500 (a bug still would, logged with its traceback, as a JSON 500).
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime

from aiohttp import web

from automationd import __version__, jsontext
from automationd.audit import AuditUnwritable
from automationd.connections import (
    BodyTimeout,
    body_timed_out,
    client_went_away,
    connection_of,
    read_body,
)
from automationd.engine import Engine
from automationd.events import EventError, format_timestamp, parse_timestamp
from automationd.explain import explain
from automationd.intake import Busy
from automationd.metrics import CONTENT_TYPE
from automationd.openapi import OPENAPI
from automationd.store import JournalError, LetterFilter
from automationd.wire import cloudevent_from_headers, from_cloudevent, parse_json, split_batch

log = logging.getLogger("automationd.server")

ENGINE = web.AppKey("engine", Engine)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, message: str, field: str | None = None, **extra: object) -> web.Response:
    """The JSON error answer every endpoint gives."""
    return web.json_response({"error": message, "field": field, **extra}, status=status)


OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})
"""Probes and scrapers need no token."""


@web.middleware
async def bearer_tokens(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With server.tokens_file, every path but the probes needs `Authorization: Bearer`."""
    tokens = request.app[ENGINE].config.server.tokens
    if not tokens or request.path in OPEN_PATHS:
        return await handler(request)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    offered = given.strip().encode()
    # compare with every token, always, in constant time: no early exit to time
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(offered, token.reveal().encode())
    if scheme.lower() == "bearer" and matched:
        return await handler(request)
    response = error(401, "a valid bearer token is required (Authorization: Bearer ...)", None)
    response.headers["WWW-Authenticate"] = 'Bearer realm="automationd"'
    return response


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn aiohttp's own HTTP errors (404, 405, 413) and bugs into JSON answers; and tell the
    request's connection when its headers are complete (the handler runs) and when it was
    answered, which stops its header deadline until the next request's first byte. One
    middleware for both: each layer costs every request."""
    connection = connection_of(request)
    if connection is not None:
        connection.request_started()
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error(exc.status, exc.reason)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error(500, "internal error; the daemon logged the details")
    finally:
        if connection is not None:
            connection.request_finished()


def create_app(engine: Engine) -> web.Application:
    """The aiohttp application serving `engine`; starting it starts the engine."""
    app = web.Application(
        client_max_size=engine.config.server.max_body_bytes,
        middlewares=[json_errors, bearer_tokens],
    )
    app[ENGINE] = engine
    app.router.add_post("/events", post_events)
    app.router.add_get("/healthz", get_healthz)
    app.router.add_get("/slas", get_slas)
    app.router.add_get("/readyz", get_readyz)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/rules", get_rules)
    app.router.add_post("/reload", post_reload)
    app.router.add_get("/dead-letters", get_dead_letters)
    app.router.add_delete("/dead-letters", delete_dead_letters)
    app.router.add_delete("/dead-letters/{id}", delete_dead_letter)
    app.router.add_post("/dead-letters/{id}/retry", post_dead_letter_retry)
    app.router.add_get("/openapi.json", get_openapi)
    app.router.add_post("/explain", post_explain)
    app.cleanup_ctx.append(engine_lifecycle)
    return app


async def engine_lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Start the engine with the app, stop it (draining actions) when the app stops."""
    await app[ENGINE].start()
    yield
    await app[ENGINE].stop()


def _too_large(limit: int) -> web.Response:
    return error(413, f"the body is larger than server.max_body_bytes ({limit} bytes)")


async def post_events(request: web.Request) -> web.Response:
    """Accept one event object or an array of them; 202 with their ids."""
    engine = request.app[ENGINE]
    rejected = engine.metrics.events_rejected
    limit = engine.config.server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        rejected.labels("too_large").inc()
        return _too_large(limit)
    try:
        body = await read_body(request, engine.config.server.body_timeout)
    except web.HTTPRequestEntityTooLarge:
        rejected.labels("too_large").inc()
        return _too_large(limit)
    except BodyTimeout as exc:
        rejected.labels("body_timeout").inc()
        return await body_timed_out(request, exc)
    except ConnectionError:
        return client_went_away(request)
    try:
        events, batch = _events_of(request, body)
    except EventError as exc:
        rejected.labels("malformed_body").inc()
        extra = {} if exc.index is None else {"index": exc.index}
        return error(400, exc.message, exc.field, **extra)
    try:
        ingested = await engine.ingest(events, batch=batch)
    except EventError as exc:
        rejected.labels("invalid_event").inc(len(events))  # one bad event refuses its batch
        extra = {} if exc.index is None else {"index": exc.index}
        return error(400, exc.message, exc.field, **extra)
    except Busy as exc:
        rejected.labels("queue_full").inc(exc.events)
        response = error(429, "the queue is full; retry later", None)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except JournalError as exc:
        # AuditUnwritable is one too: no event is taken that the audit trail could not record
        rejected.labels(exc.reason).inc(len(events))
        if isinstance(exc, AuditUnwritable):
            return error(503, f"the events were not accepted: {exc}; retry later", None)
        return error(503, f"the events could not be made durable: {exc}", None)
    answer: dict[str, object] = {"accepted": ingested.ids}
    if ingested.duplicates:
        answer["duplicates"] = ingested.duplicates
        answer["duplicate"] = len(ingested.duplicates) == len(ingested.ids)
    return web.Response(text=jsontext.dumps(answer), status=202, content_type="application/json")


def _events_of(request: web.Request, body: bytes) -> tuple[list[object], bool]:
    """The events of a request: plain JSON, or CloudEvents in structured, batched or binary
    mode. Raises EventError naming what is wrong."""
    content_type = request.content_type
    if content_type == "application/cloudevents+json":
        return [from_cloudevent(parse_json(body))], False
    if content_type == "application/cloudevents-batch+json":
        value = parse_json(body)
        if not isinstance(value, list):
            raise EventError("a CloudEvents batch must be a JSON array")
        items, _ = split_batch(value)
        events: list[object] = []
        for i, item in enumerate(items):
            try:
                events.append(from_cloudevent(item))
            except EventError as exc:
                raise exc.in_batch(i, "CloudEvent") from None
        return events, True
    if any(name.lower().startswith("ce-") for name in request.headers):
        declared = request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        return [cloudevent_from_headers(request.headers, body, declared)], False
    return split_batch(parse_json(body))


async def get_healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.json_response({"status": "ok", "version": __version__})


async def get_slas(request: web.Request) -> web.Response:
    """Armed flow SLA deadlines (soonest first) and the health of each agent SLA."""
    return web.json_response(request.app[ENGINE].triggers.listing())


async def get_readyz(request: web.Request) -> web.Response:
    """Readiness: 200 only when the rules are loaded, the port bound, audit and state writable.
    The Prefect subscription's state and destinations backing up are shown, not checked:
    events are still accepted then (the subscription catches up on what it missed when it is
    back; actions beyond a destination's backlog become dead letters), and a daemon taken out
    of a load balancer would not make a dead destination answer."""
    engine = request.app[ENGINE]
    checks = engine.readiness()
    ready = all(checks.values())
    body: dict[str, object] = {"ready": ready, "checks": checks}
    backing_up = engine.destinations.backing_up(engine.config.delivery.max_pending_per_destination)
    if backing_up:
        body["destinations_backing_up"] = backing_up
    if engine.prefect.subscription is not None:
        body["prefect"] = engine.prefect.subscription.status()
    return web.json_response(body, status=200 if ready else 503)


async def get_metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    body = request.app[ENGINE].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def get_rules(request: web.Request) -> web.Response:
    """The active rules (no secret values), their sha256 and the last reload attempt. A
    cooldown shows its period and key template (null: one cooldown for all its events)."""
    engine = request.app[ENGINE]
    config = engine.config
    return web.json_response(
        {
            "source": str(config.source),
            "sha256": config.sha256,
            "loaded_at": engine.reloader.loaded_at,
            "automations": [
                {
                    "name": a.name,
                    "on": list(a.on),
                    "enabled": a.enabled,
                    "match": [m.attribute for m in a.match],
                    "when": a.when,
                    "actions": [{"kind": x.kind, "describe": x.spec.describe()} for x in a.actions],
                    "cooldown": (
                        {"for_seconds": a.cooldown.seconds, "key": a.cooldown.key.source or None}
                        if a.cooldown is not None
                        else None
                    ),
                }
                for a in config.automations
            ],
            "flow_slas": [
                {"id": s.id, "kind": s.kind, "duration_seconds": s.duration}
                for s in config.flow_slas
            ],
            "agent_slas": [
                {
                    "agent_config_id": s.agent_config_id,
                    "min_healthy": s.min_healthy,
                    "window_seconds": s.window,
                }
                for s in config.agent_slas
            ],
            "secrets": sorted(config.secrets),
            "prefect": dataclasses.asdict(config.prefect) if config.prefect else None,
            "last_reload": engine.reloader.last.as_json(),
        }
    )


async def post_reload(request: web.Request) -> web.Response:
    """Reload the rules now; the outcome as JSON (422 when the file was rejected)."""
    outcome = await request.app[ENGINE].reload("POST /reload")
    return web.json_response(
        outcome.as_json(), status=422 if outcome.outcome == "rejected" else 200
    )


DEAD_LETTER_PAGE = 1000
"""Dead letters in one answer unless `limit` says otherwise (at most MAX_DEAD_LETTER_PAGE):
a dead destination can leave hundreds of thousands, too many to hold in memory at once."""
MAX_DEAD_LETTER_PAGE = 10_000


async def get_dead_letters(request: web.Request) -> web.Response:
    """Actions that failed for good, oldest first, a page at a time: `after` (an id) and
    `limit`; `next_after` is there when more follow. `automation` (a glob), `action` (a
    kind) and `before` (RFC 3339) select; `total` counts the selected."""
    store = request.app[ENGINE].store
    query = request.query
    try:
        after = _bounded_int(query.get("after", "0"), "after", 0, 2**63 - 1)
        limit = _bounded_int(
            query.get("limit", str(DEAD_LETTER_PAGE)), "limit", 1, MAX_DEAD_LETTER_PAGE
        )
        which = _letter_filter(query)
    except EventError as exc:
        return error(400, exc.message, exc.field)
    letters = store.dead_letters(which, after=after, limit=limit + 1)
    for letter in letters:  # RFC 3339, as every time the daemon shows
        letter["failed_at"] = format_timestamp(
            datetime.fromtimestamp(float(str(letter["failed_at"])), UTC)
        )
    answer: dict[str, object] = {
        "dead_letters": letters[:limit],
        "total": store.count_dead_letters(which),
    }
    if len(letters) > limit:
        answer["next_after"] = letters[limit - 1]["id"]
    return web.json_response(answer)


async def delete_dead_letters(request: web.Request) -> web.Response:
    """Drop every dead letter the filter selects (`automation`, `action`, `before`), or all
    of them with `all=true`; a filter or `all=true` is required, so a bare DELETE cannot
    empty the list by mistake."""
    query = request.query
    try:
        which = _letter_filter(query)
        everything = query.get("all", "false")
        if everything not in ("true", "false"):
            raise EventError("'all' must be true or false", "all")
    except EventError as exc:
        return error(400, exc.message, exc.field)
    if which == LetterFilter() and everything != "true":
        return error(
            400, "give a filter (automation, action, before) or all=true to drop them all", None
        )
    dropped = await request.app[ENGINE].progress.drop_dead_letters(which)
    return web.json_response({"dropped": dropped})


async def delete_dead_letter(request: web.Request) -> web.Response:
    """Drop one dead letter; 404 for an unknown id."""
    raw = request.match_info["id"]
    if not raw.isdigit() or len(raw) > 18:  # SQLite integers are 64-bit
        return error(404, f"no dead letter {raw}", "id")
    dropped = await request.app[ENGINE].progress.drop_dead_letters(LetterFilter(ids=(int(raw),)))
    if not dropped:
        return error(404, f"no dead letter {raw}", "id")
    return web.json_response({"dropped": dropped})


def _letter_filter(query: Mapping[str, str]) -> LetterFilter:
    """Which dead letters the query parameters select; EventError naming a bad one."""
    before = None
    if "before" in query:
        try:
            before = parse_timestamp(query["before"]).timestamp()
        except ValueError as exc:
            raise EventError(f"'before' is not an RFC 3339 time: {exc}", "before") from None
    return LetterFilter(
        automation=query.get("automation") or None,
        action=query.get("action") or None,
        before=before,
    )


def _bounded_int(text: str, name: str, lowest: int, highest: int) -> int:
    """A query parameter that must be a whole number within bounds; EventError naming it."""
    if not text.isdigit() or not lowest <= int(text) <= highest:
        raise EventError(f"'{name}' must be a whole number from {lowest} to {highest}", name)
    return int(text)


async def post_dead_letter_retry(request: web.Request) -> web.Response:
    """Run a dead letter's action again; 202, or 404 for an unknown id, 409 when its
    automation is gone."""
    raw = request.match_info["id"]
    if not raw.isdigit() or len(raw) > 18:  # SQLite integers are 64-bit
        return error(404, f"no dead letter {raw}", "id")
    outcome = await request.app[ENGINE].progress.retry_dead_letter(int(raw))
    if outcome is None:
        return error(404, f"no dead letter {raw}", "id")
    if outcome.refused is not None:
        return error(409, outcome.refused, "id")
    return web.json_response({"retrying": int(raw)}, status=202)


async def get_openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 description of this API."""
    return web.json_response(OPENAPI)


async def post_explain(request: web.Request) -> web.Response:
    """What the live rules would do with one event (or each of a batch), without acting."""
    engine = request.app[ENGINE]
    try:
        body = await read_body(request, engine.config.server.body_timeout)
        events, batch = split_batch(parse_json(body))
        now = engine.clock()
        answers = [explain(engine.config, raw, now, engine.cooldowns.left) for raw in events]
    except EventError as exc:
        return error(400, exc.message, exc.field)
    except web.HTTPRequestEntityTooLarge:
        return error(413, "the body is too large", None)
    except BodyTimeout as exc:
        return await body_timed_out(request, exc)
    except ConnectionError:
        return client_went_away(request)
    return web.json_response(answers if batch else answers[0])
