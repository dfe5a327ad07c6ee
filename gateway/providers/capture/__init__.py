"""Per-provider change capture (pure); ``capture(provider)`` picks one, None for ``rest``."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.errors import InvalidRequest
from gateway.providers.base import Target
from gateway.providers.capture.airtable import AirtableCapture
from gateway.providers.capture.base import Capture
from gateway.providers.capture.hubspot import HubSpotCapture
from gateway.providers.capture.salesforce import SalesforceCapture
from gateway.providers.capture.stripe import StripeCapture

CAPTURES: dict[str, Capture] = {
    "salesforce": SalesforceCapture(),
    "hubspot": HubSpotCapture(),
    "stripe": StripeCapture(),
    "airtable": AirtableCapture(),
}


def capture(provider: str) -> Capture | None:
    return CAPTURES.get(provider)


def check_sync(provider: str, collections: list[str], options: dict[str, str]) -> None:
    """A sync reads its collections: each must be one its provider can read (400 naming it otherwise)."""
    reader = capture(provider)
    for collection in collections:
        if reader is None:
            raise InvalidRequest(
                f"collections: {collection!r}: provider {provider!r} has no change capture; "
                "use a sync without collections to proxy it",
                field="collections",
            )
        obj = collection.partition(":")[2]
        # Building the first request checks the object name and the options, naming the field.
        reader.request(reader.start(datetime.now(UTC)), Target(obj=obj, options=options, seed=""))
