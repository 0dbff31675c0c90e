"""The dashboard in headless Chromium against the live gateway (uvicorn serving /v1 and
Django), with traffic sent through the proxy by the official OpenAI SDK.

Every page is saved to test-artifacts/<name>.png: look at them, they are what users see.
"""

import re
import time
from collections.abc import Callable

import httpx
import openai
import pytest

from analytics.models import RequestLog
from tests.dashboard.browser import PHONE, chromium, log_in, new_page, screenshot
from tests.proxy.helpers import ask, client_for, wait_for_entries

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def browser():
    # Playwright's sync API keeps an asyncio loop running in this thread while it is
    # open, which makes Django refuse every ORM call here (the tests' own, and
    # pytest-django's flush between tests); those calls are plain sync code.
    with pytest.MonkeyPatch.context() as patch, chromium() as launched:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        yield launched


def wait_until(check: Callable[[], bool], *, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def card(page, title: str):
    return page.locator(f".card:has(h2:text-is('{title}'))")


def send_traffic(gateway, world) -> int:
    """Misses, Redis hits and a PostgreSQL hit for org A; returns the requests sent."""
    client = client_for(gateway.url, world.a.raw_key)
    prompts = ["What is a cache?", "Why Redis?", "Why PostgreSQL?"]
    for prompt in prompts:
        ask(client, prompt)
    for prompt in prompts:
        assert ask(client, prompt)[1]["x-cognitude-cache-tier"] == "redis"
    wait_for_entries(world.a.org, len(prompts))
    # Empty the hot tier, so the next repeat is answered by PostgreSQL.
    httpx.delete(f"{gateway.url}/cache", params={"tier": "redis"},
                 headers={"X-API-Key": world.a.raw_key}).raise_for_status()
    assert ask(client, prompts[0])[1]["x-cognitude-cache-tier"] == "postgres"
    sent = 2 * len(prompts) + 1
    assert wait_until(lambda: RequestLog.objects.filter(organization=world.a.org).count()
                      == sent)
    return sent


def test_it_shows_every_page_with_real_traffic(browser, gateway, live_world):
    sent = send_traffic(gateway, live_world)
    with new_page(browser) as page:
        page.goto(f"{gateway.url}/")
        assert page.url == f"{gateway.url}/accounts/login/?next=/"
        screenshot(page, "login")
        log_in(page, gateway.url, "alice", "pw-alice")

        assert page.locator("#hit-rate-chart circle.point").count() == 24
        assert page.locator("#hit-rate-chart polygon.tier-redis").count() == 1
        assert page.locator("#requests-chart g.bar").count() == 24
        assert card(page, "Requests").locator(".big").inner_text() == str(sent)
        # 4 hits of 4 hits + 3 misses, one of them from PostgreSQL.
        assert card(page, "Hit rate").locator(".big").inner_text() == "57.1%"
        assert "PostgreSQL 1" in card(page, "Hit rate").inner_text()
        page.wait_for_selector("#top-recommendations[data-loaded]")
        assert "Nothing to recommend" in page.inner_text("#top-recommendations")
        # Static files come from the app itself (WhiteNoise): the page is styled.
        assert page.evaluate(
            "getComputedStyle(document.querySelector('.topbar')).display") == "flex"
        screenshot(page, "overview-24h")

        page.click(".periods a:has-text('7d')")
        assert page.locator("#hit-rate-chart circle.point").count() == 168
        screenshot(page, "overview-7d")
        page.click(".periods a:has-text('30d')")
        assert page.locator("#hit-rate-chart circle.point").count() == 30
        page.wait_for_selector("#top-recommendations[data-loaded]")
        screenshot(page, "overview-30d")

        page.click("nav.sections >> text=Usage")
        assert page.locator("#usage-table tbody th").first.inner_text() == "gpt-4o-mini"
        screenshot(page, "usage")
        with page.expect_download() as download:
            page.click("text=Export CSV")
        assert download.value.suggested_filename.startswith("org-a-usage-by-model-")

        for section, name in [("Recommendations", "recommendations"), ("Cache", "cache"),
                              ("API keys", "keys"), ("Routes", "routes"),
                              ("Providers", "providers")]:
            page.click(f"nav.sections >> text={section}")
            screenshot(page, name)
        assert f"…{live_world.a.provider_key[-4:]}" in page.content()
        page.click(".account >> text=alice")
        screenshot(page, "password-change")
        page.click("text=Log out")
        assert page.url == f"{gateway.url}/accounts/login/"

    with new_page(browser, viewport=PHONE) as phone:
        log_in(phone, gateway.url, "bob", "pw-bob")
        # At phone width nothing is wider than the screen: no sideways scrolling.
        phone.wait_for_selector("#top-recommendations[data-loaded]")
        assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        screenshot(phone, "overview-phone-member")
        phone.goto(f"{gateway.url}/orgs/{live_world.a.org.slug}/keys/")
        assert phone.locator("text=Create key").count() == 0
        screenshot(phone, "keys-phone-member")


def test_it_shows_a_new_key_once_and_revoking_it_locks_it_out(browser, gateway, live_world):
    with new_page(browser) as page:
        log_in(page, gateway.url, "alice", "pw-alice")
        page.goto(f"{gateway.url}/orgs/{live_world.a.org.slug}/keys/")
        page.fill("input[name=name]", "browser key")
        page.select_option("select[name=expires_in_days]", "30")
        page.click("button:has-text('Create key')")

        raw_key = page.locator("#raw-key").inner_text()
        assert re.fullmatch(r"cog_[0-9A-Za-z]{38}", raw_key)
        assert page.content().count(raw_key) == 1
        assert "shown only once" in page.content()
        screenshot(page, "key-created")
        client = client_for(gateway.url, raw_key)
        assert ask(client, "hello from a new key")[0].choices

        page.reload()
        assert raw_key not in page.content()
        assert page.url.endswith(f"/orgs/{live_world.a.org.slug}/keys/")
        row = page.locator("tr", has_text="browser key")
        assert row.locator(".badge").inner_text() == "Active"

        page.once("dialog", lambda dialog: dialog.accept())
        row.locator("button:has-text('Revoke')").click()
        page.wait_for_selector(".messages")
        assert row.locator(".badge").inner_text() == "Revoked"
        screenshot(page, "key-revoked")

    revoked_at = time.monotonic()

    def refused() -> bool:
        try:
            ask(client, "am I still allowed?")
        except openai.AuthenticationError:
            return True
        return False

    # The gateway remembers a key's answer for COGNITUDE_API_KEY_CACHE_SECONDS (1 s here).
    assert wait_until(refused, timeout=3.0)
    assert time.monotonic() - revoked_at < 2.0


def test_it_clears_the_cache_behind_a_confirmation(browser, gateway, live_world):
    client = client_for(gateway.url, live_world.a.raw_key)
    for prompt in ("one", "two", "one"):
        ask(client, prompt)
    wait_for_entries(live_world.a.org, 2)

    with new_page(browser) as page:
        log_in(page, gateway.url, "alice", "pw-alice")
        page.goto(f"{gateway.url}/orgs/{live_world.a.org.slug}/cache/")

        def stat(name: str) -> str:
            return page.locator(f"[data-stat={name}]").inner_text()

        assert stat("total_entries") == "2"
        assert stat("redis_entries") == "2"
        assert stat("redis_hits") == "1"
        screenshot(page, "cache-before-clear")

        page.click("text=Clear both tiers…")
        assert "cannot be undone" in page.content()
        screenshot(page, "cache-clear-confirm")
        page.click("button:has-text('Clear both tiers')")

        page.wait_for_selector(".messages")
        assert (stat("total_entries"), stat("redis_entries"), stat("redis_hits")) == \
            ("0", "0", "0")
        screenshot(page, "cache-cleared")

    assert ask(client, "one")[1]["x-cognitude-cache"] == "MISS"
