"""daemon.py's parts in process: the connection cap's warning, the TLS context, binding, the
one-line log of malformed requests, and serving until a signal. (The daemon as a whole, as a
real process, is in test_daemon.py.)"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import ssl
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from automationd.daemon import (
    allowed_connections,
    bind,
    one_line_for_malformed_requests,
    serve_until_stopped,
    tls_context,
)
from automationd.events import EventError
from automationd.rules.load import state_base
from tests.certificates import private_ca
from tests.support import free_port, until


def test_connections_are_capped_below_the_open_file_limit_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="automationd"):
        assert allowed_connections(1000, None) == 1000
        assert allowed_connections(1000, 65536) == 1000
        assert caplog.messages == []
        assert allowed_connections(1000, 512) == 64
    assert caplog.messages == [
        "max_connections lowered from 1000 to 64: the open-file limit is 512"
    ]


def test_the_tls_context_loads_the_pair_and_refuses_below_tls_1_2(tmp_path: Path) -> None:
    assert tls_context(None) is None
    private_ca(tmp_path)
    context = tls_context((tmp_path / "server.pem", tmp_path / "server.key"))
    assert context is not None
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    with pytest.raises(FileNotFoundError):
        tls_context((tmp_path / "missing.pem", tmp_path / "server.key"))


async def hello(_request: web.Request) -> web.Response:
    return web.Response(text="hello")


def hello_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/", hello)
    return app


async def test_bind_logs_the_address_and_serves(caplog: pytest.LogCaptureFixture) -> None:
    runner = web.AppRunner(hello_app(), access_log=None, handle_signals=False)
    await runner.setup()
    port = free_port()
    with caplog.at_level(logging.INFO, logger="automationd"):
        listener = await bind(runner, "127.0.0.1", port, "trying")
    assert listener is not None
    try:
        assert caplog.messages == [f"trying listening on http://127.0.0.1:{port}"]
        url = f"http://127.0.0.1:{port}/"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            assert (response.status, await response.text()) == (200, "hello")
    finally:
        listener.close()
        await runner.cleanup()


async def test_bind_to_a_port_in_use_logs_cleans_up_and_gives_none(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        runner = web.AppRunner(hello_app(), access_log=None, handle_signals=False)
        await runner.setup()
        with caplog.at_level(logging.INFO, logger="automationd"):
            assert await bind(runner, "127.0.0.1", port, "trying") is None
    assert caplog.messages == [
        f"cannot listen on 127.0.0.1:{port}: error while attempting to bind on address "
        f"('127.0.0.1', {port}): address already in use"
    ]
    assert runner.server is None  # cleaned up


def malformed(error: HttpProcessingError) -> logging.LogRecord:
    """The record aiohttp logs when it refuses a request with 400."""
    try:
        raise error
    except HttpProcessingError:
        exc_info = sys.exc_info()
    return logging.LogRecord(
        "aiohttp.server", logging.ERROR, __file__, 1, "Error handling request", (), exc_info
    )


def test_a_malformed_request_is_one_warning_line_without_its_traceback() -> None:
    record = malformed(HttpProcessingError(code=400, message="Invalid method:\n\n  b'FOO'"))
    assert one_line_for_malformed_requests(record) is True
    assert (record.levelno, record.levelname) == (logging.WARNING, "WARNING")
    assert record.getMessage() == "refused a malformed HTTP request: Invalid method:"
    assert record.exc_info is None

    unnamed = malformed(HttpProcessingError(code=400, message=""))
    assert one_line_for_malformed_requests(unnamed) is True
    assert unnamed.getMessage() == "refused a malformed HTTP request: HttpProcessingError"

    other = logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "boom", (), None)
    assert one_line_for_malformed_requests(other) is True
    assert (other.levelno, other.getMessage()) == (logging.ERROR, "boom")


async def test_serve_until_stopped_serves_until_sigterm() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    before = signal.getsignal(signal.SIGTERM)

    async def is_handled() -> bool:
        return signal.getsignal(signal.SIGTERM) is not before

    served = asyncio.create_task(serve_until_stopped(hello_app(), "127.0.0.1", port, "trying"))
    try:
        await until(is_handled, within=10)  # SIGTERM would end pytest without the handler
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            assert await response.text() == "hello"
        os.kill(os.getpid(), signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await served == 0
    finally:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    assert signal.getsignal(signal.SIGTERM) is before


async def test_serve_until_stopped_gives_1_when_it_cannot_listen() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert await serve_until_stopped(hello_app(), "127.0.0.1", port, "trying") == 1


def test_relative_state_paths_resolve_against_the_first_state_directory() -> None:
    rules = Path("/etc/automationd/rules.yaml")
    assert state_base(rules, {}) == Path("/etc/automationd")
    assert state_base(rules, {"STATE_DIRECTORY": ""}) == Path("/etc/automationd")
    assert state_base(rules, {"STATE_DIRECTORY": "/var/lib/a:/var/lib/b"}) == Path("/var/lib/a")


def test_an_error_in_a_batch_names_the_item_and_its_field() -> None:
    error = EventError("'type' is required", "type").in_batch(2)
    assert (error.message, error.field, error.index) == (
        "event 2 of the batch: 'type' is required",
        "[2].type",
        2,
    )
    whole = EventError("not an object").in_batch(0, "CloudEvent")
    assert (whole.message, whole.field, whole.index) == (
        "CloudEvent 0 of the batch: not an object",
        "[0]",
        0,
    )
