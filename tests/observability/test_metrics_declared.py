"""Every metric of SPEC.md's table is declared with exactly its labels, and the dashboard shows it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.observability.metrics import Metrics

SPEC_METRICS = {
    "gateway_http_requests_total": ("counter", {"route", "method", "status"}),
    "gateway_http_request_duration_seconds": ("histogram", {"route"}),
    "gateway_upstream_requests_total": ("counter", {"provider", "status"}),
    "gateway_upstream_request_duration_seconds": ("histogram", {"provider"}),
    "gateway_pacing_wait_seconds": ("histogram", {"provider", "priority"}),
    "gateway_pacing_queue_depth": ("gauge", {"provider", "priority"}),
    "gateway_pacing_rejections_total": ("counter", {"provider"}),
    "gateway_upstream_throttled_total": ("counter", {"provider"}),
    "gateway_mutations_total": ("counter", {"kind", "provider", "outcome"}),
    "gateway_mutation_records_total": ("counter", {"kind", "provider"}),
    "gateway_consumer_await_seconds": ("histogram", set()),
    "gateway_consumer_pending_events": ("gauge", {"consumer"}),
    "gateway_oauth_refreshes_total": ("counter", {"provider", "outcome"}),
}
DASHBOARD = Path(__file__).resolve().parents[2] / "grafana" / "gateway.json"


@pytest.mark.parametrize("name", sorted(SPEC_METRICS))
def test_metric_is_declared_with_the_spec_labels(name: str) -> None:
    """The metric exists with the spec's type and exactly the spec's label names."""
    kind, labels = SPEC_METRICS[name]
    metrics = Metrics()
    family = name.removesuffix("_total") if kind == "counter" else name
    collectors = {m.name: m for m in metrics.registry.collect()}
    assert family in collectors, name
    assert collectors[family].type == kind
    declared = next(c for c in metrics.registry._collector_to_names if name in metrics.registry._collector_to_names[c])
    assert set(declared._labelnames) == labels  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(SPEC_METRICS))
def test_dashboard_charts_every_metric(name: str) -> None:
    """grafana/gateway.json has a panel query for each metric of the spec."""
    exprs = " ".join(t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"])
    assert name.removesuffix("_total") in exprs
