"""Talking to a running daemon from the command line: one request, its status and answer,
and the commands made of such requests (`automationd send`, `automationd dead-letters ...`),
which print what the daemon answered and return the exit status.

`--url` and `--token` (or `AUTOMATIOND_URL` and `AUTOMATIOND_TOKEN`) say where the daemon is
and how to get in.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
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


async def post_events(daemon: Daemon, body: bytes) -> int:
    """`automationd send`: POST the body to /events and print the answer; 0 on 202."""
    try:
        async with aiohttp.ClientSession() as session:
            answer = await daemon.call(session, "POST", "/events", body=body)
    except Unreachable as exc:
        print(f"automationd send: {exc}", file=sys.stderr)
        return 1
    print(answer.text)
    if answer.status != 202:
        print(f"automationd send: the daemon answered {answer.status}", file=sys.stderr)
        return 1
    return 0


async def dead_letters(
    daemon: Daemon,
    action: str,
    ids: Sequence[int],
    selected: dict[str, str],
    *,
    as_json: bool,
    name: str,
) -> int:
    """`automationd dead-letters list|retry|drop` (`action`) of the letters `ids`, else of
    those `selected` (automation, action, before; none with drop: all); 0 when every request
    succeeded, 1 otherwise. `name` starts each error line."""
    try:
        async with aiohttp.ClientSession() as session:
            if action == "list":
                return await _list_letters(daemon, session, selected, as_json, name)
            if action == "drop" and not ids:
                params = selected if selected else {"all": "true"}
                answer = await daemon.call(session, "DELETE", "/dead-letters", params)
                if answer.status != 200 or not isinstance(answer.body, dict):
                    print(f"{name}: {answer.error()}", file=sys.stderr)
                    return 1
                print(f"dropped {answer.body['dropped']}")
                return 0
            failed = 0
            for letter in ids:
                if action == "retry":
                    answer = await daemon.call(session, "POST", f"/dead-letters/{letter}/retry")
                    done = answer.status == 202
                else:
                    answer = await daemon.call(session, "DELETE", f"/dead-letters/{letter}")
                    done = answer.status == 200
                if done:
                    print(f"{'retrying' if action == 'retry' else 'dropped'} {letter}")
                else:
                    failed += 1
                    print(f"{name}: {letter}: {answer.error()}", file=sys.stderr)
            return 1 if failed else 0
    except Unreachable as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1


async def _list_letters(
    daemon: Daemon,
    session: aiohttp.ClientSession,
    selected: dict[str, str],
    as_json: bool,
    name: str,
) -> int:
    """Print every selected dead letter, a page at a time."""
    after = "0"
    shown = 0
    while True:
        answer = await daemon.call(session, "GET", "/dead-letters", {**selected, "after": after})
        if answer.status != 200 or not isinstance(answer.body, dict):
            print(f"{name}: {answer.error()}", file=sys.stderr)
            return 1
        for letter in answer.body["dead_letters"]:
            shown += 1
            if as_json:
                print(json.dumps(letter, ensure_ascii=False))
                continue
            print(
                f"{letter['id']:>6}  {letter['failed_at']}  {letter['automation']} "
                f"#{letter['action_index']} {letter['action']}  "
                f"{letter['attempts']} attempt(s), {letter['runs']} run(s)  {letter['error']}"
            )
        if "next_after" not in answer.body:
            break
        after = str(answer.body["next_after"])
    if not as_json:
        print(f"{shown} dead letter{'s' if shown != 1 else ''}")
    return 0
