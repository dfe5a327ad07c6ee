"""The Stripe sandbox: ``create_app`` joins its state (``state.py``) and its handlers (``routes.py``)."""

from __future__ import annotations

from aiohttp import web

from gateway.sandbox.common import Knobs, sandbox_app
from gateway.sandbox.stripe.routes import ROUTES
from gateway.sandbox.stripe.state import DEFAULT_KEY, STRIPE, StripeState, seed

__all__ = ["DEFAULT_KEY", "STRIPE", "StripeState", "create_app", "seed"]


def create_app(*, secret_key: str = DEFAULT_KEY, knobs: Knobs | None = None) -> web.Application:
    """A Stripe account accepting ``secret_key`` (basic username or bearer)."""
    state = StripeState(secret_key=secret_key, knobs=knobs or Knobs(rate_limit=100, rate_window=1))
    app = sandbox_app(state, ROUTES)
    app[STRIPE] = state
    return app
