"""The widget tests' world on the session's hub (see tests/client/world.py)."""

from __future__ import annotations

import pytest
from client.world import World, build_world


@pytest.fixture(scope="session")
def faces_widgets_world(hub, s3_server, tmp_path_factory) -> World:
    return build_world(hub, "fw", tmp_path_factory.mktemp("fw-scratch"), s3_server)
