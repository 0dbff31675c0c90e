"""Headless Chromium for the dashboard's browser tests: Debian's own `chromium`,
driven by Playwright (never `playwright install`: no download, works offline).

`bin/ensure-browser` installs the package when it is missing.
"""

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, Page, sync_playwright

PROJECT_DIR = Path(__file__).resolve().parent.parent.parent
ARTIFACTS = PROJECT_DIR / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def chromium_path() -> str | None:
    return CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")


@contextmanager
def chromium() -> Iterator[Browser]:
    path = chromium_path()
    if path is None:
        raise RuntimeError("chromium is not installed: run bin/ensure-browser (as root)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def new_page(browser: Browser, *, viewport: dict = DESKTOP) -> Iterator[Page]:
    context = browser.new_context(viewport=viewport)
    # A test that waits on the page should fail in seconds, not Playwright's 30.
    context.set_default_timeout(10_000)
    page = context.new_page()
    # What the Content-Security-Policy blocked (an inline script or style, another
    # origin): the page would be broken in a way its assertions might not see.
    blocked: list[str] = []
    page.on("console", lambda message: blocked.append(message.text)
            if "Content Security Policy" in message.text else None)
    try:
        yield page
    finally:
        context.close()
    assert blocked == [], blocked


def log_in(page: Page, base_url: str, username: str, password: str) -> None:
    page.goto(f"{base_url}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/orgs/**")


def screenshot(page: Page, name: str) -> Path:
    """Save the whole page as test-artifacts/<name>.png (what a user sees)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
