"""Safe join of a client-supplied path onto a credential's base URL (pure, no I/O).

The proxy forwards ``{path}`` as the client *sent* it (percent-encoding kept), so the checks run on
the raw text, not on what aiohttp's router decoded. A path is refused with ``InvalidPath`` when it
could make any upstream, however sloppy its own decoding, leave the base URL:

* control characters or NUL, raw or percent-encoded (at any depth of encoding);
* backslashes, raw or encoded: some servers treat them as ``/``;
* a path that starts with ``/`` (``//host`` is a scheme-relative URL), raw or encoded;
* dot segments (``.``, ``..``, ``%2e%2E``, ``%252e%252e`` ...) that climb above the base path;
* encoded slashes that hide a dot segment inside one segment (``a%2F..%2F..``);
* dot segments carrying ``;`` parameters (``..;/``, ``.;x``): Tomcat and Jetty strip the parameter
  and then resolve the ``..``;
* characters that Unicode compatibility normalisation (NFKC, which some upstreams apply) folds into
  ``..``, ``/`` or ``\\``: fullwidth dots ``%ef%bc%8e``, the division slash ``%e2%88%95``, ...;
* percent-encoding nested so deep it never settles (a decoder bomb);
* IIS's non-standard ``%uXXXX`` escapes (``%u002e%u002e``, ``%uff0e``), raw or encoded: IIS decodes
  them into dots and slashes that no standard decoder sees.

Dot segments that stay below the base are resolved here, so what is sent has none left. The joined
URL is finally re-parsed and compared with the base (scheme, host, port, userinfo, path prefix): the
last line of defence should a rule above ever be wrong.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlencode

from yarl import URL

from gateway.errors import InvalidPath
from gateway.urltext import CONTROL as _CONTROL
from gateway.urltext import folds_into_separators, fully_decode

_FORBIDDEN_RAW = re.compile(r"[\\#?\s]")
_IIS_ESCAPE = re.compile(r"%u[0-9a-f]{4}", re.IGNORECASE)


def _refuse(reason: str) -> InvalidPath:
    return InvalidPath(f"path: {reason}; the path must stay below the credential's base URL", field="path")


def normalize_path(raw: str) -> str:
    """The raw path with harmless dot segments resolved; ``InvalidPath`` when it would escape."""
    if _FORBIDDEN_RAW.search(raw) or _CONTROL.search(raw):
        raise _refuse("backslashes, whitespace, control characters, '?' and '#' are not allowed")
    try:
        decoded = fully_decode(raw)
    except UnicodeDecodeError:
        raise _refuse("percent-encoding does not decode to UTF-8") from None
    if _CONTROL.search(decoded) or "\\" in decoded:
        raise _refuse("encoded control characters or backslashes are not allowed")
    if _IIS_ESCAPE.search(decoded):
        raise _refuse("%uXXXX escapes are not allowed (IIS decodes them into dots and slashes)")
    if decoded.startswith("/"):
        raise _refuse("a path starting with '/' could name another host")
    if folds_into_separators(decoded):
        raise _refuse("characters that Unicode normalisation turns into '..', '/' or '\\' are not allowed")
    segments = raw.split("/")
    kept: list[str] = []
    for segment in segments:
        plain = fully_decode(segment)
        if ";" in plain and plain.split(";", 1)[0] in (".", ".."):
            raise _refuse("dot segments with ';' parameters are not allowed")
        if plain == "..":
            if not kept:
                raise _refuse("dot segments climb above the base path")
            kept.pop()
        elif plain != ".":
            if "/" in plain and any(part.split(";", 1)[0] in (".", "..") for part in plain.split("/")):
                raise _refuse("encoded slashes hide a dot segment")
            kept.append(segment)
    if fully_decode(segments[-1]) in (".", ".."):
        kept.append("")  # "a/b/.." names the directory "a/": keep the trailing slash
    return "/".join(kept)


def join(base_url: str, raw_path: str, raw_query: str = "", extra_query: dict[str, str] | None = None) -> URL:
    """``base_url`` + ``/`` + the normalized ``raw_path`` + the query; verified not to escape.

    ``extra_query`` (the ``query`` auth parameter) replaces any client parameter of the same name.
    """
    path = normalize_path(raw_path)
    if _CONTROL.search(raw_query) or "#" in raw_query:
        raise InvalidPath("query: control characters are not allowed", field="query")
    base = URL(base_url, encoded=True)
    query = raw_query
    if extra_query:
        names = set(extra_query)
        pairs = [p for p in raw_query.split("&") if p and unquote(p.split("=", 1)[0]) not in names]
        query = "&".join([*pairs, urlencode(extra_query)])
    prefix = base.raw_path.rstrip("/")
    text = f"{base.scheme}://{base.raw_authority}{prefix}/{path}" + (f"?{query}" if query else "")
    target = URL(text, encoded=True)
    _verify(base, target, prefix)
    return target


def _verify(base: URL, target: URL, prefix: str) -> None:
    """Defence in depth: the joined URL must keep the base's origin and path prefix."""
    same_origin = (target.scheme, target.raw_host, target.port, target.raw_user, target.raw_password) == (
        base.scheme,
        base.raw_host,
        base.port,
        base.raw_user,
        base.raw_password,
    )
    if not same_origin or not target.raw_path.startswith(prefix + "/"):
        raise _refuse("the joined URL would leave the base URL")
