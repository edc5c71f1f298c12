"""The magics tests' world on the session's hub, and an in-process IPython shell with
``%load_ext jupyter_heroes`` configured from the environment a JupyterHub server gives its kernels."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from client.world import World, build_world


@pytest.fixture(scope="session")
def faces_magics_world(hub, s3_server, tmp_path_factory) -> World:
    return build_world(hub, "fm", tmp_path_factory.mktemp("fm-scratch"), s3_server)


@pytest.fixture
def kernel_env(faces_magics_world, monkeypatch) -> Iterator[World]:
    """The variables a single-user server's kernel sees (set by the hub and by install_heroes)."""
    w = faces_magics_world
    for name in ("HEROES_API_TOKEN", "JUPYTERHUB_PUBLIC_HUB_URL", "JUPYTERHUB_API_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HEROES_SERVICE_URL", w.service_url)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", w.tokens[w.researcher])
    monkeypatch.setenv("HEROES_ORGANIZATION", w.org)
    yield w


@pytest.fixture
def shell(kernel_env):
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    cfg = Config()
    cfg.HistoryManager.enabled = False
    sh = InteractiveShell.instance(config=cfg)
    if "jupyter_heroes" not in sh.extension_manager.loaded:
        sh.run_line_magic("load_ext", "jupyter_heroes")
    magics = sh.magics_manager.registry["HeroesMagics"]
    magics.client = None  # a fresh client from this test's environment
    yield sh
    sh.reset(new_session=False)
