"""`webhook`: POST a JSON payload (default: the whole event) to a URL.

The URL is a template like the payload and headers: its fields fill the path, query and
fragment, each value percent-encoded; the scheme and host:port are written out in the rules,
so an event never chooses where the daemon connects (and per-destination limits hold).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import ClassVar

from automationd.actions import (
    ActionContext,
    ActionError,
    ActionResult,
    ActionSpec,
    OptionReader,
    Path,
    client_ssl,
    template_problem,
)
from automationd.actions.http import host_of, send, url_for_log
from automationd.rules import ClientTls
from automationd.templating import (
    JsonNode,
    Template,
    TemplateError,
    UnsafeUrl,
    json_templates,
    render_json,
)

DEFAULT_HEADERS = {"X-PREFECT-EVENT-ID": "{id}"}
FIXED_ORIGIN = (
    "the scheme and host:port of a url must be written out: fields may fill its path, query "
    "and fragment only (the rules, not an event, choose where the daemon connects)"
)


@dataclass(frozen=True, slots=True)
class WebhookAction:
    """POST JSON to `url`; any 2xx answer is success. An `Idempotency-Key` header, stable per
    event, automation and action, lets the receiver drop repeats of a retried delivery."""

    kind: ClassVar[str] = "webhook"
    url: Template
    payload: JsonNode | None
    headers: tuple[tuple[Template, Template], ...]
    tls: ClientTls | None = None
    """Set by the rules from the `tls:` option (reading the CA file is their job, not
    parse's): see `with_tls`."""

    def templates(self) -> Iterator[tuple[Path, Template]]:
        yield ("url",), self.url
        if self.payload is not None:
            for path, template in json_templates(self.payload):
                yield ("payload", *path), template
        for name, value in self.headers:
            yield ("headers", name.source), name
            yield ("headers", name.source), value

    def describe(self) -> str:
        return f"webhook POST {url_for_log(self.url.source)}"

    def destination(self) -> str:
        # the scheme and host:port are literal text at the start (fixed_origin)
        first = self.url.parts[0] if self.url.parts else ""
        return host_of(first if isinstance(first, str) else self.url.source)

    def render(self, event: Mapping[str, object]) -> tuple[str, object, dict[str, str]]:
        """The URL, body and headers (without Idempotency-Key) this action sends for `event`;
        UnsafeUrl when a value would change the URL's path."""
        url = self.url.render_url(event)
        body = dict(event) if self.payload is None else render_json(self.payload, event)
        headers = {name.render(event): value.render(event) for name, value in self.headers}
        return url, body, headers

    def preview(self, ctx: ActionContext) -> dict[str, object]:
        try:
            url, body, headers = self.render(ctx.event)
        except UnsafeUrl as exc:
            return {"error": str(exc)}
        headers = {"Idempotency-Key": ctx.idempotency_key, **headers}
        return {"method": "POST", "url": url_for_log(url), "headers": headers, "json": body}

    async def run(self, ctx: ActionContext) -> ActionResult:
        try:
            url, body, headers = self.render(ctx.event)
        except UnsafeUrl as exc:
            name = url_for_log(self.url.source)
            raise ActionError(f"{name}: the url cannot be sent: {exc}", retryable=False) from None
        return await send(
            ctx.services.http,
            url,
            name=url_for_log(url),
            json_body=body,
            headers={"Idempotency-Key": ctx.idempotency_key, **headers},
            tls=client_ssl(self.tls),
        )


def parse(options: Mapping[str, object]) -> WebhookAction:
    """The webhook spec of an action block (already schema-checked)."""
    reader = OptionReader(options)
    url = reader.template("url", "")
    if not url.fixed_origin():
        reader.problems.append((("url",), FIXED_ORIGIN))
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
    return WebhookAction(url, payload, tuple(headers))


def with_tls(spec: ActionSpec, tls: ClientTls | None) -> WebhookAction:
    """The webhook `spec` checking its destination's certificate as `tls` says."""
    if not isinstance(spec, WebhookAction):
        raise TypeError(f"a {spec.kind} action has no tls: option")
    return replace(spec, tls=tls)
