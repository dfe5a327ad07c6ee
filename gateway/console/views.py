"""The console's read-only pages: overview, credential, recent calls, syncs, consumers, tokens, providers.

Each view asks the same service the Management API asks (``Objects``, ``Tokens``, the pacer's
``describe``) and renders a template; nothing here reads a table of its own.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from gateway.catalog import view
from gateway.console.auth import page, page_context
from gateway.console.chart import limit_lines
from gateway.console.keys import services
from gateway.console.state import CREDENTIALS, PRIORITIES, credential_row, credential_rows
from gateway.observability.recent import RecentCall

CREDENTIAL_CALLS = 50  # recent calls shown on a credential's page


def render(request: web.Request, template: str, context: dict[str, Any], *, status: int = 200) -> web.Response:
    return aiohttp_jinja2.render_template(template, request, {**page_context(request), **context}, status=status)


@page
async def overview(request: web.Request) -> web.StreamResponse:
    rows = await credential_rows(services(request), await request.app[CREDENTIALS].all())
    return render(request, "overview.html", {"rows": rows, "priorities": PRIORITIES})


@page
async def credential(request: web.Request) -> web.StreamResponse:
    objects = services(request).objects
    view = await objects.credential_view(request.match_info["id"])  # NotFound -> the page's 404
    credential = await objects.credential(view.id)
    row = await credential_row(services(request), credential)
    recent = services(request).recent
    lines = limit_lines(services(request).limit(credential))
    context = {
        "view": view,
        "row": row,
        "lines": lines,
        "lines_json": json.dumps(lines),
        "limits": view.rate_limit.model_dump(exclude_none=True) if view.rate_limit else {},
        "history": json.dumps(recent.rates.history(view.id)),
        "calls": recent.calls.rows(credential=view.id)[:CREDENTIAL_CALLS],
        "priorities": PRIORITIES,
    }
    return render(request, "credential.html", context)


@page
async def calls(request: web.Request) -> web.StreamResponse:
    filters = {name: request.query.get(name, "")[:200] for name in ("credential", "status", "token")}
    ring = services(request).recent.calls
    rows: list[RecentCall] = ring.rows(**filters)
    return render(request, "calls.html", {"calls": rows, "filters": filters, "kept": len(ring)})


@page
async def syncs(request: web.Request) -> web.StreamResponse:
    views = await services(request).objects.list_syncs()
    return render(request, "syncs.html", {"syncs": [v.model_dump(mode="json") for v in views]})


@page
async def consumers(request: web.Request) -> web.StreamResponse:
    views = await services(request).objects.list_consumers()
    return render(request, "consumers.html", {"consumers": views})


async def tokens_page(
    request: web.Request, *, created: str | None = None, error: str | None = None, status: int = 200
) -> web.Response:
    """The tokens page; ``created`` is a new token's secret, shown in this one answer only."""
    views = await services(request).tokens.list()
    context = {"tokens": views, "created": created, "error": error}
    return render(request, "tokens.html", context, status=status)


@page
async def tokens(request: web.Request) -> web.StreamResponse:
    return await tokens_page(request)


@page
async def providers(request: web.Request) -> web.StreamResponse:
    """The catalog as ``GET /v1/providers`` shows it."""
    catalog = services(request).catalog()
    return render(request, "providers.html", {"providers": [view(entry) for _, entry in sorted(catalog.items())]})
