"""The console's own static files (one stylesheet, one script), read once and served from memory.

Public on purpose: the sign-in page needs the stylesheet, and neither file holds anything secret.
URLs carry a content hash (``?v=``), so browsers may cache them for long and still see a new release.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from gateway.console.auth import secure_headers

TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


class StaticFiles:
    def __init__(self, directory: Path) -> None:
        self._files = {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.suffix in TYPES}
        self.versions = {name: hashlib.sha256(body).hexdigest()[:12] for name, body in self._files.items()}

    def url(self, name: str) -> str:
        return f"/console/static/{name}?v={self.versions[name]}"

    def handler(self) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def serve(request: web.Request) -> web.StreamResponse:
            name = request.match_info["name"]
            body = self._files.get(name)
            if body is None:
                raise web.HTTPNotFound()
            response = web.Response(body=body, content_type=TYPES[Path(name).suffix].split(";")[0], charset="utf-8")
            secure_headers(response)
            response.headers["Cache-Control"] = "public, max-age=86400"
            return response

        return serve
