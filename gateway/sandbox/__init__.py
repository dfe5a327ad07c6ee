"""Faithful in-process stand-ins for the Salesforce, HubSpot, Stripe and Airtable APIs.

Each provider is a package: ``state.py`` (its objects and errors), ``routes.py`` (its handlers) and,
in ``__init__``, ``create_app(...) -> web.Application`` and ``seed(state)``; the app's
``SandboxState`` (``app[SANDBOX]``) holds the knobs, the recorded requests and the object store.
``run_sandbox(app)`` serves any of them on loopback. See docs/sandbox.md.
"""

from gateway.sandbox.common import SANDBOX, Knobs, RecordedRequest, SandboxState
from gateway.sandbox.runner import run_sandbox

__all__ = ["SANDBOX", "Knobs", "RecordedRequest", "SandboxState", "run_sandbox"]
