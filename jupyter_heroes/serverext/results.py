"""``POST <base_url>/heroes/results/<instance id>``: copy a workflow's outputs from the user's storage
into this Jupyter server's files, under ``heroes-results/<instance id>/`` (the sidebar's *Results*
button; the file browser then opens that folder).

The copy is :meth:`jupyter_heroes.client.HeroesClient.download_results`, run in a thread as the
server's owner (the extension's service URL, token and TLS settings): each file is checked, files
already there with the same content are kept. The answer is that method's, with the paths relative
to the server's root directory::

    {"instance": "3f2a...", "state": "completed", "directory": "heroes-results/3f2a...",
     "downloaded": ["heroes-results/3f2a.../result.json"], "kept": [], "bytes": 112}

Errors are JSON ``{"message", "reason"}`` with the service's status (its 404 for an unknown
workflow), 400 for an id that cannot name a folder, 501 when the server's files are not on disk.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web

from ..client import HeroesClient, HeroesError
from .handlers import AUTH_RESOURCE, JsonErrors
from .upstream import ProxyError

if TYPE_CHECKING:
    from .app import HeroesExtension

#: the route, relative to the server's base_url
RESULTS_ROUTE = r"/heroes/results/([^/]+)"
#: where results land, relative to the server's root directory
RESULTS_DIR = "heroes-results"
#: what a workflow id may look like to become a folder name
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


class ResultsHandler(JsonErrors, APIHandler):
    auth_resource = AUTH_RESOURCE

    def initialize(self, extension: HeroesExtension) -> None:
        self.extension = extension

    @web.authenticated
    @authorized
    async def post(self, instance_id: str) -> None:
        if not _ID_RE.fullmatch(instance_id):
            raise ProxyError(400, f"{instance_id!r} is not a workflow id", "invalid_id")
        root_dir = getattr(self.contents_manager, "root_dir", None)
        if not root_dir:
            raise ProxyError(
                501,
                "This Jupyter server's files are not in a folder on disk, so results cannot be copied "
                "into them; download them with 'heroes results ID' in a terminal instead",
                "no_root_dir",
            )
        ext = self.extension
        ext.upstream()  # 503 'not_configured' when the service URL is unknown
        organization = self.request.headers.get("X-Heroes-Organization", "").strip() or None
        verify: bool | str = (ext.tls_ca_file or True) if ext.verify_tls else False

        def copy() -> dict[str, Any]:
            root = Path(root_dir).resolve()
            client = HeroesClient(
                ext.service_url,
                ext.api_token,
                organization,
                timeout=ext.request_timeout,
                connect_timeout=ext.connect_timeout,
                verify=verify,
            )
            try:
                answer = client.download_results(instance_id, root / RESULTS_DIR / instance_id)
            finally:
                client.close()

            def rel(path: str) -> str:
                return Path(os.path.relpath(path, root)).as_posix()

            answer["directory"] = rel(answer["directory"])
            answer["downloaded"] = [rel(p) for p in answer["downloaded"]]
            answer["kept"] = [rel(p) for p in answer["kept"]]
            return answer

        try:
            answer = await asyncio.to_thread(copy)
        except HeroesError as e:
            raise ProxyError(e.status or 503, e.message, e.reason) from None  # no status: no answer
        self.set_header("Cache-Control", "no-store")
        self.finish(answer)
