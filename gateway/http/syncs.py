"""Sync controls (scope ``admin``): pause, resume, backfill; each answers the sync's view."""

from __future__ import annotations

from aiohttp import web

from gateway.domain.models import SyncView
from gateway.http import appkeys
from gateway.http.bodies import json_response
from gateway.http.endpoints import Endpoint, Handler
from gateway.http.management import object_id

_ERRORS = {400: "invalid request", 401: "missing or bad token", 403: "token lacks the scope", 404: "not found"}


async def pause(request: web.Request) -> web.Response:
    """Stop reading the upstream; the cursor stays, so resume goes on from there."""
    return json_response(await request.app[appkeys.SYNC_RUNNERS].pause(object_id(request)))


async def resume(request: web.Request) -> web.Response:
    return json_response(await request.app[appkeys.SYNC_RUNNERS].resume(object_id(request)))


async def backfill(request: web.Request) -> web.Response:
    """Read every record again (unchanged ones make no event); also resumes a paused sync."""
    return json_response(await request.app[appkeys.SYNC_RUNNERS].backfill(object_id(request)))


def _endpoint(action: str, handler: Handler, summary: str) -> Endpoint:
    return Endpoint(
        "POST",
        f"/v1/syncs/{{id}}/{action}",
        handler,
        f"management.syncs.{action}",
        summary,
        "admin",
        response=SyncView,
        statuses=_ERRORS,
    )


ENDPOINTS: list[Endpoint] = [
    _endpoint("pause", pause, "Pause a sync's reading of its upstream"),
    _endpoint("resume", resume, "Resume a paused sync from its cursor"),
    _endpoint("backfill", backfill, "Read every record of the sync's collections again"),
]
