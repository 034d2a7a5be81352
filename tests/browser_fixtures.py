"""Browser fixtures shared by the dashboard tests: Debian's chromium driven by Playwright,
every host but this machine unresolvable. Import them into a test module (pytest finds
fixtures in its namespace).

``playwright`` and ``browser`` are module-scoped, not the plugin's session scope: while
Playwright's sync API lives it holds an event loop in this thread, which the suite's asyncio
tests after the module need free.
"""

from __future__ import annotations

import shutil

import pytest
from playwright.sync_api import sync_playwright

CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def playwright():
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(playwright, browser_type_launch_args):
    browser = playwright.chromium.launch(**browser_type_launch_args)
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture(scope="session")
def browser_type_launch_args():
    """Debian's chromium; every host but this machine unresolvable."""
    return {
        "executable_path": CHROMIUM,
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
        ],
    }
