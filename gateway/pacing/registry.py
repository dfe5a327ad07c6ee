"""Which buckets a call takes its tokens from, given its credential, method and upstream path.

- Every credential has its own bucket (``cred:<id>``), except Airtable, whose limit is per *base*:
  a call under ``/v0/<base>/...`` uses ``cred:<id>:base:<base>`` (the base id is the first path
  segment after ``/v0/``, whether ``/v0`` is in the credential's ``base_url`` or in the path).
  Every Airtable call also takes from ``cred:<id>/token``, Airtable's 50/s across all the bases one
  token reaches, which binds from the eleventh busy base on.
- In every key, a ``:`` of the id is written ``%3A`` (``credential_key``; ids hold no ``%``), so one
  credential's buckets are never another's: ``cred:a:w1`` is credential ``a``'s first window, and
  credential ``a:w1``'s own bucket is ``cred:a%3Aw1``.
- Each of the limit's ``windows`` is one more bucket beside it (``<key>:w<n>``): same calls, other
  rate, so a call must fit all of them.
- Each ``rules`` entry whose ``match`` fits the call (methods, and a path glob relative to the base
  URL: ``*`` one segment, ``**`` any number) adds its own buckets (``cred:<id>:rule<n>`` and its
  windows), shared by the calls matching that rule on that credential, and/or sets the call's cost.
- If ``config.providers[<p>].shared_rate_limit`` is set, every call of that provider also takes
  from ``provider:<p>`` (and its windows).

The *home* bucket is the credential's (``describe`` shows it). ``target`` are the buckets an
upstream answer about this call pauses (adaptive.py): the matched rules' own buckets when there are
any, else home. ``tag`` is the Redis Cluster hash tag: all keys of one reservation must live in one
hash slot, so a credential whose provider has a shared bucket uses the provider as its tag.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import urlsplit

from gateway.config import Config
from gateway.domain.models import Rule
from gateway.domain.objects import Credential
from gateway.pacing.bucket import Limit
from gateway.pacing.limits import BucketLimit, EffectiveLimit, credential_limit, shared_limit

_BASE_ID = re.compile(r"[A-Za-z0-9]{1,64}")
# https://airtable.com/developers/web/api/rate-limits: 50 requests per second for all traffic of one
# access token, besides each base's 5 per second. A fixed figure of Airtable's, not a tunable default.
AIRTABLE_TOKEN_LIMIT = BucketLimit(rate=50, per=1, burst=50)


@dataclass(frozen=True)
class BucketSpec:
    """One bucket of a call; ``cost`` is the tokens the call takes from it (``schedule`` is scaled)."""

    key: str
    limit: BucketLimit
    tag: str
    cost: int = 1

    @cached_property
    def schedule(self) -> Limit:
        """The schedule this call reserves with (``limit.schedule`` for pauses and the bucket's state)."""
        return self.limit.schedule.scaled(self.cost)


@dataclass(frozen=True)
class Route:
    """The buckets of one call: home first; ``limit`` is the credential's; ``cost`` tokens per bucket."""

    buckets: tuple[BucketSpec, ...]
    limit: EffectiveLimit
    provider: str
    target: tuple[BucketSpec, ...] = ()
    cost: int = 1
    rule_buckets: tuple[BucketSpec, ...] = ()  # the matched rules' buckets (the pacer waits on them first)

    @property
    def home(self) -> BucketSpec:
        return self.buckets[0]

    @property
    def smallest_burst(self) -> int:
        return min(spec.limit.burst for spec in self.buckets)

    def costed(self, cost: int) -> Route:
        """This route for a call of ``cost`` tokens in every bucket."""
        if cost == self.cost:
            return self
        buckets = tuple(dataclasses.replace(spec, cost=cost) for spec in self.buckets)
        rules = tuple(dataclasses.replace(spec, cost=cost) for spec in self.rule_buckets)
        return dataclasses.replace(self, buckets=buckets, cost=cost, rule_buckets=rules)


@dataclass(frozen=True)
class _CompiledRule:
    methods: frozenset[str] | None
    path: PathGlob
    buckets: tuple[BucketSpec, ...]
    cost: int | None

    def matches(self, method: str, path: str) -> bool:
        return (self.methods is None or method in self.methods) and self.path.matches(path)


@dataclass(frozen=True)
class Plan:
    """Everything about a credential's buckets that does not depend on the call (cached by the pacer)."""

    limit: EffectiveLimit
    provider: str
    base: tuple[BucketSpec, ...]
    rules: tuple[_CompiledRule, ...]
    plain: Route

    def route(self, method: str, path: str) -> Route:
        """The route of one call: the plain one unless a rule matches (the common case costs nothing)."""
        if not self.rules:
            return self.plain
        matched = [rule for rule in self.rules if rule.matches(method, _rooted(path))]
        if not matched:
            return self.plain
        extra = tuple(spec for rule in matched for spec in rule.buckets)
        cost = max((rule.cost for rule in matched if rule.cost is not None), default=1)
        target = tuple(rule.buckets[0] for rule in matched if rule.buckets)
        route = Route(self.base + extra, self.limit, self.provider, target or self.plain.target, rule_buckets=extra)
        return route.costed(cost)


def plan(config: Config, credential: Credential, path: str) -> Plan:
    """The buckets of ``credential`` (for Airtable, of the base ``path`` is under)."""
    limit = credential_limit(config, credential.provider, credential.rate_limit)
    shared = shared_limit(config, credential.provider)
    own = credential_key(credential.id)
    tag = f"provider:{credential.provider}" if shared is not None else own
    home_key = own
    token_wide: tuple[BucketSpec, ...] = ()
    if credential.provider == "airtable":
        base = airtable_base(credential.base_url, path)
        if base is not None:
            home_key = f"{home_key}:base:{base}"
        token_wide = (BucketSpec(f"{own}/token", AIRTABLE_TOKEN_LIMIT, tag),)
    buckets = _specs(home_key, limit.limits, tag) + token_wide
    if shared is not None:
        buckets += _specs(f"provider:{credential.provider}", shared.limits, tag)
    rules = tuple(
        _compile(rule, _specs(f"{own}:rule{n}", limit.rule_limits(rule), tag)) for n, rule in enumerate(limit.rules)
    )
    plain = Route(buckets, limit, credential.provider, target=buckets[:1])
    return Plan(limit, credential.provider, buckets, rules, plain)


def credential_key(credential_id: str) -> str:
    """``cred:<id>`` with the id's ``:`` written ``%3A``: the suffixes added after it (``:w1``,
    ``:rule0``, ``:base:<b>``, ``:permits``) can then never spell another credential's key."""
    return "cred:" + credential_id.replace(":", "%3A")


def route(config: Config, credential: Credential, path: str, method: str = "GET") -> Route:
    """The buckets that apply to ``credential`` calling ``method path`` (relative to its ``base_url``)."""
    return plan(config, credential, path).route(method, path)


class _Segment:
    """One segment of a glob: text, where each ``*`` stands for any run of characters but ``/``."""

    __slots__ = ("pieces",)

    def __init__(self, pattern: str) -> None:
        self.pieces = pattern.split("*")

    def matches(self, segment: str) -> bool:
        pieces = self.pieces
        if len(pieces) == 1:
            return segment == pieces[0]
        first, last = pieces[0], pieces[-1]
        if len(segment) < len(first) + len(last) or not (segment.startswith(first) and segment.endswith(last)):
            return False
        at, end = len(first), len(segment) - len(last)
        for piece in pieces[1:-1]:  # leftmost is enough: a later ``*`` takes whatever lies between
            at = segment.find(piece, at, end)
            if at < 0:
                return False
            at += len(piece)
        return True


class PathGlob:
    """A rule's path glob: ``*`` is one path segment (or part of one), ``**`` any number of segments,
    possibly none; a trailing ``/`` on the path is ignored.

    Matched segment by segment, in time linear in the path's segments times the glob's, because every
    call's path is matched: a regex made of one repeated group per ``**`` backtracks polynomially (a
    glob with 14 and a 40-segment path blocked the event loop for over a minute). The ``**`` split the
    glob into blocks of fixed length: the first is anchored at the start, the last at the end, and
    each one between goes at the leftmost place it fits, which is never worse than a later one (the
    ``**`` after it absorbs what it leaves).
    """

    __slots__ = ("_floating", "_head", "_least", "_middle", "_prefix", "_suffix", "_tail")

    def __init__(self, glob: str) -> None:
        # The literal text before the first ``*`` and after the last one: most calls fail on these two
        # string tests (1.5 µs less than splitting their path). A ``**`` may match no segment, so the
        # ``/`` before it is not part of the prefix.
        whole = "/" + glob.strip("/")
        first, last = whole.find("*"), whole.rfind("*")
        self._prefix = whole if first < 0 else whole[: first - 1 if whole[first : first + 2] == "**" else first]
        self._suffix = "" if last < 0 else whole[last + 1 :]
        blocks: list[list[_Segment]] = [[]]
        for segment in glob.strip("/").split("/"):
            if segment == "**":
                blocks.append([])
            else:
                blocks[-1].append(_Segment(segment))
        self._floating = len(blocks) > 1
        self._head = blocks[0]
        self._middle = blocks[1:-1]
        self._tail = blocks[-1] if self._floating else []
        self._least = sum(len(block) for block in blocks)  # segments a path needs at least

    def matches(self, path: str) -> bool:
        """``path`` as the rules see it (``_rooted``: it starts with ``/``)."""
        suffix = self._suffix
        if not path.startswith(self._prefix) or (
            suffix and not (path.endswith(suffix) or (path.endswith("/") and path[:-1].endswith(suffix)))
        ):
            return False
        segments = path[1:].split("/")
        return self._fits(segments) or (path.endswith("/") and self._fits(segments[:-1]))

    def _fits(self, segments: list[str]) -> bool:
        if len(segments) < self._least or (not self._floating and len(segments) != self._least):
            return False
        end = len(segments) - len(self._tail)
        if not (_block_at(self._head, segments, 0) and _block_at(self._tail, segments, end)):
            return False
        at = len(self._head)
        for block in self._middle:
            while at + len(block) <= end and not _block_at(block, segments, at):
                at += 1
            if at + len(block) > end:
                return False
            at += len(block)
        return True


def _block_at(block: list[_Segment], segments: list[str], at: int) -> bool:
    return all(pattern.matches(segment) for pattern, segment in zip(block, segments[at : at + len(block)], strict=True))


def _compile(rule: Rule, buckets: tuple[BucketSpec, ...]) -> _CompiledRule:
    methods = frozenset(rule.match.methods) if rule.match.methods else None
    return _CompiledRule(methods, PathGlob(rule.match.path), buckets, rule.cost)


def _specs(key: str, limits: tuple[BucketLimit, ...], tag: str) -> tuple[BucketSpec, ...]:
    return tuple(BucketSpec(key if n == 0 else f"{key}:w{n}", limit, tag) for n, limit in enumerate(limits))


def _rooted(path: str) -> str:
    """The path as the rules see it: relative to the base URL, with a leading slash, without a query."""
    path = path.split("?", 1)[0]
    return path if path.startswith("/") else "/" + path


def airtable_base(base_url: str, path: str) -> str | None:
    """The base id of an Airtable call, or None (e.g. ``/v0/meta/...`` calls share the credential bucket)."""
    segments = [s for s in (urlsplit(base_url).path.rstrip("/") + "/" + path.lstrip("/")).split("/") if s]
    try:
        base = segments[segments.index("v0") + 1]
    except (ValueError, IndexError):
        return None
    if base == "meta" or not _BASE_ID.fullmatch(base):
        return None
    return base
