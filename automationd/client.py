"""Talking to a running daemon from the command line: one request, its status and answer.

`automationd send` and the operator commands (`automationd dead-letters ...`) use it;
`--url` and `--token` (or `AUTOMATIOND_URL` and `AUTOMATIOND_TOKEN`) say where the daemon is
and how to get in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import aiohttp


class Unreachable(Exception):
    """The daemon did not answer (not running, wrong URL, refused connection)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """The daemon's answer: its status and its JSON body (None when it was not JSON)."""

    status: int
    body: object
    text: str

    def error(self) -> str:
        """The daemon's own error message, else the status."""
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), str):
            return str(self.body["error"])
        return f"the daemon answered {self.status}"


@dataclass(frozen=True, slots=True)
class Daemon:
    """Where the daemon listens and the bearer token to present (if any)."""

    url: str
    token: str | None = None

    async def call(
        self,
        session: aiohttp.ClientSession,
        method: str,
        path: str,
        params: dict[str, str] | None = None,
        *,
        body: bytes | None = None,
    ) -> Answer:
        """One request to the daemon (`body` is sent as JSON); raises Unreachable when it
        cannot be made."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if body is not None:
            headers["Content-Type"] = "application/json"
        url = self.url.rstrip("/") + path
        try:
            async with session.request(
                method, url, params=params, headers=headers, data=body
            ) as response:
                text = await response.text()
                status = response.status
        except aiohttp.ClientError as exc:
            raise Unreachable(f"cannot reach {self.url}: {exc}") from None
        try:
            value: object = json.loads(text)
        except ValueError:
            value = None
        return Answer(status, value, text)
