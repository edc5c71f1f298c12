"""The browser test bed: headless Debian Chromium through Playwright renders a local page."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator
from functools import partial

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>HEROES test bed</title>
<style>body{font-family:sans-serif;margin:2em} #out{color:#fff;background:#1f6feb;padding:1em}</style></head>
<body><h1>Test bed page</h1><div id="out">waiting for script</div>
<script>document.getElementById('out').textContent = 'rendered by script: ' + (6 * 7);</script>
</body></html>
"""


@pytest.fixture(scope="module")
def local_site(tmp_path_factory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("site")
    (root / "index.html").write_text(PAGE)
    handler = partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


async def test_browser_coexists_with_async_tests(browser):
    """Hub tests are async, browser tests sync, in one session: the launched browser must not stop
    pytest-asyncio's loop from running (and the next sync test below uses the browser again)."""
    await asyncio.sleep(0.01)
    assert browser.is_connected()


def test_renders_a_local_page_and_takes_a_screenshot(browser, local_site, screenshots_dir):
    assert browser.is_connected()
    page = browser.new_page(viewport={"width": 800, "height": 400})
    try:
        page.goto(local_site)
        assert page.title() == "HEROES test bed"
        page.wait_for_function(
            "document.getElementById('out').textContent.startsWith('rendered')", timeout=10_000
        )
        assert page.inner_text("#out") == "rendered by script: 42"
        shot = screenshots_dir / "testbed-browser.png"
        shot.unlink(missing_ok=True)
        page.screenshot(path=str(shot))
    finally:
        page.close()
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(data[16:20], "big") == 800 and int.from_bytes(data[20:24], "big") == 400
    assert len(data) > 2000
