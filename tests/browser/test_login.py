"""Keycloak login in a real browser: JupyterHub with HeroesOAuthenticator against the Keycloak-shaped
OIDC provider, the HEROES service behind the proxy, JupyterLab spawned by SimpleLocalProcessSpawner.

Each test uses its own user at the provider and its own browser context (cookies), on one hub.
"""

from __future__ import annotations

import os
import secrets
import time

import pytest

from jupyter_heroes.testing.oidc import OIDCProvider

pytestmark = [pytest.mark.browser, pytest.mark.hub, pytest.mark.oidc, pytest.mark.timeout(300)]

CLIENT_ID = "jupyterhub-browser-tests"
REFRESH_AGE = 3  # seconds: hub requests after this refresh the user's tokens and re-provision

EXTRA_CONFIG = """
import os
_hub = c.JupyterHub.bind_url.rstrip("/")
c.JupyterHub.authenticator_class = "jupyter_heroes.auth.HeroesOAuthenticator"
c.HeroesOAuthenticator.allow_all = False  # the test hub allows everyone by default; here: organization members
c.HeroesOAuthenticator.keycloak_realm_url = {realm!r}
c.HeroesOAuthenticator.client_id = {client_id!r}
c.HeroesOAuthenticator.client_secret = {secret!r}
c.HeroesOAuthenticator.oauth_callback_url = _hub + "/hub/oauth_callback"
c.HeroesOAuthenticator.db_url = {db_url!r}
c.HeroesOAuthenticator.auth_refresh_age = {refresh_age}
c.JupyterHub.spawner_class = "jupyterhub.spawner.SimpleLocalProcessSpawner"
c.SimpleLocalProcessSpawner.home_dir_template = {homes!r} + "/{{username}}"
c.Spawner.default_url = "/lab"
c.Spawner.args = ["--allow-root"] if os.geteuid() == 0 else []
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
"""


@pytest.fixture(scope="module")
def keycloak_hub(oidc_provider: OIDCProvider, hub_factory, tmp_path_factory):
    work = tmp_path_factory.mktemp("kc-hub")
    secret = secrets.token_urlsafe(24)
    db_url = f"sqlite:///{work / 'heroes.sqlite'}"
    extra = EXTRA_CONFIG.format(
        realm=oidc_provider.realm_url,
        client_id=CLIENT_ID,
        secret=secret,
        db_url=db_url,
        refresh_age=REFRESH_AGE,
        homes=str(work / "homes"),
    )
    hub = hub_factory(
        db_url=db_url, extra_config=extra, hub_env={"JUPYTERHUB_CRYPT_KEY": os.urandom(32).hex()}
    )
    # register the hub at the provider now that its address is known, as a Keycloak admin would
    oidc_provider.add_client(CLIENT_ID, secret, [f"{hub.url}/hub/oauth_callback"], [f"{hub.url}/hub/login"])
    return hub


def _login(page, hub, username: str, password: str, next_url: str = "/hub/home") -> None:
    page.goto(f"{hub.url}/hub/oauth_login?next={next_url}")
    page.wait_for_selector("#kc-form-login")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#kc-login")


def _me(hub, username: str) -> dict:
    tok = hub.hub_api("POST", f"/users/{username}/tokens", {"note": "browser test", "expires_in": 600})
    assert tok.status_code == 201, tok.text
    r = hub.api("GET", "/organization/auth/me", tok.json()["token"])
    assert r.status_code == 200, r.text
    return r.json()


def _standing(me: dict) -> dict[str, tuple[list[str], list[str]]]:
    return {
        o["name"]: (sorted(p["name"] for p in o["projects"]), sorted(r["name"] for r in o["roles"]))
        for o in me["organizations"]
    }


def test_login_through_keycloak_form_reaches_jupyterlab_and_heroes_knows_the_user(
    oidc_provider, keycloak_hub, browser, screenshots_dir
):
    hub = keycloak_hub
    oidc_provider.set_user(
        "lab-ada",
        "ada-Pass-1",
        name="Ada Lovelace",
        groups=["/acme/crash-sim", "/acme/weather", "/globex"],
        roles=["researcher", "acme:billing-admin", "default-roles-heroes"],
    )
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    try:
        page.goto(f"{hub.url}/hub/login")
        page.screenshot(path=str(screenshots_dir / "login-01-hub-login.png"))
        page.click("a[href*='oauth_login']")  # "Sign in with Keycloak"
        page.wait_for_selector("#kc-form-login")
        assert page.url.startswith(oidc_provider.realm_url + "/login-actions/authenticate")
        page.fill("#username", "lab-ada")
        page.fill("#password", "wrong-password")
        page.click("#kc-login")
        page.wait_for_selector("#input-error")
        assert "Invalid username or password." in page.inner_text("#input-error")
        page.fill("#password", "ada-Pass-1")
        page.screenshot(path=str(screenshots_dir / "login-02-keycloak-form.png"))
        page.click("#kc-login")
        # the hub spawns the user's server and sends the browser into JupyterLab
        page.wait_for_url(f"{hub.url}/user/lab-ada/lab**", timeout=150_000)
        page.wait_for_selector("#jp-main-dock-panel", timeout=120_000)
        page.wait_for_selector(".jp-Launcher", timeout=60_000)
        page.screenshot(path=str(screenshots_dir / "login-03-jupyterlab.png"))
    finally:
        ctx.close()

    assert _standing(_me(hub, "lab-ada")) == {
        "acme": (["crash-sim", "weather"], ["billing-admin", "researcher"]),
        "globex": ([], ["researcher"]),
    }
    user = hub.hub_api("GET", "/users/lab-ada").json()
    assert sorted(user["groups"]) == ["/acme/crash-sim", "/acme/weather", "/globex"]
    assert user["admin"] is False


def test_role_and_group_removed_at_the_provider_are_gone_after_a_refresh(
    oidc_provider, keycloak_hub, browser, screenshots_dir
):
    hub = keycloak_hub
    oidc_provider.set_user(
        "lab-ben",
        "ben-Pass-1",
        groups=["/acme/crash-sim", "/acme/weather"],
        roles=["researcher", "acme:org-admin"],
    )
    ctx = browser.new_context()
    page = ctx.new_page()
    try:
        _login(page, hub, "lab-ben", "ben-Pass-1")
        page.wait_for_url(f"{hub.url}/hub/home")
        assert _standing(_me(hub, "lab-ben")) == {
            "acme": (["crash-sim", "weather"], ["org-admin", "researcher"])
        }

        # a Keycloak admin takes org-admin and the weather project away
        oidc_provider.update_user("lab-ben", roles=["researcher"], groups=["/acme/crash-sim"])
        time.sleep(REFRESH_AGE + 1)
        page.reload()  # the next hub request refreshes the tokens and re-provisions
        page.wait_for_url(f"{hub.url}/hub/home")
        page.screenshot(path=str(screenshots_dir / "login-04-after-refresh.png"))
    finally:
        ctx.close()
    assert _standing(_me(hub, "lab-ben")) == {"acme": (["crash-sim"], ["researcher"])}
    assert hub.hub_api("GET", "/users/lab-ben").json()["groups"] == ["/acme/crash-sim"]


def test_logout_ends_the_provider_session(oidc_provider, keycloak_hub, browser, screenshots_dir):
    hub = keycloak_hub
    oidc_provider.set_user("lab-cy", "cy-Pass-1", groups=["/acme"], roles=["researcher"])
    ctx = browser.new_context()
    page = ctx.new_page()
    try:
        _login(page, hub, "lab-cy", "cy-Pass-1")
        page.wait_for_url(f"{hub.url}/hub/home")
        # while the provider session lives, signing in again needs no password (single sign-on) ...
        page.goto(f"{hub.url}/hub/oauth_login?next=/hub/home")
        page.wait_for_url(f"{hub.url}/hub/home")
        assert page.locator("#kc-form-login").count() == 0

        page.goto(f"{hub.url}/hub/logout")
        page.wait_for_url(f"{hub.url}/hub/login**")
        page.screenshot(path=str(screenshots_dir / "login-05-after-logout.png"))
        # ... after logout the provider asks for the password again
        page.click("a[href*='oauth_login']")
        page.wait_for_selector("#kc-form-login")
        page.screenshot(path=str(screenshots_dir / "login-06-password-asked-again.png"))
        assert page.url.startswith(oidc_provider.realm_url)
        page.fill("#username", "lab-cy")
        page.fill("#password", "cy-Pass-1")
        page.click("#kc-login")
        page.wait_for_url(f"{hub.url}/**")
        assert "/hub/" in page.url
    finally:
        ctx.close()


def test_user_outside_every_organization_is_refused(oidc_provider, keycloak_hub, browser):
    hub = keycloak_hub
    oidc_provider.set_user("lab-dee", "dee-Pass-1", groups=["not-a-full-path"], roles=["researcher"])
    ctx = browser.new_context()
    page = ctx.new_page()
    try:
        _login(page, hub, "lab-dee", "dee-Pass-1")
        page.wait_for_load_state()
        page.wait_for_url(f"{hub.url}/hub/oauth_callback**")
        assert "not currently authorized" in page.content()
    finally:
        ctx.close()
    assert hub.hub_api("GET", "/users/lab-dee").status_code == 404
