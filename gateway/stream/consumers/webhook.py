"""Webhook consumers: POST batches of events to the consumer's URL, signed per Standard Webhooks.

Body ``{"data": [event, ...]}``; headers ``webhook-id`` (the same for every retry of a batch, so
receivers can de-duplicate), ``webhook-timestamp`` (epoch seconds) and ``webhook-signature``
(``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``, keyed with the base64-decoded part of the
secret after ``whsec_``). A 2xx answer acknowledges the batch; anything else, a connection error or
a timeout raises ``DeliveryFailed`` and the worker retries (see ``workers.py``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Sequence

import aiohttp

from gateway.domain.models import Event
from gateway.domain.objects import Consumer
from gateway.egress import EgressDenied

SECRET_PREFIX = "whsec_"
# The receiver's answer body is read (so the connection can be reused) up to this much, then dropped:
# read whole, an endless or huge 200 answer held the delivery until its timeout, or grew memory.
ANSWER_BYTES = 64 * 1024


class DeliveryFailed(Exception):
    """A batch was not accepted; ``str()`` is a short reason safe to show (no secrets, no URLs)."""


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one message."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def message_id(events: Sequence[Event]) -> str:
    """Stable for the same batch, so a retried POST carries the same ``webhook-id``."""
    return "msg_" + hashlib.sha256(",".join(e.id for e in events).encode()).hexdigest()[:32]


def encode(events: Sequence[Event]) -> bytes:
    return json.dumps({"data": [e.model_dump(mode="json") for e in events]}, separators=(",", ":")).encode()


async def _drain(resp: aiohttp.ClientResponse) -> None:
    """Discard the answer's body, at most ``ANSWER_BYTES`` of it (past that the connection is closed).
    The status is in already: a body that is cut off, or trickles past the timeout, changes nothing
    (it made an acknowledged batch a failure, retried for ever)."""
    seen = 0
    try:
        async for chunk in resp.content.iter_chunked(16 * 1024):
            seen += len(chunk)
            if seen > ANSWER_BYTES:
                break
        else:
            return
    except (TimeoutError, aiohttp.ClientError):
        pass
    resp.close()


class WebhookSink:
    """Delivers for one webhook consumer over the workers' shared client session."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def deliver(self, consumer: Consumer, events: Sequence[Event]) -> None:
        body = encode(events)
        msg_id, timestamp = message_id(events), int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(str(consumer.settings["secret"]), msg_id, timestamp, body),
        }
        timeout = aiohttp.ClientTimeout(total=float(consumer.settings.get("timeout", 10)))
        try:
            async with self.session.post(
                str(consumer.settings["url"]), data=body, headers=headers, timeout=timeout, allow_redirects=False
            ) as resp:
                status = resp.status
                await _drain(resp)
        except TimeoutError:
            raise DeliveryFailed("timed out") from None
        except aiohttp.ClientError as exc:
            if isinstance(getattr(exc, "os_error", None), EgressDenied):
                raise DeliveryFailed("the URL's address is denied by the egress policy (upstream.deny/allow)") from None
            raise DeliveryFailed(f"connection failed: {exc.__class__.__name__}") from None
        if not 200 <= status < 300:
            raise DeliveryFailed(f"answered HTTP {status}")

    async def close(self) -> None:
        """The session belongs to the workers; nothing of our own to close."""
