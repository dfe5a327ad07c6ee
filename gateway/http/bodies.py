"""Reading request bodies into pydantic models, with errors that name the field.

Every JSON body is bounded before it is parsed: its size while it arrives (413), the gap between
its chunks and its average rate (408: ``server.body_idle_timeout``, ``server.min_body_rate``, see
upstream/body.py: a client dawdling at a byte a second gets cut off), and its nesting depth (400):
``json.loads`` recurses per level, so 100,000 ``[`` would end in ``RecursionError``, and values
nested a few hundred deep would fail later anyway, when the stream serializes them. Numbers must
be finite: ``1e400`` parses as ``inf``, which no limit, record or upstream can use (gateway/jsontext.py).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, TypeAdapter

from gateway.errors import InvalidRequest, PayloadTooLarge
from gateway.http import appkeys
from gateway.http.middlewares import single_header
from gateway.jsontext import DuplicateKey, loads_finite, nests_deeper
from gateway.upstream.body import read_whole


async def read_json(request: web.Request, *, limit: int) -> Any:
    """The body as JSON; 413 past ``limit`` bytes, 408 on a stalled client, 400 when empty, not JSON,
    nested deeper than ``server.max_json_depth`` or holding a number out of range."""
    server = request.app[appkeys.CONFIG].server
    if (single_header(request, "Content-Encoding") or "identity").strip().lower() != "identity":
        raise InvalidRequest("Content-Encoding: JSON bodies are read as sent, uncompressed", field="Content-Encoding")
    raw = await _read_bounded(request, limit=limit)
    if not raw.strip():
        raise InvalidRequest("request body is empty; a JSON object is required", field="body")
    check_depth(raw, server.max_json_depth)
    try:
        value = loads_finite(raw, unique_keys=True)
    except DuplicateKey as exc:
        raise InvalidRequest(f"request body: {exc}", field=exc.path) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}", field="body") from None
    if b"\\u0000" in raw:  # the only way a NUL gets into JSON text; the walk runs only then
        _refuse_nul(value, "")
    return value


def _refuse_nul(value: Any, path: str) -> None:
    """400 naming the first string (or key) holding a NUL: PostgreSQL's ``jsonb`` and ``text`` refuse it,
    so on that store it failed the write with a 500, after a mutation had already reached the upstream."""
    if isinstance(value, str) and "\x00" in value:
        raise InvalidRequest(f"{path or 'body'}: strings may not hold NUL (\\u0000)", field=path or "body")
    if isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_nul(item, f"{path}.{index}" if path else str(index))
    elif isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            _refuse_nul(key, where)
            _refuse_nul(item, where)


async def _read_bounded(request: web.Request, *, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
    server = request.app[appkeys.CONFIG].server
    return await read_whole(
        request.content, limit=limit, read_timeout=server.body_idle_timeout, min_rate=server.min_body_rate
    )


def check_depth(raw: bytes, limit: int) -> None:
    """400 when arrays/objects nest deeper than ``limit``."""
    if nests_deeper(raw, limit):
        raise InvalidRequest(
            f"request body: JSON nests deeper than {limit} levels (server.max_json_depth)", field="body"
        )


def json_response(data: Any, *, status: int = 200) -> web.Response:
    """Serialize pydantic models (and lists of them) the same way everywhere."""
    if isinstance(data, BaseModel):
        text = data.model_dump_json()
    elif isinstance(data, list) and all(isinstance(item, BaseModel) for item in data):
        text = "[" + ",".join(item.model_dump_json() for item in data) + "]"
    else:
        text = TypeAdapter(Any).dump_json(data).decode()
    return web.Response(text=text, status=status, content_type="application/json")
