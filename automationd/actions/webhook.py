"""`webhook`: POST a JSON payload (default: the whole event) to a URL."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar

from automationd.actions import (
    ActionContext,
    ActionResult,
    OptionReader,
    Path,
    template_problem,
)
from automationd.actions.http import host_of, send, url_for_log
from automationd.templating import (
    JsonNode,
    Template,
    TemplateError,
    json_templates,
    render_json,
)

DEFAULT_HEADERS = {"X-PREFECT-EVENT-ID": "{id}"}


@dataclass(frozen=True, slots=True)
class WebhookAction:
    """POST JSON to `url`; any 2xx answer is success. An `Idempotency-Key` header, stable per
    event, automation and action, lets the receiver drop repeats of a retried delivery."""

    kind: ClassVar[str] = "webhook"
    url: str
    payload: JsonNode | None
    headers: tuple[tuple[Template, Template], ...]

    def templates(self) -> Iterator[tuple[Path, Template]]:
        if self.payload is not None:
            for path, template in json_templates(self.payload):
                yield ("payload", *path), template
        for name, value in self.headers:
            yield ("headers", name.source), name
            yield ("headers", name.source), value

    def describe(self) -> str:
        return f"webhook POST {url_for_log(self.url)}"

    def destination(self) -> str:
        return host_of(self.url)

    def render(self, event: Mapping[str, object]) -> tuple[object, dict[str, str]]:
        """The body and headers (without Idempotency-Key) this action sends for `event`."""
        body = dict(event) if self.payload is None else render_json(self.payload, event)
        headers = {name.render(event): value.render(event) for name, value in self.headers}
        return body, headers

    def preview(self, ctx: ActionContext) -> dict[str, object]:
        body, headers = self.render(ctx.event)
        headers = {"Idempotency-Key": ctx.idempotency_key, **headers}
        return {"method": "POST", "url": url_for_log(self.url), "headers": headers, "json": body}

    async def run(self, ctx: ActionContext) -> ActionResult:
        body, headers = self.render(ctx.event)
        return await send(
            ctx.services.http,
            self.url,
            name=url_for_log(self.url),
            json_body=body,
            headers={"Idempotency-Key": ctx.idempotency_key, **headers},
        )


def parse(options: Mapping[str, object]) -> WebhookAction:
    """The webhook spec of an action block (already schema-checked)."""
    reader = OptionReader(options)
    payload = reader.json("payload")
    raw_headers = options.get("headers", DEFAULT_HEADERS)
    headers: list[tuple[Template, Template]] = []
    if isinstance(raw_headers, Mapping):
        for name, value in raw_headers.items():
            try:
                header = (Template.parse(str(name)), Template.parse(str(value)))
                headers.append(header)
                reader.parsed.extend((("headers", str(name)), t) for t in header)
            except TemplateError as exc:
                reader.problems.append((("headers", str(name)), template_problem(exc)))
    reader.done()
    return WebhookAction(str(options["url"]), payload, tuple(headers))
