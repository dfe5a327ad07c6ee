"""Keys and processes changed under steady load: shared by tests/ops and bench/chaos.py.

A deployment whose encryption keys live in a file (``gateway reload`` re-reads it), calls at ``RATE``/s
over a bearer, a basic and an OAuth2 credential to a loopback upstream that checks the secret it
receives, and a ``Drill`` whose rounds are the documented zero-error procedure run against a
supervisor with two workers: prepend a new key + reload, an OAuth2 refresh (sealed under the new
key), ``gateway keys rotate``, a rolling restart (``gateway restart``, SIGUSR2), drop the old key +
reload. A reload that drops a key some secret is still sealed with is refused, so an accepted last
reload also proves the rotation re-sealed everything.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from gateway.sandbox import run_sandbox
from gateway.sandbox.generic import GenericState, create_generic_app
from gateway.vault.crypto import generate_key
from tests.ops.process import START_DEADLINE, Deployment, GatewayProcess, start_gateway
from tests.support import poll
from tests.upstream.helpers import Upstream

RATE = 50  # proxied calls per second during the changes
CALL_TIMEOUT = 60.0  # seconds; a call still unanswered then is a failure (and cannot pile up for ever)
WORKERS = 2
SHUTDOWN_TIMEOUT = 15.0
ROTATE_DEADLINE = 120.0  # seconds for the heartbeats to show the new key, each try a CLI process on a busy machine
RESTART_DEADLINE = 2 * START_DEADLINE  # two successors start, one after the other
PATHS = ("cred-bearer/echo/a", "cred-basic/echo/b", "cred-oauth/protected/c")
EXPECTED = {  # the Authorization the echo upstream must receive; /protected answers 401 to any other token
    "cred-bearer": "Bearer upstream-bearer",
    "cred-basic": "Basic " + base64.b64encode(b"user:upstream-password").decode(),
}


async def run_cli(deployment: Deployment, *args: str) -> tuple[int, str]:
    """A ``gateway`` verb against the deployment's config: exit code and stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args, "--config", str(deployment.config),
        env=deployment.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


def keyed_deployment(tmp_path: Path, keys: list[str], **sections: Any) -> tuple[Deployment, Path]:
    """A deployment whose keys live in a file (re-read on reload), with a pid file for ``gateway reload``;
    ``sections`` override the SQLite store and add to ``server``."""
    key_file = tmp_path / "keys"
    key_file.write_text("\n".join(keys) + "\n", encoding="utf-8")
    base = {
        "store": {"url": f"sqlite:///{tmp_path / 'gateway.db'}"},
        "encryption": {"keys_file": str(key_file)},
        "log": {"format": "json"},
        **sections,
        "server": {"pid_file": str(tmp_path / "gateway.pid"), **sections.get("server", {})},
    }
    deployment = Deployment.create(tmp_path, base)
    deployment.env.pop("GATEWAY_ENCRYPTION__KEYS")
    return deployment, key_file


@dataclass(frozen=True)
class Call:
    started: float  # time.monotonic() when it was sent
    seconds: float
    outcome: int | str  # the HTTP status, or the class of the client error


@dataclass
class Load:
    """Calls started every 1/``RATE`` s, whatever the previous ones are doing (a steady rate, as clients
    send it), round-robin over the three credentials; what each one got back. A call unanswered after
    ``CALL_TIMEOUT`` s counts as failed."""

    gateway: GatewayProcess
    token: str
    upstream: Upstream
    calls: list[Call] = field(default_factory=list)
    wrong_secrets: int = 0

    @property
    def statuses(self) -> list[int | str]:
        return [call.outcome for call in self.calls]

    def failed(self) -> list[Call]:
        return [call for call in self.calls if call.outcome != 200]

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        in_flight: set[asyncio.Task[None]] = set()
        timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
            due = loop.time()
            for n in range(sys.maxsize):
                if stop.is_set():
                    break
                task = asyncio.create_task(self._call(session, PATHS[n % len(PATHS)]))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                due += 1 / RATE
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.0, due - loop.time()))  # the pace of the load
            await asyncio.gather(*in_flight)

    async def _call(self, session: aiohttp.ClientSession, path: str) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        started = time.monotonic()
        outcome: int | str
        try:
            async with session.get(f"{self.gateway.url}/v1/proxy/credential/{path}", headers=headers) as resp:
                outcome = resp.status
                echoed = await resp.json() if resp.status == 200 else {}
        except (aiohttp.ClientError, TimeoutError) as exc:
            outcome = type(exc).__name__
        else:
            expected = EXPECTED.get(path.split("/", 1)[0])
            if expected is not None and echoed and echoed["headers"]["authorization"] != [expected]:
                self.wrong_secrets += 1
        self.calls.append(Call(started, time.monotonic() - started, outcome))

    async def more(self, count: int, what: str) -> None:
        """Wait until ``count`` more calls have been answered."""
        settled = len(self.calls)
        await poll(what, lambda: len(self.calls) >= settled + count, deadline=120)


@contextlib.asynccontextmanager
async def loaded(load: Load) -> AsyncIterator[Load]:
    stop = asyncio.Event()
    task = asyncio.create_task(load.run(stop))
    try:
        yield load
    finally:
        stop.set()
        await task


async def add_credentials(gateway: GatewayProcess, admin: str, upstream: Upstream) -> None:
    auths = {
        "cred-bearer": {"type": "bearer", "token": "upstream-bearer"},
        "cred-basic": {"type": "basic", "username": "user", "password": "upstream-password"},
        "cred-oauth": {
            "type": "oauth2",
            "access_token": "token-0",
            "refresh_token": upstream.state.refresh_token,
            "token_url": f"{upstream.url}/oauth/token",
            "client_id": upstream.state.client_id,
            "client_secret": upstream.state.client_secret,
        },
    }
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {admin}"}) as session:
        for cid, auth in auths.items():
            body = {"id": cid, "provider": "rest", "base_url": upstream.url, "auth": auth,
                    "rate_limit": {"rate": 1000, "burst": 1000}}  # fmt: skip
            async with session.post(f"{gateway.url}/v1/credentials", json=body) as resp:
                assert resp.status == 201, await resp.text()


def logged(gateway: GatewayProcess, event: str) -> int:
    """How many JSON log lines of the process (a supervisor: and its workers) carry ``event``."""
    return gateway.output().count(f'"event":"{event}"')


async def reloaded(gateway: GatewayProcess, deployment: Deployment, event: str, times: int) -> None:
    """``gateway reload --pid`` (works with a broken config too), then wait for ``event`` in the log."""
    code, err = await run_cli(deployment, "reload", "--pid", str(gateway.proc.pid))
    assert code == 0, err
    await poll(f"{event} #{times} in the log", lambda: logged(gateway, event) >= times, deadline=30)


@dataclass
class Drill:
    """Rounds of key changes and rolling restarts against a supervisor and its ``WORKERS`` workers."""

    deployment: Deployment
    key_file: Path
    gateway: GatewayProcess
    upstream: Upstream
    load: Load
    keys: list[str]  # the key file's content, newest first
    restarts: list[tuple[float, float]] = field(default_factory=list)  # monotonic windows of rolling restarts
    rounds: int = 0

    async def round(self) -> None:
        """Prepend + reload, an OAuth2 refresh, rotate, rolling restart, drop the old key + reload."""
        self.rounds += 1
        new, old = generate_key(f"k{self.rounds + 1}"), self.keys[0]
        await self._reload([new, old])
        refreshes = self.upstream.state.refreshes
        self.upstream.state.valid_token = f"revoked-{self.rounds}"  # the next OAuth2 call gets a 401 and refreshes
        await poll("an OAuth2 refresh after the reload", lambda: self.upstream.state.refreshes > refreshes, 60)

        refusal = ""

        async def rotated() -> bool:  # refused until every worker's heartbeat shows the new key (<= 5 s)
            nonlocal refusal
            code, refusal = await run_cli(self.deployment, "keys", "rotate")
            return code == 0

        try:
            await poll("keys rotate accepted", rotated, deadline=ROTATE_DEADLINE)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its last answer: {refusal[-2000:]}") from None
        await self._restart()
        await self._reload([new])  # refused if any secret were still sealed with the old key
        await self.load.more(RATE, "calls after the round")

    async def _reload(self, keys: list[str]) -> None:
        """Write the key file, ``gateway reload`` (through the pid file): every worker must apply it."""
        before, refused = logged(self.gateway, "reloaded"), logged(self.gateway, "reload_refused")
        self.key_file.write_text("\n".join(keys) + "\n", encoding="utf-8")
        code, err = await run_cli(self.deployment, "reload")
        assert code == 0, err

        def answered() -> bool:
            answers = logged(self.gateway, "reloaded") + logged(self.gateway, "reload_refused")
            return answers >= before + refused + WORKERS

        await poll("every worker's answer to the reload", answered, deadline=30)
        assert logged(self.gateway, "reload_refused") == refused, self.gateway.output()[-3000:]
        self.keys = keys

    async def _restart(self) -> None:
        """``gateway restart``: successors start and turn ready before their predecessors drain."""
        done = logged(self.gateway, "restarted")
        started = time.monotonic()
        code, err = await run_cli(self.deployment, "restart")
        assert code == 0, err
        await poll("the rolling restart", lambda: logged(self.gateway, "restarted") > done, RESTART_DEADLINE)
        self.restarts.append((started, time.monotonic()))

    def during_restarts(self) -> list[Call]:
        return [c for c in self.load.calls if any(start <= c.started <= end for start, end in self.restarts)]


@contextlib.asynccontextmanager
async def drill(tmp_path: Path, *, store_url: str, redis_url: str, redis_prefix: str) -> AsyncIterator[Drill]:
    """A supervisor with two workers on PostgreSQL (``store_url``) and Redis pacing, keys in a file,
    three credentials to a loopback upstream, and the load running."""
    state = GenericState()
    first = generate_key("k1")
    async with run_sandbox(create_generic_app(state)) as url:
        upstream = Upstream(url, state)
        deployment, key_file = keyed_deployment(
            tmp_path,
            [first],
            server={"workers": WORKERS, "shutdown_timeout": SHUTDOWN_TIMEOUT},
            store={"url": store_url},
            pacing={"backend": "redis", "redis_url": redis_url, "key_prefix": redis_prefix},
        )
        await deployment.cli("migrate")
        admin = await deployment.cli("tokens", "create", "--name", "drill", "--scope", "admin")
        async with start_gateway(deployment, tmp_path, grace=SHUTDOWN_TIMEOUT + 5) as gateway:
            await add_credentials(gateway, admin, upstream)
            async with loaded(Load(gateway, admin, upstream)) as load:
                await load.more(RATE, "the load running")
                yield Drill(deployment, key_file, gateway, upstream, load, [first])
