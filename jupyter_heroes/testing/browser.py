"""Headless Debian Chromium driven by Playwright (never ``playwright install``: no browser downloads).

Playwright's Python package brings its own driver; the browser is the Debian ``chromium`` package at
``/usr/bin/chromium`` (override with ``$HEROES_CHROMIUM``). Use :func:`chromium` without pytest::

    with chromium() as browser:
        page = browser.new_page()
        page.goto("http://127.0.0.1:8000/hub/login")
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from .base import ComponentError

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Playwright

CHROMIUM = "/usr/bin/chromium"

#: root has no user namespace sandbox here (--no-sandbox); nothing may reach the network behind the tests'
#: back (background networking, component updates, sync, QUIC); /dev/shm may be small on CI runners.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--metrics-recording-only",
    "--password-store=basic",
)


def chromium_executable() -> str:
    exe = os.environ.get("HEROES_CHROMIUM", CHROMIUM)
    if not Path(exe).exists():
        raise ComponentError(
            f"{exe} not found: install the Debian package 'chromium' (see .ci/install-testbed.sh)"
        )
    return exe


def launch_chromium(playwright: Playwright, **kwargs: object) -> Browser:
    """Launch headless Debian Chromium through *playwright* (``sync_playwright().start()``)."""
    exe = chromium_executable()
    try:
        return playwright.chromium.launch(
            executable_path=exe, headless=True, args=list(CHROMIUM_ARGS), timeout=60_000, **kwargs
        )
    except Exception as e:  # playwright raises its own Error with the browser's stderr
        raise ComponentError(f"chromium ({exe}) did not start: {e}") from e


@contextlib.contextmanager
def chromium(**kwargs: object) -> Iterator[Browser]:
    """A headless Chromium for the duration of the ``with`` block (Playwright sync API)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = launch_chromium(pw, **kwargs)
        try:
            yield browser
        finally:
            browser.close()
