"""Soak: a steady event rate, half of it for a destination that accepts connections and never
answers, while the daemon's memory is sampled. Memory must stay flat: actions for the hanging
destination are bounded (delivery.max_pending_per_destination), and the rest become dead
letters at once.

    .venv/bin/python bench/soak.py [--seconds 600] [--rate 300] [--every 10]

Prints one line per sample (elapsed, RSS, pending actions at the hanging destination, actions
failed, webhooks the healthy receiver got) and a summary: RSS at the start, highest, at the
end and after draining, and the RSS slope over the second half of the run.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from common import running_daemon, running_receiver

RULES = """\
version: 1
server: {{listen: "127.0.0.1:0", queue_size: 100000}}
audit: {{path: audit.jsonl}}
automations:
  - name: to-hanging
    on: [job_done]
    match: {{target: hanging}}
    actions:
      - webhook: {{url: "http://{hanging}/hook", timeout: 2s, retry: {{attempts: 3}}}}
  - name: to-healthy
    on: [job_done]
    match: {{target: healthy}}
    actions:
      - webhook: {{url: "{healthy}/hook"}}
"""


def rss_mib(pid: int) -> float:
    """Resident memory of a process, MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None
    return int(match.group(1)) / 1024


def metric(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def hanging_server() -> tuple[asyncio.Server, list[asyncio.StreamWriter]]:
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while await reader.read(65536):
            pass
        held.remove(writer)  # the daemon gave up on this attempt: let its socket go
        writer.close()

    return await asyncio.start_server(hold, "127.0.0.1", 0), held


async def soak(seconds: float, rate: int, every: float, drain: float) -> None:
    received = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal received
        await request.read()
        received += 1
        return web.json_response({"ok": True})

    server, held = await hanging_server()
    hanging = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    with tempfile.TemporaryDirectory() as folder:
        async with running_receiver(hook) as healthy:
            rules = Path(folder) / "rules.yaml"
            rules.write_text(RULES.format(hanging=hanging, healthy=healthy))
            async with running_daemon(rules) as url, aiohttp.ClientSession() as session:
                async with session.get(f"{url}/healthz") as response:
                    assert response.status == 200
                pid = await asyncio.to_thread(daemon_pid, rules)
                samples: list[tuple[float, float]] = []
                statuses: dict[int, int] = {}

                async def sample(elapsed: float) -> None:
                    async with session.get(f"{url}/metrics") as response:
                        text = await response.text()
                    pending = metric(
                        text, "automationd_actions_pending", f'{{destination="{hanging}"}}'
                    )
                    failed = metric(
                        text, "automationd_actions_total", '{kind="webhook",outcome="failed"}'
                    )
                    rss = rss_mib(pid)
                    samples.append((elapsed, rss))
                    print(
                        f"{elapsed:7.0f} s  RSS {rss:6.1f} MiB  pending {pending:5.0f}  "
                        f"failed {failed:7.0f}  healthy got {received:7d}  "
                        f"answers {dict(sorted(statuses.items()))}",
                        flush=True,
                    )

                async def send(n: int) -> None:
                    event = {"type": "job_done", "target": "hanging" if n % 2 else "healthy"}
                    async with session.post(f"{url}/events", json=event) as response:
                        statuses[response.status] = statuses.get(response.status, 0) + 1

                start = time.monotonic()
                await sample(0)
                sent = 0
                in_flight: set[asyncio.Task[None]] = set()
                next_sample = every
                while (elapsed := time.monotonic() - start) < seconds:
                    due = int(elapsed * rate)
                    while sent < due:
                        task = asyncio.create_task(send(sent))
                        in_flight.add(task)
                        task.add_done_callback(in_flight.discard)
                        sent += 1
                    if elapsed >= next_sample:
                        await sample(elapsed)
                        next_sample += every
                    await asyncio.sleep(0.01)
                await asyncio.gather(*in_flight)
                await asyncio.sleep(drain)
                await sample(time.monotonic() - start)
                print(f"sent {sent} events in {seconds:.0f} s ({sent / seconds:.0f}/s)")
                _summary(samples, seconds)
    for writer in held:
        writer.close()
    server.close()


def daemon_pid(rules: Path) -> int:
    """The process whose command line names this run's rules file."""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(rules) in (proc / "cmdline").read_bytes().decode():
                return int(proc.name)
        except (OSError, UnicodeDecodeError):
            continue
    raise RuntimeError("the daemon's process was not found")


def _summary(samples: list[tuple[float, float]], seconds: float) -> None:
    during = [(t, rss) for t, rss in samples if t <= seconds]
    second_half = [(t, rss) for t, rss in during if t >= seconds / 2]
    slope = 0.0
    if len(second_half) >= 2:
        n = len(second_half)
        mean_t = sum(t for t, _ in second_half) / n
        mean_r = sum(r for _, r in second_half) / n
        var = sum((t - mean_t) ** 2 for t, _ in second_half)
        slope = sum((t - mean_t) * (r - mean_r) for t, r in second_half) / var * 60
    print(
        f"RSS start {samples[0][1]:.1f} MiB, highest {max(r for _, r in samples):.1f} MiB, "
        f"end of sending {during[-1][1]:.1f} MiB, after draining {samples[-1][1]:.1f} MiB; "
        f"slope over the second half {slope:+.2f} MiB/min"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--rate", type=int, default=300, help="events per second")
    parser.add_argument("--every", type=float, default=10, help="seconds between samples")
    parser.add_argument("--drain", type=float, default=30, help="seconds after sending")
    args = parser.parse_args()
    asyncio.run(soak(args.seconds, args.rate, args.every, args.drain))


if __name__ == "__main__":
    main()
