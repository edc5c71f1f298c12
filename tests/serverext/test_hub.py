"""Through the real hub and service: a JupyterLab single-user server spawned by JupyterHub forwards
heroes/api/v1 to the HEROES service as its user (its $JUPYTERHUB_API_TOKEN)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import requests

from jupyter_heroes.serverext.testing import hub_login, lab_hub_config, start_user_server
from jupyter_heroes.testing.base import read_pidfile, stop_pid, wait_for
from jupyter_heroes.testing.plugin_hub import PLATFORM_ADMIN

pytestmark = [pytest.mark.hub, pytest.mark.timeout(300)]

ORG = "lab-org"
USER = "lab-lee"
OTHER = "lab-olga"  # another member of the organization: her server is never started


@pytest.fixture(scope="module")
def lab(hub_factory, tmp_path_factory):
    work = tmp_path_factory.mktemp("lab-hub")
    hub = hub_factory(extra_config=lab_hub_config(work))
    admin = hub.create_user(PLATFORM_ADMIN)
    token = hub.create_user(USER)
    hub.create_user(OTHER)
    r = hub.api("POST", "/heroes/admin/organizations", admin, {"name": ORG, "display_name": "Lab Org"})
    assert r.status_code == 201, r.text
    r = hub.api(
        "POST", "/organization/admin/users", admin, {"username": USER, "roles": ["org-admin"]}, org=ORG
    )
    assert r.status_code == 201, r.text
    r = hub.api("POST", "/organization/admin/users", token, {"username": OTHER, "roles": ["researcher"]})
    assert r.status_code == 201, r.text
    url = start_user_server(hub, USER, token)
    return SimpleNamespace(hub=hub, admin=admin, token=token, url=url)


def via_lab(lab, method: str, path: str, **kw) -> requests.Response:
    headers = {"Authorization": f"token {lab.token}", **kw.pop("headers", {})}
    return requests.request(
        method, lab.url + "heroes/api/v1" + path, headers=headers, timeout=60, allow_redirects=False, **kw
    )


def test_me_through_the_server_extension_equals_the_service_directly(lab):
    direct = lab.hub.api("GET", "/organization/auth/me", lab.token)
    forwarded = via_lab(lab, "GET", "/organization/auth/me")
    assert direct.status_code == forwarded.status_code == 200, forwarded.text
    assert forwarded.json() == direct.json()
    me = forwarded.json()
    assert me["name"] == USER
    assert [(o["name"], [r["name"] for r in o["roles"]]) for o in me["organizations"]] == [
        (ORG, ["org-admin"])
    ]


@pytest.mark.parametrize(
    ("method", "path", "org"),
    [
        ("GET", "/organization/admin/workflow/template/987654", ORG),  # 404 of the service
        ("GET", "/organization/admin/users", "no-such-org"),  # 404: unknown organization
        ("GET", "/heroes/admin/organizations", None),  # 403: not a platform admin
        ("GET", "/organization/admin/users?bogus=1", ORG),  # 400: unknown query parameter
        ("GET", "/organization/admin/users", ORG),  # 200 with the organization selected by header
    ],
)
def test_answers_are_the_services_own(lab, method, path, org):
    headers = {"X-Heroes-Organization": org} if org else {}
    direct = lab.hub.api(method, path, lab.token, org=org)
    forwarded = via_lab(lab, method, path, headers=headers)
    assert forwarded.status_code == direct.status_code, forwarded.text
    assert forwarded.json() == direct.json()
    assert direct.status_code in (200, 400, 403, 404)


def test_post_patch_delete_act_as_the_user(lab):
    r = via_lab(
        lab, "POST", "/organization/admin/groups", json={"name": "via-lab", "description": "made in lab"}
    )
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "via-lab"
    r = via_lab(lab, "PATCH", "/organization/admin/groups/via-lab", json={"description": "changed in lab"})
    assert r.status_code == 200, r.text
    direct = lab.hub.api("GET", "/organization/admin/groups/via-lab", lab.token)
    assert direct.status_code == 200 and direct.json()["description"] == "changed in lab"
    # the service recorded the user (not the server, not the admin) as the author
    r = lab.hub.api("GET", "/organization/admin/audit", lab.token, params={"action": "group.create"})
    assert r.status_code == 200, r.text
    assert [(row["user"], row["target"], row["status"]) for row in r.json()] == [(USER, "via-lab", 201)]
    r = via_lab(lab, "DELETE", "/organization/admin/groups/via-lab")
    assert r.status_code in (200, 204), r.text
    assert lab.hub.api("GET", "/organization/admin/groups/via-lab", lab.token).status_code == 404


def test_browser_session_needs_the_xsrf_token_for_changes(lab):
    s = hub_login(lab.hub, USER)
    page = s.get(lab.url + "lab", timeout=120)  # the hub's OAuth gives the browser a cookie of the server
    assert page.status_code == 200, page.url
    xsrf = s.cookies.get("_xsrf", path=f"/user/{USER}/")
    assert xsrf
    url = lab.url + "heroes/api/v1/organization/admin/groups"
    r = s.post(url, json={"name": "no-xsrf"}, timeout=60)
    assert r.status_code == 403
    assert r.json()["reason"] == "xsrf"
    assert lab.hub.api("GET", "/organization/admin/groups/no-xsrf", lab.token).status_code == 404
    r = s.post(url, json={"name": "with-xsrf"}, headers={"X-XSRFToken": xsrf}, timeout=60)
    assert r.status_code == 201, r.text
    assert lab.hub.api("GET", "/organization/admin/groups/with-xsrf", lab.token).status_code == 200
    # reading needs no XSRF token; the browser's hub cookies went no further than its server
    me = s.get(lab.url + "heroes/api/v1/organization/auth/me", timeout=60)
    assert me.status_code == 200 and me.json()["name"] == USER


def test_service_down_answers_503_json_then_recovers(lab):
    """Kill the real service: the extension cannot connect and says so in JSON; the hub restarts it."""
    assert via_lab(lab, "GET", "/organization/auth/me").status_code == 200
    pid = read_pidfile(lab.hub.service_pid_file)
    assert pid
    stop_pid(pid, grace=5)
    t0 = time.monotonic()
    r = via_lab(lab, "GET", "/organization/auth/me")
    assert time.monotonic() - t0 < 30
    assert r.status_code == 503, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    # install_heroes gives users' servers the service's own address (HEROES_SERVICE_URL), not the proxy's
    assert body["reason"] == "service_unreachable"
    assert "retry in a moment" in body["message"]
    # JupyterHub restarts a managed service that died; the extension then forwards again
    wait_for(
        lambda: via_lab(lab, "GET", "/organization/auth/me").status_code == 200,
        120,
        "the HEROES service back behind the extension",
        interval=1,
    )


def test_results_endpoint_refuses_clearly_and_copies_nothing(lab):
    """``POST <server>/heroes/results/<id>`` (the sidebar's Results button; the copy itself is tested
    in the browser test, which has an object store): its refusals are JSON that say why."""
    home_results = lab.url + "heroes/results/"
    auth = {"Authorization": f"token {lab.token}", "X-Heroes-Organization": ORG}
    r = requests.post(home_results + "0" * 32, headers=auth, timeout=60)
    assert r.status_code == 404, r.text
    assert r.json()["reason"] == "not_found" and "0" * 32 in r.json()["message"]
    r = requests.post(home_results + "..%2Fetc", headers=auth, timeout=60)
    assert r.status_code in (400, 404), r.text
    r = requests.post(home_results + "a" * 65, headers=auth, timeout=60)
    assert (r.status_code, r.json()["reason"]) == (400, "invalid_id")
    r = requests.post(home_results + "0" * 32, timeout=60, allow_redirects=False)  # not logged in
    assert r.status_code == 403 and r.json()["reason"] in ("xsrf", "not_authenticated")
    r = requests.get(home_results + "0" * 32, headers=auth, timeout=60)
    assert r.status_code == 405
