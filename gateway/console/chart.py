"""The limit lines of a credential's chart: its bucket, each window, each rule's buckets, in calls per second.

A call must fit every bucket that applies to it (``pacing/limits.py``), so the chart draws them all
against the calls per second, each labelled with what it is and its figure as configured (a daily
window reads "per day", not 0.116/s alone). A rule that only sets a cost has no bucket: no line.
"""

from __future__ import annotations

from typing import Any

from gateway.domain.models import Rule
from gateway.pacing.limits import EffectiveLimit

_SPANS = {1.0: "second", 60.0: "minute", 3600.0: "hour", 86400.0: "day"}


def _figure(rate: float, per: float) -> str:
    span = _SPANS.get(per)
    return f"{rate:g} per {span}" if span else f"{rate:g} per {per:g} s"


def _line(kind: str, label: str, rate: float, per: float) -> dict[str, Any]:
    per_second = rate / per
    return {
        "kind": kind,
        "label": f"{label}: {_figure(rate, per)} ({per_second:.3g}/s)",
        "per_second": round(per_second, 6),
    }


def _matches(rule: Rule) -> str:
    methods = ",".join(rule.match.methods) if rule.match.methods else "any"
    return f"{methods} {rule.match.path}"


def limit_lines(limit: EffectiveLimit) -> list[dict[str, Any]]:
    """One line per bucket a call of this credential may take tokens from, the main bucket first."""
    lines = [_line("limit", "limit", limit.rate, limit.per)]
    lines += [_line("window", f"window {n}", w.rate, w.per) for n, w in enumerate(limit.windows, 1)]
    for n, rule in enumerate(limit.rules, 1):
        name = f"rule {n} ({_matches(rule)})"
        if rule.rate is not None and rule.per is not None:
            lines.append(_line("rule", name, rule.rate, rule.per))
        lines += [_line("rule", f"{name} window {m}", w.rate, w.per) for m, w in enumerate(rule.windows, 1)]
    return lines
