"""``add_console(app)``: the console's templates, static files, sessions, live stream and routes."""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from gateway.console import actions, views
from gateway.console.keys import SERVICES, SESSIONS, Services
from gateway.console.live import LIVE, Live, events
from gateway.console.state import CREDENTIALS, CredentialList
from gateway.console.static import StaticFiles
from gateway.console.templating import FILTERS
from gateway.store.sessions import Sessions

_HERE = Path(__file__).parent


def add_console(app: web.Application, services: Services) -> None:
    """Serve the web console under ``/console`` (route names ``console.*``, counted as ``other``)."""
    static = StaticFiles(_HERE / "static")
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True,
        filters=FILTERS,
        default_helpers=False,
        undefined=jinja2.StrictUndefined,
    )
    env.globals["static_url"] = static.url
    app[SERVICES] = services
    app[SESSIONS] = Sessions(services.engine)
    app[CREDENTIALS] = CredentialList(services.objects)
    app[LIVE] = live = Live(app)
    app.on_shutdown.append(live.close)
    routes = [
        ("GET", "/console", views.overview, "overview"),
        ("GET", "/console/signin", actions.signin_form, "signin_form"),
        ("POST", "/console/signin", actions.signin, "signin"),
        ("POST", "/console/signout", actions.signout, "signout"),
        ("GET", "/console/credentials/{id}", views.credential, "credential"),
        ("GET", "/console/calls", views.calls, "calls"),
        ("GET", "/console/syncs", views.syncs, "syncs"),
        ("POST", "/console/syncs/{id}/{action:pause|resume|backfill}", actions.sync_action, "sync_action"),
        ("GET", "/console/consumers", views.consumers, "consumers"),
        ("GET", "/console/tokens", views.tokens, "tokens"),
        ("POST", "/console/tokens", actions.create_token, "create_token"),
        ("POST", "/console/tokens/{name}/revoke", actions.revoke_token, "revoke_token"),
        ("GET", "/console/providers", views.providers, "providers"),
        ("GET", "/console/events", events, "events"),
        ("GET", "/console/static/{name}", static.handler(), "static"),
    ]
    for method, path, handler, name in routes:
        app.router.add_route(method, path, handler, name=f"console.{name}")
        if method == "GET" and name != "events":  # as the API's GETs (RFC 9110); the live stream never ends
            app.router.add_route("HEAD", path, handler, name=f"console.{name}")
