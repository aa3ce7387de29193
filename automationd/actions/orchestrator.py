"""Orchestrator actions on a Prefect server's REST API (a flow group is a Prefect deployment).

- `cancel_flow_run`: `POST /flow_runs/{flow_run_id}/set_state` with a CANCELLING state. Prefect
  answers ACCEPT, or REJECT / ABORT for a run that is already finished or cancelled (a run
  still Scheduled is moved straight to Cancelled with a REJECT): all three mean the run is
  no longer going, so all count as done. WAIT is retried after the delay Prefect asks for.
- `pause_schedule`: `POST /deployments/{id}/pause_deployment`; pausing twice is harmless.
- `start_flow_run`: `POST /deployments/{id}/create_flow_run` with an `idempotency_key` stable
  per event, automation and action: Prefect answers 201 for a new run and 200 with the same
  run when the key was seen, so a retried (or, after a crash, repeated) start never makes
  two runs.

A missing id is a permanent failure of the action (and, where the automation's event types
can never carry it, a problem of the rules at load time: `registry` declares the ids each
kind acts on). Ids go into the URL percent-encoded, and an id of `.` or `..` is refused, so
no id can reach another API path. An answer longer than http.RESPONSE_LIMIT is not read: a
cancel, which needs Prefect's orchestration result, then fails with that said.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar

from automationd.actions import (
    ActionContext,
    ActionError,
    ActionResult,
    OptionReader,
    Path,
    client_ssl,
    shorten,
)
from automationd.actions.http import RESPONSE_LIMIT, post
from automationd.rules import PrefectSettings
from automationd.templating import (
    JsonNode,
    Template,
    UnsafeUrl,
    json_templates,
    render_json,
)

DONE_STATUSES = ("ACCEPT", "REJECT", "ABORT")
DEFAULT_WAIT = 5.0

Request = tuple[str, dict[str, object] | None]
"""A path under the API URL and the JSON body to POST there."""

CANCEL_PATH = Template.parse("/flow_runs/{id}/set_state")
PAUSE_PATH = Template.parse("/deployments/{id}/pause_deployment")
START_PATH = Template.parse("/deployments/{id}/create_flow_run")


def _settings(ctx: ActionContext) -> PrefectSettings:
    if ctx.services.prefect is None:  # the rules refuse orchestrator actions without prefect:
        raise ActionError("no prefect: block is configured", retryable=False)
    return ctx.services.prefect


def _api_path(
    ctx: ActionContext, path: Template, attribute: str, configured: str | None = None
) -> str:
    """`path` with the id an action works on (the configured one, else the event's),
    percent-encoded; ActionError when the event has none or it would change the path."""
    value = configured or ctx.event.get(attribute)
    if not isinstance(value, str) or not value:
        raise ActionError(f"the event has no {attribute} to act on", retryable=False)
    try:
        return path.render_url({"id": value})
    except UnsafeUrl:
        raise ActionError(
            f"the {attribute} {value!r} is not an id: in the URL it would name another path",
            retryable=False,
        ) from None


def _preview(ctx: ActionContext, request: Callable[[ActionContext], Request]) -> dict[str, object]:
    """What `request` would POST for the event of `ctx`, or why it cannot."""
    try:
        path, body = request(ctx)
    except ActionError as exc:
        return {"error": exc.message}
    return {"method": "POST", "url": _settings(ctx).api_url.rstrip("/") + path, "json": body}


async def _call(ctx: ActionContext, request: Request, *, need_answer: bool) -> tuple[int, object]:
    """POST to the Prefect API; the status and the decoded answer (None when empty, or when
    it was longer than RESPONSE_LIMIT and the caller does not `need_answer`)."""
    settings = _settings(ctx)
    path, body = request
    answer = await post(
        ctx.services.http,
        settings.api_url.rstrip("/") + path,
        name="Prefect",
        json_body=body,
        headers=settings.auth_headers(ctx.services.secrets),
        tls=client_ssl(settings.tls),
    )
    if answer.cut:
        if not need_answer:
            return answer.status, None
        raise ActionError(
            f"Prefect answered {answer.status} with a body longer than "
            f"{RESPONSE_LIMIT // 1024} KiB, which is not read: no orchestration result to judge",
            retryable=False,
            status=answer.status,
            detail=shorten(answer.body),
        )
    try:
        return answer.status, json.loads(answer.body) if answer.body.strip() else None
    except ValueError:
        return answer.status, answer.body


@dataclass(frozen=True, slots=True)
class CancelFlowRunAction:
    """Move the event's flow run to CANCELLING, with `message` as the state message."""

    kind: ClassVar[str] = "cancel_flow_run"
    message: Template

    def templates(self) -> Iterator[tuple[Path, Template]]:
        yield ("message",), self.message

    def describe(self) -> str:
        return "cancel the event's Prefect flow run"

    def destination(self) -> str:
        return "prefect"

    def request(self, ctx: ActionContext) -> Request:
        path = _api_path(ctx, CANCEL_PATH, "flow_run_id")
        state = {"type": "CANCELLING", "message": self.message.render(ctx.event)}
        return path, {"state": state}

    def preview(self, ctx: ActionContext) -> dict[str, object]:
        return _preview(ctx, self.request)

    async def run(self, ctx: ActionContext) -> ActionResult:
        status, answer = await _call(ctx, self.request(ctx), need_answer=True)
        outcome = answer.get("status") if isinstance(answer, dict) else None
        details = answer.get("details") if isinstance(answer, dict) else None
        details = details if isinstance(details, dict) else {}
        reason = str(details.get("reason") or "")
        if outcome in DONE_STATUSES:
            return ActionResult(status, shorten(f"{outcome}" + (f": {reason}" if reason else "")))
        if outcome == "WAIT":
            delay = details.get("delay_seconds")
            wait = float(delay) if isinstance(delay, int | float) and delay >= 0 else DEFAULT_WAIT
            raise ActionError(
                "Prefect asked to wait before cancelling", retryable=True, retry_after=wait
            )
        raise ActionError(
            f"Prefect answered {status} without an orchestration result",
            retryable=False,
            status=status,
            detail=shorten(json.dumps(answer)),
        )


@dataclass(frozen=True, slots=True)
class PauseScheduleAction:
    """Pause the schedule of deployment `flow_group_id` (else the event's)."""

    kind: ClassVar[str] = "pause_schedule"
    flow_group_id: str | None

    def templates(self) -> Iterator[tuple[Path, Template]]:
        return iter(())

    def describe(self) -> str:
        target = self.flow_group_id or "the event's flow_group_id"
        return f"pause the schedule of Prefect deployment {target}"

    def destination(self) -> str:
        return "prefect"

    def request(self, ctx: ActionContext) -> Request:
        return _api_path(ctx, PAUSE_PATH, "flow_group_id", self.flow_group_id), None

    def preview(self, ctx: ActionContext) -> dict[str, object]:
        return _preview(ctx, self.request)

    async def run(self, ctx: ActionContext) -> ActionResult:
        status, _ = await _call(ctx, self.request(ctx), need_answer=False)
        return ActionResult(status, "paused")


@dataclass(frozen=True, slots=True)
class StartFlowRunAction:
    """Create a flow run of deployment `flow_group_id` (else the event's) with `parameters`."""

    kind: ClassVar[str] = "start_flow_run"
    flow_group_id: str | None
    parameters: JsonNode | None

    def templates(self) -> Iterator[tuple[Path, Template]]:
        if self.parameters is not None:
            for path, template in json_templates(self.parameters):
                yield ("parameters", *path), template

    def describe(self) -> str:
        target = self.flow_group_id or "the event's flow_group_id"
        return f"start a flow run of Prefect deployment {target}"

    def destination(self) -> str:
        return "prefect"

    def request(self, ctx: ActionContext) -> Request:
        path = _api_path(ctx, START_PATH, "flow_group_id", self.flow_group_id)
        parameters = {} if self.parameters is None else render_json(self.parameters, ctx.event)
        body = {"parameters": parameters, "idempotency_key": ctx.idempotency_key}
        return path, body

    def preview(self, ctx: ActionContext) -> dict[str, object]:
        return _preview(ctx, self.request)

    async def run(self, ctx: ActionContext) -> ActionResult:
        # a run with large parameters may answer past the cap: the status says enough
        status, answer = await _call(ctx, self.request(ctx), need_answer=False)
        run = answer if isinstance(answer, dict) else {}
        started = "started" if status == 201 else "already started"
        return ActionResult(status, f"{started} flow run {run.get('name')} ({run.get('id')})")


def parse_cancel(options: Mapping[str, object]) -> CancelFlowRunAction:
    reader = OptionReader(options)
    action = CancelFlowRunAction(reader.template("message", "{message}"))
    reader.done()
    return action


def parse_pause(options: Mapping[str, object]) -> PauseScheduleAction:
    reader = OptionReader(options)
    deployment = reader.text("flow_group_id") or None
    reader.done()
    return PauseScheduleAction(deployment)


def parse_start(options: Mapping[str, object]) -> StartFlowRunAction:
    reader = OptionReader(options)
    parameters = reader.json("parameters")
    deployment = reader.text("flow_group_id") or None
    reader.done()
    return StartFlowRunAction(deployment, parameters)
