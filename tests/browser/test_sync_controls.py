"""The syncs page's buttons in a real Chromium: pause a sync that reads a sandbox, resume it, backfill it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.async_api import Page, expect

from gateway.http import appkeys
from tests.browser.conftest import sign_in, url
from tests.conftest import GatewayFactory
from tests.syncs.harness import SYNC, SyncEnv, connect, until


async def test_pause_resume_and_backfill_a_sync_from_the_console(
    page: Page, make_gateway: GatewayFactory, aiohttp_server: Any, screenshots: Path
) -> None:
    """Paused from the page, the sync stops polling its upstream; resumed, it reads the change made
    meanwhile; a backfill reads every record again. The page and the API agree at every step."""
    env = await connect(make_gateway, aiohttp_server, "hubspot", seed=3)
    await until("the backfill is complete", env.in_step)
    await until("the sync is live", lambda: _state_is(env, "live"))
    runners = env.gw.app[appkeys.SYNC_RUNNERS]
    await sign_in(page, env.gw)
    await page.goto(url(env.gw, "/console/syncs"))
    row = page.get_by_role("row", name=SYNC)
    await expect(row.locator(".badge")).to_have_text("live")
    await page.screenshot(path=screenshots / "syncs.png", full_page=True)

    await row.get_by_role("button", name=f"Pause {SYNC}").click()
    await expect(row.locator(".badge")).to_have_text("paused")
    await expect(row.get_by_role("button", name=f"Resume {SYNC}")).to_be_visible()
    assert (await env.view())["state"] == "paused"
    await until("the poller stopped", env.poller_stopped)
    polls = len(env.sandbox.requests)
    added = env.seed(1, start=50)[0]
    for _ in range(3):
        await runners.tick()  # the supervisor's rounds: each would start a poller for a sync that reads
    assert len(env.sandbox.requests) == polls and added not in await env.stored()

    await row.get_by_role("button", name=f"Resume {SYNC}").click()
    await expect(row.get_by_role("button", name=f"Pause {SYNC}")).to_be_visible()
    assert (await env.view())["state"] != "paused"
    await until("the change made while paused arrived", env.in_step)
    assert len(env.sandbox.requests) > polls

    assert await env.progress_is(3)  # the first backfill's count: later changes came by polls
    await row.get_by_role("button", name=f"Backfill {SYNC}").click()
    await until("the second backfill read all four records", lambda: env.progress_is(4))
    await page.reload()
    await expect(row).to_contain_text("hubspot:contact: 4")
    await expect(row.locator(".badge")).to_have_text("live")


async def _state_is(env: SyncEnv, state: str) -> bool:
    return bool((await env.view())["state"] == state)
