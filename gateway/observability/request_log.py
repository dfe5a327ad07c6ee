"""The ``request`` log line, written from a template instead of through structlog's processor chain.

Every request writes this line, so its cost is paid per call: through the chain (a copy of every
context variable, level, timestamp, a redaction pass over a fresh dict, ``json.dumps`` building a new
encoder) it was ~30 µs, a tenth of a proxied call's CPU. Its keys are fixed, so the JSON object is
assembled directly, with the same keys in the same order as the chain renders them.

The redaction guarantee is unchanged: every string value that can come from outside (method,
client-sent request id, names) still passes through ``redact_text``, whose memo makes the repeated
ones a dict hit; only the gateway's own constants (event, level, timestamp) and request ids it
generated itself skip it, as the chain's ``_GENERATED`` fields do. None of the keys is secret-named.

The template is used only while the configuration ``configure_logging`` installed is the active one
with JSON output: the console renderer, ``structlog.testing.capture_logs`` or any other
reconfiguration sends the line through the chain like any other event.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from typing import Any

import structlog

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class _Template:
    processors: tuple[Any, ...]  # the chain ``configure_logging`` installed: still the active one?
    factory: Any  # and the logger factory it installed (a test may send lines elsewhere)
    enabled: bool  # info passes the configured level
    tail: str  # ``,"worker":N`` (or nothing) then ``,"level":"info","timestamp":``
    redact: Callable[[str], str]
    write: Callable[[str], None]


_template: _Template | None = None


def use_template(
    processors: Sequence[Any] | None,
    *,
    enabled: bool = True,
    worker: int | None = None,
    redact: Callable[[str], str] = str,
    write: Callable[[str], None] = print,
    factory: Any = None,
) -> None:
    """Called by ``configure_logging``: the JSON chain it installed (None: no template, e.g. console)."""
    global _template
    if processors is None:
        _template = None
        return
    tagged = "" if worker is None else f',"worker":{worker}'
    _template = _Template(tuple(processors), factory, enabled, tagged + ',"level":"info","timestamp":', redact, write)


def request_line(
    *,
    route: str,
    method: str,
    status: int,
    duration_ms: float,
    upstream: str | None,
    pacing_wait_ms: float | None,
    request_id: str,
    generated_id: bool,
) -> None:
    """Log the request at info; ``generated_id``: the gateway made the id (random hex, nothing to redact)."""
    template, config = _template, structlog.get_config()
    # Compared by content: ``capture_logs`` swaps the processors inside the same list.
    if (
        template is None
        or config["logger_factory"] is not template.factory
        or tuple(config["processors"]) != template.processors
    ):
        log.info(
            "request",
            route=route,
            method=method,
            status=status,
            duration_ms=duration_ms,
            upstream=upstream,
            pacing_wait_ms=pacing_wait_ms,
        )
        return
    if not template.enabled:
        return
    redact = template.redact
    rid = request_id if generated_id else redact(request_id)
    timestamp = _timestamp()
    template.write(
        f'{{"route":{_text(redact(route))},"method":{_text(redact(method))},"status":{status:d},'
        f'"duration_ms":{duration_ms!r},"upstream":{_optional_text(upstream, redact)},'
        f'"pacing_wait_ms":{"null" if pacing_wait_ms is None else repr(pacing_wait_ms)},'
        f'"event":"request","request_id":{_text(rid)}{template.tail}"{timestamp}"}}'
    )


_second = -1
_second_text = ""


def _timestamp() -> str:
    """``TimeStamper(fmt="iso", utc=True)``'s text; the date and time part formatted once a second.

    Always six digits of microseconds (``isoformat`` drops them when they are all zero).
    """
    global _second, _second_text
    now = time.time()
    second = int(now)
    if second != _second:
        _second, _second_text = second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{_second_text}.{int((now - second) * 1_000_000):06d}Z"


def _text(value: str) -> str:
    return encode_basestring_ascii(value)


def _optional_text(value: str | None, redact: Callable[[str], str]) -> str:
    return "null" if value is None else encode_basestring_ascii(redact(value))
