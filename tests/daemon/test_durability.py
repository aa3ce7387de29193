"""The guarantees, against the real daemon: 202 means it happens, once per id."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from tests.standins import PagerDuty, play
from tests.support import (
    Received,
    audit_records,
    daemon,
    forwarding_rules,
    free_port,
    mount_small_tmpfs,
    receiver,
)


def same_key_for_each_repeat(
    requests: list[Received], key_of: Callable[[Received], tuple[str, str]]
) -> int:
    """Check that every repeated delivery of an event carries the key its first delivery
    carried, and that no two events share a key; the number of repeats."""
    first: dict[str, str] = {}
    repeats = 0
    for request in requests:
        event_id, key = key_of(request)
        assert key, event_id
        if event_id in first:
            repeats += 1
            assert key == first[event_id], f"{event_id}: a repeat with another key"
        else:
            first[event_id] = key
    assert len(set(first.values())) == len(first)
    return repeats


def idempotency_key(request: Received) -> tuple[str, str]:
    return request.headers["X-PREFECT-EVENT-ID"], request.headers["Idempotency-Key"]


def dedup_key(request: Received) -> tuple[str, str]:
    assert isinstance(request.body, dict)
    payload = request.body["payload"]
    return str(payload["custom_details"]["id"]), str(request.body["dedup_key"])


async def test_every_accepted_event_is_delivered_after_kill_9(tmp_path: Path) -> None:
    """Every event with a 202 is delivered after a kill -9, and a delivery the kill cut short
    is repeated with the key of the first: the same `Idempotency-Key` for a webhook, the same
    `dedup_key` for PagerDuty. The `page` automation's destinations answer slowly before the
    kill, so it finds deliveries in flight there (received, never answered)."""
    port = free_port()  # the forward destination is down while events arrive
    async with receiver() as live:
        live.delay.update({"/v2/enqueue": 0.5, "/live": 0.5})
        pagerduty = play(live, PagerDuty(), others=True)  # its events checked as PagerDuty would
        rules = forwarding_rules(
            tmp_path,
            f"http://127.0.0.1:{port}",
            extra=f'endpoints: {{pagerduty: "{live.url}"}}\n'
            "delivery: {concurrency_per_destination: 8}",
            more=f"""\
  - name: page
    on: [job_done]
    actions:
      - pagerduty: {{routing_key: R0UTING0KEY0OF0THIRTY0TWO0CHARSX}}
      - webhook: {{url: "{live.url}/live"}}
""",
        )
        accepted: list[str] = []
        async with daemon(rules) as proc:

            async def send(batch: int) -> None:
                events = [{"type": "job_done", "id": f"job-{batch}-{i}"} for i in range(10)]
                try:
                    status, answer = await proc.post(events)
                except aiohttp.ClientError:
                    return  # the daemon died under this request: no 202, no promise
                if status == 202:
                    assert isinstance(answer, dict)
                    accepted.extend(answer["accepted"])

            sending = [asyncio.create_task(send(b)) for b in range(40)]
            async with asyncio.timeout(10):
                # mid-load, with more than one destination's 8 deliveries in flight: both
                while len(accepted) < 150 or live.in_flight <= 8:  # noqa: ASYNC110
                    await asyncio.sleep(0.005)
            # no await between the check and the kill: these requests are received and will
            # never be answered to this daemon (aiohttp does not cancel their handlers, so
            # each is recorded once its delay is over), so each must be delivered again
            cut_short = live.in_flight
            proc.process.kill()
            await proc.process.wait()
            await asyncio.gather(*sending)
        assert len(accepted) >= 150
        live.delay.clear()  # those in flight still take their 0.5 s, then are recorded
        # the segments of the last second are still there (a kill cannot tear a write)
        left = sum(
            len(path.read_bytes().splitlines())
            for path in (tmp_path / "state.db-events").glob("*.log")
        )

        def all_delivered() -> bool:
            return (
                live.in_flight == 0
                and set(accepted) <= {idempotency_key(r)[0] for r in recv.requests}
                and set(accepted)
                <= {idempotency_key(r)[0] for r in live.requests if r.path == "/live"}
                and set(accepted)
                <= {dedup_key(r)[0] for r in live.requests if r.path == "/v2/enqueue"}
            )

        async with receiver(port) as recv, daemon(rules) as proc:
            async with asyncio.timeout(30):
                while not all_delivered():  # noqa: ASYNC110 - polling the receivers
                    await asyncio.sleep(0.05)
            assert await proc.stop() == 0
    if left:
        assert any(f"recovered {left} events" in line for line in proc.log)
    assert not list((tmp_path / "state.db-events").glob("*.log"))
    delivered = [r.headers["X-PREFECT-EVENT-ID"] for r in recv.requests]
    # each repeat is checked to carry the first's key; the forward destination was down
    # before the kill, so its repeats (if any) are retries after it
    repeats = {
        "forward webhook": same_key_for_each_repeat(recv.requests, idempotency_key),
        "page webhook": same_key_for_each_repeat(
            [r for r in live.requests if r.path == "/live"], idempotency_key
        ),
        "page pagerduty": same_key_for_each_repeat(
            [r for r in live.requests if r.path == "/v2/enqueue"], dedup_key
        ),
    }
    print(
        f"\n{len(accepted)} events got 202 before kill -9 ({left} in segments); "
        f"all {len(set(accepted))} delivered; {cut_short} cut short by the kill; "
        f"repeats, each with the first's key: {repeats}"
    )
    # every delivery the kill cut short was repeated after the restart (with the first's key,
    # checked above): one more request for its event and destination than were in flight
    assert cut_short > 8
    assert repeats["page webhook"] + repeats["page pagerduty"] >= cut_short
    assert set(accepted) <= set(delivered)
    assert pagerduty.malformed == []
    resumed = [r for r in audit_records(tmp_path / "audit.jsonl") if r["kind"] == "event.resumed"]
    assert resumed


async def test_accepted_records_lost_in_a_crash_are_written_on_resume(tmp_path: Path) -> None:
    """The journal makes an event durable before its 202; its `event.accepted` record may
    still wait in the daemon's memory when it is killed. That loss is made exact here: after
    the kill -9, the audit file is cut back in the middle of the record of the 16th event, as
    a lost buffer and a write cut short leave it. On start the torn line is cut off, and each
    resumed event without its record gets it (`resumed: true`), each event exactly once."""
    port = free_port()  # the destination is down: every event stays unfinished
    rules = forwarding_rules(tmp_path, f"http://127.0.0.1:{port}", extra="audit: {fsync: never}")
    trail = tmp_path / "audit.jsonl"
    accepted: list[str] = []
    async with daemon(rules) as proc:
        for n in range(30):
            status, answer = await proc.post({"type": "job_done", "id": f"kept-{n}"})
            assert status == 202, answer
            accepted.append(f"kept-{n}")

        def recorded() -> list[object]:
            return [r["event_id"] for r in audit_records(trail) if r["kind"] == "event.accepted"]

        async with asyncio.timeout(15):
            while len(recorded()) < len(accepted):  # noqa: ASYNC110 - polling the file
                await asyncio.sleep(0.05)
        proc.process.kill()
        await proc.process.wait()
    assert recorded() == accepted
    data = trail.read_bytes()
    cut = data.index(b'"kind":"event.accepted","event_id":"kept-15"')
    with trail.open("r+b") as file:
        file.truncate(cut + 5)
    lost = set(accepted[15:])
    async with receiver(port) as recv, daemon(rules) as proc:
        async with asyncio.timeout(30):
            while not set(accepted) <= {r.headers["X-PREFECT-EVENT-ID"] for r in recv.requests}:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert await proc.stop() == 0
    text = trail.read_text("utf-8")
    assert text.endswith("\n")
    records = [json.loads(line) for line in text.splitlines()]  # every line whole JSON
    acceptances = [r for r in records if r["kind"] == "event.accepted"]
    assert sorted(r["event_id"] for r in acceptances) == sorted(accepted)  # each once
    rewritten = [r for r in acceptances if r.get("resumed")]
    assert {r["event_id"] for r in rewritten} == lost
    for record in rewritten:  # with the normalised event, as at acceptance
        event = record["event"]
        assert isinstance(event, dict)
        assert (event["id"], event["type"], record["event_type"]) == (
            record["event_id"],
            "job_done",
            "job_done",
        )
        assert "timestamp" in event
        assert "message" in event
    assert any("15 resumed events had no event.accepted record" in line for line in proc.log)
    assert any("cut a torn last line" in line for line in proc.log)


async def test_segments_a_crash_left_are_recovered_on_start(tmp_path: Path) -> None:
    """The segment files are what makes a 202 durable; the database is written from them a
    moment later. A power loss can leave events in a segment that the database never got:
    on start they are written into it and processed; an event the database already has
    (here finished) is not processed again; a line torn by the crash is skipped, logged."""
    async with receiver() as recv:
        rules = forwarding_rules(tmp_path, recv.url)
        async with daemon(rules) as proc:
            assert (await proc.post({"type": "job_done", "id": "kept"}))[0] == 202
            await recv.wait_for(1)
            assert await proc.stop() == 0
        segments = tmp_path / "state.db-events"
        assert not list(segments.glob("*.log"))  # a clean stop leaves none behind
        now = time.time()
        lost = json.dumps({"type": "job_done", "id": "lost", "time": "2026-11-27T10:00:00Z"})
        kept = json.dumps({"type": "job_done", "id": "kept", "time": "2026-11-27T10:00:00Z"})
        (segments / "00000007.log").write_text(
            f'["lost",{now},{lost}]\n["kept",{now},{kept}]\n["torn",{now},{{"type":"jo'
        )
        async with daemon(rules) as proc:
            await recv.wait_for(2)
            # no wait for a wrong third delivery: recovered events are queued before the
            # daemon listens, and a stop matches what is queued and lets every action finish
            assert await proc.stop() == 0
        assert any("recovered 2 events" in line for line in proc.log)
        assert any("00000007.log:3: skipped a journal line" in line for line in proc.log)
        assert not (segments / "00000007.log").exists()
    assert [r.headers["X-PREFECT-EVENT-ID"] for r in recv.requests] == ["kept", "lost"]


async def test_a_duplicate_id_is_accepted_but_not_processed_again(tmp_path: Path) -> None:
    async with receiver() as recv:
        rules = forwarding_rules(tmp_path, recv.url)
        async with daemon(rules) as proc:
            status, answer = await proc.post({"type": "job_done", "id": "same"})
            assert (status, answer) == (202, {"accepted": ["same"]})
            status, answer = await proc.post({"type": "job_done", "id": "same"})
            assert (status, answer) == (
                202,
                {"accepted": ["same"], "duplicates": ["same"], "duplicate": True},
            )
            status, answer = await proc.post(
                [{"type": "job_done", "id": "other"}, {"type": "job_done", "id": "other"}]
            )
            assert answer == {
                "accepted": ["other", "other"],
                "duplicates": ["other"],
                "duplicate": False,
            }
            await recv.wait_for(2)
            assert await proc.stop() == 0
        async with daemon(rules) as proc:  # remembered across a restart
            status, answer = await proc.post({"type": "job_done", "id": "same"})
            assert answer == {"accepted": ["same"], "duplicates": ["same"], "duplicate": True}
            assert await proc.stop() == 0
    assert sorted(r.headers["X-PREFECT-EVENT-ID"] for r in recv.requests) == ["other", "same"]


async def test_an_id_is_new_again_after_the_dedup_window(tmp_path: Path) -> None:
    """An id seen within `state.dedup_window` is a duplicate; once the window has passed
    since its first acceptance, it is a new event again. The window is 3 s, so the repeat
    right after the first surely falls within it on a loaded machine."""
    window = 3.0
    async with receiver() as recv:
        rules = forwarding_rules(tmp_path, recv.url, extra=f"state: {{dedup_window: {window:g}s}}")
        async with daemon(rules) as proc:
            assert await proc.post({"type": "job_done", "id": "nightly"}) == (
                202,
                {"accepted": ["nightly"]},
            )
            first_answered = time.time()  # the daemon took it no later than this
            assert await proc.post({"type": "job_done", "id": "nightly"}) == (
                202,
                {"accepted": ["nightly"], "duplicates": ["nightly"], "duplicate": True},
            )
            # the window passes: a wait for the clock (both processes read the same one)
            await asyncio.sleep(max(0.0, first_answered + window - time.time()) + 0.2)
            assert await proc.post({"type": "job_done", "id": "nightly"}) == (
                202,
                {"accepted": ["nightly"]},
            )
            await recv.wait_for(2)
            assert await proc.stop() == 0
    assert [r.headers["X-PREFECT-EVENT-ID"] for r in recv.requests] == ["nightly", "nightly"]


def small_tmpfs(path: Path) -> None:
    """A 2 MiB tmpfs on `path`, for a journal that cannot be written."""
    mount_small_tmpfs(path, "2m", "as root, permissions cannot make a path unwritable")


async def test_an_unwritable_journal_answers_503_never_202(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    small_tmpfs(disk)
    try:
        async with receiver() as recv:
            rules = forwarding_rules(
                tmp_path, recv.url, extra=f"state: {{url: 'sqlite:///{disk}/state.db'}}"
            )
            async with daemon(rules) as proc:
                status, _ = await proc.post({"type": "job_done", "id": "before"})
                assert status == 202
                filler = disk / "filler"
                await asyncio.to_thread(
                    subprocess.run,
                    ["dd", "if=/dev/zero", f"of={filler}", "bs=64k"],
                    capture_output=True,
                    check=False,
                )
                refused = 0
                for n in range(20):
                    event = {"type": "job_done", "id": f"full-{n}", "pad": "x" * 20_000}
                    status, answer = await proc.post(event)
                    assert status in (202, 503)
                    if status == 503:
                        refused += 1
                        assert isinstance(answer, dict)
                        assert "could not be made durable" in str(answer["error"])
                assert refused > 0
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"{proc.url}/readyz") as response,
                ):
                    assert response.status == 503
                    body = await response.json()
                    assert body["checks"]["journal_writable"] is False
                filler.unlink()
                status, _ = await proc.post({"type": "job_done", "id": "after"})
                assert status == 202
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"{proc.url}/readyz") as response,
                ):
                    assert response.status == 200
                await recv.wait_for_path("/hook", 2)
                assert await proc.stop() == 0
        delivered = {r.headers["X-PREFECT-EVENT-ID"] for r in recv.requests}
        assert {"before", "after"} <= delivered
    finally:
        await asyncio.to_thread(subprocess.run, ["umount", str(disk)], check=False)
