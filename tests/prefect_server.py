"""A real Prefect server on loopback for the tests, and proxies to put between it and the daemon.

`prefect server start` runs with a temporary PREFECT_HOME and SQLite database, analytics and
UI off, the late-runs service checking every second, and the event persister flushing twice
a second (so `POST /events/filter` sees events soon). It takes about 10 s to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.support import free_port

STARTUP_SECONDS = 120.0
"""How long the server may take to answer /health. test_prefect.py keeps pytest-timeout to
the test functions (func_only), so this wait, not pytest-timeout, bounds the start-up."""


@contextlib.contextmanager
def prefect_server(home: Path) -> Iterator[str]:
    """Start a Prefect server in `home`; yield its API URL; stop it (its process group)."""
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_LATE_RUNS_AFTER_SECONDS": "1",
        "PREFECT_SERVER_SERVICES_LATE_RUNS_LOOP_SECONDS": "1",
        "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "0.5",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    command = [str(Path(sys.executable).parent / "prefect"), "server", "start"]
    log = home / "server.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    api = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the Prefect server exited:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{api}/health", timeout=2) as answer:  # noqa: S310
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Prefect server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.25)
        yield api
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@dataclass
class TcpProxy:
    """A TCP forwarder on loopback that can drop every connection and refuse new ones, to
    cut the daemon off from the Prefect server (websocket and REST alike) for a while."""

    upstream: tuple[str, int]
    refusing: bool = False
    refuse_with: bytes = b""
    """What a refused connection is answered before it is closed; b"": dropped at once."""
    url: str = ""
    connections: int = 0
    attempts: list[float] = field(default_factory=list)
    """When each connection was accepted (time.monotonic()), refused ones included."""
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        """Close every connection now."""
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.attempts.append(time.monotonic())
        if self.refusing:
            if self.refuse_with:
                with contextlib.suppress(OSError):
                    writer.write(self.refuse_with)
                    await writer.drain()
                    writer.close()
                    await writer.wait_closed()
            writer.transport.abort()
            return
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self._writers.update((writer, up_writer))

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while chunk := await source.read(65536):
                    sink.write(chunk)
                    await sink.drain()
            sink.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.difference_update((writer, up_writer))


@dataclass
class LosingProxy:
    """An HTTP and websocket forwarder to the upstream API that records what passes: each
    request's method, path and Authorization header (`requests`) and the messages the client
    sends over a websocket (`sent`). For the first `lose` requests whose path ends with
    `suffix` it throws Prefect's answer away and answers 502 instead: the daemon sees a
    failure although Prefect did the work. `cut()` closes the open websockets."""

    upstream: str
    suffix: str
    lose: int = 1
    url: str = ""
    seen: list[str] = field(default_factory=list)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    _sockets: set[web.WebSocketResponse] = field(default_factory=set)

    def _forwarded(self, request: web.Request) -> dict[str, str]:
        self.requests.append((request.method, request.path, request.headers.get("Authorization")))
        authorization = request.headers.get("Authorization")
        return {"Authorization": authorization} if authorization is not None else {}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request)
        headers = self._forwarded(request)
        body = await request.read()
        headers["Content-Type"] = request.headers.get("Content-Type", "application/json")
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method, self.upstream + request.path_qs, data=body, headers=headers
            ) as answer,
        ):
            text = await answer.text()
            status = answer.status
        self.seen.append(f"{request.path} -> {status}")
        if request.path.endswith(self.suffix) and self.lose > 0:
            self.lose -= 1
            return web.Response(status=502, text="lost on the way back")
        return web.Response(status=status, text=text, content_type="application/json")

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        headers = self._forwarded(request)
        offered = request.headers.get("Sec-WebSocket-Protocol", "")
        protocols = tuple(p.strip() for p in offered.split(",") if p.strip())
        downstream = web.WebSocketResponse(protocols=protocols)
        await downstream.prepare(request)
        self._sockets.add(downstream)
        target = self.upstream.replace("http", "ws", 1) + request.path_qs
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.ws_connect(target, protocols=protocols, headers=headers) as upstream,
            ):

                async def client_to_server() -> None:
                    async for message in downstream:
                        if message.type != aiohttp.WSMsgType.TEXT:
                            break
                        self.sent.append(message.data)
                        await upstream.send_str(message.data)
                    await upstream.close()

                async def server_to_client() -> None:
                    async for message in upstream:
                        if message.type != aiohttp.WSMsgType.TEXT:
                            break
                        await downstream.send_str(message.data)
                    await downstream.close()

                await asyncio.gather(client_to_server(), server_to_client())
        finally:
            self._sockets.discard(downstream)
        return downstream

    async def cut(self) -> None:
        """Close every open websocket, as a server going away does."""
        for socket in list(self._sockets):
            await socket.close(code=aiohttp.WSCloseCode.GOING_AWAY)


@contextlib.asynccontextmanager
async def losing_proxy(upstream: str, suffix: str, lose: int = 1) -> AsyncIterator[LosingProxy]:
    """A LosingProxy to the API at `upstream` (ending in /api) on a loopback port."""
    proxy = LosingProxy(upstream.removesuffix("/api"), suffix, lose)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    proxy.url = f"http://127.0.0.1:{runner.addresses[0][1]}/api"
    try:
        yield proxy
    finally:
        await runner.cleanup()
