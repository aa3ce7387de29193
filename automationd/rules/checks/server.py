"""The `server:` section: where the event API listens, its limits and its bearer tokens
(read here from `tokens_file`, so a missing or empty file is a problem at load)."""

from __future__ import annotations

import ipaddress
from typing import Any

from automationd.rules.checks.core import Checker
from automationd.rules.model import (
    DEFAULT_LISTEN,
    DEFAULT_MAX_BODY,
    DEFAULT_QUEUE_SIZE,
    DEFAULT_SERVER,
    ServerConfig,
)
from automationd.secrets import Secret


def server(check: Checker, raw: dict[str, Any]) -> ServerConfig | None:
    """The server settings; None when the address or its authentication is wrong."""
    if not check.clean(("server",)):
        return None
    listen = str(raw.get("listen", DEFAULT_LISTEN))
    host, _, port_text = listen.rpartition(":")
    host = host.strip("[]")
    port = int(port_text)
    if not 0 <= port <= 65535:
        check.add(("server", "listen"), f"port {port} is out of range (0-65535)")
        return None
    allow = bool(raw.get("allow_unauthenticated", False))
    tokens = _tokens(check, raw.get("tokens_file"))
    if not _is_loopback(host) and not allow and not tokens:
        check.add(
            ("server", "listen"),
            f"listening on {host}, which is not a loopback address, exposes the event API "
            "without authentication; set server.tokens_file, or "
            "server.allow_unauthenticated: true to do it anyway",
        )
        return None
    tls = raw.get("tls")
    default = DEFAULT_SERVER
    return ServerConfig(
        host,
        port,
        allow,
        int(raw.get("max_body_bytes", DEFAULT_MAX_BODY)),
        tokens,
        (check.path(tls["cert"]), check.path(tls["key"])) if isinstance(tls, dict) else None,
        int(raw.get("queue_size", DEFAULT_QUEUE_SIZE)),
        header_timeout=check.seconds(
            ("server", "header_timeout"), raw.get("header_timeout"), default.header_timeout
        ),
        body_timeout=check.seconds(
            ("server", "body_timeout"), raw.get("body_timeout"), default.body_timeout
        ),
        idle_timeout=check.seconds(
            ("server", "idle_timeout"), raw.get("idle_timeout"), default.idle_timeout
        ),
        max_connections=int(raw.get("max_connections", default.max_connections)),
    )


def _tokens(check: Checker, raw: object) -> tuple[Secret, ...]:
    """Bearer tokens, one per line (blank lines and # comments skipped)."""
    if raw is None:
        return ()
    path = check.path(raw)
    try:
        lines = path.read_text("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        check.add(("server", "tokens_file"), f"cannot read the tokens file {path} ({reason})")
        return ()
    tokens = tuple(
        Secret(f"token {n}", line.strip())
        for n, line in enumerate(lines, start=1)
        if line.strip() and not line.strip().startswith("#")
    )
    if not tokens:
        check.add(("server", "tokens_file"), f"the tokens file {path} holds no token")
    return tokens


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
