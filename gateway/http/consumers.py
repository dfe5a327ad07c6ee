"""Pull consumer views (scope ``consumers``): receive (long-poll), ack, nack.

Only ``pull`` consumers are read over HTTP; webhook and postgres consumers are served by the
gateway's own workers, so receiving or acking for them would steal their events: 409.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field

from gateway.domain.models import Event, Strict
from gateway.domain.objects import Consumer
from gateway.errors import Conflict, validate
from gateway.http import appkeys
from gateway.http.bodies import json_response, read_json
from gateway.http.endpoints import Endpoint
from gateway.http.management import object_id
from gateway.http.middlewares import require_access


class ReceiveRequest(Strict):
    batch_size: int = Field(default=10, ge=1, le=1000, description="most events returned")
    wait_for: int = Field(default=5000, ge=0, le=60000, description="ms to wait for a first event")


class AckRequest(Strict):
    ack_ids: list[str] = Field(max_length=1000)


class NackRequest(Strict):
    ack_ids: list[str] = Field(max_length=1000)
    delay_ms: int = Field(default=0, ge=0, le=43_200_000, description="ms before they are receivable again")


class ReceivedEvent(BaseModel):
    ack_id: str
    event: Event


class ReceiveResponse(BaseModel):
    data: list[ReceivedEvent]


class AckResponse(BaseModel):
    acked: int


class NackResponse(BaseModel):
    nacked: int


async def _pull_consumer(request: web.Request) -> Consumer:
    consumer_id = object_id(request)
    require_access(request, "consumer", consumer_id)
    consumer = await request.app[appkeys.OBJECTS].consumer(consumer_id)
    if consumer.kind != "pull":
        raise Conflict(
            f"consumer {consumer_id!r} is a {consumer.kind} consumer; only pull consumers are read over HTTP",
            field="id",
        )
    return consumer


async def _body(request: web.Request, model: type[BaseModel]) -> Any:
    return validate(model, await read_json(request, limit=request.app[appkeys.CONFIG].server.max_json_bytes))


async def receive(request: web.Request) -> web.Response:
    consumer = await _pull_consumer(request)
    body: ReceiveRequest = await _body(request, ReceiveRequest)
    queue = request.app[appkeys.STREAM].queue
    batch = await queue.receive(
        consumer.id,
        batch_size=body.batch_size,
        visibility=float(consumer.settings.get("visibility_timeout", 30)),
        wait=body.wait_for / 1000,
    )
    await queue.refresh_pending(consumer.id)
    return json_response(ReceiveResponse(data=[ReceivedEvent(ack_id=d.ack_id, event=d.event) for d in batch]))


async def ack(request: web.Request) -> web.Response:
    consumer = await _pull_consumer(request)
    body: AckRequest = await _body(request, AckRequest)
    acked = await request.app[appkeys.STREAM].queue.ack(consumer.id, body.ack_ids)
    return json_response(AckResponse(acked=acked))


async def nack(request: web.Request) -> web.Response:
    consumer = await _pull_consumer(request)
    body: NackRequest = await _body(request, NackRequest)
    nacked = await request.app[appkeys.STREAM].queue.nack(consumer.id, body.ack_ids, delay=body.delay_ms / 1000)
    return json_response(NackResponse(nacked=nacked))


_ERRORS = {
    400: "invalid request",
    401: "missing or bad token",
    403: "token lacks the scope or may not use this consumer",
    404: "consumer not found",
    409: "not a pull consumer",
}
ENDPOINTS: list[Endpoint] = [
    Endpoint(
        "POST",
        "/v1/consumers/{id}/receive",
        receive,
        "consumers.receive",
        "Receive events (long-poll up to wait_for ms)",
        "consumers",
        request=ReceiveRequest,
        response=ReceiveResponse,
        statuses=_ERRORS,
    ),
    Endpoint(
        "POST",
        "/v1/consumers/{id}/ack",
        ack,
        "consumers.ack",
        "Acknowledge received events; unknown or expired ack ids are not counted",
        "consumers",
        request=AckRequest,
        response=AckResponse,
        statuses=_ERRORS,
    ),
    Endpoint(
        "POST",
        "/v1/consumers/{id}/nack",
        nack,
        "consumers.nack",
        "Make received events available again after delay_ms",
        "consumers",
        request=NackRequest,
        response=NackResponse,
        statuses=_ERRORS,
    ),
]
