"""Headless Debian Chromium driven by Playwright (never ``playwright install``: no browser downloads).

Playwright's Python package brings its own driver; the browser is the Debian ``chromium`` package at
``/usr/bin/chromium`` (override with ``$HEROES_CHROMIUM``). Use :func:`chromium` without pytest::

    with chromium() as browser:
        page = browser.new_page()
        page.goto("http://127.0.0.1:8000/hub/login")
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


def launch_chromium(playwright: Playwright, **kwargs: Any) -> Browser:
    """Launch headless Debian Chromium through *playwright* (``sync_playwright().start()``)."""
    exe = chromium_executable()
    try:
        return playwright.chromium.launch(
            executable_path=exe, headless=True, args=list(CHROMIUM_ARGS), timeout=60_000, **kwargs
        )
    except Exception as e:  # playwright raises its own Error with the browser's stderr
        raise ComponentError(f"chromium ({exe}) did not start: {e}") from e


@contextlib.contextmanager
def chromium(**kwargs: Any) -> Iterator[Browser]:
    """A headless Chromium for the duration of the ``with`` block (Playwright sync API).

    Inside the block, other asyncio event loops keep working on this thread (see
    :func:`share_thread_with_asyncio`), so a session-long browser does not break async tests."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw, share_thread_with_asyncio(asyncio.events._get_running_loop()):
        browser = launch_chromium(pw, **kwargs)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def share_thread_with_asyncio(playwright_loop: asyncio.AbstractEventLoop | None) -> Iterator[None]:
    """Let asyncio loops run on a thread where the Playwright sync API is active.

    Playwright's sync API runs its own loop inside a greenlet on the calling thread; greenlet switches
    do not unwind that ``run_until_complete``, so for as long as Playwright is started,
    ``asyncio.get_running_loop()`` on this thread returns Playwright's loop, and every other
    ``asyncio.Runner.run`` / ``loop.run_until_complete`` (pytest-asyncio's tests and fixtures, tornado's
    ``run_sync``) fails with "cannot be called from a running event loop" (microsoft/playwright-pytest#167).
    While this context is active, those calls park Playwright's loop (clear the thread's running loop)
    and restore it when they return; Playwright's own loop is left alone. The sync API still cannot be
    called from inside a coroutine."""
    if playwright_loop is None:
        yield
        return
    events = asyncio.events
    targets: list[tuple[type, str]] = [
        (asyncio.BaseEventLoop, "run_forever"),
        (asyncio.BaseEventLoop, "run_until_complete"),
    ]
    if hasattr(asyncio, "Runner"):  # Python >= 3.11
        targets.append((asyncio.Runner, "run"))
    originals = [(cls, name, getattr(cls, name)) for cls, name in targets]

    def parking(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(self: object, *args: Any, **kw: Any) -> Any:
            if self is playwright_loop or events._get_running_loop() is not playwright_loop:
                return fn(self, *args, **kw)
            events._set_running_loop(None)
            try:
                return fn(self, *args, **kw)
            finally:
                events._set_running_loop(playwright_loop)

        return wrapper

    for cls, name, fn in originals:
        setattr(cls, name, parking(fn))
    try:
        yield
    finally:
        for cls, name, fn in originals:
            setattr(cls, name, fn)


# --- driving JupyterHub and JupyterLab pages ------------------------------------------------------

#: the notebook on show in JupyterLab (hidden panels keep their cells in the page)
NB = ".jp-NotebookPanel:not(.lm-mod-hidden)"


def hub_login(page: Any, hub_url: str, username: str) -> None:
    """Log in through the hub's login form (the test hubs use the dummy authenticator)."""
    page.goto(f"{hub_url}/hub/login")
    page.fill("#username_input", username)
    page.fill("#password_input", "any password (dummy authenticator)")
    page.click("#login_submit")


def run_code_cells(page: Any, count: int, *, prompt: str = "[0-9]+", timeout: float = 90_000) -> None:
    """Run the shown notebook's first *count* code cells from the keyboard (Shift+Enter runs a cell and
    moves on) once the kernel is connected (keys pressed before that move through the cells without
    running them); return when each cell's prompt matches ``[`` *prompt* ``]`` (``[0-9]+``: ran;
    ``[0-9*]+``: running or ran)."""
    page.locator(".jp-StatusBar-TextItem", has_text="Python 3 (ipykernel) | Idle").wait_for(timeout=90_000)
    page.locator(f"{NB} .jp-CodeCell .cm-content").first.click()
    for _ in range(count):
        page.keyboard.press("Shift+Enter")
    pattern = "\\[" + prompt + "\\]"
    page.wait_for_function(
        f"() => [...document.querySelectorAll('{NB} .jp-CodeCell .jp-InputPrompt')]"
        f".slice(0, {count}).every(p => /{pattern}/.test(p.textContent))",
        timeout=timeout,
    )
