"""The one way out of the gateway: every upstream call, proxied or made by a mutation, goes through here.

One call is a short pipeline, each step a small method:

    stream()       retries: after a refusal (429, or 503 with Retry-After) that paused the bucket
                   (replayable bodies, at most 3 times, within the permit's max_wait); any other
                   answer, even one whose headers report exhaustion, is returned as it is, exactly
                   once; and once after an OAuth2 401 (replayable bodies; otherwise the 401 is returned)
    _attempt()     one paced send: pacer.acquire -> _send -> pacer.observe; the ``_Attempt`` it returns
                   holds the connection and the permit, which ``close()`` gives back (each attempt
                   not answered is closed at once, the answered one when the ``async with`` ends)
    _send()        safe URL join -> auth injection -> aiohttp request; foreign errors mapped ONCE here

API (others depend on it)::

    client = app[appkeys.UPSTREAM]
    async with client.stream(credential, "GET", "v1/customers", query="limit=3", headers={...},
                             body=None | bytes | StreamedBody) as resp:
        resp.status, resp.headers, resp.pacing_wait        # headers: CIMultiDictProxy, hop-by-hop kept
        async for chunk in resp.chunks(): ...               # raises UpstreamTimeout/UpstreamUnavailable
        chunk = await resp.next_chunk()                     # the same, one part at a time (b"": the end)
    result = await client.request_json(credential, "POST", "services/data/v59.0/composite/sobjects",
                                       json={...} | None, form={...} | None, query={...} | None,
                                       headers={...} | None)
    result.status, result.headers, result.body_json, result.pacing_wait, result.pause

``path`` is relative to the credential's base URL, percent-encoded as it should go on the wire; it is
checked by ``paths.join`` (``InvalidPath`` before anything is sent). ``bytes``/``None`` bodies are
replayable; a ``StreamedBody`` is not. Errors: ``InvalidPath`` 400, ``RateLimited`` 429 (pacer),
``UpstreamUnavailable`` 502, ``UpstreamAuthFailed`` 502, ``UpstreamTimeout`` 504, plus the body's own
``PayloadTooLarge``/``RequestTimeout``. Upstream 4xx/5xx are answers, not errors.
"""

from __future__ import annotations

import json as jsonlib
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, NamedTuple
from urllib.parse import urlencode

import aiohttp
from multidict import CIMultiDict
from prometheus_client import Counter, Histogram
from yarl import URL

from gateway import jsontext
from gateway.aiohttp_compat import PassThroughRequest
from gateway.config import Config
from gateway.domain.models import OAuth2Auth, display_name
from gateway.domain.objects import Credential
from gateway.egress import EgressPolicy, ca_bundle_path
from gateway.errors import InvalidRequest, UpstreamAnswerUnreadable, UpstreamAuthFailed, UpstreamUnavailable
from gateway.observability.metrics import Metrics
from gateway.observability.recent import CallRates
from gateway.pacing import adaptive
from gateway.pacing.api import Pacer, Permit, current_share
from gateway.store.objects import Objects
from gateway.upstream import auth, paths
from gateway.upstream.body import StreamedBody
from gateway.upstream.cache import CredentialCache
from gateway.upstream.response import CHUNK, UpstreamResponse, UpstreamResult, mapped
from gateway.vault.credentials import OAuth2Refresher, access_token

URLS_LIMIT = 256
DEFAULT_TIMEOUTS = {"connect": 10.0, "total": 60.0, "read": 60.0}
MAX_PACING_RETRIES = 3
Body = bytes | StreamedBody | None


@dataclass(frozen=True)
class Prepared:
    """What the send path needs of one credential object, computed once per object and kept on it
    (``Credential.memo``).

    The credential cache hands out the same object until the credential changes, so this turns the
    per-call work (auth header building, timeout merging, ``ClientTimeout``, the TLS context) into an
    attribute read. A changed credential is a new object, prepared anew.
    """

    config: Config  # the config it was prepared with: after a reload it is prepared again
    injection: auth.Injection
    timeouts: dict[str, float]
    client_timeout: aiohttp.ClientTimeout
    ssl: ssl.SSLContext | bool
    base: paths.Base  # the credential's base URL, parsed once
    # (raw path, raw query) -> the checked URL: a busy credential is called on a few paths over and
    # over, and the checks of ``paths.join`` were ~3% of a proxied call. Bounded by ``URLS_LIMIT``.
    urls: dict[tuple[str, str], URL] = field(default_factory=dict)


@dataclass
class _Address:
    """One call's raw path and query, and the URL they join to (computed on first use)."""

    path: str
    query: str
    cost: int | None = None  # the client's x-gateway-cost: tokens taken from each bucket
    url: URL | None = None
    base_url: str = ""


class _Attempt(NamedTuple):
    """One send: the answer (body unread but for ``head``), the pacing permit it holds, the pause it
    caused (if any), and the body's first bytes when the pacer read them (``Pacer.reads_body``).

    A named tuple rather than a frozen dataclass: as immutable, cheaper to build on every call.
    """

    raw: aiohttp.ClientResponse
    permit: Permit
    pause: float | None
    head: bytes

    def close(self) -> None:
        """Give back the connection (closed unless fully read), then the permit, whatever happens."""
        try:
            self.raw.release()
        finally:
            self.permit.release()


class _Exchange:
    """What ``stream`` returns: entering sends (``UpstreamClient._exchange``), leaving closes the answer.

    A class, not ``asynccontextmanager`` generators: ``stream`` around ``_attempt`` were two of them,
    each a generator, its wrapper and an ``asend``/``athrow`` per call on the proxy's hot path.
    """

    __slots__ = ("_attempt", "body", "client", "cost", "credential", "headers", "method", "path", "query")

    def __init__(
        self,
        client: UpstreamClient,
        credential: Credential,
        method: str,
        path: str,
        query: str | Mapping[str, str] | None,
        headers: Mapping[str, str] | CIMultiDict[str] | None,
        body: Body,
        cost: int | None,
    ) -> None:
        self.client, self.credential, self.method, self.path = client, credential, method, path
        self.query, self.headers, self.body, self.cost = query, headers, body, cost
        self._attempt: _Attempt | None = None

    async def __aenter__(self) -> UpstreamResponse:
        attempt, waited = await self.client._exchange(self)
        self._attempt = attempt
        return UpstreamResponse(
            attempt.raw, provider=self.credential.provider, pacing_wait=waited, pause=attempt.pause, head=attempt.head
        )

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        attempt, self._attempt = self._attempt, None
        if attempt is not None:
            attempt.close()


class UpstreamClient:
    """Owns the process's one ``ClientSession``; open with ``start()``, close with ``close()``."""

    def __init__(
        self, config: Config, metrics: Metrics, objects: Objects, pacer: Pacer, *, rates: CallRates | None = None
    ) -> None:
        """``rates``: where each attempt is counted for the web console's live view (optional)."""
        self._config = config
        self._rates = rates
        self._metrics = metrics
        self._pacer = pacer
        self._session: aiohttp.ClientSession | None = None
        self._ssl: dict[str, ssl.SSLContext] = {}
        self._counted: dict[tuple[str, int | str], tuple[Counter, Histogram]] = {}
        self.egress = EgressPolicy.from_config(config)
        self.oauth2 = OAuth2Refresher(objects, metrics, self._post_token_form)
        self.credentials = CredentialCache(objects, size=config.upstream.credential_cache_size)

    async def start(self) -> None:
        connector = self.egress.connector(limit=1024, limit_per_host=256, ttl_dns_cache=300, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,  # bodies pass through exactly as the upstream encoded them
            request_class=PassThroughRequest,  # adds no header of its own (see aiohttp_compat)
            # No cookie store: an upstream's Set-Cookie is relayed to the client that got it, never sent
            # on another client's call (the default jar did, to any host name; filtering it cost CPU).
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            read_bufsize=CHUNK,
        )
        await self.credentials.start()

    def reconfigure(self, config: Config) -> None:
        """Take new provider timeouts (a reload): prepared requests are rebuilt on their next use."""
        self._config = config

    async def close(self) -> None:
        await self.credentials.close()
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("UpstreamClient.start() was not awaited")
        return self._session

    def prepared(self, credential: Credential) -> Prepared:
        """The ``Prepared`` of this credential object, kept on it: as many as there are credential
        objects (the credential cache bounds them), each gone with its object."""
        prepared: Prepared | None = credential.memo.upstream
        if prepared is not None and prepared.config is self._config:
            return prepared
        limits = self._merged_timeouts(credential)
        prepared = credential.memo.upstream = Prepared(
            config=self._config,
            injection=auth.inject(credential.auth),
            timeouts=limits,
            client_timeout=aiohttp.ClientTimeout(
                total=limits["total"] or None, sock_connect=limits["connect"], sock_read=limits["read"]
            ),
            ssl=self._ssl_context(credential),
            base=paths.Base(credential.base_url),
        )
        return prepared

    def timeouts(self, credential: Credential) -> dict[str, float]:
        """connect/total/read seconds: credential override, else provider config, else defaults."""
        return self.prepared(credential).timeouts

    def _merged_timeouts(self, credential: Credential) -> dict[str, float]:
        values = dict(DEFAULT_TIMEOUTS)
        entry = self._config.catalog.get(credential.provider)
        provider = self._config.providers.get(credential.provider)
        overrides = (entry.definition.timeouts if entry else None, provider.timeouts if provider else None)
        for override in (*overrides, credential.timeouts):
            if override is not None:
                values.update(override.model_dump(exclude_none=True))
        return values

    def stream(
        self,
        credential: Credential,
        method: str,
        path: str,
        *,
        query: str | Mapping[str, str] | None = None,
        headers: Mapping[str, str] | CIMultiDict[str] | None = None,
        body: Body = None,
        cost: int | None = None,
    ) -> _Exchange:
        """Send one request (with the retries above) on entering; the block gets the answer, body unread.

        ``cost``: tokens the call takes from each of its buckets (the client's ``x-gateway-cost``).
        """
        return _Exchange(self, credential, method, path, query, headers, body, cost)

    async def _exchange(self, exchange: _Exchange) -> tuple[_Attempt, float]:
        """``stream``'s retries: the attempt that answers (still open) and the pacing wait of all of them."""
        credential, method, body = exchange.credential, exchange.method, exchange.body
        raw_query = exchange.query if isinstance(exchange.query, str) else urlencode(exchange.query or {})
        outgoing = CIMultiDict(exchange.headers or {})
        for name in ("Authorization", "Host"):  # security: the caller's credentials never go upstream
            outgoing.popall(name, None)
        address = _Address(exchange.path, raw_query, exchange.cost)
        self._url(credential, address)  # refuse a bad path before pacing or refreshing
        # Only an OAuth2 credential can need a fresh token: the others skip the coroutine (every proxied call).
        current = await self.oauth2.current(credential) if isinstance(credential.auth, OAuth2Auth) else credential
        if current is not credential:
            self.credentials.put(current)
        replayable = not isinstance(body, StreamedBody)
        waited, retries, refreshed = 0.0, 0, False
        while True:
            attempt = await self._attempt(current, method, address, outgoing, body)
            try:
                waited += attempt.permit.waited
                if self._retry_after_refusal(attempt, waited, replayable=replayable, retries=retries):
                    retries += 1
                    again = True
                elif attempt.raw.status == 401 and isinstance(current.auth, OAuth2Auth):
                    if refreshed:
                        raise UpstreamAuthFailed(
                            f"Error: {display_name(current.provider)} rejected the credential even after a token "
                            "refresh",
                            upstream_status=401,
                        )
                    current, refreshed = await self._refreshed(current), True
                    # Not replayable: the body is gone, the client gets this 401, the next call the new token.
                    again = replayable
                else:
                    again = False
            except BaseException:
                attempt.close()
                raise
            if not again:
                exchange.credential = current  # as refreshed on the way: its token is what the upstream saw
                return attempt, waited
            attempt.close()

    def _url(self, credential: Credential, address: _Address) -> URL:
        """The checked upstream URL, joined once per base URL (a refresh may bring a new credential)."""
        if address.url is None or address.base_url != credential.base_url:
            prepared = self.prepared(credential)
            url = prepared.urls.get((address.path, address.query))
            if url is None:
                url = prepared.base.join(address.path, address.query, prepared.injection.query)
                if len(prepared.urls) >= URLS_LIMIT:
                    prepared.urls.clear()
                prepared.urls[(address.path, address.query)] = url
            address.url = url
            address.base_url = credential.base_url
        return address.url

    async def _attempt(
        self, credential: Credential, method: str, address: _Address, headers: CIMultiDict[str], body: Body
    ) -> _Attempt:
        """One paced send; the ``_Attempt`` holds the connection and the permit until it is closed."""
        permit = await self._pacer.acquire(
            credential, address.path, share=current_share.get(), method=method, cost=address.cost
        )
        try:
            try:
                raw = await self._send(credential, method, address, headers, body)
            except BaseException:
                self._rate(credential, permit, None)
                raise
            self._rate(credential, permit, raw.status)
            try:
                head = await _head(raw, credential.provider) if self._pacer.reads_body(credential, raw.status) else b""
                pause = await self._pacer.observe(
                    credential, address.path, raw.status, raw.headers, method=method, body=head or None
                )
            except BaseException:
                raw.release()
                raise
        except BaseException:
            permit.release()
            raise
        return _Attempt(raw, permit, pause, head)

    def _rate(self, credential: Credential, permit: Permit, status: int | None) -> None:
        """Count the attempt for the web console's live view (``status`` None: no answer came)."""
        if self._rates is not None:
            self._rates.record(credential.id, wait_seconds=permit.waited, status=status)

    @staticmethod
    def _retry_after_refusal(attempt: _Attempt, waited: float, *, replayable: bool, retries: int) -> bool:
        """Resend only a refused call (it did nothing upstream), with its body still held, within max_wait.

        Security of users' data: an accepted call that reports exhaustion (``200`` with
        ``X-RateLimit-Remaining: 0``) paused the bucket, but sending it again would repeat a write.
        """
        if attempt.pause is None or not replayable or retries >= MAX_PACING_RETRIES:
            return False
        if not adaptive.is_refusal(attempt.raw.status, attempt.raw.headers):
            return False
        return waited + attempt.pause <= attempt.permit.max_wait

    async def _refreshed(self, credential: Credential) -> Credential:
        fresh = await self.oauth2.refresh(credential, stale_token=access_token(credential) or "")
        self.credentials.put(fresh)
        return fresh

    async def _send(
        self, credential: Credential, method: str, address: _Address, headers: CIMultiDict[str], body: Body
    ) -> aiohttp.ClientResponse:
        prepared = self.prepared(credential)
        headers.update(prepared.injection.headers)  # replaces the previous attempt's, if any
        started = time.perf_counter()
        try:
            raw = await self.session.request(
                method,
                self._url(credential, address),
                headers=headers,
                data=body,
                timeout=prepared.client_timeout,
                ssl=prepared.ssl,
                allow_redirects=False,
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._count(credential, "error")
            if isinstance(body, StreamedBody) and body.failure is not None:
                raise body.failure from exc
            raise mapped(exc, credential.provider) from exc
        if not 200 <= raw.status <= 599:  # relayed, a 101 (no upgrade is ever asked for) or a 99 broke the client
            raw.close()
            self._count(credential, "error")
            name = display_name(credential.provider)
            raise UpstreamUnavailable(f"Error: {name} API answered with no valid final HTTP status ({raw.status})")
        self._count(credential, raw.status, time.perf_counter() - started)
        return raw

    def _count(self, credential: Credential, status: int | str, duration: float | None = None) -> None:
        """Upstream metrics through cached labelled children (provider and status are bounded)."""
        provider = credential.provider
        if self._metrics.per_credential:  # opt-in only: credential ids are not a bounded set
            self._metrics.credential_upstream_requests.labels(credential.id, str(status)).inc()
        children = self._counted.get((provider, status))
        if children is None:
            children = self._counted[(provider, status)] = (
                self._metrics.upstream_requests.labels(provider, str(status)),
                self._metrics.upstream_duration.labels(provider),
            )
        children[0].inc()
        if duration is not None:
            children[1].observe(duration)

    def _ssl_context(self, credential: Credential) -> ssl.SSLContext | bool:
        """TLS is always verified; a credential may name its own CA bundle (cached per path)."""
        if not credential.ca_bundle:
            return True
        context = self._ssl.get(credential.ca_bundle)
        if context is None:
            try:
                path = ca_bundle_path(credential.ca_bundle, self._config.upstream.ca_dir)
                context = ssl.create_default_context(cafile=path)
            except (OSError, ssl.SSLError, InvalidRequest) as exc:
                raise UpstreamUnavailable(f"Error: the CA bundle of {credential.id!r} cannot be loaded") from exc
            self._ssl[credential.ca_bundle] = context
        return context

    async def request_json(
        self,
        credential: Credential,
        method: str,
        path: str,
        *,
        json: Any = None,
        form: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> UpstreamResult:
        """One JSON exchange (for mutations): same pacing, auth, timeouts, retries and errors as the proxy."""
        outgoing = CIMultiDict({"Accept": "application/json", **(headers or {})})
        body: bytes | None = None
        if json is not None:
            body = jsonlib.dumps(json).encode()
            outgoing["Content-Type"] = "application/json"
        elif form is not None:
            body = urlencode(form).encode()
            outgoing["Content-Type"] = "application/x-www-form-urlencoded"
        exchange = self.stream(credential, method, path, query=query, headers=outgoing, body=body)
        async with exchange as resp:
            try:
                raw = await resp.read()
            except UpstreamUnavailable as exc:  # cut off or over RESULT_LIMIT: the status came, the body not
                raise UpstreamAnswerUnreadable(exc.message) from exc
        parsed, readable = None, True
        try:
            parsed = jsontext.loads(raw, max_depth=self._config.server.max_json_depth) if raw.strip() else None
        except (ValueError, UnicodeDecodeError):
            # An HTML error page from a load balancer, say (the status still tells the story), or JSON no
            # record can hold: nested past server.max_json_depth, NaN, 1e400.
            readable = False
        if not 200 <= resp.status < 300:  # error text becomes messages: never with the credential's secrets
            parsed = auth.scrubbed(parsed, auth.secrets(credential.auth, exchange.credential.auth))
        return UpstreamResult(resp.status, dict(resp.headers), parsed, resp.pacing_wait, resp.pause, readable)

    async def _post_token_form(self, url: str, form: dict[str, str]) -> tuple[int, Any]:
        """The OAuth2 token endpoint call (unpaced: it is not the API the bucket protects).

        A redirect is not followed: the form carries the client secret and the refresh token, and a 307
        or 308 would resend them to wherever the endpoint points (a 3xx is a refused refresh)."""
        timeout = aiohttp.ClientTimeout(total=30, sock_connect=DEFAULT_TIMEOUTS["connect"])
        headers = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}
        body = urlencode(form)
        try:
            async with self.session.post(
                url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            ) as resp:
                raw = await _capped(resp, self._config.server.max_json_bytes)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise mapped(exc, "rest") from exc
        try:  # strict: arrays nested thousands deep made the refresh a 500 (RecursionError)
            return resp.status, jsontext.loads(raw, max_depth=self._config.server.max_json_depth)
        except (ValueError, UnicodeDecodeError):  # an answer over the cap is b"": no token either
            return resp.status, None


async def _capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, or ``b""`` once it passes ``limit`` bytes (the connection is then closed): read whole, a
    token endpoint's endless answer held the refresh, and the call waiting on it, for 30 s."""
    parts: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(CHUNK):
        size += len(chunk)
        if size > limit:
            resp.close()
            return b""
        parts.append(chunk)
    return b"".join(parts)


async def _head(raw: aiohttp.ClientResponse, provider: str) -> bytes:
    """The body's first ``BODY_HEAD`` bytes (all of a small error body), for the pacer to read."""
    parts: list[bytes] = []
    size = 0
    try:
        while size < adaptive.BODY_HEAD and (chunk := await raw.content.read(adaptive.BODY_HEAD - size)):
            parts.append(chunk)
            size += len(chunk)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise mapped(exc, provider) from exc
    return b"".join(parts)
