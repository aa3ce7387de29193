"""Hot reload, /rules, /readyz, /metrics and systemd notifications through the real daemon."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from tests.support import (
    Daemon,
    Receiver,
    audit_records,
    daemon,
    free_port,
    receiver,
    until,
)

BASE = """\
version: 1
server: {{listen: "127.0.0.1:0"}}
secrets: {{hook-token: {{file: {token}}}}}
automations:
  - name: first
    on: [ping]
    actions: [{{webhook: {{url: "{url}/first", headers: {{X-Token: "static"}}}}}}]
"""

SECOND = """\
  - name: second
    on: [ping]
    actions: [{{webhook: {{url: "{url}/second"}}}}]
"""

THIRD = """\
  - name: third
    on: [ping]
    actions: [{{webhook: {{url: "{url}/third"}}}}]
"""


def write_atomically(path: Path, text: str) -> None:
    """Save like an editor: a temporary file renamed over the original."""
    temporary = path.with_name(f".{path.name}.swp")
    temporary.write_text(text)
    os.replace(temporary, path)


async def http(method: str, url: str) -> tuple[int, object, str]:
    async with aiohttp.ClientSession() as session, session.request(method, url) as response:
        text = await response.text()
        body = await response.json() if response.content_type == "application/json" else None
        return response.status, body, text


async def audited(
    path: Path, kind: str, count: int = 1, within: float = 15.0
) -> list[dict[str, object]]:
    """Wait until the audit trail has `count` records of `kind`; those records."""
    async with asyncio.timeout(within):
        while True:
            found = [r for r in audit_records(path) if r["kind"] == kind]
            if len(found) >= count:
                return found
            await asyncio.sleep(0.02)


@asynccontextmanager
async def running(
    tmp_path: Path, env: dict[str, str] | None = None, settle: str | None = None
) -> AsyncIterator[tuple[Daemon, Receiver, Path]]:
    (tmp_path / "token").write_text("t0ken-one\n")
    async with receiver() as recv:
        rules = tmp_path / "rules.yaml"
        text = BASE.format(url=recv.url, token=tmp_path / "token")
        if settle is not None:
            text = text.replace("automations:", f"reload: {{settle: {settle}}}\nautomations:")
        rules.write_text(text)
        async with daemon(rules, env=env) as proc:
            yield proc, recv, rules
            assert await proc.stop() == 0


async def ping(proc: Daemon) -> None:
    status, _ = await proc.post({"type": "ping"})
    assert status == 202


async def test_an_editor_save_takes_effect(tmp_path: Path) -> None:
    async with running(tmp_path) as (proc, recv, rules):
        text = rules.read_text()
        write_atomically(rules, text + SECOND.format(url=recv.url))
        (applied,) = await audited(tmp_path / "audit.jsonl", "config.applied")
        assert applied["trigger"] == "watch"
        assert applied["automations_added"] == ["second"]
        await ping(proc)
        got = await recv.wait_for(2)
        assert sorted(r.path for r in got) == ["/first", "/second"]
        status, body, _ = await http("GET", f"{proc.url}/rules")
        assert status == 200
        assert isinstance(body, dict)
        assert [a["name"] for a in body["automations"]] == ["first", "second"]
        assert body["last_reload"]["outcome"] == "applied"
        assert "t0ken-one" not in str(body)


async def test_a_file_truncated_in_place_is_read_once_it_settles(tmp_path: Path) -> None:
    """A writer that truncates the file in place and fills it again leaves, in between, a
    file that is valid rules without the automations after the cut: it must not be applied.
    (`reload.settle` 5 s: the test completes the file seconds before the cut would settle, on
    a loaded machine too.)"""
    trail = tmp_path / "audit.jsonl"
    async with running(tmp_path, settle="5s") as (proc, recv, rules):
        head = rules.read_text()
        write_atomically(rules, head + SECOND.format(url=recv.url))
        await audited(trail, "config.applied")
        with rules.open("r+") as file:  # in place, cut just before "second"
            file.truncate(len(head))

        async def cut_seen() -> bool:  # the watcher has the cut file, waiting for it to settle
            return any(f"{rules} changed in place" in line for line in proc.log)

        await until(cut_seen, within=15)
        with rules.open("a") as file:  # completed, with one more automation
            file.write(SECOND.format(url=recv.url) + THIRD.format(url=recv.url))
        applied = await audited(trail, "config.applied", 2, within=20)  # 5 s settle, and 15
        assert applied[1]["automations_added"] == ["third"]
        assert all("second" not in str(a["automations_removed"]) for a in applied)
        status, body, _ = await http("GET", f"{proc.url}/rules")
        assert status == 200
        assert isinstance(body, dict)
        assert [a["name"] for a in body["automations"]] == ["first", "second", "third"]
    assert len([r for r in audit_records(trail) if r["kind"] == "config.applied"]) == 2


async def test_a_rename_is_read_at_once_an_in_place_edit_once_settled(tmp_path: Path) -> None:
    """A file renamed into place is complete: it is read at once. One written in place is
    read only once it has not changed for `reload.settle` (5 s here: long enough that "at
    once" keeps seconds of margin below it on a loaded machine)."""
    trail = tmp_path / "audit.jsonl"
    async with running(tmp_path, settle="5s") as (_, recv, rules):
        head = rules.read_text()
        saved = time.monotonic()
        write_atomically(rules, head + SECOND.format(url=recv.url))
        (applied,) = await audited(trail, "config.applied")
        assert time.monotonic() - saved < 3.5  # well within the settle time
        assert applied["automations_added"] == ["second"]
        saved = time.monotonic()
        rules.write_text(head + SECOND.format(url=recv.url) + THIRD.format(url=recv.url))
        applied = (await audited(trail, "config.applied", 2))[1]
        assert time.monotonic() - saved >= 4.9  # not before 5 s without a change
        assert applied["automations_added"] == ["third"]


async def test_bad_files_are_rejected_and_the_old_rules_keep_acting(tmp_path: Path) -> None:
    async with running(tmp_path) as (proc, recv, rules):
        good = rules.read_text()
        bad_files = [
            good[: len(good) // 2],  # half written
            "",  # emptied
            good + "  - name: [unclosed\n",  # invalid YAML
            good.replace("automations:", "automatons:"),  # unknown key
        ]
        for n, text in enumerate(bad_files, start=1):
            write_atomically(rules, text)
            rejected = await audited(tmp_path / "audit.jsonl", "config.rejected", n)
            problems = rejected[-1]["problems"]
            assert isinstance(problems, list)
            assert problems
            assert all(str(p).startswith(str(rules)) for p in problems), problems
        assert "unknown key 'automatons'; did you mean 'automations'?" in str(problems)

        async def logged() -> bool:  # the log arrives through a pipe, maybe after the audit
            return any(
                f"{rules}:" in line and "unknown key 'automatons'" in line for line in proc.log
            )

        await until(logged, within=15)
        await ping(proc)
        (got,) = await recv.wait_for(1)
        assert got.path == "/first"
        status, body, _ = await http("GET", f"{proc.url}/rules")
        assert isinstance(body, dict)
        assert body["last_reload"]["outcome"] == "rejected"
        assert [a["name"] for a in body["automations"]] == ["first"]
        status, _, metrics = await http("GET", f"{proc.url}/metrics")
        assert status == 200
        assert "automationd_config_last_reload_successful 0.0" in metrics


async def test_sighup_and_post_reload(tmp_path: Path) -> None:
    async with running(tmp_path) as (proc, _, rules):
        (tmp_path / "token").write_text("t0ken-two\n")  # the rules file itself is unchanged
        proc.process.send_signal(signal.SIGHUP)
        (applied,) = await audited(tmp_path / "audit.jsonl", "config.applied")
        assert applied["trigger"] == "SIGHUP"
        assert applied["sections_changed"] == ["secrets"]
        status, body, _ = await http("POST", f"{proc.url}/reload")
        assert status == 200
        assert isinstance(body, dict)
        assert body["outcome"] == "applied"
        assert body["trigger"] == "POST /reload"
        rules.write_text("version: 1\nautomations: [{name: x}]\n")  # in place, no rename
        await audited(tmp_path / "audit.jsonl", "config.rejected")
        status, body, _ = await http("POST", f"{proc.url}/reload")
        assert status == 422
        assert isinstance(body, dict)
        assert body["outcome"] == "rejected"
        assert f"{rules}:2:15: automations[0]: 'on' is a required property" in body["problems"]
    trail = (tmp_path / "audit.jsonl").read_text()
    assert "t0ken" not in trail


async def test_a_kubernetes_configmap_swap_takes_effect(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("t\n")
    async with receiver() as recv:
        mount = tmp_path / "config"
        first = mount / "..2026_11_27_01"
        first.mkdir(parents=True)
        (first / "rules.yaml").write_text(BASE.format(url=recv.url, token=tmp_path / "token"))
        (mount / "..data").symlink_to(first.name)
        (mount / "rules.yaml").symlink_to("..data/rules.yaml")
        async with daemon(mount / "rules.yaml", env={"STATE_DIRECTORY": str(tmp_path)}) as proc:
            second = mount / "..2026_11_27_02"
            second.mkdir()
            (second / "rules.yaml").write_text(
                BASE.format(url=recv.url, token=tmp_path / "token") + SECOND.format(url=recv.url)
            )
            (mount / "..data_tmp").symlink_to(second.name)
            os.replace(mount / "..data_tmp", mount / "..data")  # what the kubelet does
            (applied,) = await audited(tmp_path / "audit.jsonl", "config.applied")
            assert applied["automations_added"] == ["second"]
            assert await proc.stop() == 0


def metric(text: str, sample: str) -> float | None:
    """The value of one sample (`name{labels}` as exposed) in a /metrics text; None if absent."""
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return None


async def test_readyz_and_metrics_change(tmp_path: Path) -> None:
    """/readyz reports every check, and /metrics counts what happened: an event received,
    a body refused, an automation matched, an action, its attempt and its latency."""
    async with running(tmp_path) as (proc, recv, _):
        status, body, _ = await http("GET", f"{proc.url}/readyz")
        assert status == 200
        assert body == {
            "ready": True,
            "checks": {
                "rules_loaded": True,
                "listening": True,
                "audit_writable": True,
                "journal_writable": True,
                "state_writable": True,
            },
        }
        _, _, before = await http("GET", f"{proc.url}/metrics")
        assert "automationd_config_last_reload_successful 1.0" in before
        assert "automationd_queue_depth 0.0" in before
        await ping(proc)
        await recv.wait_for(1)
        assert (await proc.post(b"{nope"))[0] == 400
        succeeded = 'automationd_actions_total{kind="webhook",outcome="succeeded"}'

        async def action_counted() -> bool:
            # the receiver has the request before the daemon has its answer: the action's
            # outcome, its attempt and its latency are counted a moment after
            _, _, text = await http("GET", f"{proc.url}/metrics")
            return bool(metric(text, succeeded))

        await until(action_counted, within=15)
        _, _, after = await http("GET", f"{proc.url}/metrics")
        assert 'automationd_events_received_total{type="ping"} 1.0' in after
        assert 'automationd_events_rejected_total{reason="malformed_body"} 1.0' in after
        assert 'automationd_automations_matched_total{automation="first"} 1.0' in after
        assert 'automationd_actions_total{kind="webhook",outcome="succeeded"} 1.0' in after
        assert 'automationd_action_attempts_total{kind="webhook",outcome="ok"} 1.0' in after
        assert 'automationd_action_latency_seconds_count{kind="webhook"} 1.0' in after
        assert "automationd_sla_deadlines_armed 0.0" in after
        assert "automationd_config_last_reload_timestamp_seconds" in after
        # counted when accepted, before the 202: no wait
        assert (await proc.post({"type": "made-up-by-a-client"}))[0] == 202
        _, _, last = await http("GET", f"{proc.url}/metrics")
        assert 'automationd_events_received_total{type="other"} 1.0' in last


class NotifySocket:
    """A real datagram socket standing in for systemd's notification socket."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)
        self.messages: list[str] = []
        self._arrived = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 4096)
            async with self._arrived:
                self.messages.append(data.decode())
                self._arrived.notify_all()

    def count(self, text: str) -> int:
        return sum(text in m for m in self.messages)

    async def wait_for(self, text: str, count: int = 1, within: float = 10.0) -> str:
        """Wait for the `count`-th message containing `text`; that message."""
        async with self._arrived:
            await asyncio.wait_for(
                self._arrived.wait_for(lambda: self.count(text) >= count), within
            )
        return [m for m in self.messages if text in m][count - 1]

    async def close(self) -> None:
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        self.sock.close()


async def test_systemd_notifications_and_watchdog(tmp_path: Path) -> None:
    for address, env_value in (
        (str(tmp_path / "notify.sock"), str(tmp_path / "notify.sock")),
        ("\0automationd-test-" + tmp_path.name, "@automationd-test-" + tmp_path.name),
    ):
        notify = NotifySocket(address)
        try:
            env = {"NOTIFY_SOCKET": env_value, "WATCHDOG_USEC": "200000"}
            async with running(tmp_path, env=env) as (proc, _, _):
                ready = await notify.wait_for("READY=1")
                assert "STATUS=1 automations, 0 SLA deadlines armed" in ready
                pings = notify.count("WATCHDOG=1")
                await notify.wait_for("WATCHDOG=1", pings + 3)  # every 0.1 s
                proc.process.send_signal(signal.SIGHUP)
                reloading = await notify.wait_for("RELOADING=1")
                assert "MONOTONIC_USEC=" in reloading
                await notify.wait_for("READY=1", 2)  # after the reload
                proc.process.send_signal(signal.SIGTERM)
                await notify.wait_for("STOPPING=1")
        finally:
            await notify.close()


async def test_saving_the_running_rules_after_a_rejection_is_a_successful_outcome(
    tmp_path: Path,
) -> None:
    """The fixed file is byte for byte the rules still running: nothing to swap, but the
    rejection is over, which the gauge, the log, the audit trail and /rules must say."""
    trail = tmp_path / "audit.jsonl"
    async with running(tmp_path) as (proc, _, rules):
        good = rules.read_text()
        write_atomically(rules, good.replace("automations:", "automatons:"))
        await audited(trail, "config.rejected")
        _, _, metrics = await http("GET", f"{proc.url}/metrics")
        assert "automationd_config_last_reload_successful 0.0" in metrics
        write_atomically(rules, good)
        (restored,) = await audited(trail, "config.restored")
        assert restored["trigger"] == "watch"
        assert restored["path"] == str(rules)
        assert restored["sha256"] == hashlib.sha256(good.encode()).hexdigest()
        _, _, metrics = await http("GET", f"{proc.url}/metrics")
        assert "automationd_config_last_reload_successful 1.0" in metrics
        _, body, _ = await http("GET", f"{proc.url}/rules")
        assert isinstance(body, dict)
        assert body["last_reload"]["outcome"] == "restored"

        async def logged() -> bool:
            return any(f"{rules} is the running rules again" in line for line in proc.log)

        await until(logged, within=15)
        # saved once more, unchanged: nothing to tell
        write_atomically(rules, good)
        await until(lambda: _last_outcome(proc.url, "unchanged"), within=15)
    kinds = [r["kind"] for r in audit_records(trail) if str(r["kind"]).startswith("config.")]
    assert kinds == ["config.loaded", "config.rejected", "config.restored"]


async def _last_outcome(url: str, outcome: str) -> bool:
    _, body, _ = await http("GET", f"{url}/rules")
    return isinstance(body, dict) and body["last_reload"]["outcome"] == outcome


async def test_the_prefect_gauge_is_exported_only_with_a_subscription(tmp_path: Path) -> None:
    """Without a Prefect subscription there is no `automationd_prefect_subscription_up` at
    all, so an alert on 0 fires only for a subscription that is down."""
    async with running(tmp_path) as (proc, _, rules):
        _, _, metrics = await http("GET", f"{proc.url}/metrics")
        assert "automationd_queue_depth 0.0" in metrics
        assert "automationd_prefect_subscription_up" not in metrics
        prefect = f'prefect: {{api_url: "http://127.0.0.1:{free_port()}/api", subscribe: true}}\n'
        write_atomically(rules, rules.read_text().replace("automations:", prefect + "automations:"))
        await audited(tmp_path / "audit.jsonl", "config.applied")
        _, _, metrics = await http("GET", f"{proc.url}/metrics")
        assert "automationd_prefect_subscription_up 0.0" in metrics  # down: nothing listens
