"""Every metric of SPEC.md's table, declared once, in a registry owned by one app.

Each app gets its own ``CollectorRegistry`` so that several gateways in one test process never mix
their counts. Labels come from bounded sets only: route names, HTTP methods, status codes, provider
names, mutation kinds and outcomes, consumer ids (operator-created objects, not request data).
Credential ids appear as a label only when ``metrics.per_credential`` is on.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

ROUTES = ("proxy_sync", "proxy_credential", "mutations", "consumers", "management", "other")
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_WAIT = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60)


def method_label(method: str) -> str:
    """Arbitrary methods would make unbounded series; everything unusual is ``OTHER``."""
    return method if method in METHODS else "OTHER"


class Metrics:
    def __init__(self, *, per_credential: bool = False) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.per_credential = per_credential
        r = self.registry
        self.http_requests = Counter(
            "gateway_http_requests_total", "Requests served by the gateway", ["route", "method", "status"], registry=r
        )
        self.http_duration = Histogram(
            "gateway_http_request_duration_seconds", "Time to serve a request", ["route"], buckets=_LATENCY, registry=r
        )
        self.upstream_requests = Counter(
            "gateway_upstream_requests_total", "Calls made to upstreams", ["provider", "status"], registry=r
        )
        self.upstream_duration = Histogram(
            "gateway_upstream_request_duration_seconds",
            "Upstream time to response headers",
            ["provider"],
            buckets=_LATENCY,
            registry=r,
        )
        self.pacing_wait = Histogram(
            "gateway_pacing_wait_seconds",
            "Time calls waited in the pacer",
            ["provider", "priority"],
            buckets=_WAIT,
            registry=r,
        )
        # ``multiprocess_mode`` only matters under a supervisor (``server.workers`` > 1, prometheus_client's
        # multiprocess mode); one process ignores it. Each worker queues its own calls: the depth is the sum
        # over the workers alive.
        self.pacing_queue_depth = Gauge(
            "gateway_pacing_queue_depth",
            "Calls waiting in the pacer",
            ["provider", "priority"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.pacing_rejections = Counter(
            "gateway_pacing_rejections_total",
            "Calls refused because the wait exceeded max_wait",
            ["provider"],
            registry=r,
        )
        self.upstream_throttled = Counter(
            "gateway_upstream_throttled_total", "Upstream 429/503 answers seen", ["provider"], registry=r
        )
        self.mutations = Counter(
            "gateway_mutations_total", "Mutation requests", ["kind", "provider", "outcome"], registry=r
        )
        self.mutation_records = Counter(
            "gateway_mutation_records_total", "Records written by mutations", ["kind", "provider"], registry=r
        )
        self.consumer_await = Histogram(
            "gateway_consumer_await_seconds", "Time mutations waited for consumers", buckets=_WAIT, registry=r
        )
        # Every worker sets this from the same store count (its periodic refresh of all consumers, and
        # after acks it served), whichever worker owns the consumer's lease now: the value set last is
        # the freshest count; a sum would multiply it by the number of workers.
        self.consumer_pending = Gauge(
            "gateway_consumer_pending_events",
            "Events not yet acknowledged",
            ["consumer"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.oauth_refreshes = Counter(
            "gateway_oauth_refreshes_total", "OAuth2 token refreshes", ["provider", "outcome"], registry=r
        )
        self.pacing_backend_fallbacks = Counter(
            "gateway_pacing_backend_fallbacks_total", "Times the shared pacing backend failed over to local", registry=r
        )
        self.sync_events = Counter(
            "gateway_sync_events_total",
            "Events syncs appended from upstream changes",
            ["provider", "action"],
            registry=r,
        )
        self.sync_polls = Counter(
            "gateway_sync_polls_total", "Upstream pages syncs read", ["provider", "outcome"], registry=r
        )
        # Per sync only with per_credential (sync ids are operator-made but unbounded); else the largest lag.
        self.sync_lag = Gauge(
            "gateway_sync_lag_seconds",
            "Seconds since a sync last had read every upstream change",
            ["sync"] if per_credential else [],
            registry=r,
            multiprocess_mode="livemax",
        )
        if per_credential:
            self.credential_upstream_requests = Counter(
                "gateway_credential_upstream_requests_total",
                "Upstream calls per credential (opt-in)",
                ["credential", "status"],
                registry=r,
            )
