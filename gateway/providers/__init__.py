"""Per-provider mutation translators (pure); ``translator(provider)`` picks one."""

from __future__ import annotations

from gateway.providers.airtable import Airtable
from gateway.providers.base import Translator
from gateway.providers.hubspot import HubSpot
from gateway.providers.salesforce import Salesforce
from gateway.providers.stripe import Stripe

TRANSLATORS: dict[str, Translator] = {
    "salesforce": Salesforce(),
    "hubspot": HubSpot(),
    "stripe": Stripe(),
    "airtable": Airtable(),
}


def translator(provider: str) -> Translator | None:
    """The translator of ``provider``, or None for providers without collections (``rest``)."""
    return TRANSLATORS.get(provider)
