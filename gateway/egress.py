"""Egress policy: which addresses the gateway's own outbound calls may reach.

An admin can point a credential's ``base_url``, an OAuth2 ``token_url`` or a webhook URL anywhere; a
proxy-scope token would then read whatever is there: the cloud metadata service (169.254.169.254),
the gateway's own listeners (``/metrics``, ``/v1`` with the credential's admin token), its Redis or
PostgreSQL. ``upstream.deny`` (and the optional ``upstream.allow``) close that door.

The check runs at connect time on the *resolved* address, so a name that resolves to a public
address when the credential is written and to a denied one later (DNS rebinding) is still refused:

* ``PolicyResolver`` wraps aiohttp's resolver and drops denied answers (``EgressDenied`` when none
  are left), so the client never even tries them;
* ``socket_factory`` checks the address of every socket aiohttp is about to connect, IP literals
  included (aiohttp does not resolve those).

Rules are ``CIDR`` or ``address`` (any port), ``CIDR:port`` / ``[v6]:port`` (one port), or a host name
(matched on the URL's host, with or without ``:port``). The gateway's own listeners, its Redis and its
PostgreSQL are denied on their ports unless ``upstream.deny_own_endpoints = false``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from gateway.config import Config
from gateway.errors import ConfigError, InvalidRequest

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_ANY_HOST = ("0.0.0.0", "::", "")  # listener hosts meaning "every address"
_LOOPBACK = ("127.0.0.0/8", "::1/128")


class EgressDenied(OSError):
    """A connection the policy refuses; an ``OSError`` so aiohttp carries it as a connection failure."""


@dataclass(frozen=True)
class Rule:
    network: Network | None
    host: str | None
    port: int | None

    def matches(self, host: str | None, address: str | None, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.host is not None:
            return host is not None and host.lower().rstrip(".") == self.host
        if address is None or self.network is None:
            return False
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:169.254.169.254 is 169.254.169.254
        return any(each.version == self.network.version and each in self.network for each in _dialled(ip))


Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _dialled(ip: Address) -> tuple[Address, ...]:
    """The addresses a connection to ``ip`` reaches: connecting to the unspecified address (``0.0.0.0``,
    ``::``) reaches this host's loopback, so a rule denying loopback (or our own listeners) denies it too."""
    if ip.is_unspecified:
        return ip, ipaddress.ip_address("127.0.0.1" if ip.version == 4 else "::1")
    return (ip,)


def parse_rule(text: str) -> Rule:
    """``10.0.0.0/8``, ``127.0.0.1:6379``, ``[::1]:5432``, ``fe80::/10``, ``metadata.internal[:80]``."""
    text = text.strip()
    for candidate, port in _splits(text):
        try:
            return Rule(ipaddress.ip_network(candidate, strict=False), None, port)
        except ValueError:
            continue
    host, _, port_text = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
    if not host or any(c in host for c in "/[]@ ") or (port_text and not port_text.isdigit()):
        raise ValueError(f"{text!r} is neither a CIDR, an address, nor a host name (each optionally with :port)")
    return Rule(None, host.lower().rstrip("."), int(port_text) if port_text else None)


def _splits(text: str) -> Iterable[tuple[str, int | None]]:
    """The ways ``text`` may read as an address or network, with or without a port."""
    yield text, None
    if text.startswith("["):
        inner, _, port = text[1:].partition("]:")
        if port.isdigit():
            yield inner, int(port)
    elif text.count(":") == 1:
        address, _, port = text.partition(":")
        if port.isdigit():
            yield address, int(port)


class EgressPolicy:
    def __init__(self, deny: Iterable[Rule], allow: Iterable[Rule] = (), own: Iterable[Rule] = ()) -> None:
        """``own``: the gateway's own endpoints (``upstream.deny_own_endpoints``), denied like ``deny``
        except where a caller leaves them out (``check_every_address``)."""
        self.deny = tuple(deny)
        self.allow = tuple(allow)
        self.own = tuple(own)
        # The lookup behind the policy: aiohttp's default resolver; a test puts a fixed one here.
        self.lookup: AbstractResolver | None = None

    @classmethod
    def from_config(cls, config: Config) -> EgressPolicy:
        """The configured policy; ``ConfigError`` naming the key for a rule that does not parse."""
        settings = config.upstream
        rules: dict[str, list[Rule]] = {"deny": [], "allow": []}
        for key, texts in (("deny", settings.deny), ("allow", settings.allow)):
            for index, text in enumerate(texts):
                try:
                    rules[key].append(parse_rule(text))
                except ValueError as exc:
                    raise ConfigError(f"invalid config: upstream.{key}.{index}: {exc}") from None
        own = own_endpoints(config) if settings.deny_own_endpoints else []
        return cls(rules["deny"], rules["allow"], own)

    def allows(self, host: str | None, address: str | None, port: int, *, own: bool = True) -> bool:
        if any(rule.matches(host, address, port) for rule in (self.deny + self.own if own else self.deny)):
            return False
        if not self.allow:
            return True
        return any(rule.matches(host, address, port) or rule.matches(None, address, port) for rule in self.allow)

    def check(self, host: str | None, address: str | None, port: int, *, own: bool = True) -> None:
        if not self.allows(host, address, port, own=own):
            raise EgressDenied(f"{host or address}:{port} is denied by the egress policy (upstream.deny/allow)")

    async def check_every_address(self, host: str, port: int) -> None:
        """``EgressDenied`` unless ``host`` and every address it resolves to are allowed on ``port``.

        For a client that resolves and dials by itself (asyncpg, for postgres consumers): which answer
        it dials is its own pick, so none may be denied. The gateway's own endpoints are not counted: a
        database of the user's may share the store's PostgreSQL server, and nothing is read back from it.
        """
        self.check(host, None, port, own=False)
        try:
            addresses = [str(ipaddress.ip_address(host.split("%", 1)[0]))]
        except ValueError:
            if self.lookup is not None:
                addresses = [answer["host"] for answer in await self.lookup.resolve(host, port, socket.AF_UNSPEC)]
            else:  # the system's getaddrinfo, as asyncpg's own lookup
                infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
                addresses = [str(info[4][0]) for info in infos]
        for address in addresses:
            self.check(host, address, port, own=False)

    def socket_factory(self, addr_info: Any) -> socket.socket:
        """aiohttp's hook right before ``connect()``: the last look at the address actually dialled."""
        family, kind, proto, _, sockaddr = addr_info
        self.check(None, str(sockaddr[0]), int(sockaddr[1]))
        return socket.socket(family=family, type=kind, proto=proto)

    def connector(self, **kwargs: Any) -> aiohttp.TCPConnector:
        """A connector that resolves and connects through this policy."""
        return aiohttp.TCPConnector(resolver=PolicyResolver(self), socket_factory=self.socket_factory, **kwargs)


class PolicyResolver(AbstractResolver):
    """The policy's lookup (aiohttp's default resolver) with denied answers removed."""

    def __init__(self, policy: EgressPolicy) -> None:
        self.policy = policy
        self.inner = aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.policy.check(host, None, port)  # a host-name rule, before any lookup
        answers = await (self.policy.lookup or self.inner).resolve(host, port, family)
        allowed = [a for a in answers if self.policy.allows(host, a["host"], a["port"])]
        if not allowed:
            raise EgressDenied(f"{host}:{port} resolves only to addresses the egress policy denies")
        return allowed

    async def close(self) -> None:
        await self.inner.close()


def own_endpoints(config: Config) -> list[Rule]:
    """The gateway's listeners, Redis and PostgreSQL, each on its port, by name and by address."""
    endpoints = [(config.server.host, config.server.port), (config.metrics.host, config.metrics.port)]
    if config.pacing.backend == "redis":
        endpoints.append(_host_port(config.pacing.redis_url, 6379))
    if not config.store.is_sqlite:
        endpoints.append(_host_port(config.store.url, 5432))
    rules: list[Rule] = []
    for host, port in endpoints:
        if port == 0:
            continue
        if host in _ANY_HOST:
            rules.extend(Rule(ipaddress.ip_network(net), None, port) for net in _LOOPBACK)
            host = socket.gethostname()
        rules.append(Rule(None, host.lower(), port))
        rules.extend(Rule(ipaddress.ip_network(address), None, port) for address in _addresses(host))
    return rules


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    try:
        return parts.hostname or "", parts.port or default_port
    except ValueError:
        return parts.hostname or "", default_port


def _addresses(host: str) -> set[str]:
    """What ``host`` resolves to now (once, at start); nothing when it does not resolve."""
    try:
        return {str(info[4][0]).split("%", 1)[0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return set()


def ca_bundle_path(path: str, ca_dir: str | None) -> str:
    """``path`` when it lies inside ``upstream.ca_dir``, else ``InvalidRequest``.

    Checked on the text (symlinks resolved), never by opening the file, so the answer says nothing
    about which files exist elsewhere on the host.
    """
    if not ca_dir:
        raise InvalidRequest(
            "ca_bundle: set upstream.ca_dir to the directory holding CA bundles first", field="ca_bundle"
        )
    root = os.path.realpath(ca_dir)
    full = os.path.realpath(os.path.join(root, path))
    if os.path.commonpath([root, full]) != root or full == root:
        raise InvalidRequest(f"ca_bundle: must name a file inside upstream.ca_dir ({ca_dir})", field="ca_bundle")
    return full
