"""Client connections: how many may be open, how long a request's headers may take, and a
quiet log when the process runs out of open files.

aiohttp 3.14's server has one timer per connection, `keepalive_timeout`: armed at connect and
after each answer, it closes the connection if no whole request has arrived by then (a
request half sent does not stop it, nor does a byte of it move it). It is our `idle_timeout`.
Nothing bounds a request's headers more tightly, nothing bounds a body, and connections are
accepted until `accept()` fails for want of file descriptors, where asyncio logs every failure
with a traceback, up to `backlog` times per try (CPython issue #151615).

So the listening socket is served with a protocol factory of our own (`Gate`) that wraps
aiohttp's (`runner.server`, a public protocol factory): it counts open connections, refuses
new ones past the cap with a short 503, and closes a connection whose request line and headers
are not complete within `header_timeout`, counted from connect (TLS handshake included) for
the first request and from its first byte for each later one, as hyper does. The body's
deadline is the handler's (`read_body`), since only it can answer 408.

With TLS, the socket listens in plain TCP and each admitted connection is upgraded by the
Gate's Connection (`loop.start_tls`): asyncio's own TLS server would call the factory only
once the handshake is done, so connections past the cap, or dropped mid-handshake, would hold
their descriptors (or their place) until the handshake timeout, uncounted.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import resource
import ssl
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

log = logging.getLogger("automationd.connections")

BACKLOG = 128
"""The listening socket's backlog, and how many connections asyncio accepts in one go: each
holds a descriptor before the Gate can refuse it."""

FD_RESERVE = 3 * BACKLOG + 64
"""Open files kept back from clients, at least: three bursts of accepts, the daemon's own
files (about 20: state database, journal, audit trail, watcher, event loop) and its outgoing
connections (one per action in flight). Three bursts, because a connection the Gate refuses
keeps its descriptor for three turns of the event loop (asyncio accepts it, makes its
transport in a task, then calls connection_made; the close lands a turn later), and each turn
can accept another burst: with one burst reserved, a flood on a busy machine ran out."""

ACCEPT_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

_REFUSAL_BODY = b'{"error": "too many connections are open; retry later", "field": null}'
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_REFUSAL_BODY), _REFUSAL_BODY)
)
"""What a connection past the cap gets before it is closed."""


class Throttle:
    """Lets one occurrence through per `interval` seconds and counts the ones held back, so a
    flood of the same trouble makes one log line per interval, not one per occurrence."""

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self.clock = clock
        self._next = -math.inf
        self._held = 0

    def allow(self) -> int | None:
        """None when this occurrence is held back; else how many were since the last one."""
        now = self.clock()
        if now < self._next:
            self._held += 1
            return None
        held, self._held = self._held, 0
        self._next = now + self.interval
        return held


def raise_open_file_limit() -> int | None:
    """Raise the soft RLIMIT_NOFILE to the hard limit (what daemons do: the soft 1024 exists
    for programs using select(), asyncio uses epoll); the soft limit now in force, None when
    unlimited or unknown."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        with contextlib.suppress(ValueError, OSError):  # else keep the soft limit we have
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def connection_cap(wanted: int, open_files: int | None) -> int:
    """`max_connections`, lowered to stay below the open-file limit by a reserve of an eighth
    of it, at least FD_RESERVE, so accept() does not run out of descriptors."""
    if open_files is None:
        return wanted
    reserve = max(FD_RESERVE, open_files // 8)
    return max(1, min(wanted, open_files - reserve))


def throttle_accept_errors(loop: asyncio.AbstractEventLoop, interval: float = 10.0) -> None:
    """asyncio reports each accept() that fails for want of resources (EMFILE...) to the
    loop's exception handler, with a traceback, often thousands a second. Let one through per
    `interval` as one warning line with the count held back; everything else goes on to the
    handler that was there before."""
    previous = loop.get_exception_handler()
    throttle = Throttle(interval)

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if (
            isinstance(exc, OSError)
            and exc.errno in ACCEPT_ERRORS
            and "accept" in str(context.get("message", ""))
        ):
            held = throttle.allow()
            if held is not None:
                more = f"; {held} more since the last report" if held else ""
                log.warning(
                    "cannot accept a connection: %s (the open-file limit is too low "
                    "for the connections open)%s",
                    exc.strerror or exc,
                    more,
                )
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handle)


class Gate:
    """The listening socket's protocol factory: counts open connections, refuses those past
    `max_connections`, and gives each request's headers `header_timeout` seconds."""

    def __init__(
        self,
        protocols: Callable[[], asyncio.Protocol],
        *,
        max_connections: int,
        header_timeout: float,
        tls: ssl.SSLContext | None = None,
        closed: Callable[[str], None] = lambda _reason: None,
    ) -> None:
        self.protocols = protocols
        self.tls = tls
        self.closed = closed
        """Told why the Gate closed a connection: `refused` (the cap) or `header_timeout`."""
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.open = 0
        """Connections accepted and not yet lost (TLS handshakes in progress included)."""
        self.refused = 0
        self.timed_out = 0
        self._refusals = Throttle()
        self.loop = asyncio.get_running_loop()
        self.awaiting: dict[Connection, float] = {}
        """Connections waiting for a request's headers, with their deadline (loop time)."""
        self._sweep: asyncio.TimerHandle | None = None
        self.sweep_every = min(1.0, header_timeout / 4)
        """How often deadlines are looked at: a connection goes at most this late. One sweep
        instead of a timer armed and cancelled for every request. (Telling the connection
        about its requests costs about 3 us a request in all, 2-4 % of single-event
        throughput, measured with wrk.)"""

    def awaits_headers(self, connection: Connection) -> None:
        """`connection` waits for a request's headers from now on."""
        self.awaiting[connection] = self.loop.time() + self.header_timeout
        if self._sweep is None:
            self._sweep = self.loop.call_later(self.sweep_every, self._expire_late)

    def _expire_late(self) -> None:
        now = self.loop.time()
        for connection in [c for c, due in self.awaiting.items() if due <= now]:
            connection.expire()
        self._sweep = (
            self.loop.call_later(self.sweep_every, self._expire_late) if self.awaiting else None
        )

    def __call__(self) -> asyncio.BaseProtocol:
        if self.open >= self.max_connections:
            self.refused += 1
            self.closed("refused")
            held = self._refusals.allow()
            if held is not None:
                more = f"; {held} more refused since the last report" if held else ""
                log.warning(
                    "refused a connection: %d are open, which is the cap "
                    "(server.max_connections, or less for the open-file limit)%s",
                    self.open,
                    more,
                )
            return _Refusal()
        self.open += 1
        return Connection(self, self.protocols())


_AWAITING_HEADERS, _IN_REQUEST, _IDLE, _DONE = "awaiting headers", "in request", "idle", "done"


class Connection(asyncio.Protocol):
    """One client connection: aiohttp's protocol inside, a header deadline around it."""

    def __init__(self, gate: Gate, inner: asyncio.Protocol) -> None:
        self.gate = gate
        self.inner = inner
        self.transport: asyncio.BaseTransport | None = None
        """What aiohttp's protocol writes to (the TLS transport over the socket with TLS)."""
        self.raw: asyncio.Transport | None = None
        """The socket's own transport while its TLS handshake runs."""
        self._handshake: asyncio.Task[None] | None = None
        self.state = _AWAITING_HEADERS
        self.requests = 0
        """Requests whose handler is running (more than one only when pipelined)."""
        self._arm()  # from accept: the TLS handshake counts

    def _arm(self) -> None:
        self.gate.awaits_headers(self)

    def _disarm(self) -> None:
        self.gate.awaiting.pop(self, None)

    def _release(self) -> None:
        if self.state != _DONE:
            self.state = _DONE
            self.gate.open -= 1
        self._disarm()

    def expire(self) -> None:
        """The header deadline passed (the Gate's sweep): close the connection."""
        self._disarm()
        if self.state != _AWAITING_HEADERS:
            return
        self.gate.timed_out += 1
        self.gate.closed("header_timeout")
        if self.transport is None:  # the TLS handshake did not finish
            if self.raw is not None:
                self.raw.abort()
            self._release()
            return
        log.debug("closed a connection: no whole request line and headers in time")
        self.transport.close()

    # --- what the request handler tells us (server.json_errors, the outermost middleware)

    def request_started(self) -> None:
        """A request's line and headers are complete."""
        self.requests += 1
        if self.state != _DONE:
            self.state = _IN_REQUEST
            self._disarm()

    def request_finished(self) -> None:
        """A request was answered; until the next byte arrives the connection is idle, which
        aiohttp's keepalive_timeout (idle_timeout) bounds."""
        self.requests -= 1
        if self.requests == 0 and self.state == _IN_REQUEST:
            self.state = _IDLE

    # --- asyncio.Protocol, passed on to aiohttp's protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.state == _DONE:  # the handshake finished just as its time ran out
            transport.close()
            return
        if self.gate.tls is not None and self.raw is None:
            assert isinstance(transport, asyncio.Transport)  # a TCP socket's
            self.raw = transport
            self._handshake = self.gate.loop.create_task(self._start_tls(transport))
            return
        self.transport = transport
        self.inner.connection_made(transport)

    async def _start_tls(self, raw: asyncio.Transport) -> None:
        """The TLS handshake within the header deadline; then aiohttp's protocol starts."""
        assert self.gate.tls is not None
        try:
            secured = await self.gate.loop.start_tls(
                raw,
                self,
                self.gate.tls,
                server_side=True,
                ssl_handshake_timeout=self.gate.header_timeout,
            )
        except (OSError, TimeoutError, ConnectionError, ssl.SSLError) as exc:
            log.debug("a TLS handshake failed: %s", exc)  # start_tls closed the socket
            self._release()
            return
        if secured is None:  # the socket was gone before the handshake could start
            self._release()
            return
        self.connection_made(secured)  # data and the loss of the connection now come here

    def data_received(self, data: bytes) -> None:
        if self.state == _IDLE and data:
            self.state = _AWAITING_HEADERS
            self._arm()
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        made = self.transport is not None
        self._release()
        self.transport = None
        self.raw = None
        if made:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class _Refusal(asyncio.Protocol):
    """A connection past the cap: a short 503 and closed at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(REFUSAL)
        transport.close()


def connection_of(request: web.BaseRequest) -> Connection | None:
    """The Connection a request came on; None when it was not accepted through a Gate (as in
    tests that run the app in-process)."""
    transport = request.transport
    protocol = transport.get_protocol() if transport is not None else None
    return protocol if isinstance(protocol, Connection) else None


class BodyTimeout(Exception):
    """The client did not send the whole body within server.body_timeout."""


async def read_body(request: web.BaseRequest, within: float) -> bytes:
    """The request's whole body, within `within` seconds (BodyTimeout past it).

    Raises ConnectionResetError when the client goes away first, as aiohttp does, and
    HTTPRequestEntityTooLarge past the app's client_max_size."""
    if request.content.is_eof():  # all here already (a small body comes with its headers)
        return await request.read()
    try:
        async with asyncio.timeout(within):
            return await request.read()
    except TimeoutError:
        raise BodyTimeout(f"the whole body must arrive within {within:g} s") from None


async def body_timed_out(request: web.BaseRequest, exc: BodyTimeout) -> web.Response:
    """Answer 408 to a body that did not arrive in time, then close the connection at once.

    Returned as is, the answer would be followed by aiohttp's lingering close: up to
    `lingering_time` (10 s) more of reading whatever the slow client still sends. A slow
    client is what we want gone, so the answer is written here and the connection closed
    after it; on Linux the client still reads the 408 before the reset its unread bytes cause.
    """
    log.info(
        "%s %s from %s: %s; answered 408 and closed the connection",
        request.method,
        request.path,
        request.remote,
        exc,
    )
    response = web.json_response({"error": str(exc), "field": None}, status=408)
    response.force_close()
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionError:
        pass  # it went away meanwhile
    # aiohttp's own close: it also skips the lingering read, and the writes above are done
    request.protocol.force_close()
    return response


def client_went_away(request: web.BaseRequest) -> web.Response:
    """One quiet line for a client that disconnected before its whole body arrived; the
    answer it gets is none (aiohttp drops it)."""
    log.info(
        "%s %s from %s: the client disconnected before sending the whole body",
        request.method,
        request.path,
        request.remote,
    )
    response = web.Response(status=400)
    response.force_close()
    return response
