"""`automationd receive`: a stand-in for the services that actions call, for trying rules out.

Each request is printed as one JSON line and answered as the service it stands in for would,
so that every HTTP action kind pointed at it succeeds: PagerDuty's `/v2/enqueue` 202,
Twilio's `.../Messages.json` 201 with a message, Prefect's `set_state` 201 ACCEPT,
`create_flow_run` 201 with a run (200 with the same run for a known idempotency key),
`pause_deployment` 200, a Teams card (`"type": "message"`) 202, anything else (Slack,
webhooks) 200 with the body `ok`, which is what Slack answers. With a fixed status, every
request gets that status instead (to try failures).
"""

from __future__ import annotations

import json
import re
import urllib.parse
import uuid
from datetime import UTC, datetime

from aiohttp import web

from automationd.events import format_timestamp


def create_app(status: int | None = None) -> web.Application:
    """The receiver: every method and path, answered as its service would, or with `status`."""
    runs: dict[str, dict[str, object]] = {}  # flow runs "created", by idempotency key

    async def handle(request: web.Request) -> web.Response:
        raw = await request.read()
        body: object
        if request.content_type == "application/x-www-form-urlencoded":  # Twilio
            body = dict(urllib.parse.parse_qsl(raw.decode("utf-8", "replace")))
        else:
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
        response = as_service(request.path, body, runs) if status is None else as_told(status)
        record = {
            "time": format_timestamp(datetime.now(UTC)),
            "method": request.method,
            "path": request.path_qs,
            "headers": {
                k: v
                for k, v in request.headers.items()
                if k.lower() not in {"host", "content-length"}
            },
            "body": body,
            "answered": response.status,
        }
        print(json.dumps(record, ensure_ascii=False), flush=True)
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def as_service(path: str, body: object, runs: dict[str, dict[str, object]]) -> web.Response:
    """The answer of the service that `path` belongs to; `runs` holds the flow runs created
    so far, by idempotency key."""
    fields = body if isinstance(body, dict) else {}
    if path.endswith("/v2/enqueue"):
        dedup_key = fields.get("dedup_key")
        answer = {"status": "success", "message": "Event processed", "dedup_key": dedup_key}
        return web.json_response(answer, status=202)
    if twilio := re.search(r"/2010-04-01/Accounts/([^/]+)/Messages\.json$", path):
        message = {
            "sid": f"SM{uuid.uuid4().hex}",
            "account_sid": twilio.group(1),
            "messaging_service_sid": fields.get("MessagingServiceSid"),
            "to": fields.get("To"),
            "body": fields.get("Body"),
            "status": "accepted",
        }
        return web.json_response(message, status=201)
    if path.endswith("/set_state"):
        state = fields.get("state")
        accepted: dict[str, object] = {"status": "ACCEPT", "details": {}, "state": state}
        return web.json_response(accepted, status=201)
    if path.endswith("/pause_deployment"):
        return web.json_response(None)
    if deployment := re.search(r"/deployments/([^/]+)/create_flow_run$", path):
        key = str(fields.get("idempotency_key") or uuid.uuid4())
        if key in runs:
            return web.json_response(runs[key])
        runs[key] = {
            "id": str(uuid.uuid4()),
            "name": f"received-run-{len(runs) + 1}",
            "deployment_id": deployment.group(1),
            "parameters": fields.get("parameters", {}),
            "idempotency_key": key,
            "state": {"type": "SCHEDULED", "name": "Scheduled"},
        }
        return web.json_response(runs[key], status=201)
    if fields.get("type") == "message" and "attachments" in fields:
        return web.Response(status=202)  # a Teams Workflows webhook
    return web.Response(text="ok")


def as_told(told: int) -> web.Response:
    """The answer with the status given by `--status`."""
    if told < 200 or told in (204, 304):
        return web.Response(status=told)
    text = "ok" if told < 300 else f"automationd receive answers {told} (--status)"
    return web.Response(status=told, text=text)
