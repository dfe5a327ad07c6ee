"""structlog set up once: JSON lines in production, console on a TTY, secrets always redacted.

Redaction runs last before rendering, on every event: values of secret-looking keys are replaced,
bearer/basic credentials and secret query parameters inside any string are masked, and values
registered at runtime with ``register_secret`` (today: the token the demo mints) are scrubbed wherever
they appear. Decrypted credentials are not registered: OAuth2 refreshes would grow the set without
bound; they never reach a log call, and the patterns above catch them in headers and URLs.
Nothing here can be turned off by configuration.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import structlog

from gateway.lru import LRU
from gateway.observability.request_log import forget_rendered, use_template

MASK = "***"
_SECRET_KEYS = re.compile(
    r"(authorization|cookie|token|secret|password|passwd|api[_-]?key|dsn|credential_value|private)",
    re.IGNORECASE,
)
_IN_TEXT = [
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 " + MASK),
    (re.compile(r"(?i)([?&](?:[a-z_]*(?:key|token|secret|signature|password|sig)[a-z_]*)=)[^&\s\"']+"), r"\1" + MASK),
    (re.compile(r"(?i)(://[^:/@\s]+:)[^@\s]+@"), r"\1" + MASK + "@"),
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=]+"), "whsec_" + MASK),
    (re.compile(r"\bgw_[A-Za-z0-9_-]{20,}"), "gw_" + MASK),
]
# The union of the patterns above: one search tells whether any substitution could change the text,
# so ordinary strings (most of every line) cost one scan instead of five.
_ANY_IN_TEXT = re.compile(
    "|".join(f"(?i:{p.pattern[4:]})" if p.pattern.startswith("(?i)") else f"(?:{p.pattern})" for p, _ in _IN_TEXT)
)
_MIN_SECRET = 8
_known_secrets: set[str] = set()
_known_pattern: re.Pattern[str] | None = None
# Short strings seen before (route names, methods, providers, event names) are redacted once: every
# request line repeats them. Emptied when a secret is registered; the least recently used go first.
_MEMO_TEXT = 64
_MEMO_SIZE = 4096
_memo: LRU[str, str] = LRU(_MEMO_SIZE)
# Set by our own processors (``add_log_level``, ``TimeStamper``) right before redaction, over anything
# a caller passed under the same names: level names and ISO timestamps, nothing to redact.
_GENERATED = frozenset({"level", "timestamp"})


def register_secret(value: str) -> None:
    """Scrub this exact value from every future log line (ignored when too short to be safe)."""
    global _known_pattern
    if len(value) >= _MIN_SECRET and value not in _known_secrets:
        _known_secrets.add(value)
        # Longest first, so a secret that contains another is masked whole, not around the inner one.
        ordered = sorted(_known_secrets, key=len, reverse=True)
        _known_pattern = re.compile("|".join(re.escape(v) for v in ordered))
        _memo.clear()
        forget_rendered()


def redact_text(text: str) -> str:
    hit = _memo.get(text)
    if hit is not None:
        return hit
    redacted = _redact_text(text)
    if len(text) <= _MEMO_TEXT:
        _memo.put(text, redacted)
    return redacted


def _redact_text(text: str) -> str:
    if _ANY_IN_TEXT.search(text):
        for pattern, replacement in _IN_TEXT:
            text = pattern.sub(replacement, text)
    if _known_pattern is not None and len(text) >= _MIN_SECRET:
        text = _known_pattern.sub(MASK, text)
    return text


@functools.lru_cache(maxsize=4096)
def _secret_key(key: str) -> bool:
    """Whether a field named ``key`` holds a secret (ids that merely name one, ``*_id``, do not)."""
    return bool(key) and _SECRET_KEYS.search(key) is not None and not key.endswith("_id")


def _redact(value: Any, key: str = "") -> Any:
    if value is None or isinstance(value, (int, float)):  # bool is an int: nothing to hide in numbers
        return MASK if key and value is not None and _secret_key(key) else value
    if key and _secret_key(key) and value not in ("", MASK):
        return MASK
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact(v) for v in value]
    return value


def redact_processor(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """structlog processor: the redaction every log line passes through."""
    return {k: v if k in _GENERATED else _redact(v, k if k != "event" else "") for k, v in event_dict.items()}


class _StderrLogger:
    """Writes each rendered line to ``sys.stderr`` as it is at that moment (tests and daemons replace
    it), the newline joined to the line: one ``write`` call per line, where ``print`` made two."""

    def msg(self, message: str) -> None:
        stream = sys.stderr
        stream.write(message + "\n")
        stream.flush()

    debug = info = warning = warn = error = err = critical = exception = fatal = log = msg


def _stderr_logger(*_args: Any) -> _StderrLogger:
    return _STDERR


_STDERR = _StderrLogger()


def _static_field(key: str, value: Any) -> Any:
    def add(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
        event_dict[key] = value
        return event_dict

    return add


def configure_logging(
    *, format: Literal["auto", "json", "console"] = "auto", level: str = "info", worker: int | None = None
) -> None:
    """``worker``: this process's index under a supervisor, on every line so workers' logs can be told apart."""
    as_json = format == "json" or (format == "auto" and not sys.stderr.isatty())
    renderer: Any = structlog.dev.ConsoleRenderer()
    if as_json:
        renderer = structlog.processors.JSONRenderer(separators=(",", ":"))
    tagged = [] if worker is None else [_static_field("worker", worker)]
    stamped = [*tagged, structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True)]
    rendered = [structlog.processors.format_exc_info, redact_processor, renderer]
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    processors = [structlog.contextvars.merge_contextvars, *stamped, *rendered]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    # The request line's template writes what this chain would, without it (request_log.py).
    enabled = numeric_level <= logging.INFO
    use_template(
        processors if as_json else None,
        enabled=enabled,
        worker=worker,
        redact=redact_text,
        write=_STDERR.msg,
        factory=_stderr_logger,
    )
    _route_standard_logging(stamped, rendered, numeric_level)


class _StandardLoggingHandler(logging.Handler):
    """Writes standard-library records, formatted like our own lines, through ``_STDERR``."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _STDERR.msg(self.format(record))
        except Exception:
            self.handleError(record)


def _route_standard_logging(stamped: list[Any], rendered: list[Any], level: int) -> None:
    """Libraries (aiohttp, asyncio, SQLAlchemy) and Python warnings log through the standard library:
    their lines get the same shape and the same redaction as ours, exceptions included, instead of
    the last-resort handler's bare text and tracebacks (which would print whatever they quote)."""
    handler = _StandardLoggingHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *stamped],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *rendered],
        )
    )
    root = logging.getLogger()
    for previous in [h for h in root.handlers if isinstance(h, _StandardLoggingHandler)]:
        root.removeHandler(previous)
    root.addHandler(handler)
    root.setLevel(max(level, logging.INFO))  # libraries' debug records (aiosqlite: every query) are noise
    logging.captureWarnings(True)
