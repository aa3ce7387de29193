"""Slow, idle, vanishing and too many clients against the daemon as a real process, with raw
sockets on loopback: each is closed in time, none fills the log."""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import aiohttp
import pytest

from automationd.connections import Throttle, connection_cap
from tests.support import Daemon, daemon, until, write_rules

Address = tuple[str, int]


def rules_with(tmp_path: Path, **server: str | int) -> Path:
    """Rules without automations, with these server settings."""
    settings = "".join(f", {key}: {value}" for key, value in server.items())
    return write_rules(tmp_path, "audit: {path: audit.jsonl}\nautomations: []\n", server=settings)


def address_of(proc: Daemon) -> Address:
    match = re.fullmatch(r"https?://([\d.]+):(\d+)", proc.url)
    assert match, proc.url
    return match.group(1), int(match.group(2))


@contextmanager
def sockets() -> Iterator[list[socket.socket]]:
    """A list to put client sockets in; every one is closed at the end."""
    opened: list[socket.socket] = []
    try:
        yield opened
    finally:
        for sock in opened:
            sock.close()


async def connect(address: Address, opened: list[socket.socket]) -> socket.socket:
    sock = socket.socket()
    opened.append(sock)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, address)
    return sock


@asynccontextmanager
async def connections_open(
    url: str, context: ssl.SSLContext
) -> AsyncIterator[Callable[[], Awaitable[float]]]:
    """A reader of the `automationd_connections_open` gauge, asking GET /metrics over one
    connection kept open throughout (so it is counted in the gauge, once)."""
    connector = aiohttp.TCPConnector(limit=1, keepalive_timeout=120, ssl=context)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def read() -> float:
            async with session.get(f"{url}/metrics") as response:
                assert response.status == 200  # a 503: its connection was lost, and refused
                text = await response.text()
            match = re.search(r"^automationd_connections_open (\S+)$", text, re.M)
            assert match, text
            return float(match.group(1))

        yield read


async def connect_admitted(
    address: Address,
    opened: list[socket.socket],
    gauge: Callable[[], Awaitable[float]],
    held: int,
    within: float = 10.0,
) -> socket.socket:
    """A new connection, once the daemon has admitted it, when the test holds `held` admitted
    connections besides the one `gauge` (see connections_open) reads over: the gauge first
    falls to those (the place of a client that just left is given back when the daemon has
    seen it go, which may be a moment later), then rises by the new one."""
    async with asyncio.timeout(within):
        while await gauge() != held + 1:  # noqa: ASYNC110 - asking the daemon over HTTP
            await asyncio.sleep(0.05)
        sock = await connect(address, opened)
        while await gauge() != held + 2:  # noqa: ASYNC110 - asking the daemon over HTTP
            await asyncio.sleep(0.05)
    return sock


async def send(sock: socket.socket, data: bytes) -> None:
    await asyncio.get_running_loop().sock_sendall(sock, data)


async def until_closed(sock: socket.socket, within: float) -> tuple[bytes, float]:
    """Everything the daemon sends until it closes the connection, and when that was
    (time.monotonic()); TimeoutError when it keeps the connection open past `within`."""
    loop = asyncio.get_running_loop()
    received = b""
    async with asyncio.timeout(within):
        while True:
            try:
                chunk = await loop.sock_recv(sock, 65536)
            except ConnectionResetError:  # closed with bytes of ours unread: the same to us
                chunk = b""
            if not chunk:
                return received, time.monotonic()
            received += chunk


async def read_response(sock: socket.socket, within: float = 5.0) -> tuple[int, bytes]:
    """One HTTP response with a Content-Length: its status and body."""
    loop = asyncio.get_running_loop()
    data = b""
    async with asyncio.timeout(within):
        while b"\r\n\r\n" not in data:
            chunk = await loop.sock_recv(sock, 65536)
            assert chunk, f"closed mid-response: {data!r}"
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        while len(body) < length:
            chunk = await loop.sock_recv(sock, 65536)
            assert chunk, f"closed mid-body: {data!r}"
            body += chunk
    return int(head.split()[1]), body


HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: automationd\r\n\r\n"
PARTIAL_HEADERS = b"POST /events HTTP/1.1\r\nHost: automationd\r\nContent-Type: app"


async def healthz_status(address: Address, within: float = 2.0) -> int:
    """GET /healthz on a new connection: 200, or the 503 of a daemon at its connection cap."""
    with sockets() as opened:
        sock = await connect(address, opened)
        await send(sock, HEALTHZ)
        answer = b""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(within):
            while b"\r\n" not in answer:
                try:
                    chunk = await loop.sock_recv(sock, 65536)
                except ConnectionResetError:
                    chunk = b""
                assert chunk, "closed without an answer"
                answer += chunk
        return int(answer.split()[1])


def accept_error_lines(log: list[str]) -> list[str]:
    """asyncio's own report (a traceback), or the daemon's line instead."""
    return [
        line
        for line in log
        if "socket.accept()" in line or "cannot accept" in line or "Too many open" in line
    ]


async def test_slowloris_connections_are_closed_after_header_timeout(tmp_path: Path) -> None:
    rules = rules_with(tmp_path, header_timeout="1s", idle_timeout="30s")
    async with daemon(rules) as proc:
        address = address_of(proc)
        with sockets() as opened:
            started = time.monotonic()  # before any connect: each one's 1 s starts later
            silent = [await connect(address, opened) for _ in range(10)]
            partial = [await connect(address, opened) for _ in range(10)]
            dribbling = [await connect(address, opened) for _ in range(5)]
            for sock in partial:
                await send(sock, PARTIAL_HEADERS)

            async def dribble() -> None:
                # a header byte every 0.2 s: bytes arriving must not move the deadline
                with_bytes = list(PARTIAL_HEADERS)
                for byte in with_bytes:
                    for sock in dribbling:
                        try:
                            await send(sock, bytes([byte]))
                        except OSError:
                            return
                    await asyncio.sleep(0.2)

            dribbler = asyncio.create_task(dribble())
            try:
                closed = await asyncio.gather(
                    *(until_closed(sock, 10) for sock in silent + partial + dribbling)
                )
            finally:
                dribbler.cancel()
            for received, when in closed:
                assert received == b""  # no answer to a request that never was
                assert when - started >= 0.8
        assert await healthz_status(address) == 200
        assert not any("Traceback" in line for line in proc.log)
        assert len(proc.log) < 10, proc.log


async def test_a_slow_body_gets_408_and_the_connection_is_closed(tmp_path: Path) -> None:
    rules = rules_with(tmp_path, header_timeout="1s", body_timeout="1s", idle_timeout="30s")
    async with daemon(rules) as proc:
        address = address_of(proc)
        with sockets() as opened:
            clients = {path: await connect(address, opened) for path in ("/events", "/explain")}
            started = time.monotonic()
            for path, sock in clients.items():
                await send(
                    sock,
                    f"POST {path} HTTP/1.1\r\nHost: automationd\r\n"
                    "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                    '{"type": '.encode(),
                )

            async def dribble() -> None:
                for _ in range(50):
                    await asyncio.sleep(0.2)
                    for sock in clients.values():
                        try:
                            await send(sock, b" ")
                        except OSError:
                            return

            dribbler = asyncio.create_task(dribble())
            try:
                closed = await asyncio.gather(*(until_closed(s, 8) for s in clients.values()))
            finally:
                dribbler.cancel()
            for received, when in closed:
                status_line, body = (
                    received.split(b"\r\n", 1)[0],
                    received.partition(b"\r\n\r\n")[2],
                )
                assert status_line == b"HTTP/1.1 408 Request Timeout", received
                assert json.loads(body) == {
                    "error": "the whole body must arrive within 1 s",
                    "field": None,
                }
                assert 0.8 <= when - started < 6
        status, answer = await proc.post({"type": "still_fine"})
        assert status == 202, answer
        assert len([line for line in proc.log if "answered 408" in line]) == 2, proc.log


async def test_an_idle_keep_alive_connection_is_closed_after_idle_timeout(
    tmp_path: Path,
) -> None:
    """An idle kept-alive connection is idle_timeout's, not header_timeout's: still open
    well past header_timeout, closed after idle_timeout. Seconds apart (1 s, 2 s idle, 5 s),
    so neither side of the comparison depends on how fast the machine is."""
    rules = rules_with(tmp_path, header_timeout="1s", idle_timeout="5s")
    async with daemon(rules) as proc:
        with sockets() as opened:
            sock = await connect(address_of(proc), opened)
            await send(sock, HEALTHZ)
            assert (await read_response(sock))[0] == 200
            # idle longer than header_timeout: an idle connection is idle_timeout's, and the
            # next request on it is answered (a fixed wait: it is the idling under test)
            await asyncio.sleep(2)
            await send(sock, HEALTHZ)
            assert (await read_response(sock))[0] == 200
            answered = time.monotonic()
            received, when = await until_closed(sock, 15)
            assert received == b""
            assert when - answered >= 3  # idle_timeout (5 s), not header_timeout (1 s)


async def test_a_later_request_on_a_kept_alive_connection_has_header_timeout(
    tmp_path: Path,
) -> None:
    """After an answer the connection is idle (idle_timeout's); the first byte of the next
    request starts header_timeout again, so a slowloris on a kept-alive connection is closed
    at header_timeout, long before idle_timeout."""
    rules = rules_with(tmp_path, header_timeout="1s", idle_timeout="30s")
    async with daemon(rules) as proc:
        with sockets() as opened:
            sock = await connect(address_of(proc), opened)
            await send(sock, HEALTHZ)
            assert (await read_response(sock))[0] == 200
            await asyncio.sleep(0.5)
            started = time.monotonic()
            await send(sock, PARTIAL_HEADERS)
            received, when = await until_closed(sock, 10)
            assert received == b""
            assert 0.8 <= when - started < 5, when - started


async def test_a_client_gone_mid_body_is_one_quiet_line(tmp_path: Path) -> None:
    rules = rules_with(tmp_path)
    async with daemon(rules) as proc:
        address = address_of(proc)
        with sockets() as opened:
            closing, resetting = await connect(address, opened), await connect(address, opened)
            for sock in (closing, resetting):
                await send(
                    sock,
                    b"POST /events HTTP/1.1\r\nHost: automationd\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                    b'{"type": "half',
                )
            # the handlers are reading the bodies: their bytes were sent before this
            # connection was opened, so the daemon read them before it answers on it
            assert await healthz_status(address, within=10) == 200
            closing.close()
            resetting.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00" * 2)
            resetting.close()

        def gone() -> list[str]:
            return [line for line in proc.log if "disconnected" in line]

        async def both_logged() -> bool:
            return len(gone()) >= 2

        await until(both_logged, within=10)
        assert await healthz_status(address) == 200
        assert len(gone()) == 2, proc.log
        assert all(line.startswith("INFO ") for line in gone()), gone()
        assert not any("Traceback" in line or line.startswith("ERROR") for line in proc.log), (
            proc.log
        )


async def flood(address: Address, count: int, opened: list[socket.socket]) -> list[socket.socket]:
    """`count` connections that send half a request's headers and then nothing."""

    async def one() -> socket.socket | None:
        try:
            async with asyncio.timeout(5):
                sock = await connect(address, opened)
                await send(sock, PARTIAL_HEADERS)
                return sock
        except (OSError, TimeoutError):
            return None

    clients = []
    for start in range(0, count, 50):
        batch = await asyncio.gather(*(one() for _ in range(start, min(count, start + 50))))
        clients += [sock for sock in batch if sock is not None]
    return clients


async def check_the_cap(
    proc: Daemon, cap: int, header_timeout: float, excess: int
) -> tuple[int, int]:
    """Flood `excess` connections past `cap`: those are refused with a 503 at once, /healthz
    answers at once, the held ones go after header_timeout, then /healthz is 200 again; how
    many were refused and how many held."""
    address = address_of(proc)
    with sockets() as opened:
        started = time.monotonic()
        clients = await flood(address, cap + excess, opened)
        assert len(clients) == cap + excess
        assert await healthz_status(address) in {200, 503}  # an answer, and quickly
        closed = await asyncio.gather(*(until_closed(s, header_timeout + 8) for s in clients))
    refused = [when - started for data, when in closed if data.startswith(b"HTTP/1.1 503")]
    held = [when - started for data, when in closed if not data]
    assert len(refused) + len(held) == len(clients)
    assert len(refused) >= excess - 5  # a few may get in as held ones time out
    assert len(held) <= cap + 5
    assert max(refused) < header_timeout  # refused at once, not held
    assert min(held) >= header_timeout * 0.8
    assert await healthz_status(address) == 200
    assert not accept_error_lines(proc.log), accept_error_lines(proc.log)
    assert not any("Traceback" in line for line in proc.log)
    assert len(proc.log) < 15, proc.log
    return len(refused), len(held)


async def test_connections_past_max_connections_are_refused_at_once(tmp_path: Path) -> None:
    rules = rules_with(tmp_path, header_timeout="3s", max_connections=20)
    async with daemon(rules) as proc:
        refused, held = await check_the_cap(proc, 20, header_timeout=3.0, excess=100)
        refusals = [line for line in proc.log if "refused a connection" in line]
        assert 1 <= len(refusals) <= 2, refusals  # throttled: one line per 10 s
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{proc.url}/metrics") as response,
        ):
            metrics = await response.text()
    counted = {
        name: float(value)
        for name, value in re.findall(
            r'^automationd_connections_closed_total\{reason="(\w+)"\} (\S+)$', metrics, re.M
        )
    }
    # the /healthz asked during the flood may have been refused too
    assert refused <= counted["refused"] <= refused + 1, (refused, counted)
    assert counted["header_timeout"] == held
    assert "automationd_connections_open 1.0" in metrics  # this request's own


@asynccontextmanager
async def daemon_with_open_files(config: Path, limit: int) -> AsyncIterator[Daemon]:
    """The daemon run under RLIMIT_NOFILE = `limit` (soft and hard, so it cannot raise it)."""

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "automationd",
        "run",
        "--config",
        str(config),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=lower,
    )
    assert process.stderr is not None
    stderr = process.stderr
    log: list[str] = []

    async def drain() -> None:
        while line := await stderr.readline():
            log.append(line.decode("utf-8", "replace").rstrip("\n"))

    drained = asyncio.create_task(drain())
    try:
        async with asyncio.timeout(20):
            while not any("listening on" in line for line in log):
                assert not drained.done(), log
                await asyncio.sleep(0.1)
        (url,) = re.findall(r"listening on (http://\S+)", "\n".join(log))
        yield Daemon(process, url, log, drained)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await drained


async def test_the_cap_stays_below_the_open_file_limit(tmp_path: Path) -> None:
    rules = rules_with(tmp_path, header_timeout="3s")
    async with daemon_with_open_files(rules, 512) as proc:
        assert any(
            "max_connections lowered from 1000 to 64: the open-file limit is 512" in line
            for line in proc.log
        ), proc.log
        # more half-open connections than the daemon may open files
        await check_the_cap(proc, 64, header_timeout=3.0, excess=300)


async def test_accept_errors_are_throttled(tmp_path: Path) -> None:
    """Out of open files all the same (the limit lowered under the running daemon, below the
    cap it computed at start): one line per 10 s, not one per failed accept()."""
    rules = rules_with(tmp_path, header_timeout="5s")
    async with daemon(rules) as proc:
        address = address_of(proc)
        pid = proc.process.pid
        soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        in_use = len(os.listdir(f"/proc/{pid}/fd"))
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + 5, hard))
        try:
            with sockets() as opened:
                await flood(address, 100, opened)

                async def refused_accepts() -> bool:
                    return bool(accept_error_lines(proc.log))

                await until(refused_accepts, within=10)
                await asyncio.sleep(2.5)  # asyncio tries again every second
        finally:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        lines = accept_error_lines(proc.log)
        assert len(lines) == 1, lines
        assert lines[0].startswith("WARNING automationd.connections: cannot accept a connection")
        assert "Too many open files" in lines[0]
        assert not any("Traceback" in line for line in proc.log)
        assert len(proc.log) < 15, proc.log

        async def healthy() -> bool:
            try:
                return await healthz_status(address) == 200
            except (OSError, AssertionError, TimeoutError):
                return False

        await until(healthy, within=15)


async def test_tls_handshakes_count_and_have_header_timeout(tmp_path: Path) -> None:
    """A TLS client that never finishes its handshake is closed after header_timeout and
    gives its place back, though aiohttp never sees it."""
    if shutil.which("openssl") is None:  # .ci/run installs it
        pytest.fail("openssl is not installed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    await asyncio.to_thread(
        subprocess.run,
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    # header_timeout 8 s: a place given back "at once" is seen seconds before it would free,
    # on a loaded machine too; max_connections 4: three silent clients and the connection
    # the gauge of open connections is read over
    server = f"tls: {{cert: {cert}, key: {key}}}, header_timeout: 8s, max_connections: 4"
    rules = rules_with(tmp_path, idle_timeout="30s")
    rules.write_text(rules.read_text().replace('"127.0.0.1:0", ', f'"127.0.0.1:0", {server}, '))
    async with daemon(rules) as proc:
        assert proc.url.startswith("https://")
        address = address_of(proc)
        context = ssl.create_default_context(cafile=str(cert))
        async with connections_open(proc.url, context) as gauge:
            for _ in range(2):
                with sockets() as opened:
                    started = time.monotonic()
                    silent: list[socket.socket] = []
                    for _ in range(3):
                        silent.append(await connect_admitted(address, opened, gauge, len(silent)))
                    closed = await asyncio.gather(*(until_closed(sock, 15) for sock in silent))
                    # each closed header_timeout after its connect, which came after `started`
                    assert all(data == b"" and when - started >= 7.9 for data, when in closed)
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"{proc.url}/healthz", ssl=context) as response,
                ):
                    assert response.status == 200
            with sockets() as opened:
                # past the cap, before any handshake: the 503 in plain text and closed at
                # once, not held (uncounted) until a handshake timeout
                silent = []
                for _ in range(3):
                    silent.append(await connect_admitted(address, opened, gauge, len(silent)))
                started = time.monotonic()
                extra = await connect(address, opened)
                data, when = await until_closed(extra, 10)
                assert data.startswith(b"HTTP/1.1 503 "), data
                assert when - started < 5  # not held until header_timeout (8 s)
                for sock in silent:
                    sock.close()
            # connections dropped mid-handshake give their places back at once, not after
            # header_timeout: a real client right after them is served (the gauge's own
            # connection still holds the fourth place)
            with sockets() as opened:
                for _ in range(3):
                    sock = await connect(address, opened)
                    await send(sock, b"\x16\x03\x01")  # the start of a ClientHello
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.close()  # a reset

            async def served() -> bool:
                try:
                    async with (
                        aiohttp.ClientSession() as session,
                        session.get(f"{proc.url}/healthz", ssl=context) as response,
                    ):
                        return response.status == 200
                except aiohttp.ClientConnectorError:  # refused: a plain-text 503 at the cap
                    return False

            async with asyncio.timeout(5):  # 3 s before the 8 s header_timeout frees them
                while not await served():  # noqa: ASYNC110 - asking the daemon over HTTP
                    await asyncio.sleep(0.05)
        assert not any("Traceback" in line for line in proc.log)


def test_the_cap_keeps_a_reserve_below_the_open_file_limit() -> None:
    assert connection_cap(1000, None) == 1000
    assert connection_cap(1000, 65536) == 1000
    assert connection_cap(1000, 1024) == 1024 - 448  # three bursts of accepts and own files
    assert connection_cap(1000, 16384) == 1000
    assert connection_cap(50_000, 16384) == 16384 - 2048  # an eighth once that is more
    assert connection_cap(1000, 100) == 1  # never none at all


def test_the_throttle_lets_one_through_per_interval_and_counts_the_rest() -> None:
    now = [0.0]
    throttle = Throttle(10.0, clock=lambda: now[0])
    assert throttle.allow() == 0
    assert [throttle.allow() for _ in range(5)] == [None] * 5
    now[0] = 10.0
    assert throttle.allow() == 5
    assert throttle.allow() is None
