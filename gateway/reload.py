"""Reloading the configuration without a restart: SIGHUP (``gateway reload``) re-reads file and environment.

Applied at once, in the running process: encryption keys (the shared ``Keyring`` is replaced in
place), declarative ``[[credentials]]``/``[[syncs]]``/``[[consumers]]``, provider overrides (limits,
timeouts), the log level and format. Keys read once at start (listeners, store, pacing backend,
stream, workers, mutations, console, the egress policy) keep their running value; the log names both.

A reload is all or nothing: a file that does not validate, a key list that is empty or lacks a key
some stored secret is sealed with, or a declarative object naming a credential or sync that exists
nowhere, is refused before anything changes, and the log says why. Reloads run one at a time.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import structlog
from aiohttp import web

from gateway.config import Config, load_config
from gateway.egress import EgressPolicy
from gateway.errors import ConfigError, GatewayError
from gateway.http import appkeys
from gateway.observability.logs import configure_logging
from gateway.store.declared import check_declared, declare_objects
from gateway.vault.crypto import Keyring

log = structlog.get_logger(__name__)
# Read once at start: a change to these sections or keys is logged as needing a restart.
RESTART_KEYS = (
    "server",
    "metrics",
    "store",
    "pacing",
    "stream",
    "mutations",
    "console",
    "upstream.deny",
    "upstream.allow",
    "upstream.deny_own_endpoints",
    "upstream.credential_cache_size",
)


@dataclass
class Reloader:
    """Re-reads ``config_path`` (None: ``$GATEWAY_CONFIG`` or the defaults) into a running ``app``."""

    app: web.Application
    config_path: str | None
    current: Config
    worker: int | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def read_keys(self) -> Keyring:
        """The encryption keys the key source holds now (the keyring's hook for unknown key ids)."""
        return Keyring.parse(load_config(self.config_path).encryption.key_text())

    async def reload(self) -> bool:
        """Apply the new config, or refuse it whole; True when applied."""
        async with self._lock:
            try:
                new, keyring = await self._checked()
            except GatewayError as exc:
                log.error("reload_refused", reason=exc.message)
                return False
            self._apply(new, keyring)
            await declare_objects(new, self.app[appkeys.OBJECTS])
            self.app[appkeys.UPSTREAM].credentials.clear()
            applied, restart = changed_keys(self.current, new)
            self.current = new
            log.info("reloaded", key_ids=keyring.key_ids, applied=applied, needs_restart=restart)
            return True

    async def _checked(self) -> tuple[Config, Keyring]:
        new = load_config(self.config_path)
        EgressPolicy.from_config(new)  # applied at the next start only, but a rule that does not parse would stop it
        keyring = Keyring.parse(new.encryption.key_text())
        if not keyring.keys:
            raise ConfigError("encryption.keys: the new config has no encryption key")
        objects = self.app[appkeys.OBJECTS]
        missing = sorted(await objects.key_ids_in_use() - set(keyring.key_ids))
        if missing:
            raise ConfigError(
                f"encryption.keys: stored secrets are sealed with key id(s) {missing} that the new config "
                "lacks; keep them until `gateway keys rotate` has re-encrypted everything"
            )
        await check_declared(new, objects)
        return new, keyring

    def _apply(self, new: Config, keyring: Keyring) -> None:
        self.app[appkeys.KEYRING].replace(keyring)
        self.app[appkeys.LIVE_CONFIG].current = new
        self.app[appkeys.PACER].reconfigure(new)
        self.app[appkeys.UPSTREAM].reconfigure(new)
        if (new.log.format, new.log.level) != (self.current.log.format, self.current.log.level):
            configure_logging(format=new.log.format, level=new.log.level, worker=self.worker)


def changed_keys(old: Config, new: Config) -> tuple[list[str], list[str]]:
    """The dotted keys that changed: those applied at once, and those that take effect only after a restart."""
    applied: list[str] = []
    restart: list[str] = []
    before, after = old.model_dump(), new.model_dump()
    for section in after:
        was, now = before[section], after[section]
        if isinstance(now, dict):
            pairs = [(f"{section}.{key}", was.get(key), now.get(key)) for key in {**was, **now}]
        else:
            pairs = [(section, was, now)]
        for key, value_before, value_after in pairs:
            if value_before != value_after:
                (restart if section in RESTART_KEYS or key in RESTART_KEYS else applied).append(key)
    return applied, restart
