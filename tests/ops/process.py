"""Real ``gateway serve`` processes for the operations tests: config, ports, readiness, cleanup.

``start_gateway`` writes a TOML config into the test's tmp dir, runs ``python -m gateway serve`` with
the encryption key in the environment (never in the file), sends its stdout and stderr to one file,
and waits for ``/readyz`` on the metrics listener with a deadline. The process is killed on the way
out whatever happened, so a failing test never leaves a gateway behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from gateway.vault.crypto import generate_key
from tests.support import free_port

START_DEADLINE = 120.0  # seconds for a process (or worker) to start: a hang guard, polled, so it costs nothing when
# the start is quick; a loaded 2-core CI machine has taken over 45 s to import and start a worker


def toml_value(value: Any) -> str:
    """TOML for the values configs use; JSON's strings, numbers and booleans are valid TOML."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key} = {toml_value(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return json.dumps(value)


def write_config(path: Path, sections: dict[str, Any]) -> Path:
    """One ``key = value`` line per top-level section: tables inline, ``[[x]]`` lists as arrays of tables."""
    path.write_text("".join(f"{name} = {toml_value(value)}\n" for name, value in sections.items()), encoding="utf-8")
    return path


@dataclass
class Deployment:
    """A config file and the environment every process of one test shares (key, store)."""

    config: Path
    env: dict[str, str]
    key: str

    @classmethod
    def create(cls, tmp_path: Path, sections: dict[str, Any], *, name: str = "gateway") -> Deployment:
        key = generate_key("ops")
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env["GATEWAY_ENCRYPTION__KEYS"] = key
        return cls(write_config(tmp_path / f"{name}.toml", sections), env, key)

    async def cli(self, *args: str) -> str:
        """Run a ``gateway`` verb against this deployment's config; its stdout (it must exit 0)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", *args, "--config", str(self.config),
            env=self.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), START_DEADLINE)
        assert proc.returncode == 0, err.decode()
        return out.decode().strip()


@dataclass
class GatewayProcess:
    proc: asyncio.subprocess.Process
    port: int
    ops_port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ops_url(self) -> str:
        return f"http://127.0.0.1:{self.ops_port}"

    def output(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    async def wait_ready(self, deadline: float = START_DEADLINE) -> None:
        end = time.monotonic() + deadline
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < end:
                assert self.proc.returncode is None, f"gateway exited early:\n{self.output()[-3000:]}"
                try:
                    async with session.get(f"{self.ops_url}/readyz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.05)  # poll interval, not a wait for a condition
        raise AssertionError(f"gateway not ready within {deadline}s:\n{self.output()[-3000:]}")

    async def wait_exit(self, deadline: float) -> int:
        return await asyncio.wait_for(self.proc.wait(), deadline)


@asynccontextmanager
async def start_gateway(
    deployment: Deployment,
    tmp_path: Path,
    *,
    name: str = "gateway",
    grace: float = 0,
    ports: tuple[int, int] | None = None,
) -> AsyncIterator[GatewayProcess]:
    """``gateway serve`` on free ports (API and metrics; or ``ports``, for a hand-over); on exit, if it
    still runs, sent SIGTERM and given ``grace`` seconds to exit (a supervisor cleans up after its
    workers), then killed."""
    port, ops_port = ports or (free_port(), free_port())
    env = {**deployment.env, "GATEWAY_SERVER__PORT": str(port), "GATEWAY_METRICS__PORT": str(ops_port)}
    log_path = tmp_path / f"{name}.log"
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "serve", "--config", str(deployment.config),
            env=env, stdout=log_file, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        gateway = GatewayProcess(proc, port, ops_port, log_path)
        try:
            await gateway.wait_ready()
            yield gateway
        finally:
            if proc.returncode is None and grace:
                proc.terminate()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), grace)
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
