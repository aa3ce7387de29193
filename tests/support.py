"""Real things on loopback for tests: an HTTP receiver and the daemon as a process."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass
class Received:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: object


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1 that records requests and answers as told."""

    url: str = ""
    requests: list[Received] = field(default_factory=list)
    status: dict[str, int] = field(default_factory=dict)
    delay: dict[str, float] = field(default_factory=dict)
    replies: dict[str, list[tuple[int, str, dict[str, str]]]] = field(default_factory=dict)
    """Per path, answers (status, text body, headers) to give in turn, before `status`."""
    check: Callable[[web.Request, bytes], tuple[int, str, dict[str, str]] | None] | None = None
    """Asked about each request (with its raw body) once it is recorded: an answer it gives
    is sent instead of `replies` and `status` (tests/standins.py plays services with it)."""
    in_flight: int = 0
    most_in_flight: int = 0
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body: object
        if request.content_type == "application/x-www-form-urlencoded":
            body = dict(await request.post())
        else:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay.get(request.path, 0))
        finally:
            self.in_flight -= 1
        async with self._arrived:
            self.requests.append(Received(request.path, dict(request.headers), body))
            self._arrived.notify_all()
        if self.check is not None and (answer := self.check(request, raw)) is not None:
            status, text, headers = answer
            return web.Response(status=status, text=text, headers=headers)
        queued = self.replies.get(request.path)
        if queued:
            status, text, headers = queued.pop(0)
            return web.Response(status=status, text=text, headers=headers)
        status = self.status.get(request.path, 200)
        return web.json_response({"ok": status < 400, "path": request.path}, status=status)

    async def wait_for_path(
        self, path: str, count: int = 1, within: float = 10.0
    ) -> list[Received]:
        """Wait until `count` requests to `path` have arrived; those requests."""

        def arrived() -> bool:
            return sum(r.path == path for r in self.requests) >= count

        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(arrived), within)
        return [r for r in self.requests if r.path == path]

    async def wait_for(self, count: int, within: float = 10.0) -> list[Received]:
        """Wait until `count` requests have arrived; fail the test if they do not."""
        async with self._arrived:
            await asyncio.wait_for(
                self._arrived.wait_for(lambda: len(self.requests) >= count), within
            )
        return list(self.requests)


@asynccontextmanager
async def receiver(
    port: int = 0, *, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[Receiver]:
    """Run a Receiver on a loopback port (a free one by default) for the duration of the block;
    with `ssl_context` it speaks HTTPS."""
    recv = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recv.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=ssl_context)
    await site.start()
    host, port = runner.addresses[0][:2]
    recv.url = f"{'https' if ssl_context else 'http'}://{host}:{port}"
    try:
        yield recv
    finally:
        await runner.cleanup()


@dataclass
class Mailbox:
    """An aiosmtpd handler: keeps delivered mail, refuses some recipients, fails DATA on cue."""

    messages: list[Envelope] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    busy_times: int = 0
    """How many DATA commands to answer with 451 before accepting."""
    delivered: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.busy_times > 0:
            self.busy_times -= 1
            return "451 4.3.0 mailbox busy, try again later"
        self.messages.append(envelope)
        self.delivered.set()
        return "250 Message accepted for delivery"


@asynccontextmanager
async def smtp_server(
    mailbox: Mailbox, *, login: tuple[str, str] | None = None
) -> AsyncIterator[int]:
    """A real aiosmtpd SMTP server on a free loopback port (yields the port); with `login`,
    AUTH is required (without TLS: it is loopback)."""

    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: object
    ) -> AuthResult:
        ok = (
            login is not None
            and isinstance(data, LoginPassword)
            and (data.login.decode(), data.password.decode()) == login
        )
        return AuthResult(success=ok, handled=False)

    def protocol() -> SMTP:
        return SMTP(
            mailbox,
            hostname="mail.test",
            auth_required=login is not None,
            auth_require_tls=False,
            authenticator=authenticate if login else None,
        )

    loop = asyncio.get_running_loop()
    server = await loop.create_server(protocol, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


LISTENING = re.compile(r"listening on (https?://\S+)")


@dataclass
class Daemon:
    """`python -m automationd run` as a real process."""

    process: asyncio.subprocess.Process
    url: str
    log: list[str]
    _drain: asyncio.Task[None]

    async def post(
        self, body: bytes | object, headers: dict[str, str] | None = None
    ) -> tuple[int, object]:
        """POST /events; the status and the JSON answer."""
        status, answer, _ = await self.post_full(body, headers)
        return status, answer

    async def post_full(
        self, body: bytes | object, headers: dict[str, str] | None = None
    ) -> tuple[int, object, dict[str, str]]:
        """POST /events; the status, the JSON answer and the response headers."""
        data = io.BytesIO(body if isinstance(body, bytes) else json.dumps(body).encode())
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.url}/events", data=data, headers=headers) as response,
        ):
            return response.status, await response.json(), dict(response.headers)

    async def stop(self, within: float = 40.0) -> int:
        """SIGTERM, wait for the exit status."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.process.wait(), within)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            raise
        await self._drain
        return code


async def _read_lines(stream: asyncio.StreamReader, log: list[str]) -> None:
    while line := await stream.readline():
        log.append(line.decode("utf-8", "replace").rstrip("\n"))


async def start_automationd(
    *args: str, env: dict[str, str] | None = None, stdout: int = asyncio.subprocess.DEVNULL
) -> asyncio.subprocess.Process:
    """`python -m automationd ARGS` as a child process with its stderr piped."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "automationd",
        *args,
        stdout=stdout,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )


async def run_to_exit(config: Path) -> tuple[int | None, str]:
    """Run the daemon on a config it should refuse; its exit status and stderr."""
    process = await start_automationd("run", "--config", str(config))
    _, err = await asyncio.wait_for(process.communicate(), 20)
    return process.returncode, err.decode()


@asynccontextmanager
async def daemon(config: Path, *, env: dict[str, str] | None = None) -> AsyncIterator[Daemon]:
    """Start the daemon on `config` (which should listen on 127.0.0.1:0) and stop it after."""
    process = await start_automationd("run", "--config", str(config), env=env)
    assert process.stderr is not None
    log: list[str] = []
    url = ""
    try:
        async with asyncio.timeout(20):
            while not url:
                line = (await process.stderr.readline()).decode()
                if not line:
                    raise RuntimeError("the daemon exited before listening:\n" + "\n".join(log))
                log.append(line.rstrip("\n"))
                if match := LISTENING.search(line):
                    url = match.group(1)
    except BaseException:
        process.kill()
        await process.wait()
        raise
    drain = asyncio.create_task(_read_lines(process.stderr, log))
    running = Daemon(process, url, log, drain)
    try:
        yield running
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        if not drain.done():
            await drain


def write_rules(folder: Path, text: str, *, listen: str = "127.0.0.1:0", server: str = "") -> Path:
    """Write `folder`/rules.yaml for a daemon started on it with `daemon()`: `version: 1`, a
    server block listening on `listen` (a free loopback port by default) with the `server`
    settings after it (", name: value, ..."), then `text`, the test's own rules. Its path."""
    rules = folder / "rules.yaml"
    rules.write_text(f'version: 1\nserver: {{listen: "{listen}"{server}}}\n{text}')
    return rules


def forwarding_rules(
    tmp_path: Path, destination: str, extra: str = "", server: str = "", more: str = ""
) -> Path:
    """Rules forwarding job_done events to `destination`/hook; `more` adds automations."""
    return write_rules(
        tmp_path,
        f"""\
retry: {{attempts: 100, initial: 50ms, max: 200ms}}
{extra}
automations:
  - name: forward
    on: [job_done]
    actions: [{{webhook: {{url: "{destination}/hook"}}}}]
{more}""",
        server=server,
    )


async def run_cli(
    *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """`python -m automationd ARGS` with `stdin`; exit status, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "automationd",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def until(check: Callable[[], Awaitable[bool]], within: float = 30.0) -> None:
    """Wait until `check()` holds, asking every 0.2 s; TimeoutError after `within` seconds."""
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - polling something outside this process
            await asyncio.sleep(0.2)


def free_port() -> int:
    """A loopback port nothing listens on (for a destination that is down, for now)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def audit_records(path: Path) -> list[dict[str, object]]:
    """Every record of an audit file, each line checked to be one whole JSON object.

    A line the daemon is still writing (no newline yet) is left for the next read, as any
    reader tailing the file must."""
    records = []
    text = path.read_text("utf-8")
    for line in text[: text.rfind("\n") + 1].splitlines():
        record = json.loads(line)
        assert isinstance(record, dict)
        records.append(record)
    return records


def interruptible() -> None:
    """preexec_fn for a child a test stops with SIGINT (as Ctrl-C would): a suite started in
    the background (`cmd &` in a script) runs with SIGINT ignored, which children inherit, and
    Python then never raises KeyboardInterrupt. Give the child the default, as a terminal
    would."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def mount_small_tmpfs(path: Path, size: str, why_root: str) -> None:
    """Mount a tmpfs of `size` on `path` (made here): a really full file system. Skipped
    unless root (`why_root` says what root is needed for); as root (as in CI) a refused mount
    is an error that says what mount said, never a quiet skip."""
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip(f"needs root to mount a small tmpfs ({why_root})")
    command = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]
    if shutil.which("mount") is None:
        pytest.fail("running as root, but there is no mount command to mount a small tmpfs")
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail(
            f"running as root, yet `{' '.join(command)}` was refused "
            f"(exit {result.returncode}): {result.stderr.strip()}"
        )
