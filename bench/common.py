"""What the benchmarks share: the daemon as a real process, optionally pinned to a CPU."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web


def free_port() -> int:
    """A loopback port nothing listens on now (for a server started with a fixed port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def pinned(cpu: int) -> list[str]:
    """`taskset -c CPU` when there is more than one CPU and taskset exists, else nothing."""
    return (
        ["taskset", "-c", str(cpu)] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []
    )


@asynccontextmanager
async def running_daemon(rules: Path, cpu: int | None = None) -> AsyncIterator[str]:
    """`python -m automationd run --config RULES` until the block ends; yields its URL."""
    daemon = await asyncio.create_subprocess_exec(
        *(pinned(cpu) if cpu is not None else []),
        sys.executable,
        "-m",
        "automationd",
        "run",
        "--config",
        str(rules),
        stderr=asyncio.subprocess.PIPE,
    )
    assert daemon.stderr is not None
    url = ""
    try:
        while not url:
            line = (await asyncio.wait_for(daemon.stderr.readline(), 20)).decode()
            if not line:
                raise RuntimeError("the daemon did not start")
            if match := re.search(r"listening on (https?://\S+)", line):
                url = match.group(1)
        drain = asyncio.create_task(daemon.stderr.read())
        yield url
    finally:
        if daemon.returncode is None:
            daemon.terminate()
        await daemon.wait()
    await drain


@asynccontextmanager
async def running_receiver(
    hook: Callable[[web.Request], Awaitable[web.Response]],
) -> AsyncIterator[str]:
    """An HTTP server on a free loopback port answering every POST with `hook`; its URL."""
    app = web.Application()
    app.router.add_post("/{tail:.*}", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
