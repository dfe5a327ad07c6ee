"""``/healthz``, ``/readyz`` and ``/metrics``: no token, served on the metrics listener."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.http import appkeys


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when every registered dependency (store, pacing backend, ...) answers."""
    checks = request.app[appkeys.READY_CHECKS]
    results = await asyncio.gather(*(check() for check in checks.values()), return_exceptions=True)
    status = {name: result is True for name, result in zip(checks, results, strict=True)}
    ok = all(status.values())
    return web.json_response({"status": "ok" if ok else "unavailable", "checks": status}, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[appkeys.METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_ops_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz, name="other.healthz")
    app.router.add_get("/readyz", readyz, name="other.readyz")
    app.router.add_get("/metrics", metrics, name="other.metrics")
