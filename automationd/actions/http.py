"""Sending one HTTP request for an action, written once for every HTTP-based kind.

It classifies the outcome the way every kind needs it: 2xx is success; connection errors,
429 (with Retry-After) and 5xx are retryable failures; other statuses are permanent. The
engine bounds each attempt's time. Error messages name the destination by `name`, never by
a URL that might hold a secret (Slack and Teams webhook URLs are secrets).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping

import aiohttp

from automationd.actions import ActionError, ActionResult, shorten


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
) -> ActionResult:
    """POST one request (JSON, or form-encoded when `form` is given) and classify the answer;
    raises ActionError on failure."""
    status, body = await post(
        session, url, name=name, json_body=json_body, form=form, headers=headers
    )
    return ActionResult(status, shorten(body))


async def post(
    session: aiohttp.ClientSession,
    url: str,
    *,
    name: str,
    json_body: object = None,
    form: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, str]:
    """`send`, answering the status and the whole body of a 2xx answer."""
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
            url, data=data, headers=request_headers, allow_redirects=False
        ) as response:
            body = await response.text(errors="replace")
            status = response.status
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
    except aiohttp.ClientConnectionError as exc:
        raise ActionError(f"{name}: connection failed: {exc}", retryable=True) from None
    except aiohttp.ClientError as exc:
        raise ActionError(f"{name}: request failed: {exc}", retryable=True) from None
    except ValueError as exc:  # e.g. a rendered header value with a line break
        raise ActionError(f"{name}: the request cannot be sent: {exc}", retryable=False) from None
    if 200 <= status < 300:
        return status, body
    raise ActionError(
        f"{name} answered {status}",
        retryable=status == 429 or status >= 500,
        status=status,
        detail=shorten(body),
        retry_after=retry_after if status == 429 else None,
    )


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
    return url.partition("//")[2].partition("/")[0].rsplit("@", 1)[-1] or url
