"""The request line's template: the chain's JSON, its redaction, and the chain whenever it is not ours."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import structlog
from structlog.testing import capture_logs

from gateway.observability import request_log
from gateway.observability.logs import configure_logging, register_secret
from gateway.observability.request_log import request_line

FIELDS = {
    "route": "proxy_credential",
    "method": "GET",
    "status": 200,
    "duration_ms": 1.25,
    "upstream": "rest",
    "pacing_wait_ms": 0.5,
}


@pytest.fixture
def json_logging() -> Iterator[None]:
    configure_logging(format="json", level="info", worker=3)
    try:
        yield
    finally:
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()


def last_line(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_the_template_writes_the_line_the_chain_writes(json_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    """Same keys, same order, same values as structlog's chain (timestamps aside)."""
    structlog.contextvars.bind_contextvars(request_id="req-1")
    structlog.get_logger("t").info("request", **FIELDS)
    chain = json.loads(last_line(capsys))
    request_line(**FIELDS, request_id="req-1", generated_id=False)  # type: ignore[arg-type]
    template = json.loads(last_line(capsys))
    assert list(template) == list(chain)
    assert {**template, "timestamp": ""} == {**chain, "timestamp": ""}
    assert template["worker"] == 3 and template["timestamp"].endswith("Z")
    request_line(**{**FIELDS, "upstream": None, "pacing_wait_ms": None}, request_id="r", generated_id=True)  # type: ignore[arg-type]
    bare = json.loads(last_line(capsys))
    assert bare["upstream"] is None and bare["pacing_wait_ms"] is None


def test_no_secret_reaches_the_templated_line(json_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    """A client can put a secret where the line quotes it (its request id, its method): it is masked."""
    register_secret("registered-secret-in-id")
    token = "gw_" + "A" * 40
    request_line(**FIELDS, request_id="registered-secret-in-id", generated_id=False)  # type: ignore[arg-type]
    by_id = last_line(capsys)
    request_line(**{**FIELDS, "method": token}, request_id="r", generated_id=False)  # type: ignore[arg-type]
    by_method = last_line(capsys)
    assert "registered-secret-in-id" not in by_id and json.loads(by_id)["request_id"] == "***"
    assert "A" * 40 not in by_method and json.loads(by_method)["method"] == "gw_***"


def test_a_secret_registered_later_is_masked_in_the_parts_the_template_keeps(
    json_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """The route, method and upstream are rendered once per combination: registering a secret drops them."""
    fields = {**FIELDS, "upstream": "upstream-named-like-a-secret"}
    request_line(**fields, request_id="r", generated_id=True)  # type: ignore[arg-type]
    assert json.loads(last_line(capsys))["upstream"] == "upstream-named-like-a-secret"
    register_secret("upstream-named-like-a-secret")
    request_line(**fields, request_id="r", generated_id=True)  # type: ignore[arg-type]
    assert json.loads(last_line(capsys))["upstream"] == "***"


def test_other_configurations_get_the_line_through_the_chain(json_logging: None) -> None:
    """capture_logs (or any reconfiguration) sees the request event as before."""
    with capture_logs() as events:
        request_line(**FIELDS, request_id="r", generated_id=True)  # type: ignore[arg-type]
    assert events == [{"event": "request", "log_level": "info", **FIELDS}]


def test_a_level_above_info_writes_no_request_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(format="json", level="warning")
    try:
        request_line(**FIELDS, request_id="r", generated_id=True)  # type: ignore[arg-type]
    finally:
        structlog.reset_defaults()
    assert capsys.readouterr().err == ""


def test_made_up_methods_do_not_fill_the_kept_parts(json_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    """Anyone can send ``FOO1``: only the standard methods are kept, so 300 made-up ones leave room for a
    GET's parts (they filled all 256 places before), and every line is still the chain's line."""
    lines = []
    for method in [f"FOO{n}" for n in range(300)] + ["GET"]:
        request_line(**{**FIELDS, "method": method}, request_id="r", generated_id=False)  # type: ignore[arg-type]
        lines.append(json.loads(last_line(capsys)))
    assert request_log._template is not None
    assert list(request_log._template.rendered) == [("proxy_credential", "GET", "rest")]
    structlog.contextvars.bind_contextvars(request_id="r")
    for line in (lines[-2], lines[-1]):
        structlog.get_logger("t").info("request", **{**FIELDS, "method": line["method"]})
        assert {**line, "timestamp": ""} == {**json.loads(last_line(capsys)), "timestamp": ""}
