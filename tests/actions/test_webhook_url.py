"""Templates in URLs: a webhook's url is filled like its payload, each value percent-encoded,
so an event's values are data in the URL and never its structure; the same for the ids the
Prefect actions put in their URLs. Through the real daemon and `automationd check`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from automationd import templating
from tests.support import audit_records, daemon, run_cli, until, write_rules


@dataclass
class RawPaths:
    """A receiver that records each request's path and query exactly as they came."""

    url: str = ""
    seen: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.seen.append(request.raw_path)
        return web.json_response({"status": "ACCEPT", "details": {}})


@asynccontextmanager
async def raw_paths() -> AsyncIterator[RawPaths]:
    recv = RawPaths()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recv.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    recv.url = f"http://{host}:{port}"
    try:
        yield recv
    finally:
        await runner.cleanup()


async def outcomes(audit: Path, count: int) -> bool:
    return (
        sum(r["kind"] in ("action.succeeded", "action.failed") for r in audit_records(audit))
        >= count
    )


def test_render_url_encodes_every_value_and_keeps_the_literal_text() -> None:
    template = templating.Template.parse("https://h.example/u/{a}/{{x}}?q={b}&r={c}")
    event = {"a": "x/y?z#w&v=1", "b": "1&admin=true", "c": ["p q", "é"]}
    assert template.render_url(event) == (
        "https://h.example/u/x%2Fy%3Fz%23w%26v%3D1/{x}?q=1%26admin%3Dtrue&r=p%20q%2C%20%C3%A9"
    )
    assert templating.Template.parse("https://h.example/a/{missing}/b").render_url({}) == (
        "https://h.example/a//b"
    )
    # a value inside a segment, or a dot segment in the query, changes nothing
    assert templating.Template.parse("https://h/a/v{a}?b={a}").render_url({"a": ".."}) == (
        "https://h/a/v..?b=.."
    )


@pytest.mark.parametrize(
    ("url", "value"),
    [("https://h/a/{a}/b", ".."), ("https://h/{a}", "."), ("https://h/a/.{a}", ".")],
)
def test_render_url_refuses_a_value_that_makes_a_dot_segment(url: str, value: str) -> None:
    # clients and servers resolve '.' and '..' segments (even as %2E): the path would change
    with pytest.raises(templating.UnsafeUrl, match=r"'\.' or '\.\.'"):
        templating.Template.parse(url).render_url({"a": value})


@pytest.mark.parametrize("value", ["x/../admin", "../../admin", "a\\..\\b", "x/.", "./x"])
def test_render_url_refuses_a_path_value_holding_a_dot_segment(value: str) -> None:
    # sent as x%2F..%2Fadmin, but servers and proxies that decode %2F first would resolve it
    with pytest.raises(templating.UnsafeUrl, match=r"holds a '\.' or '\.\.' path segment"):
        templating.Template.parse("https://h/runs/{a}/x").render_url({"a": value})
    # in the query it is plain data
    query = templating.Template.parse("https://h/runs?a={a}").render_url({"a": value})
    assert query.startswith("https://h/runs?a=")


async def test_webhook_url_fields_are_filled_and_percent_encoded(tmp_path: Path) -> None:
    async with raw_paths() as recv:
        rules = write_rules(
            tmp_path,
            f"""\
automations:
  - name: hook
    on: [flow_run_state_change]
    actions:
      - webhook:
          url: "{recv.url}/runs/{{flow_name}}/{{{{literal}}}}?run={{flow_run_id}}&state={{state}}"
          retry: {{attempts: 1}}
""",
        )
        audit = tmp_path / "audit.jsonl"
        async with daemon(rules) as proc:
            event = {
                "type": "flow_run_state_change",
                "flow_name": "etl/admin?x=1#frag",
                "flow_run_id": "r 1&admin=true",
                "state": "Failed",
            }
            assert (await proc.post(event))[0] == 202
            dots = {"type": "flow_run_state_change", "flow_name": "..", "flow_run_id": "r2"}
            assert (await proc.post(dots))[0] == 202
            await until(lambda: outcomes(audit, 2))
            assert await proc.stop() == 0
    # one segment, no query or fragment of its own ('=' is plain data in a path, and the
    # HTTP client writes it bare there)
    assert recv.seen == [
        "/runs/etl%2Fadmin%3Fx=1%23frag/%7Bliteral%7D?run=r%201%26admin%3Dtrue&state=Failed"
    ]
    records = audit_records(audit)
    assert sum(r["kind"] == "action.succeeded" for r in records) == 1
    (failed,) = [r for r in records if r["kind"] == "action.failed"]
    assert "would make the path segment '..'" in str(failed["error"])
    # the audit names the destination without its query string
    attempt = next(r for r in records if r["kind"] == "action.attempt" and not r["ok"])
    assert "admin=true" not in str(attempt)


async def test_url_fields_are_checked_at_load(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        """\
version: 1
automations:
  - name: typo
    on: [flow_run_state_change]
    actions:
      - webhook: {url: "https://hooks.example.com/runs/{flow_nmae}"}
  - name: chosen-host
    on: [flow_run_state_change]
    actions:
      - webhook: {url: "https://{flow_name}.example.com/x"}
      - webhook: {url: "https://hooks.example.com{state}"}
      - webhook: {url: "https://hooks.example.com:{state}/x"}
  - name: fine
    on: [flow_run_state_change]
    actions:
      - webhook: {url: "https://hooks.example.com?run={flow_run_id}#{state}"}
"""
    )
    code, out, _ = await run_cli("check", str(rules))
    assert code == 1
    host_only = (
        "the scheme and host:port of a url must be written out: fields may fill its path, "
        "query and fragment only (the rules, not an event, choose where the daemon connects)"
    )
    assert out.splitlines() == [
        f"{rules}:6:24: automations[0].actions[0].webhook.url: 'flow_nmae' is not an attribute "
        "of flow_run_state_change events; did you mean 'flow_name'?",
        f"{rules}:10:24: automations[1].actions[0].webhook.url: {host_only}",
        f"{rules}:11:24: automations[1].actions[1].webhook.url: {host_only}",
        f"{rules}:12:24: automations[1].actions[2].webhook.url: {host_only}",
    ]


@pytest.mark.parametrize("flow_run_id", ["..", "../../admin"])
async def test_prefect_ids_from_the_event_cannot_change_the_api_path(
    tmp_path: Path, flow_run_id: str
) -> None:
    async with raw_paths() as prefect:
        rules = write_rules(
            tmp_path,
            f"""\
prefect: {{api_url: "{prefect.url}/api"}}
automations:
  - name: cancel
    on: [flow_run_state_change]
    actions:
      - cancel_flow_run: {{retry: {{attempts: 1}}}}
      - pause_schedule: {{retry: {{attempts: 1}}}}
""",
        )
        audit = tmp_path / "audit.jsonl"
        async with daemon(rules) as proc:
            event = {
                "type": "flow_run_state_change",
                "flow_run_id": flow_run_id,
                "flow_group_id": flow_run_id,
            }
            assert (await proc.post(event))[0] == 202
            await until(lambda: outcomes(audit, 2))
            assert await proc.stop() == 0
    records = audit_records(audit)
    # refused, not sent to /api/set_state or /api/pause_deployment, nor as ..%2F..%2Fadmin
    # (which a server decoding %2F first would resolve)
    assert prefect.seen == []
    assert sum(r["kind"] == "action.failed" for r in records) == 2
