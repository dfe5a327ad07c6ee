"""``POST /v1/mutations/run`` (scope ``mutations``): parse, check access, hand to the mutation service."""

from __future__ import annotations

import contextlib
import re
from typing import Any

from aiohttp import web

from gateway.errors import InvalidRequest, NotFound, validate
from gateway.http import appkeys
from gateway.http.bodies import read_json
from gateway.http.call import CALL
from gateway.http.endpoints import Endpoint
from gateway.http.middlewares import require_access, single_header
from gateway.http.priority import apply_share, stamp
from gateway.mutations.idempotency import KEY_PATTERN, IdempotencyKeys, request_hash
from gateway.mutations.models import BY_KIND, Mutation, MutationRequest, MutationResponse
from gateway.mutations.service import PACING_WAITS, MutationService


def parse_mutation(body: Any) -> Mutation:
    """Pick the model by ``kind`` first, so errors name fields as the client wrote them."""
    if not isinstance(body, dict):
        raise InvalidRequest("body: must be a JSON object", field="body")
    kind = body.get("kind")
    model = BY_KIND.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise InvalidRequest("kind: must be one of 'create', 'update', 'delete'", field="kind")
    mutation: Mutation = validate(model, body)
    return mutation


def idempotency_key(request: web.Request) -> str | None:
    """The ``Idempotency-Key`` header scoped to the calling token's name, or None."""
    value = single_header(request, "Idempotency-Key")
    if value is None:
        return None
    if not re.fullmatch(KEY_PATTERN, value):
        raise InvalidRequest("Idempotency-Key: must be 1 to 160 printable ASCII characters", field="Idempotency-Key")
    return f"{request[CALL].caller().name}:{value}"


def service(app: web.Application) -> MutationService:
    return MutationService(
        engine=app[appkeys.ENGINE],
        objects=app[appkeys.OBJECTS],
        client=app[appkeys.UPSTREAM],
        stream=app[appkeys.STREAM],
        metrics=app[appkeys.METRICS],
        keys=IdempotencyKeys(app[appkeys.ENGINE], lease=app[appkeys.JOURNAL].lease),
        journal=app[appkeys.JOURNAL],
    )


async def run_mutation(request: web.Request) -> web.Response:
    body = await read_json(request, limit=request.app[appkeys.CONFIG].server.max_json_bytes)
    mutation = parse_mutation(body)
    require_access(request, "sync", mutation.sync_id)
    call = request[CALL]
    apply_share(request, call)
    with contextlib.suppress(NotFound):  # the service answers an unknown sync; this only labels the call
        credential = await request.app[appkeys.UPSTREAM].credentials.for_sync(mutation.sync_id)
        call.credential, call.provider = credential.id, credential.provider
    key = idempotency_key(request)
    waits: list[float] = []
    reset = PACING_WAITS.set(waits)
    try:
        outcome = await service(request.app).execute(mutation, key=key, fingerprint=request_hash(body))
    finally:
        PACING_WAITS.reset(reset)
        if waits:  # none when replayed, or refused before any upstream call
            call.pacing_wait_ms = round(sum(waits) * 1000, 1)
    response = web.json_response(outcome.body, status=outcome.status)
    if outcome.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    stamp(call, response)
    return response


ENDPOINTS = [
    Endpoint(
        "POST",
        "/v1/mutations/run",
        run_mutation,
        "mutations.run",
        "Create, update or delete records of a collection through the upstream API",
        scope="mutations",
        request=MutationRequest,
        response=MutationResponse,
        statuses={
            400: "invalid request, or the upstream refused the records (upstream_validation_error)",
            401: "missing or bad token",
            403: "token lacks the scope or the sync",
            404: "unknown sync, collection, consumer or upstream record",
            409: "Idempotency-Key reused with another body, still in progress, or its outcome unknown after a "
            "crash (mutation_outcome_unknown)",
            429: "pacing queue full (rate_limited)",
            500: "awaited consumers did not finish in time (consumer_timeout), or the mutation was interrupted "
            "(mutation_interrupted, internal_error): the body's records were applied",
            502: "upstream unavailable or credential rejected",
            504: "upstream timed out",
        },
    )
]
