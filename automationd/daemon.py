"""The process life of `automationd run`: from loaded rules to a listening daemon and back.

It builds the engine and its HTTP app, raises the open-file limit and caps connections below
it, loads the TLS certificate, binds through a connection Gate (connections.py), reloads on
SIGHUP and on every save of the rules file (watch.py), settles the heap whenever new rules
are in place, tells systemd when it is ready and stopping and pings its watchdog
(systemd.py), and on SIGTERM or SIGINT stops gracefully:
the listener closes (no new events), then the app, whose cleanup stops the engine: running
actions get their grace there. `automationd receive` borrows its bind and its signals.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import ssl
import sys
from collections.abc import Mapping
from pathlib import Path

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from automationd import __version__
from automationd.connections import (
    BACKLOG,
    Gate,
    connection_cap,
    raise_open_file_limit,
    throttle_accept_errors,
)
from automationd.engine import Engine
from automationd.metrics import Metrics
from automationd.rules import DEFAULT_SERVER, Config
from automationd.server import create_app
from automationd.store import StoreError
from automationd.systemd import Notifier
from automationd.watch import start_watching

log = logging.getLogger("automationd")


def configure_logging(level: str) -> None:
    """Log lines to stderr (the journal, under systemd) at `level` ("info", "debug", ...)."""
    logging.basicConfig(
        level=level.upper(),
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiohttp.server").addFilter(one_line_for_malformed_requests)


def one_line_for_malformed_requests(record: logging.LogRecord) -> bool:
    """aiohttp logs a traceback at ERROR for every malformed HTTP request it refuses with 400;
    any client could fill the journal with them. One warning line each instead."""
    error = record.exc_info[1] if record.exc_info else None
    if isinstance(error, HttpProcessingError):
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.msg, record.args, record.exc_info = (
            "refused a malformed HTTP request: %s",
            (error.message.splitlines()[0] if error.message else type(error).__name__,),
            None,
        )
    return True


async def serve(config: Config, environ: Mapping[str, str]) -> int:
    """Run the daemon until SIGTERM or SIGINT, then stop gracefully; the exit status.

    Reloads on SIGHUP, POST /reload and every save of the rules file; tells systemd when it
    is ready, reloading and stopping, and pings its watchdog from the event loop."""
    server = config.server
    max_connections = allowed_connections(server.max_connections, raise_open_file_limit())
    throttle_accept_errors(asyncio.get_running_loop())
    notifier = Notifier(environ)
    engine = Engine(config, environ=environ, notifier=notifier, rules_in_place=settle_heap)
    runner = web.AppRunner(
        create_app(engine),
        access_log=None,
        handle_signals=False,
        keepalive_timeout=server.idle_timeout,
    )
    try:
        await runner.setup()
    except (OSError, StoreError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    stop = stop_on_signals()
    loop = asyncio.get_running_loop()
    watcher = await start_watching(
        config.source,
        lambda: engine.reload("watch", force=False),
        stop,
        settle=lambda: engine.config.reload.settle,
    )
    try:
        tls = tls_context(server.tls)
    except (OSError, ssl.SSLError) as exc:
        log.error("cannot start: TLS certificate or key: %s", exc)
        await runner.cleanup()
        return 1
    # before "listening" and READY=1: a SIGHUP sent as soon as either is seen must reload,
    # not meet the default action, which ends the process
    reloads = _reload_on_sighup(engine)
    listener = await bind(
        runner,
        server.host,
        server.port,
        f"automationd {__version__}",
        tls,
        max_connections=max_connections,
        header_timeout=server.header_timeout,
        metrics=engine.metrics,
    )
    if listener is None:
        stop.set()
        await asyncio.gather(watcher, return_exceptions=True)
        return 1
    engine.listening = True
    notifier.ready(engine.status())
    background = [watcher, loop.create_task(notifier.watchdog())]
    await stop.wait()
    notifier.stopping()
    log.info("stopping: no new events; running actions get up to 30 s")
    loop.remove_signal_handler(signal.SIGHUP)
    for task in background:
        task.cancel()
    await asyncio.gather(*background, *reloads, return_exceptions=True)
    listener.close()
    await runner.cleanup()
    notifier.close()
    log.info("stopped")
    return 0


def settle_heap() -> None:
    """Collect once and set aside (gc.freeze) what is left: the libraries, the rules, the
    daemon's long-lived objects. Under load the collector runs a full pass about once a
    second; it then walks only what the traffic made (measured: 0.6 ms instead of 17-27 ms,
    a pause every request waiting at that moment shared). Objects set aside are still freed
    when no longer referenced; only their cycles wait for the next call (each reload): the
    engine calls it once its rules are in place."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def allowed_connections(wanted: int, open_files: int | None) -> int:
    """`server.max_connections`, lowered (with a warning) to stay below the open-file limit
    `open_files` (None: unlimited or unknown)."""
    max_connections = connection_cap(wanted, open_files)
    if max_connections < wanted:
        log.warning(
            "max_connections lowered from %d to %d: the open-file limit is %s",
            wanted,
            max_connections,
            open_files,
        )
    return max_connections


def _reload_on_sighup(engine: Engine) -> set[asyncio.Task[object]]:
    """Reload the engine's rules on each SIGHUP; the reloads under way (to wait for at stop)."""
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[object]] = set()

    def reload_on_sighup() -> None:
        task = loop.create_task(engine.reload("SIGHUP"))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload_on_sighup)
    return reloads


def tls_context(files: tuple[Path, Path] | None) -> ssl.SSLContext | None:
    """The server's TLS context from server.tls (certificate chain and key, PEM)."""
    if files is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(files[0]), str(files[1]))
    return context


async def bind(
    runner: web.AppRunner,
    host: str,
    port: int,
    name: str,
    tls: ssl.SSLContext | None = None,
    *,
    max_connections: int = DEFAULT_SERVER.max_connections,
    header_timeout: float = DEFAULT_SERVER.header_timeout,
    metrics: Metrics | None = None,
) -> asyncio.Server | None:
    """Listen for the runner's app and log the address; None (logged, cleaned up) when it
    cannot. Connections go through a Gate (connections.py): at most `max_connections` open,
    `header_timeout` seconds for each request's headers (and for the TLS handshake). Close
    the returned server before `runner.cleanup()`."""
    assert runner.server is not None, "runner.setup() comes first"
    gate = Gate(
        runner.server,
        max_connections=max_connections,
        header_timeout=header_timeout,
        tls=tls,  # the Gate upgrades admitted connections itself
        closed=metrics.connection_closed if metrics else lambda _reason: None,
    )
    if metrics is not None:
        metrics.connections_open.set_function(lambda: gate.open)
    loop = asyncio.get_running_loop()
    try:
        listener = await loop.create_server(gate, host, port, backlog=BACKLOG)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", host, port, exc.strerror or exc)
        await runner.cleanup()
        return None
    for sock in listener.sockets:
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        log.info("%s listening on %s://%s:%d", name, "https" if tls else "http", shown, bound_port)
    return listener


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def serve_until_stopped(app: web.Application, host: str, port: int, name: str) -> int:
    """Serve `app` (plain HTTP, default connection limits) until SIGTERM or SIGINT; 1 when
    it cannot listen. For `automationd receive`, which is not the daemon but listens alike."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    listener = await bind(runner, host, port, name)
    if listener is None:
        return 1
    await stop_on_signals().wait()
    listener.close()
    await runner.cleanup()
    return 0
