"""The ``jupyter_heroes`` Jupyter server extension: the HEROES API next to JupyterLab.

In a JupyterHub single-user server it forwards ``<base_url>/heroes/api/v1/<path>`` to the HEROES
service with the server's own token (``$JUPYTERHUB_API_TOKEN``, which acts as the user), so that the
browser only ever talks to its own Jupyter server (its login, its XSRF protection, no second OAuth
dance) and the HEROES front ends in JupyterLab need no token of their own.

The hub must give that token access to the service (``access:services!service=heroes`` in
``c.Spawner.server_token_scopes``) and the server must know where the service is: see
:func:`default_service_url`.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Float, Integer, TraitError, Unicode, default, validate

from .._version import __version__
from .handlers import API_ROUTE, HeroesProxyHandler
from .results import RESULTS_ROUTE, ResultsHandler
from .upstream import ProxyError, ServiceUpstream

SERVICE_NAME = "heroes"


def default_service_url(env: Mapping[str, str]) -> str:
    """Where the HEROES service is, from the environment of the Jupyter server ('' if unknown).

    1. ``$HEROES_SERVICE_URL`` (the hub's config can set it for every server through
       ``c.Spawner.environment``);
    2. in a JupyterHub single-user server, ``<origin of $JUPYTERHUB_PUBLIC_HUB_URL>`` +
       ``$JUPYTERHUB_BASE_URL`` + ``services/heroes/`` (the hub's public address, known when
       ``c.JupyterHub.public_url`` is set), the route the hub's proxy gives the service.
    """
    explicit = env.get("HEROES_SERVICE_URL", "").strip()
    if explicit:
        return explicit
    public_hub = env.get("JUPYTERHUB_PUBLIC_HUB_URL", "").strip()
    if public_hub:
        parts = urlsplit(public_hub)
        base = env.get("JUPYTERHUB_BASE_URL", "").strip() or "/"
        if not base.endswith("/"):
            base += "/"
        return urlunsplit((parts.scheme, parts.netloc, f"{base}services/{SERVICE_NAME}/", "", ""))
    return ""


def check_service_url(value: str) -> str:
    """*value* as a service URL ending in '/', or '' for none; TraitError naming the setting if bad."""
    url = (value or "").strip()
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise TraitError(
            f"c.HeroesExtension.service_url ({url!r}) must be an http:// or https:// URL "
            "such as http://127.0.0.1:10101/services/heroes/"
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise TraitError(
            "c.HeroesExtension.service_url must not hold a query, fragment or credentials; "
            "the token goes in c.HeroesExtension.api_token"
        )
    return url if url.endswith("/") else url + "/"


class HeroesExtension(ExtensionApp):
    """Serves ``<base_url>/heroes/api/v1/...`` by forwarding it to the HEROES service."""

    name = "jupyter_heroes"
    description = "Jupyter HEROES: the HEROES REST API forwarded from the Jupyter server"
    version = __version__
    # nothing to serve but the API; JupyterLab loads the prebuilt lab extension itself
    load_other_extensions = True

    service_url = Unicode(
        help="""URL of the HEROES service including its prefix, ending in '/'
        (e.g. http://127.0.0.1:10101/services/heroes/): the API is at <service_url>api/v1/.
        Default: $HEROES_SERVICE_URL, else, in a JupyterHub single-user server whose hub sets
        c.JupyterHub.public_url, that public address + $JUPYTERHUB_BASE_URL + 'services/heroes/'.
        Empty: every request is answered 503 'not_configured'.""",
    ).tag(config=True)

    @default("service_url")
    def _default_service_url(self) -> str:
        # a dynamic default is not validated by traitlets: check it the same way
        return check_service_url(default_service_url(os.environ))

    @validate("service_url")
    def _check_service_url(self, proposal: Any) -> str:
        return check_service_url(proposal["value"])

    api_token = Unicode(
        help="""Token sent to the HEROES service (Authorization: token ...); every request acts as its
        owner. Default: $HEROES_API_TOKEN, else $JUPYTERHUB_API_TOKEN (the single-user server's own
        token, which JupyterHub gives the scopes of c.Spawner.server_token_scopes: it needs
        access:services!service=heroes). Never logged.""",
    ).tag(config=True)

    @default("api_token")
    def _default_api_token(self) -> str:
        return os.environ.get("HEROES_API_TOKEN") or os.environ.get("JUPYTERHUB_API_TOKEN", "")

    connect_timeout = Float(
        10.0,
        help="Seconds to wait for a connection to the HEROES service before answering 503 (default 10).",
    ).tag(config=True)

    request_timeout = Float(
        60.0,
        help="""Seconds the HEROES service may take to answer one request, and between two chunks
        of its answer (default 60); then the browser gets 504 'service_timeout'.""",
    ).tag(config=True)

    stream_idle_timeout = Float(
        300.0,
        help="""Seconds an event stream may stay silent before the server extension closes it
        (default 300; the browser then reconnects). The service's keep-alives must come more often.""",
    ).tag(config=True)

    max_body_size = Integer(
        1024 * 1024,
        help="""Largest request body forwarded, in bytes (default 1 MiB, the service's own default
        limit). Larger bodies are answered 413 'body_too_large' without reaching the service.""",
    ).tag(config=True)

    max_upload_size = Integer(
        100 * 1024**3,
        help="""Largest file streamed to the HEROES service's upload endpoint
        (POST .../organization/data/upload), in bytes (default 100 GiB, like the service's
        c.HeroesService.max_upload_size; keep the two equal). The body is passed on chunk by chunk
        as it arrives, never held whole; it must declare its size with Content-Length (411
        otherwise) and a larger one is answered 413 'upload_too_large' before a byte is read.
        max_body_size does not apply to it.""",
    ).tag(config=True)

    verify_tls = Bool(
        True,
        help="""Check the HEROES service's TLS certificate when service_url is https:// (default True).
        Set a CA bundle path in tls_ca_file instead of turning this off.""",
    ).tag(config=True)

    tls_ca_file = Unicode(
        "",
        help="CA bundle (PEM file) to check the service's certificate with; empty: the system's.",
    ).tag(config=True)

    @validate("connect_timeout", "request_timeout", "stream_idle_timeout")
    def _positive_timeout(self, proposal: Any) -> float:
        if proposal["value"] <= 0:
            raise TraitError(
                f"c.HeroesExtension.{proposal['trait'].name} must be a positive number of seconds"
            )
        return proposal["value"]

    @validate("max_body_size")
    def _positive_body(self, proposal: Any) -> int:
        if proposal["value"] < 1024:
            raise TraitError("c.HeroesExtension.max_body_size must be at least 1024 bytes")
        return proposal["value"]

    @validate("max_upload_size")
    def _positive_upload(self, proposal: Any) -> int:
        if proposal["value"] < 1:
            raise TraitError("c.HeroesExtension.max_upload_size must be at least 1 byte")
        return proposal["value"]

    _upstream: ServiceUpstream | None = None

    def initialize_handlers(self) -> None:
        self.handlers.append((API_ROUTE, HeroesProxyHandler, {"extension": self}))
        self.handlers.append((RESULTS_ROUTE, ResultsHandler, {"extension": self}))

    def initialize_settings(self) -> None:
        if self.service_url:
            self.log.info(
                "jupyter_heroes: forwarding heroes/api/v1 to the HEROES service at %s%s",
                self.service_url,
                "" if self.api_token else " (no token: set $HEROES_API_TOKEN or c.HeroesExtension.api_token)",
            )
        else:
            self.log.warning(
                "jupyter_heroes: the HEROES service URL is unknown, heroes/api/v1 answers 503: set "
                "$HEROES_SERVICE_URL (JupyterHub: c.Spawner.environment) or c.HeroesExtension.service_url"
            )

    def upstream(self) -> ServiceUpstream:
        """The service client (created at first use, on the server's event loop)."""
        if not self.service_url:
            raise ProxyError(
                503,
                "This Jupyter server does not know where the HEROES service is: ask your administrator "
                "to set $HEROES_SERVICE_URL (JupyterHub: c.Spawner.environment) or "
                "c.HeroesExtension.service_url.",
                "not_configured",
            )
        if self._upstream is None:
            self._upstream = ServiceUpstream(
                self.service_url,
                self.api_token,
                connect_timeout=self.connect_timeout,
                request_timeout=self.request_timeout,
                stream_idle_timeout=self.stream_idle_timeout,
                verify=self._tls_verify(),
                log=self.log,
            )
        return self._upstream

    def _tls_verify(self) -> bool | ssl.SSLContext:
        if not self.verify_tls:
            return False
        if self.tls_ca_file:
            return ssl.create_default_context(cafile=self.tls_ca_file)
        return True

    async def stop_extension(self) -> None:
        if self._upstream is not None:
            await self._upstream.close()
            self._upstream = None
