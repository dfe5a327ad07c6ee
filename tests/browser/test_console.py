"""The web console in a real Chromium: sign in, watch live state, manage tokens, sign out, keyboard only."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from playwright.async_api import Page, expect

from tests.browser.conftest import sign_in, url
from tests.conftest import Gateway
from tests.upstream.helpers import Upstream, add_credential, add_sync

VIEWS = [
    ("Overview", "/console", "Overview"),
    ("Recent calls", "/console/calls", "Recent calls"),
    ("Syncs", "/console/syncs", "Syncs"),
    ("Consumers", "/console/consumers", "Consumers"),
    ("Tokens", "/console/tokens", "API tokens"),
    ("Providers", "/console/providers", "Providers"),
]


async def _slow_credential(gw: Gateway, upstream: Upstream) -> str:
    """A credential paced at 4 calls/s with no burst, so a flood queues."""
    cid = await add_credential(gw, upstream.url + "/echo", cid="cred-slow")
    resp = await gw.client.patch(
        f"/v1/credentials/{cid}", json={"rate_limit": {"rate": 4, "per": 1, "burst": 1}}, headers=gw.auth()
    )
    assert resp.status == 200, await resp.text()
    return cid


async def _flood(gw: Gateway, cid: str, calls: int) -> list[int]:
    """``calls`` concurrent calls, every other one at priority low."""

    async def one(i: int) -> int:
        headers = {**gw.auth(), "x-gateway-priority": "low" if i % 2 else "normal"}
        resp = await gw.client.get(f"/v1/proxy/credential/{cid}/items/{i}?secret=nope", headers=headers)
        await resp.read()
        return resp.status

    return list(await asyncio.gather(*(one(i) for i in range(calls))))


async def test_queue_depth_rises_under_a_flood_and_falls_after(
    page: Page, gateway: Gateway, upstream: Upstream, screenshots: Path
) -> None:
    """Signed in, the overview shows a credential's queue grow while a flood waits and drain after, live."""
    cid = await _slow_credential(gateway, upstream)
    await add_credential(gateway, upstream.url + "/echo", cid="cred-idle", provider="stripe")
    await sign_in(page, gateway)
    depth = page.locator(f'tr[data-credential="{cid}"] [data-field="queue_depth"]')
    await expect(depth).to_have_text("0")
    await expect(page.locator("[data-live-status]")).to_have_text("live")
    flood = asyncio.create_task(_flood(gateway, cid, 24))
    await expect(depth).to_have_text(re.compile(r"^([6-9]|1[0-9]|2[0-4])$"))  # the queue as the page shows it
    by_class = page.locator(f'tr[data-credential="{cid}"] [data-field="queues"]')
    await expect(by_class).to_have_text(re.compile(r"^high 0 · normal \d+ · low [1-9]\d*$"))
    await page.screenshot(path=screenshots / "overview.png", full_page=True)
    await page.emulate_media(color_scheme="dark")
    await page.screenshot(path=screenshots / "overview-dark.png", full_page=True)
    await page.emulate_media(color_scheme="light")
    assert set(await flood) == {200}
    await expect(depth).to_have_text("0", timeout=10_000)
    await expect(by_class).to_have_text("—")
    await expect(page.locator(f'tr[data-credential="{cid}"] [data-field="wait_p99_ms"]')).not_to_have_text("—")

    await page.get_by_role("link", name=cid, exact=True).first.click()
    await page.wait_for_url(f"**/console/credentials/{cid}")
    await expect(page.locator("[data-live-status]")).to_have_text("live")
    assert await page.locator("#chart rect.calls").count() >= 5  # one bar per second of the flood
    await expect(page.locator("#chart line.limit")).to_have_count(1)
    await expect(page.locator("table.calls tbody tr").first).to_contain_text(f"/v1/proxy/credential/{cid}/items/")
    assert "secret=nope" not in await page.content()
    await page.screenshot(path=screenshots / "credential.png", full_page=True)


LIMITS = {
    "rate": 8,
    "per": 1,
    "windows": [{"rate": 300, "per": 60}, {"rate": 10000, "per": 3600}],
    "rules": [
        {"match": {"methods": ["POST"], "path": "/search"}, "rate": 3, "per": 1},
        {"match": {"path": "/reports/**"}, "rate": 60, "per": 60, "windows": [{"rate": 1000, "per": 86400}]},
    ],
}
LINES = [  # (class, label) of each line the chart draws for LIMITS
    ("limit", "limit: 8 per second (8/s)"),
    ("window", "window 1: 300 per minute (5/s)"),
    ("window", "window 2: 10000 per hour (2.78/s)"),
    ("rule", "rule 1 (POST /search): 3 per second (3/s)"),
    ("rule", "rule 2 (any /reports/**): 60 per minute (1/s)"),
    ("rule", "rule 2 (any /reports/**) window 1: 1000 per day (0.0116/s)"),
]


async def test_the_chart_draws_a_labelled_line_per_window_and_rule_bucket(
    page: Page, gateway: Gateway, upstream: Upstream, screenshots: Path
) -> None:
    """A credential with two windows and two rules (one with a window of its own): six limit lines."""
    cid = await add_credential(gateway, upstream.url + "/echo", cid="cred-limits", rate_limit=LIMITS)
    for i in range(12):  # a few calls, so the bars show against the lines
        resp = await gateway.client.get(f"/v1/proxy/credential/{cid}/reports/{i}", headers=gateway.auth())
        assert resp.status == 200
    await sign_in(page, gateway)
    await page.goto(url(gateway, f"/console/credentials/{cid}"))
    lines = page.locator("#chart line.limit")
    await expect(lines).to_have_count(len(LINES))
    drawn = [(await line.get_attribute("class"), await line.get_attribute("data-label")) for line in await lines.all()]
    assert sorted(drawn) == sorted((f"limit {kind}", label) for kind, label in LINES)
    by_height = sorted((label for _, label in LINES), key=lambda label: -_per_second(label))  # drawn top down
    await expect(page.locator("#chart text.line-label")).to_have_text(by_height)
    await expect(page.locator("figcaption [data-line]")).to_have_text([label for _, label in LINES])
    await expect(page.locator("[data-live-status]")).to_have_text("live")
    heights = {label: float(await lines.nth(i).get_attribute("y1") or 0) for i, (_, label) in enumerate(drawn)}
    assert heights[LINES[0][1]] < heights[LINES[1][1]] < heights[LINES[2][1]]  # 8/s above 5/s above 2.78/s
    await page.screenshot(path=screenshots / "credential-limits.png", full_page=True)


def _per_second(label: str) -> float:
    return float(label.rsplit("(", 1)[1].removesuffix("/s)"))


async def test_create_a_token_use_it_revoke_it(
    page: Page, gateway: Gateway, upstream: Upstream, screenshots: Path
) -> None:
    """A token created in the console works at once (shown once), and once revoked there it is refused."""
    cid = await add_credential(gateway, upstream.url + "/echo")
    await sign_in(page, gateway)
    await page.get_by_role("link", name="Tokens").click()
    await page.get_by_label("Name").fill("ci-bot")
    await page.get_by_role("button", name="Create token").click()
    secret = (await page.locator("#new-token").text_content() or "").strip()
    assert secret.startswith("gw_")
    await page.screenshot(path=screenshots / "tokens.png", full_page=True)
    proxied = await gateway.client.get(f"/v1/proxy/credential/{cid}/hello", headers=gateway.auth(secret))
    assert proxied.status == 200

    await page.reload()  # shown once: a reload (a GET) never shows it again
    assert secret not in await page.content()
    await page.get_by_role("button", name="Revoke ci-bot").click()
    await expect(page.get_by_role("row", name="ci-bot")).to_have_count(0)
    refused = await gateway.client.get(f"/v1/proxy/credential/{cid}/hello", headers=gateway.auth(secret))
    assert refused.status == 401

    await page.get_by_role("link", name="Recent calls").click()
    await page.get_by_label("Token").fill("ci-bot")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.locator("table.calls tbody tr")).to_have_count(1)
    await expect(page.locator("table.calls tbody tr")).to_contain_text("200")
    await page.screenshot(path=screenshots / "calls.png", full_page=True)


async def test_sign_out(page: Page, gateway: Gateway, screenshots: Path) -> None:
    """Sign-out ends the session: the console sends the browser back to sign-in."""
    await page.goto(url(gateway, "/console"))
    await page.screenshot(path=screenshots / "signin.png")
    await sign_in(page, gateway)
    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url("**/console/signin")
    await page.goto(url(gateway, "/console/tokens"))
    assert page.url.endswith("/console/signin")


async def test_every_main_view_is_reachable_with_the_keyboard_alone(
    page: Page, gateway: Gateway, upstream: Upstream, screenshots: Path
) -> None:
    """Sign in and visit every view with Tab and Enter only; focus is always visible."""
    await add_sync(gateway, await add_credential(gateway, upstream.url + "/echo"))
    consumer = {"id": "orders", "kind": "pull", "sync_id": "sync-1"}
    assert (await gateway.client.post("/v1/consumers", json=consumer, headers=gateway.auth())).status == 201
    await page.goto(url(gateway, "/console"))
    await page.keyboard.type(gateway.admin_token)  # the token field has focus on arrival
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/console")
    for label, path, heading in VIEWS:
        await _tab_to(page, label)
        outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline != "none", f"no visible focus on {label}"
        await page.keyboard.press("Enter")
        await page.wait_for_url(f"**{path}")
        await expect(page.get_by_role("heading", level=1)).to_have_text(heading)
        name = path.rsplit("/", 1)[-1]
        if name not in ("console", "calls", "tokens", "syncs"):  # those are shot by the other tests
            await page.screenshot(path=screenshots / f"{name}.png", full_page=True)


async def _tab_to(page: Page, label: str, limit: int = 30) -> None:
    """Press Tab until the focused element is the link named ``label``."""
    for _ in range(limit):
        await page.keyboard.press("Tab")
        focused = await page.evaluate("document.activeElement.textContent.trim()")
        if focused == label:
            return
    raise AssertionError(f"{label!r} not reached with {limit} Tabs")
