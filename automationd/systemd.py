"""systemd integration without libsystemd: sd_notify datagrams and the watchdog.

`READY=1` once the rules are loaded and the port is bound, `RELOADING=1` (with
`MONOTONIC_USEC`) and `READY=1` around reloads, `STOPPING=1` on SIGTERM, and `WATCHDOG=1`
from the event loop itself at half of `$WATCHDOG_USEC`, so a blocked loop stops the pings and
systemd restarts the daemon. `NOTIFY_SOCKET` may name a path or an abstract socket (`@name`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("automationd.systemd")


class Notifier:
    """Sends sd_notify messages when systemd asked for them (NOTIFY_SOCKET set); else nothing."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        address = environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]
        self._address = address or None
        self._socket: socket.socket | None = None
        self.watchdog_interval = _watchdog_interval(environ)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *fields: str) -> None:
        """Send `fields` (e.g. "READY=1", "STATUS=...") as one message; never raises."""
        if self._address is None:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                )
                self._socket.setblocking(False)
            self._socket.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:
            log.warning("cannot notify systemd: %s", exc)

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        self.notify(
            "RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
        )

    def stopping(self) -> None:
        self.notify("STOPPING=1", "STATUS=stopping: finishing running actions")

    async def watchdog(self) -> None:
        """Ping the watchdog from the event loop until cancelled (only when systemd asked)."""
        if self.watchdog_interval is None:
            return
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_interval)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Half of $WATCHDOG_USEC in seconds, when the watchdog is meant for this process."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 2_000_000
