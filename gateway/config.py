"""Configuration: one TOML file, ``${VAR}`` expansion, ``GATEWAY_<SECTION>__<KEY>`` overrides.

The models are frozen and forbid unknown keys, so a typo is an error that names the key instead of a
setting silently ignored. ``load_config`` is the only entry point; it raises ``ConfigError`` whose
message names the offending key, which the CLI prints before exiting with code 2.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, cast
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from gateway import catalog
from gateway.catalog import Catalog, CatalogError
from gateway.domain.catalog import Answers, AuthType
from gateway.domain.models import (
    ConsumerIn,
    CredentialIn,
    RateLimitOverride,
    Strict,
    SyncIn,
    TimeoutsOverride,
    mask_dsn,
)
from gateway.errors import ConfigError, describe_validation_error

ENV_PREFIX = "GATEWAY_"
KEYS_ENV = "GATEWAY_ENCRYPTION_KEYS"  # the documented home of the encryption keys
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


# An empty host made the listener bind every interface, IPv4 and IPv6: an unset variable in a template
# (GATEWAY_SERVER__HOST=) must not publish the gateway. Every interface is "0.0.0.0" or "::", written out.
ListenHost = Annotated[str, Field(min_length=1)]


class ServerConfig(Strict):
    host: ListenHost = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=0, ge=0, description="proxy body limit; 0 = unlimited")
    max_json_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, description="limit for JSON APIs")
    shutdown_timeout: float = Field(default=30, ge=0)
    public_url: str | None = Field(default=None, description="base URL printed in the demo banner")
    docs_url: str | None = Field(
        default=None,
        description="base of the docs links in error bodies; default: the gateway's own /docs (public_url + /docs)",
    )
    token_cache_ttl: float = Field(
        default=5, ge=0, description="seconds a valid API token is cached in-process; 0 = off"
    )
    workers: int = Field(default=1, ge=1, description="processes accepting on server.port (a supervisor)")
    trust_forwarded: bool = Field(
        default=False,
        description="pass the client's Forwarded/X-Forwarded-*/X-Real-IP upstream (only behind your own proxy)",
    )
    auth_max_failures: int = Field(
        default=20, ge=0, le=1_000_000, description="bad tokens per address within the window before a 429; 0 = off"
    )
    auth_failure_window: float = Field(default=60, gt=0, le=86400, description="seconds bad tokens are counted over")
    auth_max_backoff: float = Field(default=300, ge=1, le=86400, description="longest pause (doubling from 1 s)")
    max_json_depth: int = Field(
        default=64, ge=2, le=128, description="deepest nesting a JSON body, or an upstream's JSON answer, may have"
    )
    header_timeout: float = Field(
        default=10, gt=0, le=3600, description="seconds to send a request head; idle keep-alive closes too"
    )
    max_connections: int = Field(
        default=10_000, ge=1, le=1_000_000, description="open client connections per listener; more get 503"
    )
    body_idle_timeout: float = Field(
        default=30, gt=0, le=3600, description="longest gap between request body chunks, seconds"
    )
    min_body_rate: float = Field(
        default=1024,
        ge=0,
        le=1e9,
        description="bytes/s a request body must average past a grace of body_idle_timeout; 0 = off",
    )
    pid_file: str | None = Field(default=None, description="file holding the serving pid, for reload/restart")
    reuse_port: bool = Field(
        default=False, description="bind with SO_REUSEPORT so a new process can take over the port (hand-over)"
    )


class MetricsConfig(Strict):
    host: ListenHost = "127.0.0.1"
    port: int = Field(default=9091, ge=0, le=65535, description="same as server.port = main listener")
    per_credential: bool = False


# Fields that may hold a secret (a DSN password, the keys) are left out of repr(): a config in a traceback's
# locals or a debug print shows none (check-config prints them masked).
def _url_that_parses(value: str) -> str:
    """A store or Redis URL must split into host and port: one that does not (an unclosed ``[``, a port
    past 65535) would otherwise fail later, wherever it is first taken apart."""
    try:
        urlsplit(value).port  # noqa: B018 (parsing it is the check)
    except ValueError:  # its message may quote a password written where the port goes: not repeated
        raise ValueError("does not parse as a URL (check its port and any [IPv6] host)") from None
    return value


class StoreConfig(Strict):
    url: str = Field(default="sqlite:///./gateway.db", repr=False)
    auto_migrate: bool | None = Field(default=None, description="default: true for SQLite only")
    pool_size: int = Field(default=10, ge=1, le=200)

    _url_parses = field_validator("url")(_url_that_parses)

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @property
    def migrates_itself(self) -> bool:
        return self.is_sqlite if self.auto_migrate is None else self.auto_migrate


class PacingConfig(Strict):
    backend: Literal["local", "redis"] = "local"
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", repr=False)
    on_backend_error: Literal["local", "reject"] = "local"
    key_prefix: str = "gateway"

    _url_parses = field_validator("redis_url")(_url_that_parses)


class EncryptionConfig(Strict):
    keys: str = Field(
        default="",
        description=f"comma-separated key-id:base64 keys, newest first (default: ${KEYS_ENV})",
        repr=False,
    )
    keys_file: str | None = Field(
        default=None, description="a file holding the keys instead (one per line or comma-separated, newest first)"
    )

    @model_validator(mode="after")
    def _one_source(self) -> EncryptionConfig:
        if self.keys.strip() and self.keys_file:
            raise ValueError("set encryption.keys or encryption.keys_file, not both")
        return self

    def key_text(self) -> str:
        """The keys as ``keys`` takes them, read from ``keys_file`` now when that is set.

        Read at every call: a reload, or a replica meeting a key id it lacks, sees the file's new
        content (a Kubernetes secret volume is updated in place).
        """
        if not self.keys_file:
            return self.keys
        try:
            text = Path(self.keys_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"encryption.keys_file: cannot read {self.keys_file}: {exc.strerror}") from None
        return ",".join(line.strip() for line in text.replace(",", "\n").splitlines() if line.strip())


class LogConfig(Strict):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class StreamConfig(Strict):
    retention: float = Field(
        # at most ten years: 1e300 made every cleanup tick crash computing its cutoff (OverflowError)
        default=7 * 86400,
        gt=0,
        le=315_360_000,
        description="seconds events are kept at least",
    )
    capture: bool = Field(default=True, description="syncs read their upstreams (backfill, then polls)")
    capture_lease_ttl: float = Field(default=15, ge=1, description="seconds before another replica takes a sync over")


class MutationsConfig(Strict):
    recovery_lease: float = Field(
        default=15,
        ge=1,
        le=30,
        description="seconds after a replica dies until another recovers its unfinished mutations",
    )


class UpstreamConfig(Strict):
    """Where the gateway's own outbound calls may go (credentials, OAuth2 token URLs, webhooks), and
    how many credentials each process keeps ready for them."""

    deny: list[str] = Field(
        default_factory=lambda: ["169.254.0.0/16", "fe80::/10"],
        description="CIDRs, addresses or host names, each optionally with :port, never connected to",
    )
    deny_own_endpoints: bool = Field(default=True, description="also deny our listeners, Redis and PostgreSQL")
    allow: list[str] = Field(default_factory=list, description="when set, only these may be reached")
    ca_dir: str | None = Field(default=None, description="the directory a credential's ca_bundle must lie in")
    credential_cache_size: int = Field(
        default=16_384, ge=1, description="credentials kept decrypted in memory per process (read at start)"
    )


class ConsoleConfig(Strict):
    enabled: bool = Field(default=True, description="serve the web console at /console")
    session_ttl: float = Field(default=8 * 3600, ge=60, le=30 * 86400, description="seconds a sign-in lasts")


class ProviderConfig(Strict):
    """``[providers.<name>]``: overrides of a catalog entry, or a whole new entry (the catalog's keys)."""

    rate_limit: RateLimitOverride | None = None
    shared_rate_limit: RateLimitOverride | None = Field(
        default=None, description="extra bucket shared by every credential of the provider"
    )
    timeouts: TimeoutsOverride | None = None
    display_name: str | None = None
    base_url: str | None = None
    auth: list[AuthType] | None = None
    sources: list[str] | None = None
    notes: str | None = None
    answers: Answers | None = None


class ProvidersConfig(BaseModel):
    """``[providers]``: ``catalog_dir`` and one table per provider name (any other key)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    __pydantic_extra__: dict[str, ProviderConfig] = Field(init=False)

    catalog_dir: str | None = Field(default=None, description="a directory of more <name>.toml definitions")

    def get(self, name: str) -> ProviderConfig | None:
        return (self.__pydantic_extra__ or {}).get(name)

    def __getitem__(self, name: str) -> ProviderConfig:
        return (self.__pydantic_extra__ or {})[name]

    def tables(self) -> dict[str, ProviderConfig]:
        return dict(self.__pydantic_extra__ or {})


class Config(Strict):
    server: ServerConfig = ServerConfig()
    metrics: MetricsConfig = MetricsConfig()
    store: StoreConfig = StoreConfig()
    pacing: PacingConfig = PacingConfig()
    encryption: EncryptionConfig = EncryptionConfig()
    log: LogConfig = LogConfig()
    stream: StreamConfig = StreamConfig()
    mutations: MutationsConfig = MutationsConfig()
    upstream: UpstreamConfig = UpstreamConfig()
    console: ConsoleConfig = ConsoleConfig()
    providers: ProvidersConfig = ProvidersConfig()
    credentials: list[CredentialIn] = Field(default_factory=list)
    syncs: list[SyncIn] = Field(default_factory=list)
    consumers: list[ConsumerIn] = Field(default_factory=list)

    _catalog: Catalog = PrivateAttr()

    @property
    def catalog(self) -> Catalog:
        """The provider catalog this config sees (built-in, ``catalog_dir``, inline tables).

        Read from pydantic's private dict: ``self._catalog`` reaches it only through
        ``BaseModel.__getattr__`` after a failed lookup (~3 µs), and every proxied answer asks.
        """
        return cast(Catalog, self.__pydantic_private__["_catalog"])  # type: ignore[index]

    @model_validator(mode="after")
    def _load_catalog(self) -> Config:
        """Read and check the catalog now, so a bad file stops the start (exit 2) naming file and key."""
        inline = {name: table.model_dump(exclude_none=True) for name, table in self.providers.tables().items()}
        try:
            self._catalog = catalog.load(self.providers.catalog_dir, inline)
        except CatalogError as exc:
            raise ValueError(str(exc)) from None
        unknown = sorted({c.provider for c in self.credentials} - set(self._catalog))
        if unknown:
            raise ValueError(f"credentials: unknown provider {', '.join(unknown)} (not in the provider catalog)")
        return self

    @model_validator(mode="after")
    def _declared_ids(self) -> Config:
        for kind, objects in (("credentials", self.credentials), ("syncs", self.syncs)):
            if any(obj.id is None for obj in objects):
                raise ValueError(f"every [[{kind}]] entry needs an id so restarts update it in place")
        if any(c.id is None for c in self.consumers):
            raise ValueError("every [[consumers]] entry needs an id so restarts update it in place")
        return self

    @model_validator(mode="after")
    def _workers_share_state(self) -> Config:
        """Workers are replicas: what one process kept in memory or a local file must be shared instead."""
        if self.server.workers == 1:
            return self
        problems = []
        if self.pacing.backend != "redis":
            problems.append('pacing.backend = "redis" (local buckets would let each worker spend the whole limit)')
        if self.store.is_sqlite:
            problems.append("a PostgreSQL store.url (SQLite wakes stream waiters in its own process only)")
        if self.metrics.port == self.server.port or self.server.port == 0:
            problems.append("a fixed server.port and a metrics.port of their own (the supervisor serves /metrics)")
        if problems:
            raise ValueError(f"server.workers = {self.server.workers} needs " + " and ".join(problems))
        return self


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (or ``$GATEWAY_CONFIG``; none = defaults), expand and override, validate."""
    env = os.environ if environ is None else environ
    path = path or env.get("GATEWAY_CONFIG")
    raw: dict[str, Any] = {}
    if path:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {path}") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    raw = _expand(raw, env)
    _default_keys(raw, env)
    _apply_env_overrides(raw, env)
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, prefix="config")) from None


def _expand(value: Any, env: Mapping[str, str]) -> Any:
    """Replace ``${VAR}`` in every string; an unset variable is an error naming it."""
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                raise ConfigError(f"environment variable {name} is referenced in the config but not set")
            return env[name]

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, env) for v in value]
    return value


def _default_keys(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    """``$GATEWAY_ENCRYPTION_KEYS`` is the keys' default, so the one documented variable works with the
    example config (which names it), with no config at all, and in containers; a file's own
    ``encryption.keys`` and the generic ``GATEWAY_<SECTION>__<KEY>`` override still take precedence."""
    section = raw.setdefault("encryption", {})
    if isinstance(section, dict) and KEYS_ENV in env and not section.get("keys_file"):
        section.setdefault("keys", env[KEYS_ENV])


def _apply_env_overrides(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    """``GATEWAY_PACING__BACKEND=redis`` sets ``raw["pacing"]["backend"]``; values may be JSON."""
    for name, text in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        if not all(path):
            continue
        node = raw
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{name} overrides {'.'.join(path)} but {part} is not a table")
            node = child
        node[path[-1]] = _parse_env_value(text)


def _parse_env_value(text: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, (bool, int, float, list, dict)) else text


def masked_config(config: Config) -> dict[str, Any]:
    """The effective config as JSON-able data with every secret replaced, for ``check-config``."""
    data = config.model_dump(mode="json")
    if config.encryption.keys:
        data["encryption"]["keys"] = ",".join(
            k.split(":", 1)[0] + ":***" for k in config.encryption.keys.split(",") if k.strip()
        )
    data["store"]["url"] = mask_dsn(config.store.url)
    data["pacing"]["redis_url"] = mask_dsn(config.pacing.redis_url)
    return data
