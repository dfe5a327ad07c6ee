"""``create_app(config)``: app keys, cleanup contexts, middlewares and routes; no logic.

Objects are built here without I/O; anything that connects (store, upstream session, Redis,
workers) opens in a cleanup context and closes in reverse order at shutdown.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from functools import partial

from aiohttp import web

from gateway.config import Config
from gateway.console.keys import Services as ConsoleServices
from gateway.console.routes import add_console
from gateway.errors import DEFAULT_DOCS, set_docs_base
from gateway.http import appkeys, consumers, management, mutations, providers, proxy, syncs, tokens
from gateway.http.docs import add_docs_routes
from gateway.http.endpoints import Endpoint
from gateway.http.middlewares import add_request_id, client_address, gateway_middleware, json_errors
from gateway.http.openapi import add_endpoints
from gateway.http.ops import add_ops_routes
from gateway.http.protocol import start_runner
from gateway.http.throttle import AuthThrottle
from gateway.mutations.journal import Journal
from gateway.mutations.recovery import Recovery
from gateway.mutations.settling import settle_unknown_creates
from gateway.observability.metrics import Metrics
from gateway.observability.recent import Recent
from gateway.pacing.pacer import GatewayPacer
from gateway.providers.capture import check_sync
from gateway.store.db import create_engine, ensure_schema, ping
from gateway.store.declared import declare_objects
from gateway.store.objects import Objects
from gateway.store.replicas import Replicas, beating, new_replica_id
from gateway.store.tokens import Tokens
from gateway.stream.consumers.workers import Workers
from gateway.stream.service import Stream
from gateway.syncs.runner import SyncRunners
from gateway.upstream.client import UpstreamClient
from gateway.vault.crypto import Keyring


def create_app(
    config: Config, *, keyring: Keyring, ops_on_main: bool | None = None, worker_socket: str | None = None
) -> web.Application:
    """The gateway app; ``ops_on_main`` serves health and metrics on the main listener (tests do).

    ``worker_socket``: the app is one of a supervisor's workers (gateway/supervisor.py). Its health,
    readiness and metrics go to that Unix socket for the supervisor, which owns the metrics listener,
    and the supervisor has prepared the store already (schema, declared objects).
    """
    metrics = Metrics(per_credential=config.metrics.per_credential)
    engine = create_engine(config.store)
    set_docs_base(docs_base(config))
    app = web.Application(client_max_size=config.server.max_json_bytes)
    app[appkeys.CONFIG] = config
    app[appkeys.LIVE_CONFIG] = appkeys.LiveConfig(config)
    app[appkeys.KEYRING] = keyring
    app[appkeys.METRICS] = metrics
    app[appkeys.ENGINE] = engine
    app[appkeys.OBJECTS] = Objects(engine, keyring, collection_check=check_sync)
    app[appkeys.TOKENS] = Tokens(engine, cache_ttl=config.server.token_cache_ttl)
    app[appkeys.STREAM] = stream = Stream(engine, metrics)
    endpoints: list[Endpoint] = []
    app[appkeys.ENDPOINTS] = endpoints
    app[appkeys.PACER] = pacer = GatewayPacer(config, metrics)
    app[appkeys.PACING_STATE] = pacer.describe
    checks: dict[str, appkeys.ReadyCheck] = {"store": partial(ping, engine), "pacing": pacer.ping}
    app[appkeys.READY_CHECKS] = checks
    app[appkeys.RECENT] = recent = Recent()

    app[appkeys.UPSTREAM] = UpstreamClient(config, metrics, app[appkeys.OBJECTS], pacer, rates=recent.rates)
    lease = config.mutations.recovery_lease
    app[appkeys.JOURNAL] = journal = Journal(engine, "mutations:replica-" + uuid.uuid4().hex[:12], grace=lease)
    recovery = Recovery(journal, partial(mutations.service, app), ttl=lease)
    add_docs_routes(app)
    app[appkeys.SYNC_RUNNERS] = runners = SyncRunners(
        objects=app[appkeys.OBJECTS],
        stream=stream,
        client=app[appkeys.UPSTREAM],
        pacer=pacer,
        metrics=metrics,
        config=config,
        lease_ttl=config.stream.capture_lease_ttl,
        shutdown_timeout=min(5.0, config.server.shutdown_timeout),
        settle=settle_unknown_creates,
    )
    for view_module in (management, tokens, syncs, proxy, consumers, mutations, providers):
        add_endpoints(app, view_module.ENDPOINTS)
    scopes = {e.name: e.scope for e in app[appkeys.ENDPOINTS]}
    server = config.server
    throttle = AuthThrottle(
        max_failures=server.auth_max_failures, window=server.auth_failure_window, max_backoff=server.auth_max_backoff
    )
    app[appkeys.IN_FLIGHT] = set()
    app.middlewares.append(
        gateway_middleware(
            metrics=metrics,
            tokens=app[appkeys.TOKENS],
            scopes=scopes,
            throttle=throttle,
            trust_forwarded=server.trust_forwarded,
            in_flight=app[appkeys.IN_FLIGHT],
            recent=recent.calls,
        )
    )
    app.on_response_prepare.append(add_request_id)
    if config.console.enabled:
        add_console(
            app,
            ConsoleServices(
                config=config,
                catalog=lambda: app[appkeys.LIVE_CONFIG].current.catalog,
                engine=engine,
                objects=app[appkeys.OBJECTS],
                tokens=app[appkeys.TOKENS],
                syncs=runners,
                recent=recent,
                describe=pacer.describe,
                limit=pacer.limit,
                backoff=throttle,
                client_address=partial(client_address, trust_forwarded=server.trust_forwarded),
            ),
        )

    workers = Workers(
        objects=app[appkeys.OBJECTS],
        stream=stream,
        retention=config.stream.retention,
        shutdown_timeout=config.server.shutdown_timeout,
        egress=app[appkeys.UPSTREAM].egress,
    )
    if ops_on_main is None:
        ops_on_main = config.metrics.port == config.server.port and config.metrics.host == config.server.host
    if ops_on_main:
        add_ops_routes(app)
    else:  # first up, last down: probes answer through the drain
        app.cleanup_ctx.append(partial(_ops_listener, _ops_site(config, worker_socket)))
    store = partial(_store, prepare=worker_socket is None)
    heartbeat = partial(_heartbeat, Replicas(engine), keyring)
    # Opened in this order, closed in reverse: workers stop before the store, the session before pacing;
    # recovery last, so it can call upstream and its lease outlives every request of the drain.
    pacing = partial(_pacing, pacer)
    app.cleanup_ctx.extend(
        [store, heartbeat, stream.signals.context, workers.context, pacing, _upstream, recovery.context]
    )
    app.on_shutdown.extend([_not_ready, stream.signals.on_shutdown, workers.on_shutdown])
    if config.stream.capture:  # after the upstream session: pollers stop before it closes
        app.cleanup_ctx.append(runners.context)
        app.on_shutdown.append(runners.on_shutdown)
    return app


def docs_base(config: Config) -> str:
    """``server.docs_url``, else this gateway's own ``/docs`` (absolute when ``server.public_url`` is set)."""
    if config.server.docs_url:
        return config.server.docs_url
    return (config.server.public_url or "").rstrip("/") + DEFAULT_DOCS


def create_metrics_app(main: web.Application) -> web.Application:
    """The metrics listener's app: health, readiness and /metrics over the main app's state."""
    app = web.Application(middlewares=[json_errors])
    app[appkeys.METRICS] = main[appkeys.METRICS]
    app[appkeys.READY_CHECKS] = main[appkeys.READY_CHECKS]
    add_ops_routes(app)
    return app


async def _store(app: web.Application, *, prepare: bool) -> AsyncIterator[None]:
    if prepare:
        await ensure_schema(app[appkeys.ENGINE], app[appkeys.CONFIG].store)
        await declare_objects(app[appkeys.CONFIG], app[appkeys.OBJECTS])
    yield
    await app[appkeys.ENGINE].dispose()


async def _heartbeat(replicas: Replicas, keyring: Keyring, _app: web.Application) -> AsyncIterator[None]:
    """Tell the store which encryption keys this replica holds (``gateway keys rotate`` checks them)."""
    async with beating(replicas, new_replica_id(), lambda: keyring.key_ids):
        yield


def readiness(value: bool) -> appkeys.ReadyCheck:
    """A fixed readiness answer, for the ``accepting`` check that serving and draining flip."""

    async def check() -> bool:
        return value

    return check


async def _not_ready(app: web.Application) -> None:
    """Once shutdown begins, /readyz answers 503 so load balancers stop sending new work."""
    app[appkeys.READY_CHECKS]["accepting"] = readiness(False)


async def _pacing(pacer: GatewayPacer, _app: web.Application) -> AsyncIterator[None]:
    """Connect the pacing backend (Redis, if configured) and close it at shutdown."""
    await pacer.start()
    yield
    await pacer.close()


async def _upstream(app: web.Application) -> AsyncIterator[None]:
    """The process's one upstream ClientSession (pooled keep-alive), opened after pacing."""
    client = app[appkeys.UPSTREAM]
    await client.start()
    yield
    await client.close()


SiteFactory = Callable[[web.AppRunner], web.BaseSite]


def _ops_site(config: Config, worker_socket: str | None) -> SiteFactory:
    """The metrics listener's port, or a worker's Unix socket that only its supervisor asks."""
    if worker_socket is not None:
        return lambda runner: web.UnixSite(runner, worker_socket)
    return lambda runner: web.TCPSite(runner, config.metrics.host, config.metrics.port)


async def _ops_listener(site: SiteFactory, app: web.Application) -> AsyncIterator[None]:
    """Serve /healthz, /readyz, /metrics apart from the API (the default)."""
    runner = await start_runner(create_metrics_app(app), app[appkeys.CONFIG].server)
    await site(runner).start()
    yield
    await runner.cleanup()
