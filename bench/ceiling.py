"""The ceiling: a bare aiohttp handler that parses a JSON event (or a batch) and answers 202.

No validation, no journal, no audit, no matching: what aiohttp itself costs per request on
this machine, for bench/suite.py to compare the daemon against.

    python bench/ceiling.py PORT
"""

from __future__ import annotations

import sys

from aiohttp import web


async def events(request: web.Request) -> web.Response:
    body = await request.json()
    count = len(body) if isinstance(body, list) else 1
    return web.json_response({"accepted": count}, status=202)


async def ready(request: web.Request) -> web.Response:
    return web.json_response({"ready": True})


def main() -> None:
    app = web.Application()
    app.router.add_post("/events", events)
    app.router.add_get("/readyz", ready)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
