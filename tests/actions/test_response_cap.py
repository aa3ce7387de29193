"""A destination's answer is read up to a cap, never whole: huge answers cost the daemon
nothing, through the real daemon process and real receivers on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from tests.support import audit_records, daemon, receiver, until, write_rules

ANSWER_BYTES = 50 * 1024 * 1024
CHUNK = b"x" * (64 * 1024)
WEBHOOKS = 8


@dataclass
class HugeAnswers:
    """A receiver whose every answer is a 50 MB body, streamed (the test stays small)."""

    url: str = ""
    sent: list[int] = field(default_factory=list)
    """Bytes of the body written before the answer ended, per request."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.content_length = ANSWER_BYTES
        await response.prepare(request)
        written = 0
        try:
            while written < ANSWER_BYTES:
                await response.write(CHUNK)
                written += len(CHUNK)
            await response.write_eof()
        except ConnectionError:  # the client closed the connection: the rest is not wanted
            pass
        finally:
            self.sent.append(written)
        return response


@asynccontextmanager
async def huge_answers() -> AsyncIterator[HugeAnswers]:
    huge = HugeAnswers()
    app = web.Application()
    app.router.add_post("/hook", huge.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    huge.url = f"http://{host}:{port}"
    try:
        yield huge
    finally:
        await runner.cleanup()


def peak_rss_kib(pid: int) -> int:
    """The process's peak resident set (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/PID/status")


async def test_huge_webhook_answers_are_cut_and_cost_no_memory(tmp_path: Path) -> None:
    async with huge_answers() as huge:
        rules = write_rules(
            tmp_path,
            f"""\
automations:
  - name: hook
    on: [job_done]
    actions:
      - webhook: {{url: "{huge.url}/hook", timeout: 30s, retry: {{attempts: 1}}}}
""",
        )
        audit = tmp_path / "audit.jsonl"

        def succeeded() -> list[dict[str, object]]:
            return [r for r in audit_records(audit) if r["kind"] == "action.succeeded"]

        async def all_done(count: int) -> bool:
            return len(succeeded()) >= count

        async with daemon(rules) as proc:
            # one answer first, so the client's code paths are warm before the peak is read
            assert (await proc.post({"type": "job_done"}))[0] == 202
            await until(lambda: all_done(1))
            before = peak_rss_kib(proc.process.pid)
            status, _ = await proc.post([{"type": "job_done"} for _ in range(WEBHOOKS)])
            assert status == 202
            await until(lambda: all_done(1 + WEBHOOKS))
            growth_mib = (peak_rss_kib(proc.process.pid) - before) / 1024
            assert await proc.stop() == 0
    # read whole, eight answers of 50 MB would add about 400 MB (twice that as text)
    assert growth_mib < 40, f"the daemon's peak RSS grew by {growth_mib:.0f} MiB"
    records = succeeded()
    assert len(records) == 1 + WEBHOOKS
    for record in records:
        response = record["response"]
        assert isinstance(response, str)
        assert len(response) <= 1024
        assert response.startswith("xxxx")
    # the daemon closed each connection early instead of draining the rest: the receiver got
    # no further than the sockets' buffers take (about 4 MiB on loopback here), not 50 MB
    assert len(huge.sent) == 1 + WEBHOOKS
    assert all(sent < 16 * 1024 * 1024 for sent in huge.sent), huge.sent


async def test_a_prefect_answer_cut_at_the_cap_is_a_clear_failure(tmp_path: Path) -> None:
    padding = "p" * (100 * 1024)
    answer = json.dumps({"status": "ACCEPT", "details": {}, "padding": padding})
    async with receiver() as prefect:
        prefect.replies["/api/flow_runs/r-1/set_state"] = [(200, answer, {})]
        rules = write_rules(
            tmp_path,
            f"""\
prefect: {{api_url: "{prefect.url}/api"}}
automations:
  - name: cancel
    on: [flow_run_state_change]
    actions:
      - cancel_flow_run: {{retry: {{attempts: 1}}}}
""",
        )
        audit = tmp_path / "audit.jsonl"
        async with daemon(rules) as proc:
            event = {"type": "flow_run_state_change", "flow_run_id": "r-1", "state": "Running"}
            assert (await proc.post(event))[0] == 202
            await until(lambda: outcome(audit))
            assert await proc.stop() == 0
    (failed,) = [r for r in audit_records(audit) if r["kind"] == "action.failed"]
    assert "longer than 64 KiB" in str(failed["error"])
    assert not [r for r in audit_records(audit) if r["kind"] == "action.succeeded"]


async def outcome(audit: Path) -> bool:
    """Whether an action's outcome (succeeded or failed) is in the audit trail."""
    return any(r["kind"] in ("action.succeeded", "action.failed") for r in audit_records(audit))
