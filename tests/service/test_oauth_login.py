"""A browser's way in: hub login, OAuth to the service (its callback), then the login cookie.

Driven with requests (cookies and redirects, as a browser would); the Playwright tests of the faces
cover real browsers.
"""

from __future__ import annotations

import requests

from .conftest import ACME, World


def browser_login(world: World, username: str) -> requests.Session:
    s = requests.Session()
    hub = world.hub.url
    s.get(f"{hub}/hub/login", timeout=30)
    xsrf = s.cookies.get("_xsrf", path="/hub/")
    r = s.post(f"{hub}/hub/login", data={"username": username, "password": "any", "_xsrf": xsrf}, timeout=30)
    assert r.status_code == 200, r.text[:300]
    return s


def test_browser_logs_in_to_the_service_through_hub_oauth(world: World) -> None:
    s = browser_login(world, "acme-admin")
    r = s.get(f"{world.hub.url}/services/heroes/", timeout=30)  # -> hub authorize -> oauth_callback -> me
    assert r.status_code == 200, r.text[:500]
    assert r.url.endswith("/services/heroes/api/v1/organization/auth/me")
    assert any("/services/heroes/oauth_callback" in h.url for h in r.history)
    assert r.json()["name"] == "acme-admin"
    # the service's cookie now authenticates API calls
    r = s.get(f"{world.hub.api_url}/organization/admin/users", timeout=30)
    assert r.status_code == 200 and ACME in {u["organization"] for u in r.json()}
    # a cookie alone does not authorize a change (cross-site request forgery): xsrf is required
    r = s.post(f"{world.hub.api_url}/organization/admin/groups", json={"name": "from-browser"}, timeout=30)
    assert r.status_code in (401, 403), r.text
    assert "from-browser" not in {
        g["name"] for g in world.ok("acme-admin", "GET", "/organization/admin/groups")
    }
    xsrf = s.cookies.get("_xsrf", path="/services/heroes/")
    assert xsrf
    r = s.post(
        f"{world.hub.api_url}/organization/admin/groups",
        json={"name": "from-browser"},
        headers={"X-XSRFToken": xsrf},
        timeout=30,
    )
    assert r.status_code == 201, r.text


def test_api_calls_never_redirect_to_a_login_page(world: World) -> None:
    r = requests.get(f"{world.hub.api_url}/organization/admin/users", allow_redirects=False, timeout=30)
    assert r.status_code == 401 and r.headers["Content-Type"].startswith("application/json")
