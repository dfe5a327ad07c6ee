"""The Airtable sandbox: ``create_app`` joins its state (``state.py``) and its handlers (``routes.py``)."""

from __future__ import annotations

from aiohttp import web

from gateway.sandbox.airtable.routes import ROUTES
from gateway.sandbox.airtable.state import AIRTABLE, DEFAULT_BASE, DEFAULT_TABLES, DEFAULT_TOKEN, AirtableState, seed
from gateway.sandbox.common import Knobs, sandbox_app

__all__ = ["AIRTABLE", "DEFAULT_BASE", "DEFAULT_TABLES", "DEFAULT_TOKEN", "AirtableState", "create_app", "seed"]


def create_app(
    *,
    token: str = DEFAULT_TOKEN,
    bases: dict[str, dict[str, dict[str, str]]] | None = None,
    knobs: Knobs | None = None,
) -> web.Application:
    """Airtable with ``bases`` (default: ``appSandboxBase001`` with Contacts and Companies)."""
    state = AirtableState(
        token=token,
        bases=bases or {DEFAULT_BASE: DEFAULT_TABLES},
        knobs=knobs or Knobs(rate_limit=5, rate_window=1, penalty=30),
    )
    app = sandbox_app(state, ROUTES)
    app[AIRTABLE] = state
    return app
