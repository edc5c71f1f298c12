"""``<base_url>/heroes/api/v1/<path>``: the HEROES REST API, forwarded to the service as the user.

The browser talks to its own Jupyter server (same origin, the server's login and XSRF protection);
the handler sends the request on to the HEROES service with the server's token and copies the
answer back: status code and body unchanged, a short list of headers, never cookies either way.
An event stream (``text/event-stream``) is passed on chunk by chunk as it arrives.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import httpx
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
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

_PHRASE_RE = re.compile(r"[^a-z0-9]+")


class HeroesProxyHandler(APIHandler):
    """Forwards GET/POST/PUT/PATCH/DELETE under ``heroes/api/v1`` to the HEROES service."""

    auth_resource = AUTH_RESOURCE

    def initialize(self, extension: HeroesExtension) -> None:
        self.extension = extension
        self._pump: asyncio.Task[None] | None = None

    # --- errors: {message, reason}, never a traceback ---------------------------------------------
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
        self.clear()
        self.set_status(status_code)
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps({"message": message, "reason": reason}))

    def on_connection_close(self) -> None:
        # the browser went away: stop reading from the service (closes that connection too)
        if self._pump is not None and not self._pump.done():
            self._pump.cancel()

    # --- methods ------------------------------------------------------------------------------------
    @web.authenticated
    @authorized
    async def get(self, path: str | None = None) -> None:
        await self.forward(path)

    @web.authenticated
    @authorized
    async def post(self, path: str | None = None) -> None:
        await self.forward(path)

    @web.authenticated
    @authorized
    async def put(self, path: str | None = None) -> None:
        await self.forward(path)

    @web.authenticated
    @authorized
    async def patch(self, path: str | None = None) -> None:
        await self.forward(path)

    @web.authenticated
    @authorized
    async def delete(self, path: str | None = None) -> None:
        await self.forward(path)

    # --- forwarding ---------------------------------------------------------------------------------
    async def forward(self, path: str | None) -> None:
        ext = self.extension
        api_path = _check_path(path or "")
        body = self.request.body or None
        if body is not None and len(body) > ext.max_body_size:
            raise ProxyError(
                413,
                f"The request body is {len(body)} bytes; the HEROES API accepts at most "
                f"{ext.max_body_size} (c.HeroesExtension.max_body_size). Upload large files to your "
                "storage instead of sending them through the API.",
                "body_too_large",
            )
        upstream = ext.upstream()  # raises ProxyError 503 not_configured
        wants_stream = "text/event-stream" in self.request.headers.get("Accept", "")
        self._pump = asyncio.ensure_future(
            self._relay(upstream, api_path, body, stream=wants_stream and self.request.method == "GET")
        )
        try:
            await self._pump
        except asyncio.CancelledError:
            # cancelled by on_connection_close: the browser left; nothing to answer
            if self.request.connection and self.request.connection.stream.closed():  # type: ignore[attr-defined]
                return
            raise
        finally:
            self._pump = None

    async def _relay(self, upstream: Any, api_path: str, body: bytes | None, *, stream: bool) -> None:
        method = self.request.method or "GET"
        async with upstream.open(
            method,
            api_path,
            query=self.request.query,
            headers=self.request.headers,
            body=body,
            stream=stream,
        ) as r:
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
