"""Proxy speed and memory on loopback: direct vs. a bare aiohttp proxy vs. the gateway vs. nginx.

    python bench/proxy.py [--quick] [--seconds 5] [--json results.json] [--upstream both|nginx|sandbox]
                          [--workers 2] [--small-only]
    python bench/proxy.py --credentials 10000 [--quick] [--seconds 10] [--json results.json]

``--quick`` (CI): the sandbox upstream only, 1 s per row, no workers row, and 32 MiB transfers
(8 MiB read slowly) instead of 1 GiB: every path runs, the numbers are not for quoting. Any run exits
non-zero when a gateway row at c=50 spends more than ``MAX_CPU_VS_BARE`` times the bare relay's CPU
per request.

Small GETs (64-byte body with a Content-Length) at c=1 and c=50 with wrk (requests/s, p50, p99), one
warm-up second before each row, against two upstreams in turn: nginx serving a fixed body (a fast
upstream: what the proxies themselves cost shows most) and the project's generic sandbox upstream on
aiohttp+uvloop (a Python upstream, as the issue's calibration was measured). Rows per upstream:
``direct``; ``bare aiohttp`` (a ~30-line aiohttp+uvloop relay streaming both ways and dropping
hop-by-hop headers: the baseline of aiohttp's own cost, no auth, pacing, logs or metrics);
``gateway`` (the real ``gateway serve``, default config: SQLite, local pacing, request log at info as
JSON to /dev/null, metrics, token auth); ``gateway xN`` (the
same with ``server.workers = N``, which needs PostgreSQL and Redis: skipped with a message when they
are not reachable); ``nginx`` as a plain reverse proxy (1 worker, upstream keepalive 64).
Every row also has the CPU its serving process tree spent per request (utime+stime from /proc over
the measured run), its CPU and req/s as multiples of the bare relay's, and at c=1 the latency it adds
over the bare relay (p50, p99).
Then 1 GiB uploaded and downloaded through the single-process gateway at full speed, and a download
read slowly, with the gateway process's peak RSS growth.

``--credentials N`` runs the credential-scaling scenario instead (``run_credentials``): one ``gateway
serve`` (default config: SQLite, local pacing), N credentials created through the management API,
each with its own rate limit (so its own bucket), then wrk at c=50 on one of them, on one of them with
N distinct URLs (a random query parameter), and with a Lua script spreading the calls at random over
all N. Rows: req/s, CPU per request (utime+stime of the gateway over the run), p50, and the gateway's
RSS growth per idle credential (after creating them) and per active bucket (after one call to each).
``--quick`` uses N = 1,000 and 2 s rows, and fails when N credentials do less than half the
one-credential throughput (the cliff this scenario guards).

Needs ``wrk`` (``apt-get install wrk``); nginx rows are skipped with a message if ``nginx`` is not
installed. PostgreSQL and Redis for the workers row: ``GATEWAY_TEST_PG`` (an admin DSN; the bench
creates and drops its own database) and ``GATEWAY_TEST_REDIS``, as the tests use.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

# Run as a script, sys.path[0] is bench/; put the repository first so ``gateway`` is the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gateway.vault.crypto import generate_key

PG_ADMIN_DSN = os.environ.get("GATEWAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS", "redis://127.0.0.1:6379/0")
ENCRYPTION_KEY = generate_key("bench")  # one per run: the workers rows of both upstreams share a database
GIB = 1024**3
MIB = 1024**2
SMALL_BODY = "x" * 64
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BARE = "bare aiohttp"
# The guarantee the bench checks (the exit status): gateway CPU per request at c=50 within this multiple of
# the bare relay's. The issue's target is 1.5x; this bound is loose enough for 1 s rows on a busy CI
# machine and still catches a hot path gone slow (a debug log line, a lost cache: 2.4x before issue 19).
MAX_CPU_VS_BARE = 3.0
NGINX_CONF = """
daemon off; master_process on; worker_processes 1; pid {prefix}/{name}.pid; error_log {prefix}/{name}.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off; client_body_temp_path {prefix}/tmp; proxy_temp_path {prefix}/tmp;
  fastcgi_temp_path {prefix}/tmp; uwsgi_temp_path {prefix}/tmp; scgi_temp_path {prefix}/tmp;
  upstream backend {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
  server {{ listen 127.0.0.1:{port};
    {body}
  }}
}}
"""
NGINX_UPSTREAM = 'location / { default_type application/octet-stream; return 200 "' + SMALL_BODY + '"; }'
NGINX_PROXY = (
    "location / { proxy_pass http://backend; proxy_http_version 1.1; "
    'proxy_set_header Connection ""; proxy_buffering off; }'
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def wait_ready(url: str, timeout: float = 30) -> None:
    """Poll a readiness URL until it answers 200 (every worker of a ``gateway serve`` is up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready within {timeout}s")


@contextmanager
def child(args: list[str], port: int, **kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)
    try:
        wait_port(port)
        yield proc
    finally:
        proc.terminate()
        proc.wait(60)  # a graceful drain, which a loaded machine holding 10,000 credentials can stretch past 10 s


@contextmanager
def nginx(workdir: Path, name: str, port: int, upstream_port: int, body: str) -> Iterator[int]:
    """nginx with one worker; yields the master's pid (its worker is a child: both count as its CPU)."""
    (workdir / "tmp").mkdir(exist_ok=True)
    conf = workdir / f"{name}.conf"
    conf.write_text(NGINX_CONF.format(prefix=workdir, name=name, port=port, upstream_port=upstream_port, body=body))
    with child(["nginx", "-c", str(conf), "-p", str(workdir)], port) as proc:
        yield proc.pid


def wrk(
    url: str, connections: int, seconds: int, headers: dict[str, str], script: Path | None = None
) -> dict[str, float]:
    """One wrk run (``script``: a Lua file that builds each request); ``non_2xx`` counts the failures."""
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", *(["-s", str(script)] if script else [])]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    failed = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {
        "rps": rps,
        "requests": requests,
        "non_2xx": int(failed.group(1)) if failed else 0,
        "p50_ms": _latency(out, "50%"),
        "p99_ms": _latency(out, "99%"),
    }


def _latency(out: str, label: str) -> float:
    value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def cpu_seconds(root: int) -> float:
    """utime + stime of ``root`` and every process below it (a supervisor's workers, nginx's worker).

    Read from /proc/<pid>/stat (no psutil): the fields after the command name, whose parentheses may
    hold spaces, are state, ppid, ... utime (12th), stime (13th), in clock ticks.
    """
    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += ticks.get(pid, 0)
        todo += children.get(pid, [])
    return total / CLOCK_TICKS


def rss_kib(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1))  # type: ignore[union-attr]


async def sample_rss(pid: int, peak: list[int]) -> None:
    while True:
        peak[0] = max(peak[0], rss_kib(pid))
        await asyncio.sleep(0.02)


async def _upload_body(total: int) -> AsyncIterator[bytes]:
    block = b"u" * (256 * 1024)
    for _ in range(total // len(block)):
        yield block


async def transfer(kind: str, url: str, token: str, pid: int, *, size: int, slow: bool = False) -> dict[str, float]:
    """One big transfer through the gateway; MiB/s and peak RSS growth of the gateway process."""
    base = rss_kib(pid)
    peak = [base]
    sampler = asyncio.create_task(sample_rss(pid, peak))
    headers = {"Authorization": f"Bearer {token}"}
    started = time.perf_counter()
    moved = 0
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        if kind == "upload":
            async with session.post(f"{url}/upload", data=_upload_body(size), headers=headers) as resp:
                moved = (await resp.json())["received"]
        else:
            async with session.get(f"{url}/bytes/{size}?length=1", headers=headers) as resp:
                async for chunk in resp.content.iter_chunked(256 * 1024):
                    moved += len(chunk)
                    if slow:  # ~64 MiB/s: the gateway must stop reading the upstream, not buffer
                        await asyncio.sleep(len(chunk) / (64 * MIB))
    elapsed = time.perf_counter() - started
    sampler.cancel()
    assert moved == size, f"{kind}: moved {moved} of {size} bytes"
    return {"mib": size / MIB, "mib_per_s": size / MIB / elapsed, "rss_growth_mib": (peak[0] - base) / 1024}


# --- child roles -----------------------------------------------------------------------------------


def serve_upstream(port: int) -> None:
    from aiohttp import web

    from gateway.runtime import install_uvloop
    from gateway.sandbox.generic import create_generic_app

    install_uvloop()
    web.run_app(create_generic_app(), host="127.0.0.1", port=port, access_log=None, print=None)


def serve_bare(port: int, upstream: str) -> None:
    """The issue's baseline: a bare aiohttp+uvloop relay with no auth, pacing, logs or metrics.

    Any method; the request body streamed up and the answer streamed down (``StreamResponse``, the
    upstream's Content-Length kept), hop-by-hop headers dropped both ways, one pooled
    ``ClientSession``: what aiohttp's client and server cost on this machine before any gateway logic.
    """
    from aiohttp import web

    from gateway.runtime import install_uvloop

    install_uvloop()
    hop_by_hop = frozenset(
        {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer"}
        | {"transfer-encoding", "upgrade", "host"}
    )
    session_key = web.AppKey("session", aiohttp.ClientSession)

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        app[session_key] = aiohttp.ClientSession(auto_decompress=False, connector=aiohttp.TCPConnector(limit=1024))
        yield
        await app[session_key].close()

    async def relay(request: web.Request) -> web.StreamResponse:
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in hop_by_hop]
        body = request.content if request.body_exists else None
        url = upstream + request.rel_url.raw_path_qs
        session = request.app[session_key]
        async with session.request(request.method, url, headers=headers, data=body, allow_redirects=False) as up:
            answer = [(k, v) for k, v in up.headers.items() if k.lower() not in hop_by_hop]
            response = web.StreamResponse(status=up.status, headers=answer)
            await response.prepare(request)
            async for chunk in up.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", relay)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


@dataclass
class Gateway:
    """A running ``gateway serve`` (its process, the API token, the base URL of the bench credential)."""

    proc: subprocess.Popen[bytes]
    token: str
    url: str


def gateway_config(workdir: Path, port: int, ops_port: int, upstream: str, *, workers: int, store_url: str) -> Path:
    """A TOML config as a user writes it: one credential to ``upstream``, pacing out of the way."""
    shared = workers > 1
    config = workdir / f"gateway-{port}.toml"
    config.write_text(
        f"""
[server]
port = {port}
{f"workers = {workers}" if shared else ""}
[metrics]
port = {ops_port}
[store]
url = "{store_url}"
[pacing]
backend = "{"redis" if shared else "local"}"
redis_url = "{REDIS_URL}"
key_prefix = "bench-{port}"
[log]
format = "json"
level = "info"
[[credentials]]
id = "bench"
provider = "rest"
base_url = "{upstream}"
auth = {{ type = "bearer", token = "upstream-token" }}
rate_limit = {{ rate = 1000000, per = 1, burst = 1000000 }}
timeouts = {{ total = 0 }}
"""
    )
    return config


@contextmanager
def gateway(
    workdir: Path, upstream: str, *, workers: int = 1, store_url: str | None = None, scope: str = "proxy"
) -> Iterator[Gateway]:
    """``gateway migrate``, ``gateway tokens create`` and ``gateway serve``, as the README has them."""
    port, ops_port = free_port(), free_port()
    store_url = store_url or f"sqlite:///{workdir / f'gateway-{port}.db'}"
    config = gateway_config(workdir, port, ops_port, upstream, workers=workers, store_url=store_url)
    env = {**os.environ, "GATEWAY_CONFIG": str(config), "GATEWAY_ENCRYPTION_KEYS": ENCRYPTION_KEY}
    cli = [sys.executable, "-m", "gateway"]
    subprocess.run([*cli, "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    made = subprocess.run(
        [*cli, "tokens", "create", "--name", f"bench-{port}", "--scope", scope],
        env=env,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    with child([*cli, "serve"], port, env=env) as proc:
        wait_ready(f"http://127.0.0.1:{ops_port}/readyz")
        yield Gateway(proc, made.stdout.strip(), f"http://127.0.0.1:{port}/v1/proxy/credential/bench")


@contextmanager
def postgres_database() -> Iterator[str | None]:
    """A fresh database for the workers row (dropped afterwards), or None when PostgreSQL is not there."""
    name = f"gateway_bench_{os.getpid()}"

    async def admin(statement: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    try:
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"PostgreSQL not reachable at {PG_ADMIN_DSN} ({exc}): skipping the workers row", file=sys.stderr)
        yield None
        return
    try:
        yield PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def redis_reachable() -> bool:
    host, port = REDIS_URL.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    with socket.socket() as sock:
        sock.settimeout(2)
        if sock.connect_ex((host, int(port))) == 0:
            return True
    print(f"Redis not reachable at {REDIS_URL}: skipping the workers row", file=sys.stderr)
    return False


# --- the run ----------------------------------------------------------------------------------------


@dataclass
class Server:
    """A process under load: its base URL and the pid whose CPU (with its children's) it costs."""

    url: str
    pid: int


@dataclass
class Target:
    """One row of a load table: where wrk sends, with which headers, and which process serves it."""

    name: str
    url: str
    headers: dict[str, str]
    pid: int
    script: Path | None = None  # a wrk Lua script that builds each request (the credentials scenario)


def measure(target: Target, connections: int, seconds: int) -> dict[str, Any]:
    """One warm-up second (connections, caches), then the row: wrk's figures and the server's CPU.

    ``cpu_us`` is the utime+stime the serving process tree spent during the measured run divided by
    the requests wrk completed: unlike req/s it barely moves when other work shares the cores.
    """
    wrk(target.url, connections, 1, target.headers, target.script)
    before = cpu_seconds(target.pid)
    measured = wrk(target.url, connections, seconds, target.headers, target.script)
    spent = cpu_seconds(target.pid) - before
    return {"path": target.name, "c": connections, **measured, "cpu_us": spent / measured["requests"] * 1e6}


def compare_to_bare(rows: list[dict[str, Any]], group: str = "upstream") -> None:
    """Add each row's ratios to the bare relay's row of the same group and c, and at c=1 the added latency."""
    bare = {(row[group], row["c"]): row for row in rows if row["path"] == BARE}
    for row in rows:
        base = bare.get((row[group], row["c"]))
        if base is None:
            continue
        row["cpu_vs_bare"] = row["cpu_us"] / base["cpu_us"]
        row["rps_vs_bare"] = row["rps"] / base["rps"]
        if row["c"] == 1:
            row["added_p50_ms"] = row["p50_ms"] - base["p50_ms"]
            row["added_p99_ms"] = row["p99_ms"] - base["p99_ms"]


@contextmanager
def upstream_server(kind: str, workdir: Path) -> Iterator[Server]:
    """The small-GET upstream: nginx returning a fixed body, or the generic sandbox on aiohttp."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    if kind == "nginx":
        with nginx(workdir, f"upstream-{port}", port, port, NGINX_UPSTREAM) as pid:
            yield Server(url, pid)
    else:
        with child([sys.executable, __file__, "serve-upstream", str(port)], port) as proc:
            yield Server(url, proc.pid)


def small_gets(
    seconds: int, workdir: Path, kind: str, workers: int, pg_url: str | None, rounds: int = 1
) -> list[dict[str, Any]]:
    """Each row at c=1 and c=50; with ``rounds`` > 1, every row that many times (order rotated) and
    each figure, the ratios to the bare relay's row of the same round included, the median."""
    path = "/bytes/64?length=1"  # nginx ignores the query; the sandbox then answers with a Content-Length
    with ExitStack() as stack:
        upstream = stack.enter_context(upstream_server(kind, workdir))
        bare_port = free_port()
        bare_args = [sys.executable, __file__, "serve-bare", str(bare_port), upstream.url]
        bare = stack.enter_context(child(bare_args, bare_port))
        single = stack.enter_context(gateway(workdir, upstream.url))
        targets = [
            Target("direct", upstream.url + path, {}, upstream.pid),
            Target(BARE, f"http://127.0.0.1:{bare_port}{path}", {}, bare.pid),
            Target("gateway", single.url + path, {"Authorization": f"Bearer {single.token}"}, single.proc.pid),
        ]
        if workers > 1 and pg_url is not None:
            several = stack.enter_context(gateway(workdir, upstream.url, workers=workers, store_url=pg_url))
            auth = {"Authorization": f"Bearer {several.token}"}
            targets.append(Target(f"gateway x{workers}", several.url + path, auth, several.proc.pid))
        if shutil.which("nginx") is not None:
            nginx_port = free_port()
            upstream_port = int(upstream.url.rsplit(":", 1)[1])
            pid = stack.enter_context(nginx(workdir, f"proxy-{nginx_port}", nginx_port, upstream_port, NGINX_PROXY))
            targets.append(Target("nginx", f"http://127.0.0.1:{nginx_port}{path}", {}, pid))
        rows = []
        for c in (1, 50):
            measured = []  # per round, every target at this c (order rotated), with its ratios to bare
            for turn in range(rounds):
                order = targets[turn % len(targets) :] + targets[: turn % len(targets)]
                by_name = {t.name: {"upstream": kind, **measure(t, c, seconds)} for t in order}
                measured.append([by_name[t.name] for t in targets])
                compare_to_bare(measured[-1])
            for i in range(len(targets)):
                row = _median_row([round_rows[i] for round_rows in measured])
                if rounds > 1 and "cpu_vs_bare" in row:  # each round's own ratio, to see the spread
                    row["cpu_vs_bare_rounds"] = [round_rows[i]["cpu_vs_bare"] for round_rows in measured]
                rows.append(row)
    return rows


async def big_transfers(url: str, token: str, pid: int, *, size: int = GIB) -> list[dict[str, Any]]:
    big, slow = _size_label(size), _size_label(size // 4)
    return [
        {"transfer": f"upload {big}", **await transfer("upload", url, token, pid, size=size)},
        {"transfer": f"download {big}", **await transfer("download", url, token, pid, size=size)},
        {
            "transfer": f"download {slow}, slow reader (64 MiB/s)",
            **await transfer("download", url, token, pid, size=size // 4, slow=True),
        },
    ]


def _size_label(size: int) -> str:
    return f"{size // GIB} GiB" if size >= GIB else f"{size // MIB} MiB"


# --- credential scaling: one credential vs N, each with its own bucket --------------------------------

# Each request a random i in 1..n: ``{target}`` is a Lua expression of it (which credential, which URL).
SPREAD_LUA = """
local n, token = {n}, "{token}"
local headers = {{["Authorization"] = "Bearer " .. token}}
math.randomseed(os.time())
request = function()
  local i = math.random(1, n)
  return wrk.format("GET", {target}, headers)
end
"""
SPREAD_OVER_CREDENTIALS = '"/v1/proxy/credential/scale-" .. i .. "{path}"'
# One credential, as many distinct URLs: yarl caches the last 128 URLs it parsed, so one repeated URL
# is parsed once; this row shows what distinct URLs cost by themselves, apart from the credentials.
SPREAD_OVER_URLS = '"/v1/proxy/credential/scale-1{path}&n=" .. i'
SCALE_PATH = "/bytes/64?length=1"
QUICK_MIN_RATIO = 0.5  # --quick: 1 s rows on a loaded CI machine; the cliff was 0.24x
SCALE_LIMIT = {"rate": 50000, "per": 1, "burst": 50000}  # each credential's own bucket, never the bottleneck


async def create_credentials(base: str, token: str, upstream: str, count: int) -> None:
    """``scale-1`` .. ``scale-<count>`` through ``POST /v1/credentials``, each with its own rate limit."""
    headers = {"Authorization": f"Bearer {token}"}
    gate = asyncio.Semaphore(16)

    async def one(session: aiohttp.ClientSession, n: int) -> None:
        body = {
            "id": f"scale-{n}",
            "provider": "rest",
            "base_url": upstream,
            "auth": {"type": "bearer", "token": f"upstream-token-{n}"},
            "rate_limit": SCALE_LIMIT,
        }
        async with gate, session.post(f"{base}/v1/credentials", json=body, headers=headers) as resp:
            if resp.status != 201:
                raise RuntimeError(f"creating scale-{n}: {resp.status} {await resp.text()}")

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(one(session, n) for n in range(1, count + 1)))


async def touch_credentials(base: str, token: str, count: int) -> None:
    """One proxied call to every credential, so each has an active bucket and cache entries."""
    headers = {"Authorization": f"Bearer {token}"}
    gate = asyncio.Semaphore(50)

    async def one(session: aiohttp.ClientSession, n: int) -> None:
        async with gate, session.get(f"{base}/v1/proxy/credential/scale-{n}{SCALE_PATH}", headers=headers) as resp:
            await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"calling scale-{n}: {resp.status}")

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(one(session, n) for n in range(1, count + 1)))


def settled_rss(pid: int) -> int:
    """RSS (KiB) once the gateway is idle: the lowest of a few samples, so a passing burst does not count."""
    samples = []
    for _ in range(5):
        time.sleep(0.1)
        samples.append(rss_kib(pid))
    return min(samples)


def run_credentials(count: int, seconds: int, rounds: int = 1) -> dict[str, Any]:
    """One gateway, ``count`` credentials: the one-credential row, the spread rows and the memory figures.

    With ``rounds`` > 1 the three rows run that many times, their order rotated each round, and the
    ratios are the medians of each round's own ratios: a shared machine's load moves one row by tens
    of percent from one minute to the next, but rows measured a few seconds apart see the same load.
    """
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        upstream = stack.enter_context(upstream_server("sandbox", workdir))
        gw = stack.enter_context(gateway(workdir, upstream.url, scope="admin,proxy"))
        base = gw.url.split("/v1/", 1)[0]
        pid = gw.proc.pid
        auth = {"Authorization": f"Bearer {gw.token}"}
        wrk(gw.url + SCALE_PATH, 50, 1, auth)  # warm: connections, buffers, the declared credential
        start_rss = settled_rss(pid)
        started = time.monotonic()
        asyncio.run(create_credentials(base, gw.token, upstream.url, count))
        created_in = time.monotonic() - started
        idle_rss = settled_rss(pid)
        asyncio.run(touch_credentials(base, gw.token, count))
        active_rss = settled_rss(pid)
        scripts = {name: workdir / f"{name}.lua" for name in ("credentials", "urls")}
        for name, target in (("credentials", SPREAD_OVER_CREDENTIALS), ("urls", SPREAD_OVER_URLS)):
            lua = SPREAD_LUA.format(n=count, token=gw.token, target=target.format(path=SCALE_PATH))
            scripts[name].write_text(lua)
        targets = [
            Target("1 credential", f"{base}/v1/proxy/credential/scale-1{SCALE_PATH}", auth, pid),
            Target(f"1 credential, {count} URLs", base + "/", {}, pid, scripts["urls"]),
            Target(f"{count} credentials", base + "/", {}, pid, scripts["credentials"]),
        ]
        measured: list[list[dict[str, Any]]] = []  # per round: one, urls, spread
        for turn in range(rounds):
            order = targets[turn % 3 :] + targets[: turn % 3]
            by_name = {target.name: measure(target, 50, seconds) for target in order}
            measured.append([by_name[target.name] for target in targets])
        for row in (row for round_rows in measured for row in round_rows):
            if row["non_2xx"]:
                raise RuntimeError(f"{row['path']}: {row['non_2xx']} answers were not 2xx: the row measured errors")
        end_rss = rss_kib(pid)
    per_round = [
        {
            "throughput_ratio": spread["rps"] / one["rps"],
            "cpu_ratio": spread["cpu_us"] / one["cpu_us"],
            "cpu_ratio_same_urls": spread["cpu_us"] / urls["cpu_us"],  # credentials apart from distinct URLs
        }
        for one, urls, spread in measured
    ]
    return {
        "credentials": count,
        "created_per_s": count / created_in,
        "rows": [_median_row([r[i] for r in measured]) for i in range(3)],  # c=50 each
        "rounds": per_round,
        "rss_kib_per_idle_credential": (idle_rss - start_rss) / count,
        "rss_kib_per_active_bucket": (active_rss - idle_rss) / count,
        "rss_mib_at_end": end_rss / 1024,
        **{key: statistics.median(r[key] for r in per_round) for key in per_round[0]},
    }


def _median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One row's figures over the rounds: the median of each number (the ratios to bare included)."""
    numbers = [key for key, value in rows[0].items() if isinstance(value, (int, float)) and key != "c"]
    return {**rows[0], **{key: statistics.median(row[key] for row in rows) for key in numbers}}


def print_credentials(result: dict[str, Any]) -> None:
    print(f"{'calls to':<28} {'req/s':>8} {'CPU us/req':>11} {'p50 ms':>8} {'p99 ms':>8}")
    for row in result["rows"]:
        print(
            f"{row['path']:<28} {row['rps']:>8.0f} {row['cpu_us']:>11.0f} {row['p50_ms']:>8.3f} {row['p99_ms']:>8.3f}"
        )
    if len(result["rounds"]) > 1:
        for turn, ratios in enumerate(result["rounds"], 1):
            print(
                f"round {turn}: throughput {ratios['throughput_ratio']:.2f}x, CPU per request "
                f"{ratios['cpu_ratio']:.2f}x ({ratios['cpu_ratio_same_urls']:.2f}x against the URLs row)"
            )
        print("(rows above and ratios below: medians over the rounds)")
    print(
        f"\n{result['credentials']} credentials vs 1: throughput {result['throughput_ratio']:.2f}x, "
        f"CPU per request {result['cpu_ratio']:.2f}x ({result['cpu_ratio_same_urls']:.2f}x against "
        f"{result['credentials']} URLs of 1 credential)\n"
        f"RSS growth per idle credential {result['rss_kib_per_idle_credential']:.2f} KiB, "
        f"per active bucket {result['rss_kib_per_active_bucket']:.2f} KiB "
        f"(RSS at the end {result['rss_mib_at_end']:.0f} MiB; created {result['created_per_s']:.0f} credentials/s)"
    )


def run(
    seconds: int, *, upstreams: list[str], workers: int, small_only: bool = False, size: int = GIB, rounds: int = 1
) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed for the latency rows: apt-get install wrk")
    if "nginx" in upstreams and shutil.which("nginx") is None:
        print("nginx is not installed: skipping its rows and its upstream (apt-get install nginx)", file=sys.stderr)
        upstreams = [kind for kind in upstreams if kind != "nginx"]
    results: dict[str, Any] = {"small_gets": [], "transfers": []}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        (workdir / "tmp").mkdir()
        pg_url = stack.enter_context(postgres_database()) if workers > 1 and redis_reachable() else None
        for kind in upstreams:
            results["small_gets"] += small_gets(seconds, workdir, kind, workers, pg_url, rounds)
        if not small_only:
            with upstream_server("sandbox", workdir) as upstream, gateway(workdir, upstream.url) as gw:
                results["transfers"] = asyncio.run(big_transfers(gw.url, gw.token, gw.proc.pid, size=size))
    return results


def broken_guarantees(results: dict[str, Any]) -> list[str]:
    return [
        f"{row['upstream']} {row['path']} at c=50: {row['cpu_vs_bare']:.2f}x the bare relay's CPU per request "
        f"(limit {MAX_CPU_VS_BARE}x)"
        for row in results["small_gets"]
        if row["path"].startswith("gateway") and row["c"] == 50 and row["cpu_vs_bare"] > MAX_CPU_VS_BARE
    ]


def print_table(results: dict[str, Any]) -> None:
    print(
        f"{'upstream':<9} {'path':<14} {'c':>3} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU µs/req':>10} "
        f"{'CPU x bare':>10} {'req/s x bare':>12} {'+p50 ms':>8} {'+p99 ms':>8}"
    )
    for row in results["small_gets"]:
        print(
            f"{row['upstream']:<9} {row['path']:<14} {row['c']:>3} {row['rps']:>9.0f} {row['p50_ms']:>8.3f} "
            f"{row['p99_ms']:>8.3f} {row['cpu_us']:>10.0f} {_optional(row, 'cpu_vs_bare', '.2f'):>10} "
            f"{_optional(row, 'rps_vs_bare', '.2f'):>12} {_optional(row, 'added_p50_ms', '+.3f'):>8} "
            f"{_optional(row, 'added_p99_ms', '+.3f'):>8}"
        )
    print("(+p50/+p99: added latency over the bare relay at c=1)")
    for row in results["small_gets"]:
        if row["path"] != BARE and "cpu_vs_bare_rounds" in row:
            spread = ", ".join(f"{ratio:.2f}" for ratio in row["cpu_vs_bare_rounds"])
            print(f"{row['upstream']} {row['path']} c={row['c']}: CPU x bare per round {spread} (median above)")
    if results["transfers"]:
        print()
        print(f"{'transfer':<42} {'MiB/s':>8} {'RSS growth MiB':>15}")
    for row in results["transfers"]:
        print(f"{row['transfer']:<42} {row['mib_per_s']:>8.0f} {row['rss_growth_mib']:>15.1f}")


def _optional(row: dict[str, Any], key: str, spec: str) -> str:
    return format(row[key], spec) if key in row else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    roles = ["bench", "serve-upstream", "serve-bare"]
    parser.add_argument("role", nargs="?", default="bench", choices=roles)
    parser.add_argument("args", nargs="*")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--upstream", choices=["both", "nginx", "sandbox"], default="both")
    parser.add_argument("--workers", type=int, default=2, help="processes of the gateway xN row (1: no such row)")
    parser.add_argument("--small-only", action="store_true", help="skip the 1 GiB transfers")
    parser.add_argument("--quick", action="store_true", help="sandbox upstream, 1 s rows, 32 MiB transfers (CI)")
    parser.add_argument("--credentials", type=int, help="the credential-scaling scenario with N credentials")
    parser.add_argument(
        "--rounds",
        type=int,
        help="times each row runs, order rotated; figures and ratios are medians (default: 1, --credentials 3)",
    )
    ns = parser.parse_args()
    if ns.credentials:
        return scale_main(ns)
    if ns.quick:
        ns.seconds, ns.upstream, ns.workers = 1, "sandbox", 1
    if ns.role == "serve-upstream":
        return serve_upstream(int(ns.args[0]))
    if ns.role == "serve-bare":
        return serve_bare(int(ns.args[0]), ns.args[1])
    upstreams = ["nginx", "sandbox"] if ns.upstream == "both" else [ns.upstream]
    size = 32 * MIB if ns.quick else GIB
    rounds = 1 if ns.quick else ns.rounds or 1
    results = run(
        ns.seconds, upstreams=upstreams, workers=ns.workers, small_only=ns.small_only, size=size, rounds=rounds
    )
    print_table(results)
    if ns.json:
        ns.json.write_text(json.dumps(results, indent=2))
    broken = broken_guarantees(results)
    if broken:
        sys.exit("guarantee broken: " + "; ".join(broken))


def scale_main(ns: argparse.Namespace) -> None:
    """``--credentials N``: ``--quick`` runs N = 1,000 for 2 s a row and checks the throughput ratio."""
    count, seconds = (min(ns.credentials, 1000), 2) if ns.quick else (ns.credentials, ns.seconds)
    result = run_credentials(count, seconds, 1 if ns.quick else ns.rounds or 3)
    print_credentials(result)
    if ns.json:
        ns.json.write_text(json.dumps(result, indent=2))
    if ns.quick and result["throughput_ratio"] < QUICK_MIN_RATIO:
        sys.exit(f"{count} credentials did {result['throughput_ratio']:.2f}x the one-credential throughput")


if __name__ == "__main__":
    main()
