"""Error bodies link to docs the gateway serves itself (/docs/errors#<code>), or to server.docs_url."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from gateway import errors
from gateway.http.docs import render
from tests.conftest import GatewayFactory

ROOT = Path(__file__).resolve().parents[2]


def _codes() -> set[str]:
    """Every code a GatewayError leaf can carry."""
    found, todo = set(), [errors.GatewayError]
    while todo:
        cls = todo.pop()
        found.add(cls.code)
        todo.extend(cls.__subclasses__())
    operator_only = {"invalid_config", "rotation_refused"}  # CLI
    return found - operator_only - {"store_not_migrated", "store_unavailable"}


async def test_error_links_resolve_on_the_gateway_itself(make_gateway: GatewayFactory) -> None:
    """By default the link is the gateway's own /docs/errors#<code>, served without a token, on the main
    listener, and the page has an anchor for the code."""
    gw = await make_gateway()
    body = await (await gw.client.get("/v1/nowhere", headers=gw.auth())).json()
    assert body["docs"] == ["/docs/errors#not_found"]
    page, _, fragment = body["docs"][0].partition("#")
    resp = await gw.client.get(page)
    assert resp.status == 200 and resp.content_type == "text/html"
    assert f'<tr id="{fragment}">' in await resp.text()


@pytest.mark.parametrize(
    ("server", "link"),
    [
        ({"docs_url": "https://docs.example.com/gateway/"}, "https://docs.example.com/gateway/errors#unauthorized"),
        ({"public_url": "https://gw.example.com"}, "https://gw.example.com/docs/errors#unauthorized"),
    ],
)
async def test_docs_url_and_public_url_set_the_links(
    make_gateway: GatewayFactory, server: dict[str, str], link: str
) -> None:
    gw = await make_gateway(server=server)
    assert (await (await gw.client.get("/v1/tokens")).json())["docs"] == [link]


def test_every_error_code_has_an_anchor_on_the_page() -> None:
    page = render((ROOT / "docs" / "errors.md").read_text())
    anchors = set(re.findall(r'<tr id="([a-z_]+)">', page))
    assert _codes() <= anchors, _codes() - anchors
    assert "<script" not in page and "](" not in page  # escaped, and every link rendered


def test_the_wheel_ships_the_errors_page(tmp_path: Path) -> None:
    """An installed gateway (no repository around it) still has docs/errors.md to serve."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("gateway", "docs"):
        shutil.copytree(ROOT / name, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(src)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = tmp_path.glob("gateway-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = archive.read("gateway/docs/errors.md").decode()
    assert shipped == (ROOT / "docs" / "errors.md").read_text()
