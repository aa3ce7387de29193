"""The daemon as a real process, with its webhooks received on a real loopback server."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.support import (
    Receiver,
    audit_records,
    daemon,
    receiver,
    run_to_exit,
    until,
    write_rules,
)


def rules_for(tmp_path: Path, recv: Receiver, listen: str = "127.0.0.1:0") -> Path:
    return write_rules(
        tmp_path,
        f"""\
audit: {{path: audit.jsonl}}
automations:
  - name: notify-on-failed-run
    on: [flow_run_state_change]
    match: {{state: [Failed, Crashed]}}
    actions:
      - webhook:
          url: {recv.url}/alerts
          payload: {{text: "{{message}}", run: "{{flow_run_name}}"}}
  - name: slow
    on: [slow_thing]
    actions:
      - webhook: {{url: "{recv.url}/slow"}}
""",
        listen=listen,
    )


FAILED = {
    "type": "flow_run_state_change",
    "flow_name": "nightly-etl",
    "flow_run_name": "brave-otter",
    "state": "Failed",
    "state_message": "exit code 1",
    "flow_run_link": "http://prefect.local/runs/1",
}


async def test_failed_run_event_becomes_a_webhook_and_audit_lines(tmp_path: Path) -> None:
    async with receiver() as recv, daemon(rules_for(tmp_path, recv)) as proc:
        status, answer = await proc.post(FAILED)
        assert status == 202
        assert isinstance(answer, dict)
        (event_id,) = answer["accepted"]
        (got,) = await recv.wait_for(1)
        assert got.path == "/alerts"
        assert got.body == {
            "text": "Run brave-otter of flow nightly-etl entered state Failed with message exit "
            "code 1. See http://prefect.local/runs/1 for more details.",
            "run": "brave-otter",
        }
        assert got.headers["X-PREFECT-EVENT-ID"] == event_id
        assert await proc.stop() == 0
    records = audit_records(tmp_path / "audit.jsonl")
    story = [(r["kind"], r.get("automation")) for r in records if r.get("event_id") == event_id]
    assert story == [
        ("event.accepted", None),
        ("automation.matched", "notify-on-failed-run"),
        ("action.attempt", "notify-on-failed-run"),
        ("action.succeeded", "notify-on-failed-run"),
    ]
    assert records[0]["kind"] == "config.loaded"
    assert any("stopped" in line for line in proc.log)


async def test_bad_input_never_takes_the_daemon_down(tmp_path: Path) -> None:
    async with receiver() as recv, daemon(rules_for(tmp_path, recv)) as proc:
        for body in (
            b"{",
            b'{"type": "a", "x": NaN}',
            b"[" * 50_000,
            b'{"type": "a", "\\ud800": 1}',
            b"7",
        ):
            status, answer = await proc.post(body)
            assert status == 400
            assert isinstance(answer, dict)
            assert answer["error"]
        status, _ = await proc.post(b"x" * (1024 * 1024 + 1))
        assert status == 413
        status, _ = await proc.post(FAILED)
        assert status == 202
        await recv.wait_for(1)
        assert await proc.stop() == 0
    assert not any("Traceback" in line for line in proc.log), proc.log


async def test_sigterm_lets_running_actions_finish(tmp_path: Path) -> None:
    """SIGTERM while a webhook is in flight: the daemon waits for its answer, records the
    success, and exits 0. The receiver holds its answer 3 s, so the SIGTERM surely comes
    while it is still held."""
    async with receiver() as recv, daemon(rules_for(tmp_path, recv)) as proc:
        recv.delay["/slow"] = 3.0
        status, _ = await proc.post({"type": "slow_thing", "id": "slow-1"})
        assert status == 202

        async def in_flight() -> bool:  # the webhook has arrived, its answer not yet given
            return recv.in_flight == 1

        await until(in_flight, within=15)
        assert recv.requests == []  # recorded only once answered
        assert await proc.stop() == 0
    assert [r.path for r in recv.requests] == ["/slow"]
    outcome = [
        r for r in audit_records(tmp_path / "audit.jsonl") if r["kind"] == "action.succeeded"
    ]
    assert [(r["event_id"], r["status"]) for r in outcome] == [("slow-1", 200)]


async def test_invalid_rules_refuse_to_start_with_located_problems(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "version: 1\nautomations:\n  - name: a\n    on: [x]\n    actions: [{webhok: {}}]\n"
    )
    code, text = await run_to_exit(rules)
    assert code == 1
    assert (
        f"{rules}:5:16: automations[0].actions[0].webhok: unknown action kind 'webhok'; "
        "did you mean 'webhook'?"
    ) in text
    assert "not starting" in text


async def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with receiver() as recv:
            code, text = await run_to_exit(rules_for(tmp_path, recv, listen=f"127.0.0.1:{port}"))
    assert code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in text
