"""The Jupyter server extension of HEROES (enabled by ``jupyter_server_config.d/jupyter_heroes.json``).

It serves ``<base_url>/heroes/api/v1/...`` by forwarding to the HEROES service as the logged-in user;
see :mod:`jupyter_heroes.serverext.app`.
"""

from __future__ import annotations

from typing import Any

from .app import HeroesExtension, default_service_url

__all__ = ["HeroesExtension", "default_service_url"]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    return [{"module": "jupyter_heroes.serverext", "app": HeroesExtension}]
