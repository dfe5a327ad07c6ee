"""``GET /v1/openapi.json``: an OpenAPI 3.1 document built from the models that validate requests.

Each view module lists its ``Endpoint``s (method, path, request and response models); the app
registers the routes from the same list, so the document cannot drift from what is served.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from aiohttp import web
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from gateway import __version__
from gateway.domain.models import ID_PATTERN
from gateway.http import appkeys
from gateway.http.endpoints import Endpoint

_REF = "#/components/schemas/{model}"


def add_endpoints(app: web.Application, endpoints: list[Endpoint]) -> None:
    """Register the routes; every GET also answers HEAD (RFC 9110 section 9.3.2), under the same name, so
    the same scope is checked (an unnamed route would need none)."""
    heads = {endpoint.path for endpoint in endpoints if endpoint.method == "HEAD"}
    for endpoint in endpoints:
        app.router.add_route(endpoint.method, endpoint.path, endpoint.handler, name=endpoint.name)
        if endpoint.method == "GET" and endpoint.path not in heads:
            app.router.add_route("HEAD", endpoint.path, endpoint.handler, name=endpoint.name)
    app[appkeys.ENDPOINTS].extend(endpoints)


def build_document(endpoints: list[Endpoint]) -> dict[str, Any]:
    models = sorted({m for e in endpoints for m in (e.request, e.response) if _is_model(m)}, key=lambda m: m.__name__)
    _, schema = models_json_schema([(m, "validation") for m in models], ref_template=_REF)
    components: dict[str, Any] = dict(schema.get("$defs", {}))
    components["Error"] = {
        "type": "object",
        "required": ["error", "docs", "code"],
        "properties": {
            "error": {"type": "string"},
            "docs": {"type": "array", "items": {"type": "string"}},
            "code": {"type": "string"},
        },
    }
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        paths.setdefault(_openapi_path(endpoint.path), {})[endpoint.method.lower()] = _operation(endpoint, components)
    return {
        "openapi": "3.1.0",
        "info": {"title": "gateway", "version": __version__},
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }


def _operation(endpoint: Endpoint, components: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": endpoint.summary, "operationId": endpoint.name}
    params = [p.strip("{}").split(":")[0] for p in endpoint.path.split("/") if p.startswith("{")]
    op["parameters"] = [{"name": p, "in": "path", "required": True, "schema": _path_schema(p)} for p in params]
    if endpoint.raw_body:
        op["requestBody"] = {"content": {"*/*": {"schema": {}}}}
    elif endpoint.request is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _schema(endpoint.request, components)}},
        }
    ok: dict[str, Any] = {"description": HTTPStatus(endpoint.success).phrase}
    if endpoint.response is not None and endpoint.success != 204:
        ok["content"] = {"application/json": {"schema": _schema(endpoint.response, components)}}
    responses: dict[str, Any] = {str(endpoint.success): ok}
    for status, text in endpoint.statuses.items():
        responses[str(status)] = {
            "description": text,
            "content": {"application/json": {"schema": {"$ref": _REF.format(model="Error")}}},
        }
    op["responses"] = responses
    if endpoint.scope:
        op["description"] = f"Requires a token with scope `{endpoint.scope}` (or `admin`)."
    return op


def _path_schema(name: str) -> dict[str, Any]:
    """Object ids follow ``ID_PATTERN`` (anything else is refused with 400); the proxied path is free."""
    return {"type": "string"} if name == "path" else {"type": "string", "pattern": ID_PATTERN}


def _schema(kind: Any, components: dict[str, Any]) -> dict[str, Any]:
    if _is_model(kind):
        return {"$ref": _REF.format(model=kind.__name__)}
    schema = TypeAdapter(kind).json_schema(ref_template=_REF)
    components.update(schema.pop("$defs", {}))
    return schema


def _is_model(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, BaseModel)


def _openapi_path(path: str) -> str:
    return "/".join(p.split(":")[0] + "}" if p.startswith("{") and ":" in p else p for p in path.split("/"))


async def openapi_view(request: web.Request) -> web.Response:
    return web.json_response(build_document(request.app[appkeys.ENDPOINTS]))
