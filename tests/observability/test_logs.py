"""The redaction processor: secrets never survive into a log line, whatever field they hide in."""

from __future__ import annotations

import json
import logging
import warnings

import pytest
import structlog

from gateway.observability import logs
from gateway.observability.logs import configure_logging, redact_processor, redact_text, register_secret


def redact(**event: object) -> dict[str, object]:
    return dict(redact_processor(None, "info", {"event": "e", **event}))


@pytest.mark.parametrize(
    ("field", "value", "secret"),
    [
        ("authorization", "Bearer abc.def.ghi", "abc.def.ghi"),
        ("headers", {"Authorization": "Basic c2tfbGl2ZTo=", "accept": "json"}, "c2tfbGl2ZTo="),
        ("url", "https://api.test/x?api_key=k3y-value&limit=3", "k3y-value"),
        ("message", "failed with Bearer tok_live_123456 at upstream", "tok_live_123456"),
        ("dsn", "postgresql://app:hunter2@db/app", "hunter2"),
        ("detail", "connect to postgresql://app:hunter2@db/app failed", "hunter2"),
        ("secret", "whsec_abcdefABCDEF1234", "whsec_abcdefABCDEF1234"),
        ("note", "token gw_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA minted", "AAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        ("cookie", "session=xyz", "session=xyz"),
    ],
)
def test_secrets_are_masked(field: str, value: object, secret: str) -> None:
    """Secret-named keys, auth schemes, secret query params, DSN passwords and token shapes are masked."""
    assert secret not in json.dumps(redact(**{field: value}))


def test_registered_values_are_scrubbed_anywhere() -> None:
    """A value registered at runtime is removed from any string field."""
    register_secret("very-specific-upstream-secret")
    assert "very-specific-upstream-secret" not in json.dumps(redact(x="got very-specific-upstream-secret back"))


def test_a_value_logged_before_it_is_registered_is_scrubbed_after() -> None:
    """Short strings are redacted once and remembered; registering a secret forgets what was remembered."""
    assert redact(x="late-registered-value")["x"] == "late-registered-value"
    register_secret("late-registered-value")
    assert redact(x="late-registered-value")["x"] == "***"


def test_the_memo_of_redacted_strings_stays_bounded_and_keeps_what_repeats() -> None:
    """100,000 distinct short strings (ids, paths) pass through; the memo keeps at most its size,
    the strings every line repeats stay in it, and a secret among them is still masked."""
    for n in range(100_000):
        assert redact_text(f"/v1/proxy/credential/c{n}") == f"/v1/proxy/credential/c{n}"
        assert redact_text("proxy_credential") == "proxy_credential"
        assert len(logs._memo) <= logs._MEMO_SIZE
    assert logs._memo.peek("proxy_credential") == "proxy_credential"
    assert redact_text("Bearer tok_live_123456") == "Bearer ***"


def test_ids_and_ordinary_fields_survive() -> None:
    """Redaction keeps what operators need: ids, routes, statuses."""
    out = redact(credential_id="credential-abc", route="proxy_sync", status=200, token_name="ops")
    assert out["credential_id"] == "credential-abc" and out["route"] == "proxy_sync" and out["status"] == 200


def test_configured_logger_emits_redacted_json(capsys: pytest.CaptureFixture[str]) -> None:
    """With format=json every line is one JSON object, redacted."""
    configure_logging(format="json", level="info")
    try:
        structlog.get_logger("t").info("upstream_call", authorization="Bearer s3cr3t-token-value")
    finally:
        structlog.reset_defaults()
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert json.loads(line)["event"] == "upstream_call"
    assert "s3cr3t-token-value" not in line


def test_library_logs_and_warnings_are_json_and_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    """aiohttp/asyncio records and Python warnings come out as our JSON lines, exceptions redacted."""
    logging.captureWarnings(False)  # an earlier test's capture points at that test's warning recorder
    configure_logging(format="json", level="info")
    try:
        leak = ValueError("header was Authorization: Bearer lib-s3cr3t-value")
        logging.getLogger("aiohttp.server").error("Error handling request from %s", "10.0.0.1", exc_info=leak)
        with warnings.catch_warnings():
            warnings.simplefilter("default")  # the suite turns warnings into errors
            warnings.warn("dsn postgresql://app:pw-s3cr3t-value@db/x is deprecated", UserWarning, stacklevel=1)
    finally:
        structlog.reset_defaults()
        logging.captureWarnings(False)
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.strip().splitlines()]
    library = next(line for line in lines if line.get("logger") == "aiohttp.server")
    assert library["event"] == "Error handling request from 10.0.0.1" and library["level"] == "error"
    assert "ValueError" in library["exception"]
    assert any(line.get("logger") == "py.warnings" for line in lines)
    assert "lib-s3cr3t-value" not in err and "pw-s3cr3t-value" not in err
