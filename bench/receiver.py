"""A webhook receiver in a process of its own, for bench/suite.py's latency scenario.

POST /hook with a JSON body carrying `sent` (Unix seconds when the event left the sender)
records how long ago that was; GET /delays answers the recorded delays (seconds) and forgets
them. A process of its own, so the sender's event loop cannot delay the arrival times.

    python bench/receiver.py PORT
"""

from __future__ import annotations

import sys
import time

from aiohttp import web

DELAYS = web.AppKey("delays", list[float])


async def hook(request: web.Request) -> web.Response:
    arrived = time.time()
    body = await request.json()
    request.app[DELAYS].append(arrived - float(body["sent"]))
    return web.json_response({"ok": True})


async def delays(request: web.Request) -> web.Response:
    recorded = request.app[DELAYS]
    answer = web.json_response(list(recorded))
    recorded.clear()
    return answer


async def ready(request: web.Request) -> web.Response:
    return web.json_response({"ready": True})


def main() -> None:
    app = web.Application()
    app[DELAYS] = []
    app.router.add_post("/hook", hook)
    app.router.add_get("/delays", delays)
    app.router.add_get("/readyz", ready)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
