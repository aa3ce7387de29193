"""Sending one HTTP request for an action, written once for every HTTP-based kind.

It classifies the outcome the way every kind needs it: 2xx is success; timeouts, connection
errors, 429 (with Retry-After) and 5xx are retryable failures; other statuses are permanent.
"""

from __future__ import annotations

import asyncio
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
    method: str,
    url: str,
    *,
    time_limit: float,
    json_body: object = None,
    headers: Mapping[str, str] | None = None,
) -> ActionResult:
    """Send one request and classify the answer; raises ActionError on failure."""
    try:
        data = json.dumps(json_body, ensure_ascii=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise ActionError(f"the payload is not JSON: {exc}", retryable=False) from None
    request_headers = {"Content-Type": "application/json", **(headers or {})}
    try:
        async with session.request(
            method,
            url,
            data=data,
            headers=request_headers,
            timeout=aiohttp.ClientTimeout(total=time_limit),
            allow_redirects=False,
        ) as response:
            body = shorten(await response.text(errors="replace"))
            status = response.status
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
    except TimeoutError:
        raise ActionError(f"no answer within {time_limit:g} s", retryable=True) from None
    except aiohttp.ClientConnectionError as exc:
        raise ActionError(f"connection failed: {exc}", retryable=True) from None
    except aiohttp.ClientError as exc:
        raise ActionError(f"request failed: {exc}", retryable=True) from None
    except ValueError as exc:  # e.g. a rendered header value with a line break
        raise ActionError(f"the request cannot be sent: {exc}", retryable=False) from None
    except asyncio.CancelledError:
        raise
    if 200 <= status < 300:
        return ActionResult(status, body)
    retryable = status == 429 or status >= 500
    raise ActionError(
        f"{url_for_log(url)} answered {status}",
        retryable=retryable,
        status=status,
        detail=body,
        retry_after=retry_after if status == 429 else None,
    )


def url_for_log(url: str) -> str:
    """Scheme, host and path only: query strings often carry tokens."""
    base = url.split("?", 1)[0].split("#", 1)[0]
    if "@" in base.split("//", 1)[-1].split("/", 1)[0]:
        scheme, rest = base.split("//", 1) if "//" in base else ("", base)
        base = f"{scheme}//{rest.split('@', 1)[1]}"
    return base
