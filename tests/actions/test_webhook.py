"""The webhook action against a real HTTP receiver on loopback."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest

from automationd.actions import ActionContext, ActionError, Services
from automationd.actions.http import url_for_log
from automationd.actions.webhook import WebhookAction, parse
from tests.support import Receiver, receiver

EVENT: dict[str, object] = {
    "id": "e-1",
    "type": "flow_run_state_change",
    "flow_name": "etl",
    "state": "Failed",
    "labels": {"env": "prod"},
}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def recv() -> AsyncIterator[Receiver]:
    async with receiver() as r:
        yield r


def ctx(http: aiohttp.ClientSession, event: dict[str, object] = EVENT) -> ActionContext:
    return ActionContext(event, "auto", 0, Services(http, {}))


async def test_default_payload_is_the_whole_event_with_the_event_id_header(
    http: aiohttp.ClientSession, recv: Receiver
) -> None:
    action = parse({"url": f"{recv.url}/hook"})
    result = await action.run(ctx(http))
    assert result.status == 200
    (got,) = recv.requests
    assert got.body == EVENT
    assert got.headers["X-PREFECT-EVENT-ID"] == "e-1"
    assert got.headers["Content-Type"] == "application/json"
    # stable per (event, automation, action index), so a receiver can drop repeats
    assert got.headers["Idempotency-Key"] == ctx(http).idempotency_key
    assert (
        ActionContext(EVENT, "auto", 1, Services(http, {})).idempotency_key
        != got.headers["Idempotency-Key"]
    )


async def test_templated_payload_and_headers(http: aiohttp.ClientSession, recv: Receiver) -> None:
    action = parse(
        {
            "url": f"{recv.url}/hook",
            "payload": {
                "text": "{flow_name} is {state}",
                "env": "{labels.env}",
                "labels": "{labels}",
                "n": 1,
            },
            "headers": {"X-Env": "{labels.env}", "X-{state}": "yes"},
        }
    )
    await action.run(ctx(http))
    (got,) = recv.requests
    assert got.body == {"text": "etl is Failed", "env": "prod", "labels": {"env": "prod"}, "n": 1}
    assert got.headers["X-Env"] == "prod"
    assert got.headers["X-Failed"] == "yes"
    assert "X-PREFECT-EVENT-ID" not in got.headers  # headers: replaces the default


@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (503, True), (429, True), (404, False), (400, False)]
)
async def test_non_2xx_fails_and_says_whether_to_retry(
    http: aiohttp.ClientSession, recv: Receiver, status: int, retryable: bool
) -> None:
    recv.status["/hook"] = status
    with pytest.raises(ActionError) as caught:
        await parse({"url": f"{recv.url}/hook"}).run(ctx(http))
    assert caught.value.status == status
    assert caught.value.retryable is retryable
    assert f"answered {status}" in caught.value.message
    assert '"ok": false' in str(caught.value.detail)


async def test_any_2xx_is_success(http: aiohttp.ClientSession, recv: Receiver) -> None:
    recv.status["/hook"] = 204
    assert (await parse({"url": f"{recv.url}/hook"}).run(ctx(http))).status == 204


async def test_dead_destination_is_retryable(http: aiohttp.ClientSession) -> None:
    with socket.socket() as s:  # a port that was free a moment ago and has no listener
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ActionError) as caught:
        await parse({"url": f"http://127.0.0.1:{port}/x"}).run(ctx(http))
    assert caught.value.retryable
    assert "connection failed" in caught.value.message


async def test_header_injection_is_a_permanent_failure(
    http: aiohttp.ClientSession, recv: Receiver
) -> None:
    action = parse({"url": f"{recv.url}/hook", "headers": {"X-Name": "{flow_name}"}})
    event = {**EVENT, "flow_name": "etl\r\nX-Evil: 1"}
    with pytest.raises(ActionError) as caught:
        await action.run(ctx(http, event))
    assert not caught.value.retryable
    assert recv.requests == []


def test_describe_and_url_for_log_hide_credentials_and_queries() -> None:
    assert (
        url_for_log("https://user:pw@hooks.example.com/a/b?token=s3cret#x")
        == "https://hooks.example.com/a/b"
    )
    action = parse({"url": "https://hooks.example.com/a?token=s3cret"})
    assert isinstance(action, WebhookAction)
    assert action.describe() == "webhook POST https://hooks.example.com/a"
    # the destination (per-destination limits) is the host:port, whatever the url's fields
    templated = parse({"url": "https://u:pw@hooks.example.com:8443?run={id}"})
    assert templated.destination() == "hooks.example.com:8443"
    assert templated.describe() == "webhook POST https://hooks.example.com:8443"
