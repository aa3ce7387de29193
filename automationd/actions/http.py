"""Sending one HTTP request for an action, written once for every HTTP-based kind.

It classifies the outcome the way every kind needs it: 2xx is success; connection errors,
429 (with Retry-After) and 5xx are retryable failures; other statuses are permanent. The
engine bounds each attempt's time. Error messages name the destination by `name`, never by
a URL that might hold a secret (Slack and Teams webhook URLs are secrets).

An answer's body is read up to RESPONSE_LIMIT and the connection then closed: the audit
keeps 1 KiB of it, and a destination answering 50 MB must not cost the daemon 50 MB.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

from automationd.actions import ActionError, ActionResult, shorten

RESPONSE_LIMIT = 64 * 1024
"""The most of an answer's body that is read; the rest is never received."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A 2xx answer: its status and body, `cut` when the body went on past RESPONSE_LIMIT."""

    status: int
    body: str
    cut: bool = False


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a Retry-After header given in seconds; None when absent or a date."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


async def send(
    session: aiohttp.ClientSession,
    url: str,
    *,
    name: str,
    json_body: object = None,
    form: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    tls: ssl.SSLContext | bool = True,
) -> ActionResult:
    """POST one request (JSON, or form-encoded when `form` is given) and classify the answer;
    raises ActionError on failure."""
    answer = await post(
        session, url, name=name, json_body=json_body, form=form, headers=headers, tls=tls
    )
    return ActionResult(answer.status, shorten(answer.body))


async def post(
    session: aiohttp.ClientSession,
    url: str,
    *,
    name: str,
    json_body: object = None,
    form: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    tls: ssl.SSLContext | bool = True,
) -> Answer:
    """`send`, answering the status and the body (up to RESPONSE_LIMIT) of a 2xx answer.

    `tls` is aiohttp's `ssl=` for this request only (a context trusting a private CA, or
    False for no verification): the shared session and its pool stay as they are."""
    data: bytes | aiohttp.FormData
    if form is not None:
        data = aiohttp.FormData(dict(form))
        request_headers = dict(headers or {})
    else:
        try:
            data = json.dumps(json_body, ensure_ascii=False, separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            raise ActionError(f"the payload is not JSON: {exc}", retryable=False) from None
        request_headers = {"Content-Type": "application/json", **(headers or {})}
    try:
        async with session.post(
            url, data=data, headers=request_headers, allow_redirects=False, ssl=tls
        ) as response:
            body, cut = await read_capped(response)
            status = response.status
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
    except aiohttp.ClientConnectionError as exc:
        raise ActionError(f"{name}: connection failed: {exc}", retryable=True) from None
    except aiohttp.ClientError as exc:
        raise ActionError(f"{name}: request failed: {exc}", retryable=True) from None
    except ValueError as exc:  # e.g. a rendered header value with a line break
        raise ActionError(f"{name}: the request cannot be sent: {exc}", retryable=False) from None
    if 200 <= status < 300:
        return Answer(status, body, cut)
    raise ActionError(
        f"{name} answered {status}",
        retryable=status == 429 or status >= 500,
        status=status,
        detail=shorten(body),
        retry_after=retry_after if status == 429 else None,
    )


async def read_capped(response: aiohttp.ClientResponse) -> tuple[str, bool]:
    """The body's text, up to RESPONSE_LIMIT bytes, and whether there was more. When there
    was, the connection is closed at once rather than drained (or pooled)."""
    chunks: list[bytes] = []
    size = 0
    while size < RESPONSE_LIMIT:
        chunk = await response.content.read(RESPONSE_LIMIT - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    cut = size >= RESPONSE_LIMIT and bool(await response.content.read(1))
    if cut:
        response.close()
    raw = b"".join(chunks)
    try:
        return raw.decode(response.charset or "utf-8", errors="replace"), cut
    except LookupError:  # a charset Python does not know
        return raw.decode("utf-8", errors="replace"), cut


def basic_auth(user: str, password: str) -> str:
    """An HTTP Basic `Authorization` header value."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def url_for_log(url: str) -> str:
    """Scheme, host and path only: query strings and user info often carry tokens."""
    base = url.split("?", 1)[0].split("#", 1)[0]
    scheme, sep, rest = base.partition("//")
    if not sep:
        return base
    authority, slash, path = rest.partition("/")
    return f"{scheme}//{authority.rsplit('@', 1)[-1]}{slash}{path}"


def host_of(url: str) -> str:
    """The host:port part of a URL, as the destination key of its actions."""
    authority = re.split(r"[/?#]", url.partition("//")[2], maxsplit=1)[0]
    return authority.rsplit("@", 1)[-1] or url
