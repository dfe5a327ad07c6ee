"""API models: the objects users create (credentials, syncs, consumers), records and events.

Every model that meets user input forbids unknown fields. Secret values are ``SecretStr`` so that
``repr()`` and default dumps never reveal them; ``reveal`` unwraps them for the vault only, and
``masked`` gives the ``"***"`` view SPEC.md promises on read.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, unquote_plus, urlsplit

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from gateway.urltext import check_base_path

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
ObjectId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
PROVIDER_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
# Provider names are the catalog's (gateway/providers/catalog/), which users may extend; whether a
# name exists is checked against the loaded catalog where one is at hand (config, management API).
Provider = Annotated[str, StringConstraints(pattern=PROVIDER_PATTERN)]
# How error sentences name each provider ("Error: HubSpot API timed out").
DISPLAY_NAMES: dict[str, str] = {
    "salesforce": "Salesforce",
    "hubspot": "HubSpot",
    "stripe": "Stripe",
    "airtable": "Airtable",
    "rest": "REST",
}
MASK = "***"
MAX_LIST = 1_000  # entries of a list field (token scopes and only, collections, OAuth2 scopes): reads stay small
# Auth fields that are not secret and read back as they are (SPEC.md "Object shapes").
PUBLIC_AUTH_FIELDS = frozenset({"type", "name", "prefix", "token_url", "client_id"})


def display_name(provider: str) -> str:
    """The provider's name as error sentences spell it; ``REST`` for anything else."""
    return DISPLAY_NAMES.get(provider, "REST")


class Strict(BaseModel):
    """Base of every boundary model: unknown fields are refused, instances are immutable, and floats
    are finite (``inf`` stored as a limit would break every later call that computes with it)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http(s) URL with a host")
    if parts.query or parts.fragment:
        raise ValueError("must not carry a query string or fragment")
    if "@" in parts.netloc:
        raise ValueError("must not carry user info; put secrets in auth")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:  # stored, a port out of range failed every later call to it with a 500
        raise ValueError("must have a port from 1 to 65535, if any")
    _check_host(parts.hostname)
    check_base_path(value)
    return value.rstrip("/")


_LABEL = re.compile(r"[a-z0-9_-]{1,63}")
_NUMERIC = re.compile(r"[0-9]+|0x[0-9a-f]*")


def _check_host(host: str) -> None:
    """A host the HTTP client can resolve: stored, an empty label (``a..b``, ``.``) made every later call
    a 500 inside the resolver, and a space, a ``%`` or a number that is no IPv4 address (``127.1``,
    ``2852039166``, ``999.1.1.1``) a 502 "unreachable" however often it was tried."""
    if ":" in host:  # an IPv6 literal, which urlsplit has checked
        return
    try:
        name = host.encode("idna").decode("ascii")  # a non-ASCII name as the resolver will send it
    except UnicodeError:
        name = ""
    labels = name.removesuffix(".").split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError("must have a host name of labels of 1 to 63 letters, digits, '-' or '_'")
    if _NUMERIC.fullmatch(labels[-1]):  # a name ending in a number is read as an IPv4 address
        try:
            ipaddress.IPv4Address(name.removesuffix("."))
        except ValueError:
            raise ValueError("a host ending in a number must be an IPv4 address of four decimal numbers") from None


# The JSON schemas say what the validators check, so the OpenAPI document describes what is accepted.
HttpUrlStr = Annotated[
    str,
    AfterValidator(_http_url),
    WithJsonSchema({"type": "string", "format": "uri", "pattern": r"^https?://[^/?#@\s]+(/[^?#\s]*)?$"}),
]


def _collection(value: str) -> str:
    provider, _, obj = value.partition(":")
    if not re.fullmatch(PROVIDER_PATTERN, provider) or not obj:
        raise ValueError("must look like '<provider>:<object>', e.g. 'salesforce:contact'")
    return value


CollectionId = Annotated[
    str,
    AfterValidator(_collection),
    WithJsonSchema({"type": "string", "pattern": PROVIDER_PATTERN[:-1] + ":.+$", "examples": ["salesforce:contact"]}),
]

# --- auth -----------------------------------------------------------------------------------------

# Control characters (CR, LF, NUL ...; tab is allowed): refused when written, because a stored value
# holding one would make every later upstream call fail inside the HTTP client, or split a header.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _header_safe_secret(value: SecretStr) -> SecretStr:
    _header_safe(value.get_secret_value())
    return value


def _header_safe(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters (CR, LF, NUL, ...)")
    return value


Secret = Annotated[SecretStr, AfterValidator(_header_safe_secret)]
HeaderSafeStr = Annotated[str, AfterValidator(_header_safe)]

# RFC 9110 section 7.6.1: headers about one connection, which a proxy never forwards (upstream/headers.py).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Headers the HTTP client writes itself to frame the message: an auth header of one of these names
# made every call through the credential a 500, a malformed request or a hang.
_FRAMING = HOP_BY_HOP | {"host", "content-length", "expect"}


def _auth_header_name(value: str) -> str:
    if value.lower() in _FRAMING:
        raise ValueError("must not be a header that frames the request (Host, Content-Length, Connection, ...)")
    return value


class BearerAuth(Strict):
    type: Literal["bearer"]
    token: Secret


class BasicAuth(Strict):
    type: Literal["basic"]
    username: Secret
    password: Secret = SecretStr("")


class HeaderAuth(Strict):
    type: Literal["header"]
    name: Annotated[str, StringConstraints(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"), AfterValidator(_auth_header_name)]
    value: Secret
    prefix: HeaderSafeStr | None = None


class QueryAuth(Strict):
    type: Literal["query"]
    name: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    value: Secret


def _representable(value: datetime) -> datetime:
    """A time that stays a time in UTC, with a day to spare: ``0001-01-01T00:00:00+14:00`` is year 0 in UTC,
    and stored it made every later call that compared it with now a 500 (``OverflowError``)."""
    try:
        in_utc = value.astimezone(UTC) if value.tzinfo else value
    except OverflowError:
        in_utc = datetime.min
    if not 1 < in_utc.year < 9999:
        raise ValueError("must lie between the years 2 and 9998 in UTC")
    return value


Moment = Annotated[datetime, AfterValidator(_representable)]


class OAuth2Auth(Strict):
    type: Literal["oauth2"]
    access_token: Secret
    refresh_token: Secret
    token_url: HttpUrlStr
    client_id: HeaderSafeStr
    client_secret: Secret
    expires_at: Moment | None = None
    scopes: list[str] | None = Field(default=None, max_length=MAX_LIST)


Auth = Annotated[BearerAuth | BasicAuth | HeaderAuth | QueryAuth | OAuth2Auth, Field(discriminator="type")]


def reveal(model: BaseModel) -> dict[str, Any]:
    """The model as plain JSON-able data with secrets in clear: for the vault only."""
    return {key: _unwrap(value) for key, value in model.model_dump(mode="python").items()}


def _unwrap(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def masked_auth(auth: dict[str, Any]) -> dict[str, Any]:
    """The read view of an auth object: every value but the public ones is ``"***"``."""
    return {k: (v if k in PUBLIC_AUTH_FIELDS or v is None else MASK) for k, v in auth.items()}


# Query parameters of a DSN that carry a secret (libpq and redis-py accept passwords there too).
_SECRET_PARAMS = frozenset({"password", "sslpassword", "pass", "passwd"})


def mask_dsn(dsn: str) -> str:
    """Every password of a DSN replaced: ``user:secret@`` and ``?password=secret`` alike.

    Works on the text alone, never a URL parser, so a DSN that does not parse (a bad port, an unclosed
    ``[`` of an IPv6 host) is masked too instead of failing where it is shown (``check-config``, reads).
    """
    scheme, sep, rest = dsn.partition("://")
    if not sep:
        rest = dsn
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    userinfo, at, host = authority.rpartition("@")
    if at and ":" in userinfo:
        authority = f"{userinfo.split(':', 1)[0]}:{MASK}@{host}"
    before, mark, query = tail.partition("?")
    if mark:
        query, hash_mark, fragment = query.partition("#")
        tail = before + "?" + "&".join(_mask_param(pair) for pair in query.split("&")) + hash_mark + fragment
    return (scheme + sep if sep else "") + authority + tail


def _mask_param(pair: str) -> str:
    name = pair.partition("=")[0]
    return f"{name}={MASK}" if unquote_plus(name).strip().lower() in _SECRET_PARAMS else pair


# --- numbers --------------------------------------------------------------------------------------

_JSON_KINDS = {str: "a string", bool: "a boolean", type(None): "null", list: "an array", tuple: "an array",
               dict: "an object"}  # fmt: skip


def _json_number(value: Any) -> Any:
    """Only a number where one is due: pydantic's lax mode reads ``"5"`` as 5 and ``true`` as 1, so a
    template's quoted value or a flag in the wrong field was stored as a limit nobody wrote."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    kind = _JSON_KINDS.get(type(value), type(value).__name__)
    raise PydanticCustomError("json_number", "must be a JSON number, not {kind}", {"kind": kind})


# Numeric fields of what users write (credentials, consumers; the management API and the config): a
# number, or 400 naming the field. A float given to an int field still goes through pydantic (5.0 is 5).
Number = Annotated[float, BeforeValidator(_json_number)]
Integer = Annotated[int, BeforeValidator(_json_number)]


# --- limits and timeouts --------------------------------------------------------------------------


HttpMethod = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
GLOB_PATTERN = r"^/(\*\*|[^/*]*\*?[^/*]*)(/(\*\*|[^/*]*\*?[^/*]*))*/?$"


# Every bucket's numbers (the credential's, each window's, each rule's) are bounded alike, so that every
# rate the pacer derives (intervals, waits, Retry-After) stays finite; pacing/limits.py also bounds per / rate.
Rate = Annotated[Number, Field(gt=0, le=1e9)]
Per = Annotated[Number, Field(ge=0.001, le=31_622_400)]
Burst = Annotated[Integer, Field(ge=1, le=1_000_000_000)]


class Window(Strict):
    """One more limit on a bucket: at most ``rate`` calls per ``per`` seconds (``burst`` at once)."""

    rate: Rate = Field(description="calls per `per` seconds")
    per: Per = Field(description="window length in seconds")
    burst: Burst | None = Field(default=None, description="default: rate, or 1% of it with spread")
    spread: bool = Field(default=False, description="hand the window's calls out evenly across it")


def _glob(value: str) -> str:
    if not re.fullmatch(GLOB_PATTERN, value):
        raise ValueError("must be a path glob like '/crm/v3/objects/*/search' ('*' one segment, '**' any)")
    return value


PathGlob = Annotated[str, AfterValidator(_glob), WithJsonSchema({"type": "string", "pattern": GLOB_PATTERN})]


class RuleMatch(Strict):
    """Which calls a rule applies to: any of ``methods`` (all when absent) on a path matching ``path``."""

    methods: tuple[HttpMethod, ...] | None = Field(default=None, min_length=1)
    path: PathGlob = "/**"


class Rule(Strict):
    """A bucket of its own for the matching calls (``rate``/``per``/``burst``/``windows``) and/or their cost."""

    match: RuleMatch
    rate: Rate | None = None
    per: Per | None = None
    burst: Burst | None = None
    windows: tuple[Window, ...] = ()
    cost: Integer | None = Field(default=None, ge=1, description="tokens a matching call takes from each bucket")

    @model_validator(mode="after")
    def _complete(self) -> Rule:
        if (self.rate is None) != (self.per is None):
            raise ValueError("a rule's bucket needs both rate and per")
        if self.burst is not None and self.rate is None:
            raise ValueError("burst needs rate and per")
        if self.rate is None and not self.windows and self.cost is None:
            raise ValueError("a rule needs a bucket (rate and per, or windows) or a cost")
        return self


class RateLimitOverride(Strict):
    """Per-credential or per-provider pacing override; absent fields keep the provider default.

    ``windows`` and ``rules``, when given, replace the lists below them (they are not merged item by item).
    """

    rate: Rate | None = Field(default=None, description="requests per `per` seconds")
    per: Per | None = Field(default=None, description="window length in seconds")
    burst: Burst | None = Field(default=None, description="tokens available at once")
    max_wait: Number | None = Field(default=None, ge=0, le=3600, description="longest queue wait, seconds")
    max_concurrency: Integer | None = Field(default=None, ge=1, le=1_000_000)
    windows: tuple[Window, ...] | None = Field(default=None, description="more limits on the credential's bucket")
    rules: tuple[Rule, ...] | None = Field(default=None, description="per-endpoint buckets and costs")


class TimeoutsOverride(Strict):
    connect: Number | None = Field(default=None, gt=0, le=3600)
    total: Number | None = Field(default=None, ge=0, le=86400, description="0 means no total timeout")
    read: Number | None = Field(default=None, gt=0, le=86400, description="longest gap between body chunks")


# --- credentials, syncs, consumers -----------------------------------------------------------------


class CredentialIn(Strict):
    id: ObjectId | None = None
    provider: Provider
    base_url: HttpUrlStr
    auth: Auth
    rate_limit: RateLimitOverride | None = None
    timeouts: TimeoutsOverride | None = None
    ca_bundle: str | None = Field(default=None, description="path to a PEM CA bundle for private upstreams")


class CredentialPatch(Strict):
    base_url: HttpUrlStr | None = None
    auth: Auth | None = None
    rate_limit: RateLimitOverride | None = None
    timeouts: TimeoutsOverride | None = None
    ca_bundle: str | None = None


class CredentialView(Strict):
    id: str
    provider: Provider
    base_url: str
    auth: dict[str, Any]
    rate_limit: RateLimitOverride | None
    timeouts: TimeoutsOverride | None
    ca_bundle: str | None
    created_at: datetime
    updated_at: datetime
    pacing: dict[str, Any] | None = None


def _number_option(options: dict[str, str], name: str, low: float, high: float | None, unit: str) -> None:
    if name not in options:
        return
    try:
        value = float(options[name])
    except ValueError:
        value = float("nan")
    if not (value >= low and (high is None or value <= high)):
        bound = f"between {low:g} and {high:g}" if high is not None else f">= {low:g}"
        raise ValueError(f"options.{name}: must be a number {bound}{unit}, not {options[name][:32]!r}")


def _sync_options(value: Any) -> Any:
    """Numbers are accepted for the numeric options and kept as strings, like every other option."""
    if isinstance(value, dict):
        value = {k: str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v for k, v in value.items()}
    return value


SYNC_OPTIONS = ("poll_interval", "max_share", "base_id", "api_version")
MAX_POLL_INTERVAL = 86_400  # seconds: a sync polls at least once a day
# The options the providers put in an upstream path (Airtable's base, Salesforce's API version): checked
# here with the others, so a stored value this version refuses fails its sync on every read.
SYNC_OPTION_PATTERNS = {"base_id": r"app[A-Za-z0-9]{3,32}", "api_version": r"v\d{2,3}\.\d"}


def _check_sync_options(options: dict[str, str]) -> dict[str, str]:
    for name in options:  # a mistyped option would be stored and silently ignored
        if name not in SYNC_OPTIONS:
            raise ValueError(f"options.{name[:64]}: not a sync option (known: {', '.join(SYNC_OPTIONS)})")
    _number_option(options, "poll_interval", 1, MAX_POLL_INTERVAL, " (seconds)")
    _number_option(options, "max_share", 0, 1, "")
    for name, pattern in SYNC_OPTION_PATTERNS.items():
        if name in options and not re.fullmatch(pattern, options[name]):
            raise ValueError(f"options.{name}: {options[name][:64]!r} is not valid (expected {pattern})")
    return options


SyncOptions = Annotated[dict[str, str], BeforeValidator(_sync_options), AfterValidator(_check_sync_options)]


class SyncIn(Strict):
    id: ObjectId | None = None
    credential_id: ObjectId
    collections: list[CollectionId] = Field(
        default_factory=list,
        max_length=MAX_LIST,
        description="empty or absent: a proxy-only sync, which reads nothing upstream",
    )
    options: SyncOptions = Field(
        default_factory=dict,
        description="provider options (base_id, api_version) and poll_interval (s, 1-86400, default 10), "
        "max_share (0-1, default 0.5)",
    )


class SyncPatch(Strict):
    credential_id: ObjectId | None = None
    collections: list[CollectionId] | None = Field(default=None, max_length=MAX_LIST)
    options: SyncOptions | None = None


class SyncView(Strict):
    id: str
    credential_id: str
    collections: list[str]
    options: dict[str, str]
    created_at: datetime
    updated_at: datetime
    state: Literal["backfilling", "live", "paused", "failing", "idle"] = Field(
        description="idle: a proxy-only sync (no collections), which reads nothing"
    )
    last_error: str | None = None
    progress: dict[str, int] = Field(description="records read by the backfill, per collection")
    cursor: dict[str, Any] = Field(description="where reading stands, per collection")
    last_poll_at: datetime | None = None
    lag_seconds: float | None = Field(description="seconds since the sync last had read every change")
    throttled_until: datetime | None = Field(
        default=None,
        description="the upstream's rate limit (or the pacer) refused the last read: the next comes then",
    )


MAX_RETRY_DURATION = 30 * 86400


class _ConsumerBase(Strict):
    id: ObjectId | None = None
    sync_id: ObjectId | None = None
    collections: list[CollectionId] | None = Field(default=None, max_length=MAX_LIST)


class PullConsumerIn(_ConsumerBase):
    kind: Literal["pull"]
    visibility_timeout: Number = Field(default=30, gt=0, le=43200)


class WebhookConsumerIn(_ConsumerBase):
    kind: Literal["webhook"]
    url: HttpUrlStr
    secret: SecretStr
    batch_size: Integer = Field(default=10, ge=1, le=1000)
    timeout: Number = Field(default=10, gt=0, le=300)
    max_retry_duration: Number = Field(
        default=86400, gt=0, le=MAX_RETRY_DURATION, description="caps the retry backoff at a tenth of it"
    )
    max_backoff: Number = Field(default=60, ge=1, le=3600, description="longest seconds between two retries")

    @field_validator("secret")
    @classmethod
    def _whsec(cls, value: SecretStr) -> SecretStr:
        """Decoded here, as the signer will: a secret that only looks like base64 would fail every delivery."""
        text = value.get_secret_value()
        try:
            key = base64.b64decode(text.removeprefix("whsec_"), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if not text.startswith("whsec_") or len(key) < 12:
            raise ValueError("must be 'whsec_' followed by the base64 of at least 12 bytes")
        return value


class PostgresConsumerIn(_ConsumerBase):
    kind: Literal["postgres"]
    dsn: SecretStr
    table_prefix: Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_]{0,30}$")] = "gateway_"
    batch_size: Integer = Field(default=100, ge=1, le=5000)

    @field_validator("dsn")
    @classmethod
    def _postgres_dsn(cls, value: SecretStr) -> SecretStr:
        if urlsplit(value.get_secret_value()).scheme not in ("postgres", "postgresql"):
            raise ValueError("must be a postgresql:// URL")
        dsn_endpoint(value.get_secret_value())
        return value


def dsn_endpoint(dsn: str) -> tuple[str, int]:
    """The one host and port asyncpg dials for ``dsn``, which the egress policy checks before it does.

    ``ValueError`` for a DSN that could make asyncpg dial a host that check never saw (several hosts, a
    ``host``/``hostaddr``/``port`` parameter, no host: a socket directory or ``PGHOST``), or a port out
    of range (stored, ``:99999`` or ``:x`` failed every delivery).
    """
    parts = urlsplit(dsn)
    try:
        port = parts.port or 5432
    except ValueError:
        port = 0
    overrides = {key.lower() for key in parse_qs(parts.query, keep_blank_values=True)} & {"host", "hostaddr", "port"}
    if not parts.hostname or "," in parts.netloc or overrides or not 0 < port < 65536:
        raise ValueError("must name one host and a port from 1 to 65535 in the URL, not in parameters")
    return parts.hostname, port


ConsumerIn = Annotated[PullConsumerIn | WebhookConsumerIn | PostgresConsumerIn, Field(discriminator="kind")]


class ConsumerPatch(Strict):
    """Fields a consumer may change after creation; ``kind`` never changes."""

    sync_id: ObjectId | None = None
    collections: list[CollectionId] | None = Field(default=None, max_length=MAX_LIST)
    visibility_timeout: Number | None = Field(default=None, gt=0, le=43200)
    url: HttpUrlStr | None = None
    secret: SecretStr | None = None
    batch_size: Integer | None = Field(default=None, ge=1, le=5000)
    timeout: Number | None = Field(default=None, gt=0, le=300)
    max_retry_duration: Number | None = Field(default=None, gt=0, le=MAX_RETRY_DURATION)
    max_backoff: Number | None = Field(default=None, ge=1, le=3600)
    dsn: SecretStr | None = None
    table_prefix: str | None = None


class _ConsumerViewBase(Strict):
    """A consumer as reads show it: the fields it was written with (secrets masked) plus its state."""

    id: str
    kind: str
    sync_id: str | None
    collections: list[str] | None
    position: int = Field(description="last acknowledged stream seq (0 before the first)")
    pending: int = Field(description="events waiting for this consumer")
    status: Literal["active", "failing"] = "active"
    status_detail: str | None = Field(default=None, description="why the consumer is failing")
    created_at: datetime
    updated_at: datetime


class PullConsumerView(_ConsumerViewBase):
    kind: Literal["pull"]
    visibility_timeout: float


class WebhookConsumerView(_ConsumerViewBase):
    kind: Literal["webhook"]
    url: str
    secret: str = Field(description='always "***": the secret is write-only')
    batch_size: int
    timeout: float
    max_retry_duration: float
    max_backoff: float = 60


class PostgresConsumerView(_ConsumerViewBase):
    kind: Literal["postgres"]
    dsn: str = Field(description="with every password masked")
    table_prefix: str
    batch_size: int


# The shape a consumer is written in is the shape it is read in (kind-specific fields at the top level).
ConsumerView = Annotated[PullConsumerView | WebhookConsumerView | PostgresConsumerView, Field(discriminator="kind")]


# --- records and events ---------------------------------------------------------------------------


class Record(BaseModel):
    """A record as SPEC.md and the reference docs shape it."""

    sync_id: str
    collection_id: str
    upstream_id: str
    upstream_updated_at: datetime | None
    data: dict[str, Any]
    deleted: bool
    inserted_at: datetime
    updated_at: datetime


class Event(BaseModel):
    """One change appended to the stream."""

    seq: int
    id: str
    action: Literal["insert", "update", "delete"]
    record: Record
    changes: dict[str, Any]
    inserted_at: datetime


# --- API tokens -----------------------------------------------------------------------------------

TokenScope = Literal["proxy", "mutations", "consumers", "admin"]
TOKEN_SCOPES: tuple[TokenScope, ...] = ("proxy", "mutations", "consumers", "admin")
TokenPriority = Literal["high", "normal", "low"]


ObjectKind = Literal["sync", "credential", "consumer"]
OBJECT_KINDS: tuple[ObjectKind, ...] = ("sync", "credential", "consumer")
TYPED_ID_PATTERN = rf"^(?:{'|'.join(OBJECT_KINDS)}):{ID_PATTERN.removeprefix('^')}"


def _typed_id(value: str) -> str:
    """``<kind>:<id>``: a plain id would open every kind of object that happens to share it."""
    if not re.fullmatch(TYPED_ID_PATTERN, value):
        raise PydanticCustomError(
            "typed_id",
            "{value} is not <kind>:<id> with kind one of {kinds} (e.g. sync:billing)",
            {"value": repr(value), "kinds": ", ".join(OBJECT_KINDS)},
        )
    return value


TypedObjectId = Annotated[
    str, AfterValidator(_typed_id), WithJsonSchema({"type": "string", "pattern": TYPED_ID_PATTERN})
]


class TokenIn(Strict):
    """What ``POST /v1/tokens`` and ``gateway tokens create`` accept."""

    name: ObjectId
    scopes: list[TokenScope] = Field(min_length=1, max_length=MAX_LIST)
    only: list[TypedObjectId] | None = Field(
        default=None,
        max_length=MAX_LIST,
        description="objects the token is limited to: 'sync:<id>', 'credential:<id>', 'consumer:<id>'",
    )
    priority: TokenPriority = Field(default="normal", description="pacing class of this token's calls")
    weight: int = Field(default=1, ge=1, le=1000, strict=True, description="fair share within its priority")
    expires_at: Annotated[AwareDatetime, AfterValidator(_representable)] | None = Field(
        default=None, description="refused like a revoked token after it"
    )

    @field_validator("expires_at")
    @classmethod
    def _future(cls, value: datetime | None) -> datetime | None:
        if value is not None and value <= datetime.now(value.tzinfo):
            raise ValueError("must be in the future")
        return value


class TokenView(BaseModel):
    """A token as reads show it: everything but the secret, which is never stored."""

    name: str
    scopes: list[str]
    only: list[str] | None
    priority: TokenPriority = "normal"
    weight: int = 1
    created_at: datetime
    last_used_at: datetime | None = None
    expires_at: datetime | None = None


class TokenCreated(TokenView):
    token: str = Field(description="the bearer token; shown in this answer only, never again")
