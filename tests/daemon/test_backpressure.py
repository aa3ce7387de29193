"""Backpressure, against the real daemon: a queue past `server.queue_size` answers 429."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import aiohttp

from tests.support import daemon, forwarding_rules, receiver, until


def unread_bytes(port: int) -> list[int]:
    """For each established TCP connection to local `port` (IPv4), how many bytes it has
    received that its process has not read yet (Linux's /proc/net/tcp rx_queue)."""
    unread = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, queues = fields[1], fields[3], fields[4]
        if int(local.rsplit(":", 1)[1], 16) == port and state == "01":  # ESTABLISHED
            unread.append(int(queues.split(":")[1], 16))
    return unread


def http_answer(raw: bytes) -> tuple[int, dict[str, str], object]:
    """Status, headers (lower-case names) and JSON body of one whole HTTP/1.1 response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, value in (h.split(":", 1) for h in lines)}
    return int(status_line.split()[1]), headers, json.loads(body)


async def test_a_flooded_queue_answers_429(tmp_path: Path) -> None:
    """More than `server.queue_size` events waiting to be matched: 429 with Retry-After: 1,
    and the rejection metric counts events, not requests.

    Which requests find the queue full must not depend on how the machine schedules them.
    So the daemon is stopped (SIGSTOP) while five requests of 100 events are sent whole, and
    let go once every byte of them waits in its sockets: it then reads them all in the same
    turn of its loop and checks them one after another before the journal can answer any.
    The first one checked finds nothing waiting (100 <= 150: 202); the next finds those 100
    still waiting to be made durable and matched (200 > 150: 429)."""
    async with receiver() as recv:
        rules = forwarding_rules(tmp_path, recv.url, server=", queue_size: 150")
        async with daemon(rules) as proc:
            host, port = proc.url.removeprefix("http://").rsplit(":", 1)
            body = json.dumps([{"type": "job_done"} for _ in range(100)]).encode()
            request = (
                f"POST /events HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode() + body
            proc.process.send_signal(signal.SIGSTOP)
            try:
                streams = [await asyncio.open_connection(host, int(port)) for _ in range(5)]
                for _, writer in streams:
                    writer.write(request)
                    await writer.drain()

                async def all_waiting() -> bool:
                    return sorted(unread_bytes(int(port))) == [len(request)] * len(streams)

                await until(all_waiting, within=15)
            finally:
                proc.process.send_signal(signal.SIGCONT)
            answers = []
            for reader, writer in streams:
                answers.append(http_answer(await asyncio.wait_for(reader.read(), 15)))
                writer.close()
            statuses = [status for status, _, _ in answers]
            assert 202 in statuses, statuses
            assert 429 in statuses, statuses
            for status, headers, answer in answers:
                if status == 429:
                    assert headers["retry-after"] == "1"
                    assert answer == {"error": "the queue is full; retry later", "field": None}
                else:
                    assert status == 202, (status, answer)
                    assert isinstance(answer, dict)
                    assert len(answer["accepted"]) == 100
            await recv.wait_for(100 * statuses.count(202), within=20)
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{proc.url}/metrics") as response,
            ):
                metrics = await response.text()
            # the counter counts events refused, not requests
            expected = f"{100 * statuses.count(429)}.0"
            assert f'automationd_events_rejected_total{{reason="queue_full"}} {expected}' in metrics
            assert await proc.stop() == 0  # lets every action finish: nothing more arrives
    assert len(recv.requests) == 100 * statuses.count(202)
