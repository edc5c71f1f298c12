"""Fixtures of the server extension tests.

``standin`` is a real HTTP server on 127.0.0.1 standing in for the HEROES service where a test must
see exactly what arrives (headers, bodies) or make the service misbehave on demand (slow, broken
streams, HTML error pages, gone): things the real service cannot be made to do. Everything the real
service can show (identity, organizations, its own errors, XSRF) is tested through the real hub in
``test_hub.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.iostream import StreamClosedError

from jupyter_heroes.serverext.testing import JupyterServer
from jupyter_heroes.testing.base import free_port, wait_for

PREFIX = "/services/heroes/api/v1"
UPSTREAM_TOKEN = "upstream-token-of-the-server"


class Recorder(web.RequestHandler):
    def initialize(self, standin: StandIn) -> None:
        self.standin = standin

    def prepare(self) -> None:
        self.standin.requests.append(
            {
                "method": self.request.method,
                "path": self.request.path,
                "query": self.request.query,
                "headers": dict(self.request.headers),
                "body": self.request.body,
            }
        )


class EchoHandler(Recorder):
    def answer(self, path: str | None = None) -> None:
        self.set_header("Set-Cookie", "service-session=secret; Path=/")
        self.set_header("X-Internal", "not for browsers")
        self.set_header("ETag", '"v1"')
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        r = self.request
        self.finish(
            json.dumps(
                {
                    "method": r.method,
                    "path": r.path,
                    "query": r.query,
                    "body": r.body.decode("utf-8", "replace"),
                },
                sort_keys=True,
            )
        )

    get = post = put = patch = delete = answer


class StatusHandler(Recorder):
    def answer(self, code: str) -> None:
        status = int(code)
        self.set_status(status)
        if status == 204:
            self.finish()
            return
        self.set_header("Content-Type", "application/json")
        if status == 429:
            self.set_header("Retry-After", "7")
        self.finish(json.dumps({"message": f"the service says {status}", "reason": f"r{status}"}))

    get = post = delete = answer


class HtmlHandler(Recorder):
    def get(self, code: str) -> None:
        self.set_status(int(code))
        self.set_header("Content-Type", "text/html")
        self.finish("<html><body>proxy error page</body></html>")


class SlowHandler(Recorder):
    async def get(self) -> None:
        await asyncio.sleep(6)
        self.finish({"late": True})


class BigHandler(Recorder):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps([{"i": i, "pad": "x" * 90} for i in range(3000)]))


class EventsHandler(Recorder):
    """Five events 0.2 s apart, then keep-alive comments every 0.5 s until the client leaves."""

    async def get(self) -> None:
        self.standin.open_streams += 1
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        try:
            for n in range(5):
                event = {"type": "instance", "instance": "i1", "state": "running", "n": n}
                self.write(f"id: {n}\ndata: {json.dumps(event)}\n\n")
                await self.flush()
                await asyncio.sleep(0.2)
            while True:
                self.write(": keep-alive\n\n")
                await self.flush()
                await asyncio.sleep(0.5)
        except StreamClosedError:
            pass
        finally:
            self.standin.open_streams -= 1
            self.standin.closed_streams += 1


class BrokenStreamHandler(Recorder):
    async def get(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.write('data: {"type": "instance", "instance": "i1", "state": "queued"}\n\n')
        await self.flush()
        await asyncio.sleep(0.2)
        assert self.request.connection is not None
        self.request.connection.close()


@web.stream_request_body
class UploadHandler(web.RequestHandler):
    """The service's streamed upload, as far as the proxy can tell: the body is hashed as it arrives
    and never kept; the answer gives its size and SHA-256."""

    def initialize(self, standin: StandIn) -> None:
        self.standin = standin
        self.sha = hashlib.sha256()
        self.size = 0

    def prepare(self) -> None:
        self.standin.requests.append(
            {
                "method": self.request.method,
                "path": self.request.path,
                "query": self.request.query,
                "headers": dict(self.request.headers),
                "body": b"",
            }
        )
        self.request.connection.set_max_body_size(1 << 40)  # type: ignore[union-attr]

    def data_received(self, chunk: bytes) -> None:
        self.sha.update(chunk)
        self.size += len(chunk)

    def post(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"size": self.size, "sha256": self.sha.hexdigest()}))


class StandIn:
    """The HTTP server (in a thread with its own event loop); ``url`` is the service URL to configure."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[dict[str, Any]] = []
        self.open_streams = 0
        self.closed_streams = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: HTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/services/heroes/"

    def app(self) -> web.Application:
        kw = {"standin": self}
        return web.Application(
            [
                (PREFIX + r"/echo(/.*)?", EchoHandler, kw),
                (PREFIX + r"/status/(\d+)", StatusHandler, kw),
                (PREFIX + r"/html/(\d+)", HtmlHandler, kw),
                (PREFIX + r"/slow", SlowHandler, kw),
                (PREFIX + r"/big", BigHandler, kw),
                (PREFIX + r"/events", EventsHandler, kw),
                (PREFIX + r"/broken-stream", BrokenStreamHandler, kw),
                (PREFIX + r"/organization/data/upload", UploadHandler, kw),
            ]
        )

    def start(self) -> StandIn:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)

            async def listen() -> None:
                self._server = HTTPServer(self.app())
                self._server.listen(self.port, "127.0.0.1")

            loop.run_until_complete(listen())
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="heroes-standin", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        """Close the listening socket and every open connection, then end the thread."""
        loop, server = self._loop, self._server
        if loop is None or server is None:
            return

        async def close() -> None:
            server.stop()
            await server.close_all_connections()

        asyncio.run_coroutine_threadsafe(close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        assert self._thread is not None
        self._thread.join(10)
        self._loop = self._server = self._thread = None

    def seen(self, path_suffix: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"].endswith(path_suffix)]


@pytest.fixture(scope="module")
def standin() -> Iterator[StandIn]:
    s = StandIn().start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def jpserver(standin: StandIn) -> Iterator[JupyterServer]:
    """A Jupyter server whose extension forwards to the stand-in (short timeouts, 4 KiB body limit,
    300 MB upload limit)."""
    server = JupyterServer(
        standin.url,
        UPSTREAM_TOKEN,
        args=[
            "--HeroesExtension.request_timeout=2",
            "--HeroesExtension.connect_timeout=2",
            "--HeroesExtension.max_body_size=4096",
            "--HeroesExtension.max_upload_size=300000000",
        ],
    )
    with server:
        yield server


def wait_until(check: Any, timeout: float, what: str) -> Any:
    return wait_for(check, timeout, what, interval=0.1)
