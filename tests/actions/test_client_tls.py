"""`tls: {ca_file, insecure}` for HTTPS destinations behind a private CA: a CA and a server
certificate for 127.0.0.1 made at test time, a real HTTPS receiver, the real daemon."""

from __future__ import annotations

import signal
from pathlib import Path

import aiohttp

from tests.certificates import private_ca
from tests.standins import PagerDuty, play
from tests.support import audit_records, daemon, receiver, run_cli, until, write_rules

ROUTING_KEY = "R1" + "0" * 30
"""A PagerDuty integration key: 32 characters, as the Events API requires."""


async def test_private_ca_trusted_per_action_endpoint_and_prefect(tmp_path: Path) -> None:
    """An HTTPS receiver whose certificate a private CA signed: a webhook without `tls` fails
    verification (dead-lettered); `tls: {ca_file}` per action, under `endpoints` (PagerDuty,
    its event well-formed by the stand-in's checks) and under `prefect` is trusted;
    `insecure: true` goes through and is warned about at start and at each reload."""
    server_tls = private_ca(tmp_path)
    async with receiver(ssl_context=server_tls) as recv:
        assert recv.url.startswith("https://127.0.0.1:")
        pagerduty = play(recv, PagerDuty(), others=True)
        rules = write_rules(
            tmp_path,
            f"""\
endpoints: {{pagerduty: "{recv.url}", tls: {{ca_file: ca.pem}}}}
prefect: {{api_url: "{recv.url}/api", tls: {{ca_file: {tmp_path / "ca.pem"}}}}}
automations:
  - name: unverified
    on: [plain]
    actions:
      - webhook: {{url: "{recv.url}/plain", retry: {{attempts: 1}}}}
  - name: private-ca
    on: [trusted]
    actions:
      - webhook: {{url: "{recv.url}/trusted", tls: {{ca_file: ca.pem}}}}
      - pagerduty: {{routing_key: {ROUTING_KEY}}}
      - pause_schedule: {{flow_group_id: d-1}}
  - name: anything-goes
    on: [insecure]
    actions:
      - webhook: {{url: "{recv.url}/insecure", tls: {{insecure: true}}}}
""",
        )
        audit = tmp_path / "audit.jsonl"

        async def outcomes(count: int) -> bool:
            kinds = ("action.succeeded", "action.failed")
            return sum(r["kind"] in kinds for r in audit_records(audit)) >= count

        def warnings(log: list[str]) -> list[str]:
            return [line for line in log if line.startswith("WARNING") and "insecure" in line]

        async with daemon(rules) as proc:
            # the warning is in the log from the start ...
            (warning,) = warnings(proc.log)
            assert "anything-goes" in warning
            assert "NOT verified" in warning
            for event_type in ("plain", "trusted", "insecure"):
                assert (await proc.post({"type": event_type}))[0] == 202
            await until(lambda: outcomes(5))
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{proc.url}/dead-letters") as response,
            ):
                letters = await response.json()
            # ... and again at each reload
            proc.process.send_signal(signal.SIGHUP)

            async def warned_twice() -> bool:
                return len(warnings(proc.log)) == 2

            await until(warned_twice)
            assert await proc.stop() == 0
    records = audit_records(audit)
    failed = [r for r in records if r["kind"] == "action.failed"]
    assert [r["automation"] for r in failed] == ["unverified"]
    assert "certificate verify failed" in str(failed[0]["error"])
    assert [letter["automation"] for letter in letters["dead_letters"]] == ["unverified"]
    succeeded = [(r["automation"], r["action"]) for r in records if r["kind"] == "action.succeeded"]
    assert sorted(succeeded) == [
        ("anything-goes", "webhook"),
        ("private-ca", "pagerduty"),
        ("private-ca", "pause_schedule"),
        ("private-ca", "webhook"),
    ]
    assert sorted(r.path for r in recv.requests) == [
        "/api/deployments/d-1/pause_deployment",
        "/insecure",
        "/trusted",
        "/v2/enqueue",
    ]
    assert pagerduty.malformed == []
    (event,) = [r.body for r in recv.requests if r.path == "/v2/enqueue"]
    assert isinstance(event, dict)
    assert event["routing_key"] == ROUTING_KEY


async def test_bad_tls_settings_are_check_errors_at_their_place(tmp_path: Path) -> None:
    """`automationd check` reports each bad `tls` setting (a missing CA file, one holding no
    PEM certificate, `ca_file` with `insecure`) at its line and column."""
    private_ca(tmp_path)
    (tmp_path / "not-pem.txt").write_text("this is not a certificate\n")
    (tmp_path / "empty.pem").write_text("")
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        """\
version: 1
endpoints: {tls: {ca_file: missing.pem}}
prefect: {api_url: "https://prefect.example.com/api", tls: {ca_file: not-pem.txt}}
automations:
  - name: a
    on: [x]
    actions:
      - webhook: {url: "https://h.example.com/", tls: {ca_file: ca.pem, insecure: true}}
      - webhook: {url: "https://h.example.com/", tls: {ca_file: empty.pem}}
      - webhook: {url: "https://h.example.com/", tls: {ca_file: server.key}}
      - webhook: {url: "https://h.example.com/", tls: {ca_file: ca.pem}}
"""
    )
    code, out, _ = await run_cli("check", str(rules))
    assert code == 1
    no_pem = "holds no PEM certificate"
    assert out.splitlines() == [
        f"{rules}:2:28: endpoints.tls.ca_file: cannot read the CA file "
        f"{tmp_path / 'missing.pem'}: No such file or directory",
        f"{rules}:3:70: prefect.tls.ca_file: the CA file {tmp_path / 'not-pem.txt'} {no_pem}",
        f"{rules}:8:83: automations[0].actions[0].webhook.tls.insecure: insecure: true turns "
        "off the verification that ca_file is for; give one of them",
        f"{rules}:9:65: automations[0].actions[1].webhook.tls.ca_file: the CA file "
        f"{tmp_path / 'empty.pem'} {no_pem}",
        f"{rules}:10:65: automations[0].actions[2].webhook.tls.ca_file: the CA file "
        f"{tmp_path / 'server.key'} {no_pem}",
    ]
