"""The benchmark suite: automationd side by side with the aiohttp ceiling and Prometheus
Alertmanager, in one run, on 127.0.0.1. Prints one table: medians of `--runs` rounds with
min-max, the ratios, and the targets with what was measured beside them.

    bench/run [--runs 3] [--seconds 5]        # installs wrk and Alertmanager when missing

The server under test is pinned to CPU 0 and the load generator (wrk, 1 thread) to CPU 1.
Rounds are interleaved (ceiling, automationd, Alertmanager, then again), so a noisy
neighbour slows all of them alike. Scenarios:

- ingest: the same number of events (alerts) one per request and 100 per request, through
  the bare aiohttp handler of bench/ceiling.py, automationd with 10, 100 and 10,000
  automations (spread over 10 event types, each on its own flow with a `state` matcher and a
  `when:` condition; 1 % of the events fire a webhook), audit trail and journal on, and
  Prometheus Alertmanager (a null receiver); automationd with the journal off, once;
- event-to-webhook latency at half the measured single-event rate (100 automations, the same
  mix), from the send time carried in the event to its arrival at a receiver of its own;
  percentiles over the webhooks of all rounds;
- actions per second: 10,000 events that each fire a webhook, until the receiver has them all;
- start to ready (first 200 from /readyz), idle RSS, and RSS under single-event load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web
from common import free_port, pinned, running_receiver

HERE = Path(__file__).resolve().parent
SERVER_CPU, LOAD_CPU = 0, 1
SIZES = (10, 100, 10_000)
TYPES = 10


# --- what is sent


def event(n: int, automations: int, fires: bool, **extra: object) -> dict[str, object]:
    """Event n: on flow n % automations (whose automation selects its type); Failed when it
    should fire, Running (ruled out by the state matcher) otherwise."""
    flow = n % automations
    return {
        "type": f"type_{flow % TYPES}",
        "flow_name": f"flow-{flow}",
        "flow_run_id": f"run-{n}",
        "state": "Failed" if fires else "Running",
        "count": 11,
        "env": "prod",
        **extra,
    }


def bodies(automations: int, batch: int) -> list[str]:
    """Request bodies wrk cycles through: 1 event in 100 fires."""
    if batch == 1:
        return [json.dumps(event(n, automations, n % 100 == 0)) for n in range(100)]
    return [
        json.dumps([event(b * batch + i, automations, i == 0) for i in range(batch)])
        for b in range(10)
    ]


def alert_bodies(batch: int) -> list[str]:
    """The same shape for Alertmanager: distinct label sets, 100 per request or 1."""
    if batch == 1:
        return [
            json.dumps([{"labels": alert_labels(n), "annotations": {"summary": "s"}}])
            for n in range(1000)
        ]
    return [
        json.dumps(
            [
                {"labels": alert_labels(b * batch + i), "annotations": {"summary": "s"}}
                for i in range(batch)
            ]
        )
        for b in range(10)
    ]


def alert_labels(n: int) -> dict[str, str]:
    return {
        "alertname": f"type_{n % TYPES}",
        "flow_name": f"flow-{n % 100}",
        "flow_run_id": f"run-{n}",
        "state": "Running",
    }


def rules(automations: int, hook: str, port: int, *, journal: bool = True) -> str:
    lines = [
        "version: 1",
        f'server: {{listen: "127.0.0.1:{port}", max_body_bytes: 4194304, queue_size: 1000000}}',
        "audit: {path: audit.jsonl}",
        f'state: {{url: "sqlite:///state.db", journal: {str(journal).lower()}}}',
        "automations:",
    ]
    for i in range(automations):
        lines.append(
            f"  - {{name: flow-{i}-failed, on: [type_{i % TYPES}], "
            f"match: {{flow_name: flow-{i}, state: Failed}}, when: 'count > `10`', "
            f'actions: [{{webhook: {{url: "{hook}"}}}}]}}'
        )
    return "\n".join(lines) + "\n"


def wrk_script(path: Path, url_path: str, payloads: list[str]) -> Path:
    entries = ",\n".join(f"[==[{body}]==]" for body in payloads)
    path.write_text(
        f"local bodies = {{\n{entries}\n}}\n"
        'local headers = {["Content-Type"] = "application/json"}\n'
        "local i = 0\n"
        "request = function()\n"
        "  i = i % #bodies + 1\n"
        f'  return wrk.format("POST", "{url_path}", headers, bodies[i])\n'
        "end\n"
    )
    return path


# --- processes under test


@dataclass
class Server:
    process: asyncio.subprocess.Process
    url: str
    ready_in: float
    """Seconds from the start of the process to its first ready answer."""

    def rss_mib(self) -> float:
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return float("nan")
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        return int(match.group(1)) / 1024 if match else float("nan")

    def cpu_seconds(self) -> float:
        """User and system CPU time the process has used so far."""
        try:
            stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        except OSError:
            return float("nan")
        fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.asynccontextmanager
async def serving(
    argv: list[str], port: int, ready: str, cwd: Path, cpu: int = SERVER_CPU
) -> AsyncIterator[Server]:
    """Start `argv` pinned to `cpu`; yield once GET `ready` answers 200."""
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *pinned(cpu),
        *argv,
        cwd=cwd,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            while True:
                if process.returncode is not None:
                    raise RuntimeError(f"{argv[0]} exited with {process.returncode}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(url + ready) as response:
                        if response.status == 200:
                            break
                if time.perf_counter() - started > 120:
                    raise RuntimeError(f"{argv[0]} was not ready within 120 s")
                await asyncio.sleep(0.005)
        yield Server(process, url, time.perf_counter() - started)
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()


def ceiling(port: int, cwd: Path) -> contextlib.AbstractAsyncContextManager[Server]:
    return serving([sys.executable, str(HERE / "ceiling.py"), str(port)], port, "/readyz", cwd)


def automationd(
    automations: int, hook: str, cwd: Path, *, journal: bool = True
) -> contextlib.AbstractAsyncContextManager[Server]:
    port = free_port()
    (cwd / "rules.yaml").write_text(rules(automations, hook, port, journal=journal))
    argv = [sys.executable, "-m", "automationd", "run", "--config", "rules.yaml"]
    return serving(argv, port, "/readyz", cwd)


def alertmanager(cwd: Path) -> contextlib.AbstractAsyncContextManager[Server]:
    port = free_port()
    (cwd / "alertmanager.yml").write_text(
        'route: {receiver: "null", group_by: [alertname]}\nreceivers: [{name: "null"}]\n'
    )
    argv = [
        "prometheus-alertmanager",
        "--config.file=alertmanager.yml",
        f"--storage.path={cwd / 'am'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
        "--log.level=warn",
    ]
    return serving(argv, port, "/-/ready", cwd)


# --- load


@dataclass
class Wrk:
    requests_per_s: float
    failures: int


async def wrk(url: str, script: Path, connections: int, seconds: float) -> Wrk:
    process = await asyncio.create_subprocess_exec(
        *pinned(LOAD_CPU),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "-s",
        str(script),
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out = (await process.communicate())[0].decode()
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if process.returncode != 0 or rate is None:
        raise RuntimeError(f"wrk failed:\n{out}")
    refused = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failures = int(refused.group(1)) if refused else 0
    failures += sum(int(n) for n in errors.groups()) if errors else 0
    return Wrk(float(rate.group(1)), failures)


async def sampled_rss(server: Server, running: asyncio.Task[Wrk]) -> float:
    """The largest RSS of `server` seen while `running` goes on."""
    peak = server.rss_mib()
    while not running.done():
        peak = max(peak, server.rss_mib())
        await asyncio.sleep(0.2)
    return peak


# --- results


@dataclass
class Results:
    values: dict[str, list[float]] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    pooled: dict[str, list[float]] = field(default_factory=dict)

    def percentile(self, name: str, share: float) -> float:
        """A percentile of the samples of every round together (ms)."""
        samples = sorted(self.pooled.get(name, []))
        return samples[int(share * (len(samples) - 1))] * 1000 if samples else float("nan")

    def add(self, name: str, value: float) -> None:
        self.values.setdefault(name, []).append(value)

    def median(self, name: str) -> float:
        return statistics.median(self.values[name]) if name in self.values else float("nan")

    def cell(self, name: str, fmt: str = ",.0f") -> str:
        if name not in self.values:
            return "not measured"
        got = self.values[name]
        return f"{statistics.median(got):{fmt}} ({min(got):{fmt}}-{max(got):{fmt}})"


async def ingest_round(
    results: Results, args: argparse.Namespace, hook: str, work: Path, scripts: dict[str, Path]
) -> None:
    """One round of every ingest scenario, server after server."""
    for batch in (1, 100):
        connections = args.connections if batch == 1 else 8
        kind = "single" if batch == 1 else "batch"
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            async with ceiling(free_port(), Path(tmp)) as server:
                await wrk(server.url + "/events", scripts[f"{kind}-100"], connections, 1)
                got = await wrk(
                    server.url + "/events", scripts[f"{kind}-100"], connections, args.seconds
                )
                record(results, f"ceiling {kind}", got, batch)
        for size in SIZES:
            with tempfile.TemporaryDirectory(dir=work) as tmp:
                async with automationd(size, hook, Path(tmp)) as server:
                    await wrk(server.url + "/events", scripts[f"{kind}-{size}"], connections, 1)
                    load = asyncio.create_task(
                        wrk(
                            server.url + "/events",
                            scripts[f"{kind}-{size}"],
                            connections,
                            args.seconds,
                        )
                    )
                    peak = await sampled_rss(server, load)
                    record(results, f"automationd {size} {kind}", await load, batch)
                    if size == 100 and batch == 1:
                        results.add("rss under load", peak)
        if batch == 1:
            with tempfile.TemporaryDirectory(dir=work) as tmp:
                async with automationd(100, hook, Path(tmp), journal=False) as server:
                    await wrk(server.url + "/events", scripts["single-100"], connections, 1)
                    got = await wrk(
                        server.url + "/events", scripts["single-100"], connections, args.seconds
                    )
                    record(results, "automationd 100 single journal off", got, batch)
        if shutil.which("prometheus-alertmanager"):
            with tempfile.TemporaryDirectory(dir=work) as tmp:
                async with alertmanager(Path(tmp)) as server:
                    url = server.url + "/api/v2/alerts"
                    await wrk(url, scripts[f"alerts-{kind}"], connections, 1)
                    got = await wrk(url, scripts[f"alerts-{kind}"], connections, args.seconds)
                    record(results, f"alertmanager {kind}", got, batch)


def record(results: Results, name: str, got: Wrk, batch: int) -> None:
    results.add(name, got.requests_per_s * batch)
    if got.failures:
        results.failures[name] = results.failures.get(name, 0) + got.failures


async def latency_round(results: Results, rate: float, seconds: float, work: Path) -> None:
    """Open-loop load at `rate` events/s, the mix of the ingest scenarios (1 in 100 fires a
    webhook) carrying its send time, to bench/receiver.py (a process of its own on the load
    CPU). The delays of all rounds are pooled for the percentiles."""
    async with contextlib.AsyncExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=work)))
        port = free_port()
        receiver = await stack.enter_async_context(
            serving(
                [sys.executable, str(HERE / "receiver.py"), str(port)],
                port,
                "/readyz",
                tmp,
                cpu=LOAD_CPU,
            )
        )
        server = await stack.enter_async_context(automationd(100, receiver.url + "/hook", tmp))
        counter = iter(range(10**9))
        start = time.perf_counter() + 0.1
        end = start + seconds
        sent = 0
        host, port_text = server.url.removeprefix("http://").split(":")

        async def sender() -> None:
            """One keep-alive connection speaking just enough HTTP/1.1: a light sender, so
            the load CPU stays free for the receiver's arrival times."""
            nonlocal sent
            reader, writer = await asyncio.open_connection(host, int(port_text))
            try:
                while True:
                    n = next(counter)
                    due = start + n / rate
                    if due >= end:
                        return
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                    body = json.dumps(event(n, 100, n % 100 == 0, sent=time.time())).encode()
                    writer.write(
                        b"POST /events HTTP/1.1\r\nHost: bench\r\n"
                        b"Content-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                    )
                    head = await reader.readuntil(b"\r\n\r\n")
                    if not head.startswith(b"HTTP/1.1 202"):
                        raise RuntimeError(f"automationd answered {head[:40]!r}")
                    length = re.search(rb"(?i)content-length: (\d+)", head)
                    await reader.readexactly(int(length.group(1)) if length else 0)
                    sent += 1
            finally:
                writer.close()

        await asyncio.gather(*(sender() for _ in range(128)))
        delays: list[float] = []
        expected = sum(1 for n in range(sent) if n % 100 == 0)
        async with aiohttp.ClientSession() as session:
            deadline = time.perf_counter() + 10
            while len(delays) < expected and time.perf_counter() < deadline:
                async with session.get(receiver.url + "/delays") as response:
                    delays += await response.json()
                await asyncio.sleep(0.1)
    results.add("latency rate", sent / seconds)
    results.pooled.setdefault("latency", []).extend(delays)
    delays.sort()
    results.add("latency p50", delays[len(delays) // 2] * 1000)
    results.add("latency p99", delays[int(0.99 * (len(delays) - 1))] * 1000)


async def actions_round(results: Results, work: Path, count: int = 10_000) -> None:
    """`count` events that each fire a webhook, posted 100 per request: actions/s from the
    first post to the last arrival."""
    arrived = 0
    last = 0.0
    all_in = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        nonlocal arrived, last
        await request.read()
        arrived += 1
        last = time.perf_counter()
        if arrived >= count:
            all_in.set()
        return web.json_response({"ok": True})

    async with running_receiver(hook) as receiver:
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            port = free_port()
            (Path(tmp) / "rules.yaml").write_text(
                "\n".join(
                    [
                        "version: 1",
                        f'server: {{listen: "127.0.0.1:{port}", queue_size: 1000000}}',
                        "audit: {path: audit.jsonl}",
                        # all `count` actions go to one destination at once: past the default
                        # backlog of 1,000 the rest would be dead-lettered, not delivered
                        f"delivery: {{max_pending_per_destination: {count}}}",
                        "automations:",
                        "  - name: every-job",
                        "    on: [job_done]",
                        f'    actions: [{{webhook: {{url: "{receiver}/hook"}}}}]',
                        "",
                    ]
                )
            )
            argv = [sys.executable, "-m", "automationd", "run", "--config", "rules.yaml"]
            async with serving(argv, port, "/readyz", Path(tmp)) as server:
                batches = [
                    json.dumps([{"type": "job_done", "n": b * 100 + i} for i in range(100)])
                    for b in range(count // 100)
                ]
                cpu_before = server.cpu_seconds()
                started = time.perf_counter()
                async with aiohttp.ClientSession() as session:

                    async def post(body: str) -> None:
                        async with session.post(f"{server.url}/events", data=body) as response:
                            if response.status != 202:
                                raise RuntimeError(await response.text())

                    for start in range(0, len(batches), 4):
                        await asyncio.gather(*(post(b) for b in batches[start : start + 4]))
                try:
                    await asyncio.wait_for(all_in.wait(), 120)
                except TimeoutError:
                    raise RuntimeError(f"only {arrived} of {count} webhooks arrived") from None
                await asyncio.sleep(1.5)  # the journal's last writes of the outcomes
                cpu_used = server.cpu_seconds() - cpu_before
    results.add("actions", count / (last - started))
    results.add("actions cpu", cpu_used / count * 1000 * 1000)


async def ready_round(results: Results, work: Path) -> None:
    for size in (100, 10_000):
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            async with automationd(size, "http://127.0.0.1:9/hook", Path(tmp)) as server:
                results.add(f"ready {size}", server.ready_in)
                if size == 100:
                    await asyncio.sleep(1)
                    results.add("rss idle", server.rss_mib())


# --- the table


def machine() -> str:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = [f"Python {platform.python_version()}", f"aiohttp {aiohttp.__version__}"]
    if shutil.which("prometheus-alertmanager"):
        out = subprocess.run(
            ["prometheus-alertmanager", "--version"], capture_output=True, text=True, check=False
        )
        found = re.search(r"version (\S+)", out.stdout + out.stderr)
        versions.append(f"Alertmanager {found.group(1) if found else '?'}")
    return (
        f"{model or platform.processor()}, {os.cpu_count()} CPUs, {memory:.0f} GiB, "
        f"Linux {platform.release()}; {', '.join(versions)}"
    )


def report(results: Results, args: argparse.Namespace) -> None:
    print(f"\nmachine: {machine()}")
    print(
        f"server on CPU {SERVER_CPU}, load on CPU {LOAD_CPU}; {args.runs} rounds, wrk "
        f"{args.seconds:g} s each ({args.connections} connections single, 8 for batches "
        "of 100); median (min-max)\n"
    )
    rows: list[tuple[str, str, str]] = []
    for kind, label in (("single", "1 per request"), ("batch", "100 per request")):
        rows.append((f"ceiling: bare aiohttp, {label}", results.cell(f"ceiling {kind}"), "ev/s"))
        for size in SIZES:
            name = f"automationd {size} {kind}"
            rows.append((f"automationd, {size:,} automations, {label}", results.cell(name), "ev/s"))
        if kind == "single":
            rows.append(
                (
                    "automationd, 100 automations, journal off",
                    results.cell("automationd 100 single journal off"),
                    "ev/s",
                )
            )
        rows.append((f"Alertmanager, {label}", results.cell(f"alertmanager {kind}"), "alerts/s"))
    rows += [
        (
            "event-to-webhook p50 at half load, all rounds (per round)",
            f"{results.percentile('latency', 0.5):.1f} ({results.cell('latency p50', '.1f')})",
            "ms",
        ),
        (
            "event-to-webhook p99 at half load, all rounds (per round)",
            f"{results.percentile('latency', 0.99):.1f} ({results.cell('latency p99', '.1f')})",
            "ms",
        ),
        ("  (webhooks timed)", f"{len(results.pooled.get('latency', []))}", ""),
        ("  (the rate sent)", results.cell("latency rate"), "ev/s"),
        ("actions delivered to a local webhook", results.cell("actions"), "actions/s"),
        ("  (daemon CPU per action: user and system)", results.cell("actions cpu", ".0f"), "µs"),
        ("start to ready, 100 automations", results.cell("ready 100", ".2f"), "s"),
        ("start to ready, 10,000 automations", results.cell("ready 10000", ".2f"), "s"),
        ("RSS idle, 100 automations", results.cell("rss idle", ".0f"), "MiB"),
        ("RSS under single-event load", results.cell("rss under load", ".0f"), "MiB"),
    ]
    width = max(len(name) for name, _, _ in rows)
    for name, value, unit in rows:
        print(f"{name:<{width}}  {value:>26} {unit}")
    if results.failures:
        print(f"\nnon-2xx answers or timeouts (figures above are suspect): {results.failures}")

    def ratio(a: str, b: str) -> float:
        return results.median(a) / results.median(b)

    single, batch = "automationd 100 single", "automationd 100 batch"
    print("\nratios (medians, 100 automations):")
    print(
        f"  automationd / ceiling:      single {ratio(single, 'ceiling single'):.2f}x, "
        f"batch {ratio(batch, 'ceiling batch'):.2f}x"
    )
    print(
        f"  automationd / Alertmanager: single {ratio(single, 'alertmanager single'):.2f}x, "
        f"batch {ratio(batch, 'alertmanager batch'):.2f}x"
    )
    cost = 1 - ratio(single, "automationd 100 single journal off")
    print(f"  journal cost, single events: {cost:.0%} of the throughput")
    per_event_10 = 1 / results.median("automationd 10 single")
    per_event_10k = 1 / results.median("automationd 10000 single")
    targets = [
        (
            "single-event ingest, 100 automations",
            ">= 15,000 ev/s",
            f"{results.median(single):,.0f}",
            results.median(single) >= 15_000,
        ),
        (
            "  vs Alertmanager in the same run",
            ">= 1.0x",
            f"{ratio(single, 'alertmanager single'):.2f}x",
            ratio(single, "alertmanager single") >= 1.0,
        ),
        (
            "batched ingest",
            ">= 100,000 ev/s",
            f"{results.median(batch):,.0f}",
            results.median(batch) >= 100_000,
        ),
        (
            "10,000 automations vs 10, per event",
            "<= 2x",
            f"{per_event_10k / per_event_10:.2f}x",
            per_event_10k / per_event_10 <= 2,
        ),
        (
            "event-to-webhook p99 at half load",
            "<= 10 ms",
            f"{results.percentile('latency', 0.99):.1f} ms",
            results.percentile("latency", 0.99) <= 10,
        ),
        (
            "ready after start (100 automations)",
            "<= 1 s",
            f"{results.median('ready 100'):.2f} s",
            results.median("ready 100") <= 1,
        ),
    ]
    print("\ntargets:")
    for name, target, got, met in targets:
        print(f"  {name:<40} {target:>16}  measured {got:>10}  {'met' if met else 'NOT met'}")


async def main(args: argparse.Namespace) -> None:
    if pinned(LOAD_CPU):
        os.sched_setaffinity(0, {LOAD_CPU})
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: run bench/run, which installs it")
    if not shutil.which("prometheus-alertmanager"):
        print("prometheus-alertmanager is missing: its rows are left out (bench/run installs it)")
    results = Results()
    with tempfile.TemporaryDirectory(prefix="automationd-bench-") as tmp:
        work = Path(tmp)
        scripts = {
            f"{'single' if batch == 1 else 'batch'}-{size}": wrk_script(
                work / f"{batch}-{size}.lua", "/events", bodies(size, batch)
            )
            for size in SIZES
            for batch in (1, 100)
        }
        for batch, kind in ((1, "single"), (100, "batch")):
            scripts[f"alerts-{kind}"] = wrk_script(
                work / f"alerts-{batch}.lua", "/api/v2/alerts", alert_bodies(batch)
            )

        async def hook(request: web.Request) -> web.Response:
            await request.read()
            return web.json_response({"ok": True})

        only = set(args.only.split(","))
        if "ingest" in only:
            async with running_receiver(hook) as receiver:
                for round_ in range(args.runs):
                    print(f"round {round_ + 1} of {args.runs}: ingest", flush=True)
                    await ingest_round(results, args, receiver + "/hook", work, scripts)
        half = args.rate or results.median("automationd 100 single") / 2
        for round_ in range(args.runs):
            print(f"round {round_ + 1} of {args.runs}: latency, actions, start", flush=True)
            if "latency" in only:
                await latency_round(results, half, args.seconds * 2, work)
            if "actions" in only:
                await actions_round(results, work)
            if "start" in only:
                await ready_round(results, work)
    report(results, args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--only", default="ingest,latency,actions,start", help="scenarios, comma-separated"
    )
    parser.add_argument(
        "--rate", type=float, default=0.0, help="the latency scenario's rate (default: half)"
    )
    asyncio.run(main(parser.parse_args()))
