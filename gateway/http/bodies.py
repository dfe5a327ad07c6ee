"""Reading request bodies into pydantic models, with errors that name the field."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, TypeAdapter, ValidationError

from gateway.config import describe_validation_error
from gateway.errors import InvalidRequest, PayloadTooLarge

M = TypeVar("M", bound=BaseModel)


async def read_json(request: web.Request, *, limit: int) -> Any:
    """The body as JSON; 413 past ``limit`` bytes, 400 when empty or not JSON."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise InvalidRequest("request body is empty; a JSON object is required")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None


def validate(model: type[M] | TypeAdapter[Any], data: Any, *, what: str = "body") -> Any:
    """Validate ``data``; the error names each failing field (``records.0.data: ...``)."""
    try:
        if isinstance(model, TypeAdapter):
            return model.validate_python(data)
        return model.model_validate(data)
    except ValidationError as exc:
        fields = [".".join(str(p) for p in e["loc"]) for e in exc.errors(include_url=False)]
        raise InvalidRequest(describe_validation_error(exc, prefix=what), fields=fields) from None


def json_response(data: Any, *, status: int = 200) -> web.Response:
    """Serialize pydantic models (and lists of them) the same way everywhere."""
    if isinstance(data, BaseModel):
        text = data.model_dump_json()
    elif isinstance(data, list) and all(isinstance(item, BaseModel) for item in data):
        text = "[" + ",".join(item.model_dump_json() for item in data) + "]"
    else:
        text = TypeAdapter(Any).dump_json(data).decode()
    return web.Response(text=text, status=status, content_type="application/json")
