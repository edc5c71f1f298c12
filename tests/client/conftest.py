"""The client tests' world on the session's hub (SQLite: the client does not care which database the
service uses; the service tests cover both)."""

from __future__ import annotations

import pytest

from .world import World, build_world


@pytest.fixture(scope="session")
def faces_client_world(hub, s3_server, tmp_path_factory) -> World:
    return build_world(hub, "fc", tmp_path_factory.mktemp("fc-scratch"), s3_server)
