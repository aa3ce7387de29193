"""CloudEvents 1.0 from the official SDK, in structured, batched and binary mode."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
from cloudevents.v1.conversion import to_binary, to_dict, to_structured
from cloudevents.v1.http import CloudEvent

from tests.support import daemon, receiver, write_rules


def rules(tmp_path: Path, url: str) -> Path:
    return write_rules(
        tmp_path,
        f"""\
event_types:
  com.example.deploy: {{message: "Deployed {{app}} {{version}}", attributes: [app, version]}}
automations:
  - {{name: deploys, on: [com.example.deploy], actions: [{{webhook: {{url: "{url}/deploy"}}}}]}}
""",
    )


def deploy(event_id: str, version: str, time: str | None = None) -> CloudEvent:
    attributes = {
        "type": "com.example.deploy",
        "source": "ci/pipeline",
        "id": event_id,
        "subject": "web",
    }
    if time is not None:
        attributes["time"] = time
    return CloudEvent(attributes, {"app": "web", "version": version})


# The CloudEvent's `time`, each at another offset, and the event `timestamp` it becomes (UTC).
TIMES = {
    "ce-1": ("2026-11-27T10:11:12.5+01:00", "2026-11-27T09:11:12.500000Z"),
    "ce-2": ("2026-11-27T04:05:06-05:30", "2026-11-27T09:35:06Z"),
    "ce-3": ("2026-11-26T23:59:59.125Z", "2026-11-26T23:59:59.125000Z"),
    "ce-4": ("2026-11-28T01:00:00+02:00", "2026-11-27T23:00:00Z"),
}


def timed(event_id: str, version: str) -> CloudEvent:
    return deploy(event_id, version, TIMES[event_id][0])


async def post(url: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/events", headers=headers, data=body) as response,
    ):
        return response.status, await response.json()


async def test_all_three_modes_from_the_sdk(tmp_path: Path) -> None:
    async with receiver() as recv, daemon(rules(tmp_path, recv.url)) as proc:
        headers, body = to_structured(timed("ce-1", "1.0"))
        assert await post(proc.url, dict(headers), body) == (202, {"accepted": ["ce-1"]})
        headers, body = to_binary(timed("ce-2", "2.0"))
        assert await post(proc.url, dict(headers), body) == (202, {"accepted": ["ce-2"]})
        batch = json.dumps(
            [to_dict(timed("ce-3", "3.0")), to_dict(timed("ce-4", "4.0"))], default=str
        )
        status, answer = await post(
            proc.url, {"Content-Type": "application/cloudevents-batch+json"}, batch.encode()
        )
        assert (status, answer) == (202, {"accepted": ["ce-3", "ce-4"]})
        headers, body = to_binary(deploy("ce-1", "1.0"))  # the same id again
        status, answer = await post(proc.url, dict(headers), body)
        assert answer["duplicate"] is True
        got = await recv.wait_for(4)
        assert await proc.stop() == 0
    bodies = sorted((r.body for r in got), key=lambda b: str(b["id"]))  # type: ignore[index]
    first = bodies[0]
    assert isinstance(first, dict)
    assert (first["type"], first["id"], first["source"], first["subject"]) == (
        "com.example.deploy",
        "ce-1",
        "ci/pipeline",
        "web",
    )
    assert (first["app"], first["version"], first["message"]) == ("web", "1.0", "Deployed web 1.0")
    assert [b["version"] for b in bodies] == ["1.0", "2.0", "3.0", "4.0"]  # type: ignore[index]
    # structured (ce-1), binary (ce-2, from the ce-time header) and batched (ce-3, ce-4):
    # `time` becomes the `timestamp`, in UTC with a Z, and is not kept beside it
    assert {b["id"]: b["timestamp"] for b in bodies} == {  # type: ignore[index]
        event_id: stamp for event_id, (_, stamp) in TIMES.items()
    }
    assert [b for b in bodies if "time" in b] == []  # type: ignore[operator]


async def test_cloudevents_that_cannot_be_accepted(tmp_path: Path) -> None:
    async with receiver() as recv, daemon(rules(tmp_path, recv.url)) as proc:
        headers, body = to_binary(deploy("x", "1"))
        without_id = {k: v for k, v in dict(headers).items() if k.lower() != "ce-id"}
        status, answer = await post(proc.url, without_id, body)
        assert (status, answer["field"]) == (400, "ce-id")
        structured = {"specversion": "1.0", "type": "t", "source": "s"}
        status, answer = await post(
            proc.url,
            {"Content-Type": "application/cloudevents+json"},
            json.dumps(structured).encode(),
        )
        assert (status, answer["field"]) == (400, "id")
        status, answer = await post(
            proc.url,
            {"Content-Type": "application/cloudevents+json"},
            json.dumps({**structured, "id": "1", "specversion": "0.3"}).encode(),
        )
        assert (status, answer["field"]) == (400, "specversion")
        batch = [to_dict(deploy("ok", "1")), {"specversion": "1.0", "id": "2", "type": "t"}]
        status, answer = await post(
            proc.url,
            {"Content-Type": "application/cloudevents-batch+json"},
            json.dumps(batch, default=str).encode(),
        )
        assert (status, answer["field"], answer["index"]) == (400, "[1].source", 1)
        assert await proc.stop() == 0
    assert recv.requests == []
