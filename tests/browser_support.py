"""Debian's chromium driven by playwright, for the browser tests (the panel page and the webui).

Importing this module skips the importing test module when chromium or playwright is missing.
"""
import contextlib
import os

import pytest

CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

BROWSER_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


@contextlib.contextmanager
def chromium():
    """A headless chromium, closed afterwards (no browser download: the system's own)."""
    pw = playwright_api.sync_playwright().start()
    try:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        yield browser
        browser.close()
    finally:
        pw.stop()
