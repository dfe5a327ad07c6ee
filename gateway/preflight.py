"""``gateway check-config``: every check ``serve`` makes before it listens, changing nothing.

The checks are the ones ``serve`` runs, called from here rather than restated: the encryption keys, the
egress policy's rules, the pacing backend's settings, the store (reachable, at the newest schema unless
it migrates itself) and the declared objects' references (``store.declared.check_declared``, which
``serve`` runs before upserting).
"""

from __future__ import annotations

from gateway.config import Config
from gateway.egress import EgressPolicy
from gateway.observability.metrics import Metrics
from gateway.pacing.pacer import GatewayPacer
from gateway.providers.capture import check_sync
from gateway.store.db import check_schema, create_engine
from gateway.store.declared import check_declared
from gateway.store.objects import Objects
from gateway.vault.crypto import Keyring


async def preflight(config: Config, keyring: Keyring) -> None:
    """Raise what ``serve`` would raise at start (a ``ConfigError`` names the key); return when it would run."""
    EgressPolicy.from_config(config)  # the rules of upstream.deny/allow parse
    pacer = GatewayPacer(config, Metrics(per_credential=config.metrics.per_credential))
    await pacer.start()  # a bad pacing.redis_url is an error; an unreachable Redis only degrades, as in serve
    await pacer.close()
    engine = create_engine(config.store)
    try:
        current = await check_schema(engine, config.store)
        await check_declared(config, Objects(engine, keyring, collection_check=check_sync) if current else None)
    finally:
        await engine.dispose()
