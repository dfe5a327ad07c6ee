"""The README's shell snippets run as written: extracted, run in order in a temporary checkout, on free ports.

Every fenced ``bash`` block of README.md runs, unless the line before it is
``<!-- snippet: skip (reason) -->``. Every ``bash`` block in docs/*.md must carry one of the two marks
(an unmarked one fails the suite, so none goes unchecked by accident); those marked
``<!-- snippet: run -->`` run after the README's, in the same shell. Shell blocks are fenced ``bash``
only, so that no ``sh`` or ``console`` block slips past. What the test changes, and only that: the install line (its
venv is this test's own, linked in as ``.venv``), the documented ports (each mapped to a free one, in the
snippets and in the copied config/), the PostgreSQL database name ``gatewaydb`` (a fresh one, dropped
after) and, through the environment, the Redis key prefix (so parallel runs do not share buckets).
Everything else is the text a reader copies.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import PG_ADMIN_DSN, REDIS_URL, service_missing

ROOT = Path(__file__).resolve().parents[1]
INSTALL = "python3 -m venv .venv && .venv/bin/pip install -e '.[speed]'"
PORTS = (8080, 9091, 8081, 8082, 9191, 9192, 8111)  # every port the snippets name; each gets a free one
SERVICES = (5432, 6379)  # PostgreSQL and Redis: the machine's own, as the README says
_FENCE = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)
_MARK = re.compile(r"<!-- snippet: (skip \(.+\)|run) -->\s*$")
_SHELL_FENCE = re.compile(r"^```(sh|shell|console|zsh|bash-session|shell-session)\s*$", re.MULTILINE)
DOCS = sorted((ROOT / "docs").glob("*.md"))


def marked(path: Path) -> list[tuple[str | None, str]]:
    """Each bash block of ``path`` with its mark (``run``, ``skip (reason)``, or None) from the line before."""
    text, found = path.read_text(), []
    for match in _FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = _MARK.search(before)
        found.append((mark.group(1) if mark else None, match.group(1)))
    return found


def blocks(path: Path, *, default_run: bool) -> list[str]:
    """The bash blocks of ``path`` that run: all but skipped ones (README), or only marked ones (docs)."""
    return [block for mark, block in marked(path) if (mark == "run" if mark else default_run)]


def test_every_docs_snippet_says_whether_it_runs() -> None:
    """A docs bash block without ``run`` or ``skip (reason)`` would silently go unchecked."""
    unmarked = [f"{doc.name}: {block.splitlines()[0]}" for doc in DOCS for mark, block in marked(doc) if mark is None]
    assert unmarked == [], unmarked
    assert sum(mark == "run" for doc in DOCS for mark, _ in marked(doc)) >= 6  # the marks are read at all


def test_shell_blocks_are_fenced_bash() -> None:
    """An ``sh`` or ``console`` fence is not extracted, so it must not exist."""
    other = [
        f"{doc.name}: {m.group(0)}"
        for doc in (ROOT / "README.md", *DOCS)
        for m in _SHELL_FENCE.finditer(doc.read_text())
    ]
    assert other == [], other


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _remap(text: str, ports: dict[int, int]) -> str:
    return re.sub(r"\b(" + "|".join(map(str, ports)) + r")\b", lambda m: str(ports[int(m.group(1))]), text)


def test_snippets_name_only_the_documented_ports() -> None:
    """A new port in a snippet must be added to PORTS, or the test would run it on the real one."""
    snippets = "\n".join(blocks(ROOT / "README.md", default_run=True))
    snippets += "\n" + "\n".join(block for doc in DOCS for block in blocks(doc, default_run=False))
    named = {
        int(p)
        for p in re.findall(r"(?:localhost|127\.0\.0\.1):(\d+)|PORT=(\d+)|--port (\d+)", snippets)
        for p in p
        if p
    }
    assert named <= set(PORTS) | set(SERVICES), named - set(PORTS) - set(SERVICES)
    assert snippets.count(INSTALL) == 1


def _script(ports: dict[int, int], database: str) -> str:
    body = "\n".join(blocks(ROOT / "README.md", default_run=True))
    for doc in DOCS:
        body += "\n" + "\n".join(blocks(doc, default_run=False))
    body = _remap(body.replace(INSTALL, "true  # the test's venv is linked in as .venv"), ports)
    # Background jobs (the gateways, the sandbox) end with the script, whatever happens.
    return "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n" + body.replace("gatewaydb", database)


async def _pg(statement: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.mark.slow
def test_the_readme_runs_as_written(tmp_path: Path, redis_url: str) -> None:
    try:
        asyncio.run(_pg("SELECT 1"))
    except (OSError, asyncpg.PostgresError):
        service_missing("PostgreSQL at " + PG_ADMIN_DSN)
    pg = make_url(PG_ADMIN_DSN)
    if (pg.host, pg.port, pg.username) != ("127.0.0.1", 5432, "postgres") or REDIS_URL != "redis://127.0.0.1:6379/0":
        pytest.skip("the README names PostgreSQL at postgres@127.0.0.1:5432 and Redis at 127.0.0.1:6379")
    ports = dict(zip(PORTS, _free_ports(len(PORTS)), strict=True))
    database = f"gw_readme_{uuid.uuid4().hex[:8]}"
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    shutil.copytree(ROOT / "config", tmp_path / "config")
    for config in (tmp_path / "config").iterdir():
        config.write_text(_remap(config.read_text(), ports))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "PG"))}
    env["GATEWAY_PACING__KEY_PREFIX"] = f"readme-{database}"  # this run's Redis keys, apart from others'
    proc = subprocess.Popen(
        ["bash", "-c", _script(ports, database)],
        cwd=tmp_path,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=420)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
    finally:
        asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    assert proc.returncode == 0, output[-6000:]
    assert '"object": "list"' in output and "alan@example.com" in output  # the proxied Stripe list
    assert '"email": "paul@arrakis.org"' in output  # the created customer, as the mutation answered it
    compact = output.replace(" ", "")
    assert '"name":"ops"' in compact  # the second replica reads the PostgreSQL store
    assert '"name":"billing-app"' in compact  # docs/api.md: the tokens the CLI and the API made
    assert '"nacked":1' in compact and '"acked":1' in compact  # docs/consumers.md: the pull consumer's round
    assert '"id":"sync-customers"' in compact  # docs/syncs.md: the sync created, then read
