"""``server.workers = 2``: one real ``gateway serve`` supervisor, two worker processes on one port.

The workers share the port (both serve), their metrics add up on the supervisor's listener, the
pacing bound holds for their sum, SIGTERM drains them all, and a killed worker comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from gateway.pacing.bucket import worst_excess
from gateway.sandbox import run_sandbox
from gateway.sandbox.generic import GenericState, create_generic_app
from tests.ops.process import START_DEADLINE, Deployment, GatewayProcess, start_gateway
from tests.ops.test_replicas import JITTER, counting_app
from tests.support import poll

FAST = {"rate": 100000, "per": 1, "burst": 100000}
PACED = {"rate": 5, "per": 1, "burst": 1, "max_wait": 30}
SHUTDOWN_TIMEOUT = 15.0
MARGIN = 5.0  # seconds of teardown beyond shutdown_timeout for a supervisor and its workers on a busy machine
IN_FLIGHT = 6  # seconds the upstream holds the calls a drain waits for: /readyz must turn 503 meanwhile


@dataclass
class Workers:
    """A supervisor with two workers in front of the generic upstream (``fast``) and a counting one (``paced``)."""

    gateway: GatewayProcess
    session: aiohttp.ClientSession
    token: str
    upstream: GenericState
    arrivals: list[float]

    async def get(self, path: str) -> int:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.session.get(self.gateway.url + path, headers=headers) as resp:
            await resp.read()
            return resp.status

    async def fire(self, path: str, count: int) -> list[int]:
        return list(await asyncio.gather(*(self.get(path) for _ in range(count))))

    async def ready_status(self) -> int:
        async with self.session.get(f"{self.gateway.ops_url}/readyz") as resp:
            return resp.status

    async def samples(self) -> list[Sample]:
        """Every sample of the supervisor's /metrics."""
        async with self.session.get(f"{self.gateway.ops_url}/metrics") as resp:
            text = await resp.text()
        return [sample for family in text_string_to_metric_families(text) for sample in family.samples]

    async def served(self) -> float:
        """``gateway_http_requests_total`` of the proxy route with 200, on the supervisor's /metrics."""
        labels = {"route": "proxy_credential", "method": "GET", "status": "200"}
        counted = [s for s in await self.samples() if s.name == "gateway_http_requests_total" and s.labels == labels]
        return sum(s.value for s in counted)

    def lines(self, event: str) -> list[dict[str, Any]]:
        """The JSON log lines of the supervisor and its workers with this ``event``, in order."""
        parsed = (json.loads(line) for line in self.gateway.output().splitlines() if line.startswith("{"))
        return [line for line in parsed if line.get("event") == event]

    def request_workers(self) -> list[int]:
        """The ``worker`` of every proxied request's log line, in order."""
        return [line["worker"] for line in self.lines("request") if line.get("route") == "proxy_credential"]


@pytest.fixture
async def workers(tmp_path: Path, pg_url: str, redis_url: str, redis_prefix: str) -> AsyncIterator[Workers]:
    state, arrivals = GenericState(), list[float]()
    async with run_sandbox(create_generic_app(state)) as generic, run_sandbox(counting_app(arrivals)) as counting:
        auth = {"type": "bearer", "token": "upstream-secret-token"}
        credentials = [  # declared, so the supervisor upserts them once before the workers start
            {"id": "fast", "provider": "rest", "base_url": generic, "auth": auth, "rate_limit": FAST},
            {"id": "paced", "provider": "rest", "base_url": counting, "auth": auth, "rate_limit": PACED},
        ]
        sections = {
            "server": {"workers": 2, "shutdown_timeout": SHUTDOWN_TIMEOUT},
            "store": {"url": pg_url},
            "pacing": {"backend": "redis", "redis_url": redis_url, "key_prefix": redis_prefix},
            "log": {"format": "json"},
            "credentials": credentials,
            "consumers": [{"id": "reader", "kind": "pull"}],
        }
        deployment = Deployment.create(tmp_path, sections)
        token = await deployment.cli("tokens", "create", "--name", "workers", "--scope", "proxy")
        async with (
            start_gateway(deployment, tmp_path, grace=SHUTDOWN_TIMEOUT + MARGIN) as gateway,
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session,
        ):
            yield Workers(gateway, session, token, state, arrivals)


async def test_two_workers_share_the_port_the_metrics_and_the_pacing_bound(workers: Workers) -> None:
    """Both workers serve; the supervisor's /metrics counts every request; 5/s holds for both together."""
    assert await workers.fire("/v1/proxy/credential/fast/echo/x", 200) == [200] * 200
    assert await workers.fire("/v1/proxy/credential/paced/hit", 11) == [200] * 11
    await poll("every request is counted in the aggregate", lambda: _equals(workers.served(), 211), 10)
    await poll("every request is logged", lambda: len(workers.request_workers()) == 211, 10)
    assert set(workers.request_workers()) == {0, 1}
    assert len(workers.arrivals) == 11
    assert worst_excess(workers.arrivals, rate=5, per=1, burst=1, slack=JITTER) <= 0
    assert max(workers.arrivals) - min(workers.arrivals) >= (11 - 1) / 5 - 2 * JITTER
    samples = await workers.samples()
    assert not [s for s in samples if "pid" in s.labels], "SPEC's labels only: gauges are merged over the workers"
    assert [s.labels for s in samples if s.name == "gateway_pacing_queue_depth"] == [
        {"provider": "rest", "priority": "normal"}
    ]
    assert [(s.labels, s.value) for s in samples if s.name == "gateway_consumer_pending_events"] == [
        ({"consumer": "reader"}, 0)
    ]


async def test_sigterm_drains_every_worker_and_exits_zero(workers: Workers) -> None:
    """/readyz is 200 once started, 503 as soon as the drain begins; in-flight slow requests all finish."""
    assert await workers.ready_status() == 200
    calls = [asyncio.create_task(workers.get(f"/v1/proxy/credential/fast/slow?delay={IN_FLIGHT}")) for _ in range(40)]
    await poll("the upstream received every request", lambda: workers.upstream.requests >= 40, 20)
    workers.gateway.proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    await poll("/readyz turns 503", lambda: _equals(workers.ready_status(), 503), IN_FLIGHT)
    assert not all(call.done() for call in calls), "503 must be observed while requests are in flight"
    assert await asyncio.gather(*calls) == [200] * 40
    assert await workers.gateway.wait_exit(SHUTDOWN_TIMEOUT + MARGIN) == 0
    assert time.monotonic() - sent < SHUTDOWN_TIMEOUT + MARGIN
    assert sorted(line["worker"] for line in workers.lines("worker_exited") if line["exit_code"] == 0) == [0, 1]


async def test_a_killed_worker_is_restarted(workers: Workers) -> None:
    """SIGKILL to a worker: it is logged, replaced, /readyz is 200 again, and its counts stay in the sum."""
    assert await workers.fire("/v1/proxy/credential/fast/echo/x", 50) == [200] * 50
    await poll("the first requests are counted", lambda: _equals(workers.served(), 50), 10)
    await poll("the first requests are logged", lambda: len(workers.request_workers()) == 50, 10)
    victim = next(line["pid"] for line in workers.lines("worker_started") if line["worker"] == 0)
    os.kill(victim, signal.SIGKILL)
    await poll("worker 0 is started again", lambda: len(_started(workers, 0)) == 2, START_DEADLINE)
    await poll("/readyz is 200 again", lambda: _equals(workers.ready_status(), 200), START_DEADLINE)
    exited = [line for line in workers.lines("worker_exited") if line["pid"] == victim]
    assert exited and exited[0]["exit_code"] == -signal.SIGKILL and exited[0]["level"] == "warning"
    assert _started(workers, 0)[1] != victim
    assert await workers.fire("/v1/proxy/credential/fast/echo/x", 50) == [200] * 50
    await poll("the killed worker's counts stay in the sum", lambda: _equals(workers.served(), 100), 10)
    await poll("every request is logged", lambda: len(workers.request_workers()) == 100, 10)
    assert 0 in workers.request_workers()[50:], "the new worker 0 serves"


async def test_a_worker_started_after_a_reload_starts_from_the_reloaded_config(workers: Workers) -> None:
    """SIGHUP, then SIGKILL to a worker: its replacement starts from the config the reload applied, not the
    one the supervisor started with. Observed through ``log.level = "warning"``: no request line after it."""
    config = workers.gateway.log_path.parent / "gateway.toml"
    text = config.read_text(encoding="utf-8")
    assert 'log = {format = "json"}' in text
    config.write_text(text.replace('log = {format = "json"}', 'log = {format = "json", level = "warning"}'))
    workers.gateway.proc.send_signal(signal.SIGHUP)
    await poll("the reload is forwarded", lambda: bool(workers.lines("reload_forwarded")), 30)
    victim = _started(workers, 0)[0]
    os.kill(victim, signal.SIGKILL)
    await poll("worker 0 is started again", lambda: len(_started(workers, 0)) == 2, START_DEADLINE)
    await poll("/readyz is 200 again", lambda: _equals(workers.ready_status(), 200), START_DEADLINE)
    served, logged = await workers.served(), len(workers.request_workers())
    assert await workers.fire("/v1/proxy/credential/fast/echo/x", 40) == [200] * 40
    await poll("the calls are counted", lambda: _equals(workers.served(), served + 40), 10)
    assert len(workers.request_workers()) == logged, "the new worker logs at the reloaded level"


def _started(workers: Workers, index: int) -> list[int]:
    return [line["pid"] for line in workers.lines("worker_started") if line["worker"] == index]


async def _equals(value: Any, expected: float) -> bool:
    return bool(await value == expected)


async def _gateway(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_cli_refuses_workers_without_shared_state_and_with_the_demo(tmp_path: Path) -> None:
    """check-config exits 2 naming server.workers when pacing is local; so does serve --demo with workers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env |= {"GATEWAY_SERVER__WORKERS": "2", "GATEWAY_STORE__URL": "postgresql://gateway@127.0.0.1/none"}
    code, err = await _gateway(env, "check-config")
    assert code == 2 and "server.workers" in err and "pacing.backend" in err
    code, err = await _gateway(env | {"GATEWAY_PACING__BACKEND": "redis"}, "serve", "--demo")
    assert code == 2 and "server.workers" in err and "demo" in err


async def test_sigusr2_restarts_every_worker_without_a_failed_call(workers: Workers) -> None:
    """``gateway restart`` (SIGUSR2): successors are ready before predecessors drain; 50 calls/s all answered 200."""
    outcomes: list[int | str] = []
    stop = asyncio.Event()

    async def load() -> None:
        while not stop.is_set():
            try:
                outcomes.append(await workers.get("/v1/proxy/credential/fast/echo/x"))
            except aiohttp.ClientError as exc:
                outcomes.append(type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1 / 50)  # the pace of the load

    running = asyncio.create_task(load())
    slow = [asyncio.create_task(workers.get("/v1/proxy/credential/fast/slow?delay=2")) for _ in range(10)]
    await poll("the slow calls reached the upstream", lambda: workers.upstream.requests >= 10, 20)
    workers.gateway.proc.send_signal(signal.SIGUSR2)
    await poll("both workers replaced", lambda: len(workers.lines("worker_replaced")) == 2, 2 * START_DEADLINE)
    assert [len(_started(workers, i)) for i in (0, 1)] == [2, 2]
    settled = len(outcomes)
    await poll("calls served by the new workers", lambda: len(outcomes) >= settled + 25, 20)
    stop.set()
    await running
    assert await asyncio.gather(*slow) == [200] * 10, "in-flight calls finish on the old workers"
    assert len(outcomes) >= 50 and set(outcomes) == {200}, [o for o in outcomes if o != 200]
    assert await workers.ready_status() == 200


async def test_a_reload_during_a_rolling_restart_reaches_the_successors(workers: Workers) -> None:
    """SIGHUP right after ``restarted``, while the last predecessor still drains slow calls: the successors
    (already serving) apply it too. Observed through ``log.level = "warning"``: no request line after it."""
    workers.gateway.proc.send_signal(signal.SIGUSR2)
    await poll("the last successor spawned", lambda: len(workers.lines("worker_started")) == 4, 2 * START_DEADLINE)
    slow = [asyncio.create_task(workers.get("/v1/proxy/credential/fast/slow?delay=12")) for _ in range(10)]
    await poll("the rolling restart", lambda: bool(workers.lines("restarted")), 2 * START_DEADLINE)
    config = workers.gateway.log_path.parent / "gateway.toml"
    text = config.read_text(encoding="utf-8")
    assert 'log = {format = "json"}' in text
    config.write_text(text.replace('log = {format = "json"}', 'log = {format = "json", level = "warning"}'))
    workers.gateway.proc.send_signal(signal.SIGHUP)
    assert len(workers.lines("worker_replaced")) < 2, "a predecessor still drains when the reload comes"
    assert await asyncio.gather(*slow) == [200] * 10
    await poll("both predecessors replaced", lambda: len(workers.lines("worker_replaced")) == 2, 60)
    served, logged = await workers.served(), len(workers.request_workers())
    assert await workers.fire("/v1/proxy/credential/fast/echo/x", 20) == [200] * 20
    await poll("the calls are counted", lambda: _equals(workers.served(), served + 20), 10)
    assert len(workers.request_workers()) == logged, "every worker logs at warning now"
