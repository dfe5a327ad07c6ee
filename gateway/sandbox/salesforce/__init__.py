"""The Salesforce sandbox: ``create_app`` joins its state (``state.py``) and its handlers (``routes.py``)."""

from __future__ import annotations

from aiohttp import web

from gateway.sandbox.common import Knobs, sandbox_app
from gateway.sandbox.salesforce.composite import COMPOSITE_ROUTES
from gateway.sandbox.salesforce.oauth import OAUTH, OAuthClient, oauth_token
from gateway.sandbox.salesforce.query import QUERY_ROUTES
from gateway.sandbox.salesforce.routes import ROUTES
from gateway.sandbox.salesforce.state import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REFRESH_TOKEN,
    DEFAULT_TOKEN,
    ROLLED_BACK,
    SALESFORCE,
    SalesforceState,
    seed,
)

__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_REFRESH_TOKEN",
    "DEFAULT_TOKEN",
    "ROLLED_BACK",
    "SALESFORCE",
    "SalesforceState",
    "create_app",
    "seed",
]


def create_app(
    *,
    token: str = DEFAULT_TOKEN,
    client_id: str = DEFAULT_CLIENT_ID,
    client_secret: str = DEFAULT_CLIENT_SECRET,
    refresh_token: str = DEFAULT_REFRESH_TOKEN,
    knobs: Knobs | None = None,
) -> web.Application:
    """A Salesforce org; ``token`` never expires, tokens from the OAuth endpoint live ``token_ttl`` s."""
    oauth = OAuthClient(
        static_token=token, client_id=client_id, client_secret=client_secret, refresh_token=refresh_token
    )
    state = SalesforceState(oauth=oauth, knobs=knobs or Knobs(daily_limit=15000))
    token_route = web.post("/services/oauth2/token", oauth_token)
    app = sandbox_app(state, [*ROUTES, *COMPOSITE_ROUTES, *QUERY_ROUTES, token_route])
    app[SALESFORCE] = state
    app[OAUTH] = oauth
    return app
