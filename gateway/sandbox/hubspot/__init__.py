"""The HubSpot sandbox: ``create_app`` joins its state (``state.py``) and its handlers (``routes.py``)."""

from __future__ import annotations

from aiohttp import web

from gateway.sandbox.common import Knobs, sandbox_app
from gateway.sandbox.hubspot.routes import ROUTES
from gateway.sandbox.hubspot.state import DEFAULT_TOKEN, HUBSPOT, HubSpotState, seed

__all__ = ["DEFAULT_TOKEN", "HUBSPOT", "HubSpotState", "create_app", "seed"]


def create_app(*, token: str = DEFAULT_TOKEN, knobs: Knobs | None = None) -> web.Application:
    """A HubSpot portal accepting ``Authorization: Bearer <token>`` (a private app token)."""
    state = HubSpotState(token=token, knobs=knobs or Knobs(rate_limit=100, rate_window=10, daily_limit=250_000))
    app = sandbox_app(state, ROUTES)
    app[HUBSPOT] = state
    return app
