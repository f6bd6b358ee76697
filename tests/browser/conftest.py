"""Fixtures of the browser tests: one headless Chromium (Debian's, driven by Playwright) for
the browser tests, a fresh context and page per test against pytest-django's live server,
sign-in through the login form, and a full-page screenshot of every open page of a failed test.
"""

import re
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.urls import reverse
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.ui.conftest import make_person  # noqa: F401 - the people the tests sign in as

# Browser downloads are impossible here: Playwright drives the distribution's chromium
# (scripts/test installs it), with everything that would reach the network turned off.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 10_000


@pytest.fixture(scope="package")
def browser() -> Browser:
    """One Chromium for all the browser tests.

    Package scope rather than session: Playwright's sync API keeps an asyncio loop running
    in this thread while it is open, and Django refuses ORM calls from a thread with a
    running loop. The tests' own ORM calls are plain synchronous calls, so they are allowed
    here, and only while the browser is open: tests after this package run as usual.
    """
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/test installs Debian's chromium package")
    with pytest.MonkeyPatch.context() as env, sync_playwright() as playwright:
        env.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def context(browser, live_server) -> BrowserContext:
    """A fresh context (cookies, storage) per test; relative URLs go to the live server."""
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    yield context
    context.close()


@pytest.fixture
def confirmations() -> list[str]:
    """The questions the page asked (data-confirm dialogs), in order."""
    return []


@pytest.fixture
def page(context, confirmations) -> Page:
    """A page that answers every confirmation dialog "yes", as an operator who means it."""
    page = context.new_page()

    def accept(dialog):
        confirmations.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    return page


@pytest.fixture
def sign_in(page, make_person):  # noqa: F811 - the fixture imported above
    """sign_in("olga", "operator") -> a new person in that role, signed in through the login form
    of the test's page (or of `on`, another context's page)."""

    def sign_in_as(username: str, role: str | None, on: Page | None = None) -> User:
        person = make_person(username, role)
        browser_page = on or page
        browser_page.goto(reverse("ui:login"))
        browser_page.fill("input[name=username]", username)
        browser_page.fill("input[name=password]", f"pw-{username}")
        browser_page.get_by_role("button", name="Sign in").click()
        expect(browser_page.get_by_test_id("whoami")).to_contain_text(username)
        return person

    return sign_in_as


def screenshot_folder() -> Path:
    folder = Path(settings.VAR_DIR) / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_screenshots(context: BrowserContext, test_name: str) -> list[str]:
    """A full-page PNG of each open page: <test>.png, then <test>-2.png… for popups."""
    stem = re.sub(r"[^\w.-]+", "_", test_name)
    saved = []
    for number, open_page in enumerate(context.pages, start=1):
        path = screenshot_folder() / (f"{stem}.png" if number == 1 else f"{stem}-{number}.png")
        try:
            open_page.screenshot(path=str(path), full_page=True)
        except Exception as error:  # a crashed page must not hide the test's own failure
            saved.append(f"{path}: no screenshot ({error})")
            continue
        saved.append(str(path))
    return saved


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """When a browser test fails, keep what the browser showed, and say where it is."""
    outcome = yield
    report = outcome.get_result()
    context = getattr(item, "funcargs", {}).get("context")
    if not (report.failed and report.when in ("setup", "call") and context is not None):
        return
    paths = save_screenshots(context, item.name)
    report.sections.append(("screenshots", "\n".join(paths)))
    for path in paths:
        print(f"\nscreenshot of {item.nodeid}: {path}", file=sys.stderr)
