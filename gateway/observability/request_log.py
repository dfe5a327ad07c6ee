"""The ``request`` log line, written from a template instead of through structlog's processor chain.

Every request writes this line, so its cost is paid per call: through the chain (a copy of every
context variable, level, timestamp, a redaction pass over a fresh dict, ``json.dumps`` building a new
encoder) it was ~30 µs, a tenth of a proxied call's CPU. Its keys are fixed, so the JSON object is
assembled directly, with the same keys in the same order as the chain renders them.

The redaction guarantee is unchanged: every string value that can come from outside (method,
client-sent request id, names) still passes through ``redact_text``, whose memo makes the repeated
ones a dict hit; only the gateway's own constants (event, level, timestamp) and request ids it
generated itself skip it, as the chain's ``_GENERATED`` fields do. None of the keys is secret-named.

The parts of the line that repeat from call to call (route, method and upstream, a handful of
combinations) are rendered and redacted once and kept per template (``_Template.rendered``, bounded),
for the standard methods only (the metrics' label set): a client can send any made-up method, and
those would fill the places the next ones need; their lines are rendered in full every time.
``register_secret`` empties them with the redaction memo, so a secret registered later is masked in
them too.

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

from gateway.observability.metrics import METHODS

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class _Template:
    processors: tuple[Any, ...]  # the chain ``configure_logging`` installed: still the active one?
    factory: Any  # and the logger factory it installed (a test may send lines elsewhere)
    enabled: bool  # info passes the configured level
    tail: str  # ``,"worker":N`` (or nothing) then ``,"level":"info","timestamp":``
    redact: Callable[[str], str]
    write: Callable[[str], None]
    # (route, method, upstream) -> the line's text before the status and between duration and wait.
    rendered: dict[tuple[str, str, str | None], tuple[str, str]]


_RENDERED = 256  # combinations kept per template (routes x standard methods x upstreams); past that, rendered in full


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
    tail = tagged + ',"level":"info","timestamp":'
    _template = _Template(tuple(processors), factory, enabled, tail, redact, write, {})


def forget_rendered() -> None:
    """Called by ``register_secret``: the kept parts were redacted without the new secret."""
    if _template is not None:
        _template.rendered.clear()


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
    key = (route, method, upstream)
    parts = template.rendered.get(key)
    if parts is None:
        parts = _parts(template, route, method, upstream)
        if method in METHODS and len(template.rendered) < _RENDERED:
            template.rendered[key] = parts
    head, middle = parts
    rid = request_id if generated_id else template.redact(request_id)
    template.write(
        f'{head}{status:d},"duration_ms":{duration_ms!r}{middle}'
        f"{'null' if pacing_wait_ms is None else repr(pacing_wait_ms)},"
        f'"event":"request","request_id":{encode_basestring_ascii(rid)}{template.tail}"{_timestamp()}"}}'
    )


def _parts(template: _Template, route: str, method: str, upstream: str | None) -> tuple[str, str]:
    """The line's text up to the status, and from the duration to the pacing wait, redacted."""
    redact = template.redact
    route_text, method_text = encode_basestring_ascii(redact(route)), encode_basestring_ascii(redact(method))
    upstream_text = "null" if upstream is None else encode_basestring_ascii(redact(upstream))
    return f'{{"route":{route_text},"method":{method_text},"status":', f',"upstream":{upstream_text},"pacing_wait_ms":'


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
