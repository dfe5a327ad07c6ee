"""One upstream that answers like any catalog entry when it is over its limit.

``create_imitator_app(entry, limit=3, window=1.0)`` serves every path: up to ``limit`` calls per
fixed ``window`` seconds are answered 200, the next ones with the entry's first throttle status and
``throttle_body``, with ``Retry-After`` (in the entry's unit) when the provider sends one. Every
answer carries the entry's rate-limit headers (``answers.headers``), rendered the way the provider
renders them: remaining/limit counts, ``used/limit`` strings (``api-usage=N/M``, ``32/40``), and the
reset in the entry's unit (epoch seconds or ms, seconds, ms, a Go duration like ``6m0s``, ISO 8601).
The first signal that the gateway can time (a reset, or a window) counts this window's calls; the
others (daily budgets) report plenty left. ``app[IMITATOR]`` records what was answered and when.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiohttp import web

from gateway.catalog import Entry
from gateway.domain.catalog import Signal

PLENTY = 1_000_000


@dataclass
class ImitatorState:
    entry: Entry
    limit: int
    window: float
    started: float = field(default_factory=time.time)
    answers: list[tuple[float, int]] = field(default_factory=list)  # (unix time, status) per call
    _window_index: int = -1
    _used: int = 0

    def count(self, now: float) -> tuple[int, float]:
        """Count one call in the current window: (calls used in it, the window's end as unix time)."""
        index = math.floor((now - self.started) / self.window)
        if index != self._window_index:
            self._window_index, self._used = index, 0
        self._used += 1
        return self._used, self.started + (index + 1) * self.window

    @property
    def refusals(self) -> list[float]:
        return [when for when, status in self.answers if status != 200]


IMITATOR = web.AppKey("imitator", ImitatorState)


def create_imitator_app(entry: Entry, *, limit: int = 3, window: float = 1.0) -> web.Application:
    app = web.Application()
    app[IMITATOR] = ImitatorState(entry, limit, window)
    app.router.add_route("*", "/{tail:.*}", _answer)
    return app


async def _answer(request: web.Request) -> web.Response:
    state = request.app[IMITATOR]
    answers = state.entry.definition.answers
    now = time.time()
    used, reset_at = state.count(now)
    over = used > state.limit
    headers = signal_headers(
        answers.headers, used=min(used, state.limit), limit=state.limit, reset_at=reset_at, now=now
    )
    status = answers.throttle_statuses[0] if over else 200
    if over and answers.sends_retry_after:
        wait = reset_at - now
        headers[answers.retry_after] = (
            str(math.ceil(wait * 1000)) if answers.retry_after_unit == "milliseconds" else str(math.ceil(wait))
        )
    state.answers.append((now, status))
    body = answers.throttle_body if over else '{"ok": true}'
    return web.Response(status=status, text=body, content_type="application/json", headers=headers)


def signal_headers(signals: list[Signal], *, used: int, limit: int, reset_at: float, now: float) -> dict[str, str]:
    """The headers of every signal; the first one the gateway can time counts the window's calls."""
    counted = next((s for s in signals if s.reset or s.window_header or s.window), None)
    headers: dict[str, str] = {}
    for signal in signals:
        left, size = (limit - used, limit) if signal is counted else (PLENTY, PLENTY)
        if signal.remaining is not None:
            headers[signal.remaining] = str(left)
        if signal.limit is not None:
            headers[signal.limit] = str(size)
        if signal.used_limit is not None:  # several figures in one header (Salesforce's) are joined by "; "
            usage = render_usage(signal.used_pattern, size - left, size)
            known = headers.get(signal.used_limit)
            headers[signal.used_limit] = usage if known is None else f"{known}; {usage}"
        if signal.reset is not None:
            headers[signal.reset] = render_reset(reset_at, signal.reset_unit, now)
        if signal.window_header is not None:
            seconds = reset_at - now
            headers[signal.window_header] = str(
                math.ceil(seconds * 1000 if signal.window_unit == "milliseconds" else seconds)
            )
    return headers


def render_usage(pattern: str, used: int, limit: int) -> str:
    """``api-usage=(\\d+)/(\\d+)`` -> ``api-usage=3/5``: the pattern's two groups filled in."""
    values = iter((str(used), str(limit)))
    text = re.sub(r"\(\?<?[=!][^)]*\)", "", pattern)  # lookarounds match no text
    text = re.sub(r"\\s\*", "", text)
    text = re.sub(r"\([^)]*\)", lambda _: next(values), text)
    return text.replace("\\", "")


def render_reset(reset_at: float, unit: str, now: float) -> str:
    """The reset time as the provider writes it (rounded up, so waiting for it is always enough)."""
    delta = max(0.0, reset_at - now)
    if unit in ("epoch_seconds", "auto"):
        return str(math.ceil(reset_at))
    if unit == "epoch_ms":
        return str(math.ceil(reset_at * 1000))
    if unit == "seconds":
        return str(math.ceil(delta))
    if unit == "milliseconds":
        return str(math.ceil(delta * 1000))
    if unit == "duration":
        return f"{math.ceil(delta * 1000)}ms" if delta < 1 else f"{delta:.3f}s"
    return datetime.fromtimestamp(math.ceil(reset_at), UTC).isoformat().replace("+00:00", "Z")
