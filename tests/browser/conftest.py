"""Browser fixtures: Debian's Chromium driven by Playwright, a gateway on SQLite, a screenshot folder.

No browser is downloaded: Playwright drives ``/usr/bin/chromium`` (``apt-get install chromium``,
done by .ci/run). Locally a missing Chromium skips these tests; with ``CI=true`` it fails them.
Screenshots go to ``$GATEWAY_SCREENSHOTS`` (docs/console/ holds the committed ones), else a temp dir.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.conftest import Gateway, GatewayFactory, service_missing
from tests.upstream.helpers import Upstream, start_upstream

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
TIMEOUT_MS = 15_000


@pytest.fixture
async def store_url(tmp_path: Path) -> str:
    """The browser tests check the pages, not the store: SQLite only (the HTTP tests run both)."""
    return f"sqlite:///{tmp_path / 'gateway.db'}"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not os.path.exists(CHROMIUM):
        service_missing(f"Chromium at {CHROMIUM}")
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme="light")
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    await context.close()
    assert not [e for e in errors if "Content Security Policy" in e or "Uncaught" in e], errors


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("GATEWAY_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
async def upstream(aiohttp_server: Any) -> Upstream:
    return await start_upstream(aiohttp_server)


@pytest.fixture
async def gateway(make_gateway: GatewayFactory) -> Gateway:
    return await make_gateway()


def url(gw: Gateway, path: str) -> str:
    return str(gw.client.make_url(path))


async def sign_in(page: Page, gw: Gateway, token: str | None = None) -> None:
    """Sign in through the form, as a person would."""
    await page.goto(url(gw, "/console"))
    assert page.url.endswith("/console/signin")
    await page.get_by_label("Admin token").fill(token or gw.admin_token)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url("**/console")
