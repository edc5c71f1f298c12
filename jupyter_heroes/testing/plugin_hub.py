"""pytest fixtures: a real JupyterHub + configurable-http-proxy + HEROES service, once per session.

``hub`` is parametrized over the HEROES database: ``sqlite`` (a file in the hub's working directory)
and ``postgres`` (a fresh database of the test bed's PostgreSQL, from the ``postgres`` fixture of
``plugin_testbed``), so every test using it runs on both. Tests get the ``hub`` marker (and
``postgres`` for that parameter) from the fixture. ``PLATFORM_ADMIN`` is made solution-admin of the
platform organization through ``c.HeroesService.platform_admins``.

Other hubs (another authenticator, no encryption key ...) come from ``hub_factory(**HubTestbed kwargs)``;
they are stopped at the end of the session.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .hub import HubTestbed

PLATFORM_ADMIN = "heroes-admin"
#: request bodies larger than this get 400 in the test hubs (small, so tests can exceed it cheaply)
TEST_MAX_BODY = 64 * 1024

_HAVE_POSTGRES = importlib.util.find_spec("jupyter_heroes.testing.plugin_testbed") is not None

HUB_PARAMS = [pytest.param("sqlite", marks=pytest.mark.hub, id="sqlite")]
if _HAVE_POSTGRES:
    HUB_PARAMS.append(pytest.param("postgres", marks=[pytest.mark.hub, pytest.mark.postgres], id="postgres"))


@pytest.fixture(scope="session", params=HUB_PARAMS)
def hub(request: pytest.FixtureRequest) -> Iterator[HubTestbed]:
    """A running hub whose HEROES service uses SQLite or PostgreSQL (see the module docstring)."""
    db_url = None
    if request.param == "postgres":
        db_url = request.getfixturevalue("postgres").new_database("hub")
    tb = HubTestbed(db_url=db_url, platform_admins=[PLATFORM_ADMIN], max_body_size=TEST_MAX_BODY)
    t0 = time.monotonic()
    with tb:
        tb.fixture_seconds = time.monotonic() - t0  # type: ignore[attr-defined]
        yield tb


@pytest.fixture(scope="session")
def hub_factory() -> Iterator[Callable[..., HubTestbed]]:
    """Start extra hubs with custom settings: ``hub_factory(extra_config=..., crypt_key=...)``."""
    started: list[HubTestbed] = []

    def make(**kwargs: Any) -> HubTestbed:
        kwargs.setdefault("platform_admins", [PLATFORM_ADMIN])
        tb = HubTestbed(**kwargs)
        tb.start()
        started.append(tb)
        return tb

    try:
        yield make
    finally:
        for tb in reversed(started):
            tb.stop()
