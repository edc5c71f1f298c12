"""``<base_url>/heroes/api/v1/<path>``: the HEROES REST API, forwarded to the service as the user.

The browser talks to its own Jupyter server (same origin, the server's login and XSRF protection);
the handler sends the request on to the HEROES service with the server's token and copies the
answer back: status code and body unchanged, a short list of headers, never cookies either way.
An event stream (``text/event-stream``) is passed on chunk by chunk as it arrives.

Request bodies are read as they arrive (``@stream_request_body``). An upload to the data API
(:data:`STREAMED_UPLOADS`) is passed on to the service chunk by chunk through a queue of at most
:data:`FEED_CHUNKS` chunks, so the server holds about a megabyte of it whatever its size; it must
declare its size (``Content-Length``, checked against ``c.HeroesExtension.max_upload_size`` before
a byte is read, like the service does). Authentication and authorization are checked before the
first byte goes on. Every other body is collected up to ``c.HeroesExtension.max_body_size`` and
refused (413) beyond it, as soon as the declared or received size says so.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import httpx
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import ensure_async
from tornado import web
from tornado.httputil import responses
from tornado.iostream import StreamClosedError

from .upstream import FORWARD_RESPONSE_HEADERS, ProxyError

if TYPE_CHECKING:
    from .app import HeroesExtension

#: the resource name authorizers see (jupyter_server.auth.Authorizer.is_authorized)
AUTH_RESOURCE = "heroes"
#: the route, relative to the server's base_url
API_ROUTE = r"/heroes/api/v1(/.*)?"
#: flush a non-stream answer to the browser every this many bytes (bounded memory)
FLUSH_BYTES = 64 * 1024
#: bytes of a non-JSON error answer kept for the log
ERROR_EXCERPT = 300

#: (method, API path) of the requests whose body is streamed to the service as it arrives
STREAMED_UPLOADS = frozenset({("POST", "/organization/data/upload")})
#: chunks (tornado reads at most 64 KiB at a time) queued between the browser and the service
FEED_CHUNKS = 16

_PHRASE_RE = re.compile(r"[^a-z0-9]+")


def _refused_first(method: Callable[..., Any]) -> Callable[..., Any]:
    """Raise what :meth:`HeroesProxyHandler.prepare` refused (e.g. a missing XSRF token) now that
    the body is read, before the login and permission checks (the refused prepare never looked the
    user up)."""

    @functools.wraps(method)
    async def wrapper(self: HeroesProxyHandler, *args: Any, **kwargs: Any) -> Any:
        if self._refused is not None:
            raise self._refused
        return await method(self, *args, **kwargs)

    return wrapper


class JsonErrors:
    """``write_error`` answering ``{"message", "reason"}`` (what the service answers), never HTML."""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ProxyError):
            message, reason = exc.message, exc.reason
        elif isinstance(exc, web.HTTPError) and status_code < 500:
            message = exc.log_message or responses.get(status_code, "error")
            reason = _reason_for(status_code, message)
            if reason == "xsrf":
                message += (
                    ": this Jupyter server requires its XSRF token (X-XSRFToken header or _xsrf "
                    "argument) on changes; reload the page and retry"
                )
            elif status_code == 403 and not getattr(self, "_jupyter_current_user", None):
                message = "You are not logged in to this Jupyter server: reload the page to log in again"
                reason = "not_authenticated"
        else:
            message = (
                "Internal error in the HEROES server extension; it has been logged in the Jupyter "
                "server log. Retry, or report it to your administrator with the time of the request."
            )
            reason = "internal_error"
        handler: Any = self
        handler.clear()
        handler.set_status(status_code)
        handler.set_header("Cache-Control", "no-store")
        handler.finish(json.dumps({"message": message, "reason": reason}))


@web.stream_request_body
class HeroesProxyHandler(JsonErrors, APIHandler):
    """Forwards GET/POST/PUT/PATCH/DELETE under ``heroes/api/v1`` to the HEROES service."""

    auth_resource = AUTH_RESOURCE

    def initialize(self, extension: HeroesExtension) -> None:
        self.extension = extension
        self._pump: asyncio.Task[None] | None = None
        self._body = bytearray()
        self._received = 0
        self._feed: asyncio.Queue[bytes | None] | None = None
        self._answered: asyncio.Event | None = None
        self._body_done: asyncio.Event | None = None
        self._refused: web.HTTPError | None = None

    # --- the request body, as it arrives --------------------------------------------------------------
    async def prepare(self) -> None:  # type: ignore[override]
        ext = self.extension
        method = (self.request.method or "GET").upper()
        path = self.path_args[0] if self.path_args else None
        try:
            await super().prepare()  # login, XSRF
        except web.HTTPError as e:
            declared = self.request.headers.get("Content-Length", "0")
            upload = (method, (path or "").rstrip("/")) in STREAMED_UPLOADS
            if upload or not declared.isdigit() or int(declared) > ext.max_body_size:
                raise
            # answer once the (small) body is in: refusing now would close the connection with the
            # body unread, and the browser's next request on that kept-alive connection would fail
            self._refused = e
            return
        if (method, (path or "").rstrip("/")) in STREAMED_UPLOADS:
            await self._start_upload(_check_path(path or ""))
            return
        declared = self.request.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > ext.max_body_size:
            raise self._too_large(int(declared))

    def _too_large(self, size: int) -> ProxyError:
        return ProxyError(
            413,
            f"The request body is {size} bytes; the HEROES API accepts at most "
            f"{self.extension.max_body_size} (c.HeroesExtension.max_body_size). Upload large files to your "
            "storage instead of sending them through the API.",
            "body_too_large",
        )

    async def _start_upload(self, api_path: str) -> None:
        """Check who asks and the declared size, then start the request to the service; the body
        follows through :meth:`data_received` as the browser sends it."""
        ext = self.extension
        user = self.current_user
        if not user:
            raise ProxyError(
                403,
                "You are not logged in to this Jupyter server: reload the page to log in again",
                "not_authenticated",
            )
        if not await ensure_async(self.authorizer.is_authorized(self, user, "write", AUTH_RESOURCE)):
            raise ProxyError(
                403, f"User is not authorized to write on resource: {AUTH_RESOURCE}.", "forbidden"
            )
        headers = self.request.headers
        declared = headers.get("Content-Length", "").strip()
        if "Transfer-Encoding" in headers or not declared:
            raise ProxyError(
                411,
                "Send the file with a Content-Length header (its size in bytes); chunked uploads are not "
                "accepted, the size is checked against your quota before the upload starts.",
                "length_required",
            )
        if not declared.isdigit():
            raise ProxyError(400, "Content-Length must be a whole number of bytes", "invalid_field")
        size = int(declared)
        if size > ext.max_upload_size:
            raise ProxyError(
                413,
                f"The file is {size} bytes, more than the largest upload of {ext.max_upload_size} bytes "
                "(c.HeroesExtension.max_upload_size); split it, or ask for a presigned URL.",
                "upload_too_large",
            )
        if self.request.connection is not None:
            self.request.connection.set_max_body_size(max(size, 1))  # type: ignore[attr-defined]
        upstream = ext.upstream()  # raises ProxyError 503 not_configured
        self._feed = asyncio.Queue(FEED_CHUNKS)
        self._answered = asyncio.Event()
        self._body_done = asyncio.Event()
        self._pump = asyncio.ensure_future(
            self._relay(upstream, api_path, self._feed_body(self._feed), stream=False, content_length=size)
        )

    @staticmethod
    async def _feed_body(feed: asyncio.Queue[bytes | None]) -> AsyncIterator[bytes]:
        while True:
            chunk = await feed.get()
            if chunk is None:
                return
            yield chunk

    async def data_received(self, chunk: bytes) -> None:
        if self._feed is None:
            # past the limit, count but keep nothing: the method answers 413 once the body is in
            self._received += len(chunk)
            if self._received <= self.extension.max_body_size:
                self._body += chunk
            else:
                self._body = bytearray()
            return
        pump, answered = self._pump, self._answered
        assert pump is not None and answered is not None
        if pump.done() or answered.is_set():
            return  # the service answered (or failed) already: the rest of the body has nowhere to go
        try:
            self._feed.put_nowait(chunk)
            return
        except asyncio.QueueFull:
            pass
        # the service reads slower than the browser sends: wait (tornado reads no more meanwhile)
        put = asyncio.ensure_future(self._feed.put(chunk))
        early = asyncio.ensure_future(answered.wait())
        try:
            await asyncio.wait({put, early, pump}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (put, early):
                if not t.done():
                    t.cancel()

    async def _finish_upload(self) -> None:
        pump, feed = self._pump, self._feed
        assert pump is not None and feed is not None and self._body_done is not None
        if not pump.done() and not (self._answered and self._answered.is_set()):
            end = asyncio.ensure_future(feed.put(None))
            await asyncio.wait({end, pump}, return_when=asyncio.FIRST_COMPLETED)
            if not end.done():
                end.cancel()
        self._body_done.set()
        await self._await_pump()

    # --- errors: {message, reason}, never a traceback ---------------------------------------------

    def on_connection_close(self) -> None:
        # the browser went away: stop reading from the service (closes that connection too)
        if self._pump is not None and not self._pump.done():
            self._pump.cancel()

    # --- methods ------------------------------------------------------------------------------------
    @_refused_first
    @web.authenticated
    @authorized
    async def get(self, path: str | None = None) -> None:
        await self.forward(path)

    @_refused_first
    @web.authenticated
    @authorized
    async def post(self, path: str | None = None) -> None:
        if self._feed is not None:
            await self._finish_upload()
            return
        await self.forward(path)

    @_refused_first
    @web.authenticated
    @authorized
    async def put(self, path: str | None = None) -> None:
        await self.forward(path)

    @_refused_first
    @web.authenticated
    @authorized
    async def patch(self, path: str | None = None) -> None:
        await self.forward(path)

    @_refused_first
    @web.authenticated
    @authorized
    async def delete(self, path: str | None = None) -> None:
        await self.forward(path)

    # --- forwarding ---------------------------------------------------------------------------------
    async def forward(self, path: str | None) -> None:
        ext = self.extension
        api_path = _check_path(path or "")
        if self._received > ext.max_body_size:
            raise self._too_large(self._received)
        body = bytes(self._body) or None
        self._body = bytearray()
        upstream = ext.upstream()  # raises ProxyError 503 not_configured
        wants_stream = "text/event-stream" in self.request.headers.get("Accept", "")
        self._pump = asyncio.ensure_future(
            self._relay(upstream, api_path, body, stream=wants_stream and self.request.method == "GET")
        )
        await self._await_pump()

    async def _await_pump(self) -> None:
        try:
            await self._pump
        except asyncio.CancelledError:
            # cancelled by on_connection_close: the browser left; nothing to answer
            if self.request.connection and self.request.connection.stream.closed():  # type: ignore[attr-defined]
                return
            raise
        finally:
            self._pump = None

    async def _relay(
        self,
        upstream: Any,
        api_path: str,
        body: bytes | AsyncIterator[bytes] | None,
        *,
        stream: bool,
        content_length: int | None = None,
    ) -> None:
        method = self.request.method or "GET"
        async with upstream.open(
            method,
            api_path,
            query=self.request.query,
            headers=self.request.headers,
            body=body,
            content_length=content_length,
            stream=stream,
        ) as r:
            if self._answered is not None and self._body_done is not None:
                # a streamed upload: answer only once the browser's body is all in (an early answer
                # from the service, an error, waits; the rest of the body is dropped meanwhile)
                self._answered.set()
                await self._body_done.wait()
            content_type = r.headers.get("content-type", "")
            if r.status_code >= 400 and not _is_json(content_type):
                await self._not_json(r, method, api_path)
                return
            is_stream = content_type.startswith("text/event-stream")
            self.set_status(r.status_code, r.reason_phrase or responses.get(r.status_code, "Unknown"))
            self.clear_header("Content-Type")
            for name in FORWARD_RESPONSE_HEADERS:
                value = r.headers.get(name)
                if value is not None:
                    self.set_header(name, value)
            if is_stream:
                self.set_header("Cache-Control", "no-cache")
                self.set_header("X-Accel-Buffering", "no")  # no buffering in a reverse proxy either
            if r.status_code in (204, 304):
                self.finish(set_content_type=content_type or "application/json")
                return
            await self._copy(r, stream=is_stream, content_type=content_type, method=method, api_path=api_path)

    async def _copy(
        self, r: httpx.Response, *, stream: bool, content_type: str, method: str, api_path: str
    ) -> None:
        sent = pending = 0
        if stream:
            await self.flush()  # the browser sees the stream open before the first event
        try:
            async for chunk in r.aiter_bytes():
                self.write(chunk)
                sent += len(chunk)
                pending += len(chunk)
                if stream or pending >= FLUSH_BYTES:
                    await self.flush()
                    pending = 0
        except httpx.HTTPError as e:
            if sent == 0 and not stream:
                raise ProxyError(
                    502,
                    "The HEROES service broke off its answer; retry in a moment.",
                    "service_error",
                    transient=True,
                ) from None
            # part of the answer is out: all we can do is end it
            self.log.warning(
                "HEROES service answer to %s %s broken off after %d bytes: %s",
                method,
                api_path,
                sent,
                type(e).__name__,
            )
            if self.request.connection:
                self.request.connection.close()
            return
        except StreamClosedError:
            return  # the browser left
        self.finish(set_content_type=content_type or "application/octet-stream")

    async def _not_json(self, r: httpx.Response, method: str, api_path: str) -> None:
        """An error answer that is not the service's JSON (a proxy's or hub's error page)."""
        excerpt = b""
        async for chunk in r.aiter_bytes():
            excerpt += chunk
            if len(excerpt) >= ERROR_EXCERPT:
                break
        self.log.warning(
            "HEROES service URL %s answered %s %s with %d %s: %r",
            self.extension.service_url,
            method,
            api_path,
            r.status_code,
            r.headers.get("content-type", "no content type"),
            excerpt[:ERROR_EXCERPT].decode("utf-8", "replace"),
        )
        if r.status_code in (502, 503, 504):
            raise ProxyError(
                503 if r.status_code != 504 else 504,
                "The HEROES service is not available right now (it may be restarting); retry in a "
                "moment. If this persists, ask your administrator.",
                "service_unavailable",
                transient=True,
            )
        if r.status_code == 404:
            raise ProxyError(
                502,
                "The HEROES service was not found where this Jupyter server looks for it "
                "(c.HeroesExtension.service_url); ask your administrator to check that setting.",
                "service_not_found",
            )
        raise ProxyError(
            r.status_code,
            f"The HEROES service answered {r.status_code} {responses.get(r.status_code, '')} "
            "without an explanation; ask your administrator (the Jupyter server log has details).".replace(
                "  ", " "
            ),
            "service_error",
        )


def _is_json(content_type: str) -> bool:
    ct = content_type.split(";")[0].strip().lower()
    return ct == "application/json" or ct.endswith("+json")


def _reason_for(status: int, message: str) -> str:
    if status == 403 and "xsrf" in message.lower():
        return "xsrf"
    return _PHRASE_RE.sub("_", responses.get(status, f"http {status}").lower()).strip("_")


def _check_path(path: str) -> str:
    """*path* (still URL-encoded) if it is a plain API path; 400 for dot segments and the like."""
    if not path or path == "/":
        raise ProxyError(
            404,
            "No API path given: the HEROES API is under heroes/api/v1/ (see heroes/api/v1/openapi.json)",
            "not_found",
        )
    for segment in unquote(path).split("/")[1:]:
        if segment in (".", "..") or "\\" in segment or "\x00" in segment:
            raise ProxyError(
                400,
                f"Invalid API path {path!r}: '.' and '..' segments and backslashes are not allowed",
                "bad_path",
            )
    return path
