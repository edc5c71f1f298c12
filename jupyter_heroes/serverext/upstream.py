"""The one way out of the server extension: HTTP requests to the HEROES service.

:class:`ServiceUpstream` sends a request as the user the Jupyter server runs for (its token in
``Authorization``), with timeouts, and turns every transport failure into a :class:`ProxyError` with
a message for the user, a log line for the operator and a short machine ``reason``. It never logs
the token, a query string or a body.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from urllib.parse import urlsplit

import httpx
from tornado import web

from .._version import __version__

_default_log = logging.getLogger("jupyter_heroes.serverext")

#: request headers of the browser that reach the service (everything else, cookies included, stays)
FORWARD_REQUEST_HEADERS = ("accept", "content-type", "x-heroes-organization", "last-event-id")
#: answer headers of the service that reach the browser (never Set-Cookie)
FORWARD_RESPONSE_HEADERS = (
    "content-type",
    "cache-control",
    "retry-after",
    "etag",
    "last-modified",
    "content-disposition",
    "link",
    "x-total-count",
)


class ProxyError(web.HTTPError):
    """A request could not be forwarded: *status* and a ``{message, reason}`` answer for the browser.

    ``transient`` says whether retrying later can help (the service is down or slow). A tornado
    ``HTTPError`` so that the handler answers with *status*; logged where it is raised, not again.
    """

    def __init__(self, status: int, message: str, reason: str, *, transient: bool = False) -> None:
        super().__init__(status)
        self.status = status
        self.message = message
        self.reason = reason
        self.transient = transient


class ServiceUpstream:
    """Requests to the HEROES service at *base_url* (ending in ``/``, the service prefix) as *token*."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        connect_timeout: float = 10.0,
        request_timeout: float = 60.0,
        stream_idle_timeout: float = 300.0,
        verify: bool | ssl.SSLContext = True,
        log: logging.Logger | logging.LoggerAdapter | None = None,
    ) -> None:
        self.base_url = base_url
        self.token = token
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.stream_idle_timeout = stream_idle_timeout
        self.verify = verify
        self.log = log or _default_log
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            # trust_env=False: no HTTP(S)_PROXY detour and no ~/.netrc credentials for the service
            self._client = httpx.AsyncClient(
                verify=self.verify,
                trust_env=False,
                follow_redirects=False,
                headers={"User-Agent": f"jupyter-heroes-serverext/{__version__}"},
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=10),
            )
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def url(self, api_path: str) -> str:
        """The service URL of API path *api_path* (``/organization/...``, already URL-encoded)."""
        return self.base_url + "api/v1" + api_path

    def _timeout(self, stream: bool) -> httpx.Timeout:
        if stream:
            return httpx.Timeout(self.stream_idle_timeout, connect=self.connect_timeout)
        return httpx.Timeout(self.request_timeout, connect=self.connect_timeout)

    @contextlib.asynccontextmanager
    async def open(
        self,
        method: str,
        api_path: str,
        *,
        query: str = "",
        headers: Mapping[str, str] | None = None,
        body: bytes | AsyncIterable[bytes] | None = None,
        content_length: int | None = None,
        stream: bool = False,
    ) -> AsyncIterator[httpx.Response]:
        """Send the request and yield the service's answer with its body not yet read.

        *headers* are filtered through :data:`FORWARD_REQUEST_HEADERS`; *stream* selects the
        timeouts of an event stream (idle time between chunks instead of a whole-request limit).
        *body* may be an async iterator of chunks, sent as they come with the *content_length*
        declared (never chunked: the service wants to know an upload's size before it starts).
        """
        if not self.token:
            raise ProxyError(
                503,
                "The Jupyter server has no token to call the HEROES service with: outside JupyterHub, "
                "set $HEROES_API_TOKEN or c.HeroesExtension.api_token",
                "no_token",
            )
        out = {k: v for k, v in (headers or {}).items() if k.lower() in FORWARD_REQUEST_HEADERS}
        out["Authorization"] = f"token {self.token}"
        out["Accept-Encoding"] = "identity"
        if content_length is not None:
            out["Content-Length"] = str(content_length)
        url = self.url(api_path) + (f"?{query}" if query else "")
        where = urlsplit(self.base_url).netloc
        t0 = time.monotonic()
        request = self.client.build_request(
            method, url, headers=out, content=body, timeout=self._timeout(stream)
        )
        try:
            response = await self.client.send(request, stream=True)
        except httpx.TimeoutException as e:
            self.log.warning(
                "HEROES service at %s did not answer %s %s within %.0fs (%s)",
                where,
                method,
                api_path,
                self.connect_timeout if isinstance(e, httpx.ConnectTimeout) else self.request_timeout,
                type(e).__name__,
            )
            if isinstance(e, httpx.ConnectTimeout):
                raise _unreachable() from None
            raise ProxyError(
                504,
                "The HEROES service did not answer in time; retry in a moment. If this persists, ask "
                "your administrator (the Jupyter server log has details).",
                "service_timeout",
                transient=True,
            ) from None
        except httpx.TransportError as e:
            self.log.warning(
                "HEROES service at %s unreachable for %s %s: %s: %s",
                where,
                method,
                api_path,
                type(e).__name__,
                e,
            )
            raise _unreachable() from None
        try:
            level = logging.DEBUG if response.status_code < 400 else logging.INFO
            self.log.log(
                level,
                "%d %s %s via HEROES service (%.1fms)",
                response.status_code,
                method,
                api_path,
                1000 * (time.monotonic() - t0),
            )
            yield response
        finally:
            await response.aclose()


def _unreachable() -> ProxyError:
    return ProxyError(
        503,
        "The HEROES service cannot be reached right now (it may be restarting); retry in a moment. "
        "If this persists, ask your administrator (the Jupyter server log has details).",
        "service_unreachable",
        transient=True,
    )
