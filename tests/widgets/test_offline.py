"""The submission widget when it cannot reach a service: it shows why, disables itself, never raises."""

from __future__ import annotations

from jupyter_heroes.client import HeroesClient
from jupyter_heroes.widgets import SubmissionWidget


def test_without_a_service_the_widget_says_what_to_set(monkeypatch):
    for name in ("HEROES_SERVICE_URL", "JUPYTERHUB_PUBLIC_HUB_URL", "JUPYTERHUB_API_URL"):
        monkeypatch.delenv(name, raising=False)
    sw = SubmissionWidget()
    assert "Set $HEROES_SERVICE_URL to https://&lt;hub&gt;/services/heroes/" in sw.status.value
    assert sw.submit_button.disabled and sw.template_picker.disabled
    assert sw.submit() is None
    sw.close()


def test_an_unreachable_service_is_reported_in_the_widget():
    from jupyter_heroes.testing.base import free_port

    sw = SubmissionWidget(HeroesClient(f"http://127.0.0.1:{free_port()}/services/heroes/", "t", retries=0))
    assert "cannot reach the HEROES service" in sw.status.value and sw.submit_button.disabled
    sw.close()
