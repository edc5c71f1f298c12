"""The hub test bed survives losing the race for a port it chose free (another process bound it
before the hub did): it starts again on new ports."""

from __future__ import annotations

import socket

import pytest
import requests

from jupyter_heroes.testing import hub as hub_module
from jupyter_heroes.testing.hub import HubTestbed

pytestmark = [pytest.mark.hub, pytest.mark.timeout(240)]


def test_a_hub_port_taken_before_the_hub_binds_it_is_replaced(monkeypatch):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    real = hub_module.free_port
    calls = {"n": 0}

    def free_port() -> int:
        calls["n"] += 1
        return taken.getsockname()[1] if calls["n"] == 2 else real()  # the first attempt's hub port

    monkeypatch.setattr(hub_module, "free_port", free_port)
    tb = HubTestbed()
    try:
        tb.start()
        assert tb.hub_port != taken.getsockname()[1]
        assert requests.get(f"{tb.url}/hub/api/", timeout=10).status_code == 200
        failed = (tb.workdir / "jupyterhub.failed-1.log").read_text()
        assert "Failed to bind hub" in failed
        assert "Failed to bind" not in tb.hub_log.read_text()
        assert calls["n"] == 8  # two attempts of four ports
    finally:
        tb.stop()
        taken.close()
