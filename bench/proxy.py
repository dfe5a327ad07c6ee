"""Proxy speed and memory on loopback: direct vs. a bare aiohttp proxy vs. the gateway vs. nginx.

    python bench/proxy.py [--seconds 5] [--json results.json]

Rows: small GETs at c=1 and c=50 with wrk (requests/s, p50, p99) against the upstream directly,
through a bare aiohttp+uvloop proxy (the baseline: aiohttp's own cost on this machine), through the
gateway (a real ``gateway``-style process: uvloop, SQLite store, the real pacer, request logging on,
to /dev/null) and through nginx as a plain reverse proxy (1 worker, upstream keepalive);
then 1 GiB uploaded and downloaded through the gateway at full speed, and a download read slowly,
with the gateway's peak RSS growth. The upstream for small GETs is nginx serving a fixed body (or the
generic sandbox when nginx is missing); big transfers use the generic sandbox's streaming endpoints.

Needs ``wrk`` for the latency rows (``apt-get install wrk``); nginx rows are skipped with a message if
``nginx`` is not installed. Roles ``serve-gateway``, ``serve-bare`` and ``serve-upstream`` are this
script run as a child process. ``--small-only`` skips the big transfers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp

# Run as a script, sys.path[0] is bench/; put the repository first so ``gateway`` is the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
GIB = 1024**3
MIB = 1024**2
SMALL_BODY = "x" * 64
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


@contextmanager
def child(args: list[str], port: int, **kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)
    try:
        wait_port(port)
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def nginx(workdir: Path, name: str, port: int, upstream_port: int, body: str) -> Iterator[None]:
    (workdir / "tmp").mkdir(exist_ok=True)
    conf = workdir / f"{name}.conf"
    conf.write_text(NGINX_CONF.format(prefix=workdir, name=name, port=port, upstream_port=upstream_port, body=body))
    with child(["nginx", "-c", str(conf), "-p", str(workdir)], port):
        yield


def wrk(url: str, connections: int, seconds: int, headers: dict[str, str]) -> dict[str, float]:
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return {"rps": rps, "p50_ms": _latency(out, "50%"), "p99_ms": _latency(out, "99%")}


def _latency(out: str, label: str) -> float:
    value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


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


async def transfer(kind: str, url: str, token: str, pid: int, *, slow: bool = False) -> dict[str, float]:
    """One big transfer through the gateway; MiB/s and peak RSS growth of the gateway process."""
    base = rss_kib(pid)
    peak = [base]
    sampler = asyncio.create_task(sample_rss(pid, peak))
    headers = {"Authorization": f"Bearer {token}"}
    size = 256 * MIB if slow else GIB
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

    from gateway.sandbox.generic import create_generic_app
    from gateway.server import install_uvloop

    install_uvloop()
    web.run_app(create_generic_app(), host="127.0.0.1", port=port, access_log=None, print=None)


def serve_bare(port: int, upstream: str) -> None:
    """The issue's baseline: a bare aiohttp+uvloop proxy (no auth, pacing, logs or metrics).

    GETs only, one pooled ``ClientSession``, the answer read whole and sent with its Content-Length:
    what aiohttp's client and server cost on this machine before any gateway logic.
    """
    from aiohttp import web

    from gateway.server import install_uvloop

    install_uvloop()
    session_key = web.AppKey("session", aiohttp.ClientSession)

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        app[session_key] = aiohttp.ClientSession(auto_decompress=False, connector=aiohttp.TCPConnector(limit=1024))
        yield
        await app[session_key].close()

    async def forward(request: web.Request) -> web.Response:
        async with request.app[session_key].get(upstream + request.rel_url.raw_path_qs) as resp:
            body = await resp.read()
            return web.Response(body=body, status=resp.status, content_type=resp.content_type)

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_get("/{tail:.*}", forward)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def serve_gateway(port: int, upstream: str, workdir: Path) -> None:
    """A gateway as ``gateway serve`` runs it, seeded with one credential and an API token."""
    from aiohttp import web

    from gateway.app import create_app
    from gateway.config import Config
    from gateway.http import appkeys
    from gateway.observability.logs import configure_logging
    from gateway.server import install_uvloop, settle_heap
    from gateway.vault.crypto import Keyring, generate_key

    install_uvloop()
    key = generate_key("bench")
    config = Config.model_validate(
        {
            "server": {"port": port},
            "store": {"url": f"sqlite:///{workdir / 'gateway.db'}"},
            "encryption": {"keys": key},
            "log": {"format": "json", "level": "info"},
            "credentials": [
                {
                    "id": "bench",
                    "provider": "rest",
                    "base_url": upstream,
                    "auth": {"type": "bearer", "token": "upstream-token"},
                    "rate_limit": {"rate": 1_000_000, "per": 1, "burst": 1_000_000},
                    "timeouts": {"total": 0},
                }
            ],
        }
    )
    configure_logging(format="json", level="info")
    app = create_app(config, keyring=Keyring.parse(key), ops_on_main=True)

    async def token(app: web.Application) -> None:
        value = await app[appkeys.TOKENS].create("bench", ["proxy"])
        (workdir / "token").write_text(value)

    async def settle(_app: web.Application) -> None:
        settle_heap()  # as ``gateway serve`` does once started

    app.on_startup.extend([token, settle])
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# --- the run ----------------------------------------------------------------------------------------


def small_gets(seconds: int, workdir: Path, gateway_port: int, upstream: str, token: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    bare_port = free_port()
    targets = [("direct", f"{upstream}/bytes/64", {}),
               ("bare aiohttp", f"http://127.0.0.1:{bare_port}/bytes/64", {}),
               ("gateway", f"http://127.0.0.1:{gateway_port}/v1/proxy/credential/bench/bytes/64",
                {"Authorization": f"Bearer {token}"})]
    nginx_port = free_port()
    have_nginx = shutil.which("nginx") is not None
    if not have_nginx:
        print("nginx is not installed: skipping the nginx row (apt-get install nginx)", file=sys.stderr)
    upstream_port = int(upstream.rsplit(":", 1)[1])
    with child([sys.executable, __file__, "serve-bare", str(bare_port), upstream], bare_port), \
            nginx(workdir, "proxy", nginx_port, upstream_port, NGINX_PROXY) if have_nginx else _nothing():
        if have_nginx:
            targets.append(("nginx", f"http://127.0.0.1:{nginx_port}/bytes/64", {}))
        for connections in (1, 50):
            for name, url, headers in targets:
                wrk(url, connections, 1, headers)  # warm-up: connections, caches, JIT-free but still
                rows.append({"path": name, "c": connections, **wrk(url, connections, seconds, headers)})
    return rows


@contextmanager
def _nothing() -> Iterator[None]:
    yield


async def big_transfers(gateway_port: int, token: str, pid: int) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{gateway_port}/v1/proxy/credential/bench"
    return [
        {"transfer": "upload 1 GiB", **await transfer("upload", url, token, pid)},
        {"transfer": "download 1 GiB", **await transfer("download", url, token, pid)},
        {
            "transfer": "download 256 MiB, slow reader (64 MiB/s)",
            **await transfer("download", url, token, pid, slow=True),
        },
    ]


def run(seconds: int, *, small_only: bool = False) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed for the latency rows: apt-get install wrk")
    me = [sys.executable, __file__]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        small_port, sandbox_port, gateway_port = free_port(), free_port(), free_port()
        have_nginx = shutil.which("nginx") is not None
        small_upstream = nginx(workdir, "upstream", small_port, small_port, NGINX_UPSTREAM) if have_nginx else None
        with (small_upstream or child([*me, "serve-upstream", str(small_port)], small_port)),\
                child([*me, "serve-upstream", str(sandbox_port)], sandbox_port):
            results: dict[str, Any] = {}
            gateway_args = [*me, "serve-gateway", str(gateway_port), f"http://127.0.0.1:{small_port}", tmp]
            with child(gateway_args, gateway_port):
                token = (workdir / "token").read_text()
                results["small_gets"] = small_gets(seconds, workdir, gateway_port, gateway_args[4], token)
            results["transfers"] = []
            if small_only:
                return results
            gateway_args[4] = f"http://127.0.0.1:{sandbox_port}"
            (workdir / "token").unlink()
            os.remove(workdir / "gateway.db")
            with child(gateway_args, gateway_port) as gateway:
                token = (workdir / "token").read_text()
                results["transfers"] = asyncio.run(big_transfers(gateway_port, token, gateway.pid))
    return results


def print_table(results: dict[str, Any]) -> None:
    print(f"{'path':<14} {'c':>3} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for row in results["small_gets"]:
        print(f"{row['path']:<14} {row['c']:>3} {row['rps']:>10.0f} {row['p50_ms']:>8.3f} {row['p99_ms']:>8.3f}")
    print()
    print(f"{'transfer':<42} {'MiB/s':>8} {'RSS growth MiB':>15}")
    for row in results["transfers"]:
        print(f"{row['transfer']:<42} {row['mib_per_s']:>8.0f} {row['rss_growth_mib']:>15.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    roles = ["bench", "serve-gateway", "serve-upstream", "serve-bare"]
    parser.add_argument("role", nargs="?", default="bench", choices=roles)
    parser.add_argument("args", nargs="*")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--small-only", action="store_true", help="skip the 1 GiB transfers")
    ns = parser.parse_args()
    if ns.role == "serve-upstream":
        return serve_upstream(int(ns.args[0]))
    if ns.role == "serve-bare":
        return serve_bare(int(ns.args[0]), ns.args[1])
    if ns.role == "serve-gateway":
        return serve_gateway(int(ns.args[0]), ns.args[1], Path(ns.args[2]))
    results = run(ns.seconds, small_only=ns.small_only)
    print_table(results)
    if ns.json:
        ns.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
