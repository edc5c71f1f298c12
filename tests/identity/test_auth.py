"""HeroesOAuthenticator against the real Keycloak-shaped OIDC provider and a real HEROES database.

The hub itself is not started here (tests/browser/test_login.py does that): the authenticator's
public methods are called the way JupyterHub calls them, with two small stand-ins for hub objects —
the OAuth callback handler (it only hands over the ``code`` argument) and the hub user (it only hands
over its stored auth state).
"""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs, urlencode, urljoin, urlparse

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select
from tornado import web

from jupyter_heroes import dbutil, orm
from jupyter_heroes.auth import HeroesOAuthenticator
from jupyter_heroes.testing.oidc import confirm_logout, submit_login_form

pytestmark = pytest.mark.oidc

CLIENT_ID = "hub-auth-tests"
SECRET = "hub-auth-tests-secret"
CALLBACK = (
    "http://127.0.0.1:1/hub/oauth_callback"  # never contacted: the test reads the code off the redirect
)
AFTER_LOGOUT = "http://127.0.0.1:1/hub/login"


class CallbackArgs:
    """What OAuthCallbackHandler gives ``authenticate``: the ``code`` query argument."""

    def __init__(self, code: str) -> None:
        self.code = code

    def get_argument(self, name: str, default=None):
        return self.code if name == "code" else default


class HubUser:
    """What JupyterHub's User gives ``refresh_user``: its name and stored auth state."""

    def __init__(self, name: str, auth_state: dict) -> None:
        self.name = name
        self.auth_state = auth_state

    async def get_auth_state(self) -> dict:
        return self.auth_state


@pytest.fixture(scope="module")
def op(oidc_provider):
    oidc_provider.add_client(CLIENT_ID, SECRET, [CALLBACK], [AFTER_LOGOUT])
    return oidc_provider


@pytest.fixture
def db_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'heroes.sqlite'}"
    dbutil.upgrade(url)
    return url


@pytest.fixture
def authenticator(op, db_url):
    return HeroesOAuthenticator(
        keycloak_realm_url=op.realm_url,
        client_id=CLIENT_ID,
        client_secret=SECRET,
        oauth_callback_url=CALLBACK,
        enable_pkce=False,
        db_url=db_url,
    )


def browser_login(op, username: str, password: str) -> tuple[str, requests.Session]:
    """The browser's part: authorize, password form, redirect to the hub's callback (not followed)."""
    s = requests.Session()
    q = dict(
        client_id=CLIENT_ID,
        response_type="code",
        scope="openid profile email",
        redirect_uri=CALLBACK,
        state="s",
    )
    r = s.get(op.endpoint("auth") + "?" + urlencode(q))
    r = submit_login_form(s, r, username, password, allow_redirects=False)
    while r.is_redirect and not r.headers["Location"].startswith(CALLBACK):
        r = s.get(urljoin(r.url, r.headers["Location"]), allow_redirects=False)
    assert r.is_redirect, r.text[:300]
    return parse_qs(urlparse(r.headers["Location"]).query)["code"][0], s


def _payload(token: str) -> dict:
    p = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))


def _db_roles(db_url: str, username: str) -> dict[str, set[str]]:
    engine = dbutil.make_engine(db_url)
    with dbutil.session_scope(dbutil.session_factory(engine)) as s:
        rows = s.execute(
            select(orm.Organization.name, orm.RoleAssignment.role)
            .join(orm.RoleAssignment, orm.RoleAssignment.org_id == orm.Organization.id)
            .join(orm.User, orm.User.id == orm.RoleAssignment.user_id)
            .where(orm.User.name == username)
        ).all()
    engine.dispose()
    out: dict[str, set[str]] = {}
    for org, role in rows:
        out.setdefault(org, set()).add(role)
    return out


async def test_login_reads_roles_from_the_access_token_and_provisions(op, authenticator, db_url):
    op.set_user(
        "ada",
        "ada-pw",
        name="Ada Lovelace",
        groups=["/acme/crash-sim", "/globex"],
        roles=["researcher", "acme:org-admin", "offline_access"],
    )
    code, _ = browser_login(op, "ada", "ada-pw")
    model = await authenticator.get_authenticated_user(CallbackArgs(code), None)
    assert model is not None and model["name"] == "ada"
    state = model["auth_state"]
    # Keycloak (and this provider) keeps realm roles out of userinfo: they can only come from the token
    assert "realm_access" not in state["oauth_user"]
    assert _payload(state["access_token"])["realm_access"]["roles"] == [
        "researcher",
        "acme:org-admin",
        "offline_access",
    ]
    assert state["heroes"]["roles"] == ["acme:org-admin", "offline_access", "researcher"]
    assert model["groups"] == ["/acme/crash-sim", "/globex"]  # hub groups: the Keycloak paths
    assert state["heroes"]["organizations"] == {
        "acme": {"kind": "client", "projects": ["crash-sim"], "roles": ["org-admin", "researcher"]},
        "globex": {"kind": "client", "projects": [], "roles": ["researcher"]},
    }
    assert state["refresh_token"] and state["id_token"]
    assert _db_roles(db_url, "ada") == {"acme": {"org-admin", "researcher"}, "globex": {"researcher"}}


async def test_refresh_takes_role_and_group_removal_into_account(op, authenticator, db_url):
    op.set_user(
        "ben", "ben-pw", groups=["/acme/crash-sim", "/globex"], roles=["researcher", "acme:billing-admin"]
    )
    code, _ = browser_login(op, "ben", "ben-pw")
    model = await authenticator.get_authenticated_user(CallbackArgs(code), None)
    assert _db_roles(db_url, "ben") == {"acme": {"billing-admin", "researcher"}, "globex": {"researcher"}}

    op.update_user("ben", roles=["researcher"], groups=["/acme/crash-sim"])  # an admin edits ben in Keycloak
    refreshed = await authenticator.refresh_user(HubUser("ben", model["auth_state"]))
    assert isinstance(refreshed, dict)
    assert refreshed["groups"] == ["/acme/crash-sim"]
    assert refreshed["auth_state"]["heroes"]["roles"] == ["researcher"]
    assert refreshed["auth_state"]["access_token"] != model["auth_state"]["access_token"]
    assert _db_roles(db_url, "ben") == {"acme": {"researcher"}}


async def test_refresh_after_the_keycloak_session_ended_requires_login(op, authenticator):
    op.set_user("cy", "cy-pw", groups=["/acme"], roles=["researcher"])
    code, browser = browser_login(op, "cy", "cy-pw")
    model = await authenticator.get_authenticated_user(CallbackArgs(code), None)
    state = model["auth_state"]
    assert isinstance(await authenticator.refresh_user(HubUser("cy", state)), dict)
    # the hub's logout redirect, followed by the browser
    page = browser.get(authenticator.end_session_redirect(_FakeLogoutRequest(), state["id_token"]))
    assert 'id="kc-logout-confirm"' in page.text
    done = confirm_logout(browser, page, allow_redirects=False)
    assert done.headers["Location"] == AFTER_LOGOUT
    assert await authenticator.refresh_user(HubUser("cy", state)) is False


async def test_refresh_of_a_user_removed_from_every_organization_requires_login(op, authenticator):
    op.set_user("dee", "dee-pw", groups=["/acme"], roles=["researcher"])
    code, _ = browser_login(op, "dee", "dee-pw")
    model = await authenticator.get_authenticated_user(CallbackArgs(code), None)
    op.update_user("dee", groups=[])
    assert await authenticator.refresh_user(HubUser("dee", model["auth_state"])) is False


async def test_user_outside_every_organization_is_refused_and_not_provisioned(op, authenticator, db_url):
    op.set_user("eve", "eve-pw", groups=["no-full-path"], roles=["researcher"])
    code, _ = browser_login(op, "eve", "eve-pw")
    assert await authenticator.get_authenticated_user(CallbackArgs(code), None) is None
    engine = dbutil.make_engine(db_url)
    with dbutil.session_scope(dbutil.session_factory(engine)) as s:
        assert s.scalar(select(orm.User).where(orm.User.name == "eve")) is None
    engine.dispose()


async def test_admin_roles(op, db_url):
    a = HeroesOAuthenticator(
        keycloak_realm_url=op.realm_url,
        client_id=CLIENT_ID,
        client_secret=SECRET,
        oauth_callback_url=CALLBACK,
        enable_pkce=False,
        db_url=db_url,
        admin_roles={"hub-admin"},
    )
    op.set_user("fay", "fay-pw", groups=["/acme"], roles=["hub-admin"])
    op.set_user("gus", "gus-pw", groups=["/acme"], roles=["researcher"])
    fay = await a.get_authenticated_user(CallbackArgs(browser_login(op, "fay", "fay-pw")[0]), None)
    gus = await a.get_authenticated_user(CallbackArgs(browser_login(op, "gus", "gus-pw")[0]), None)
    assert fay["admin"] is True and gus["admin"] is False


async def test_forged_or_foreign_access_tokens_are_rejected(op, authenticator):
    good = _payload(browser_login_token(op))
    kid = jwt.get_unverified_header(browser_login_token(op))["kid"]
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(
        good | {"realm_access": {"roles": ["solution-admin"]}}, other_key, "RS256", headers={"kid": kid}
    )
    with pytest.raises(web.HTTPError, match="could not be verified"):
        await authenticator.decode_access_token(forged)
    unknown_kid = jwt.encode(good, other_key, "RS256", headers={"kid": "not-a-realm-key"})
    with pytest.raises(web.HTTPError, match="does not list"):
        await authenticator.decode_access_token(unknown_kid)
    hmac = jwt.encode(good, "a-secret-shared-by-nobody-at-all-0123456789", "HS256", headers={"kid": kid})
    with pytest.raises(web.HTTPError, match="algorithm 'HS256'"):
        await authenticator.decode_access_token(hmac)
    assert await authenticator.decode_access_token("opaque-token-value") == {}


def browser_login_token(op) -> str:
    """An access token of alice, obtained like the hub does (code grant)."""
    code, _ = browser_login(op, "alice", "alice-pass")
    tok = requests.post(
        op.endpoint("token"),
        data=dict(
            grant_type="authorization_code",
            code=code,
            redirect_uri=CALLBACK,
            client_id=CLIENT_ID,
            client_secret=SECRET,
        ),
        timeout=10,
    ).json()
    return tok["access_token"]


class _FakeLogoutRequest:
    """The parts of the hub's logout handler ``end_session_redirect`` reads when no
    post_logout_redirect_url is configured."""

    class request:
        protocol = "http"
        host = "127.0.0.1:1"

    settings = {"login_url": "/hub/login"}


def test_endpoints_derive_from_the_realm_url():
    a = HeroesOAuthenticator(keycloak_realm_url="https://kc.example.org/realms/heroes/", client_id="hub")
    base = "https://kc.example.org/realms/heroes/protocol/openid-connect"
    assert (a.authorize_url, a.token_url, a.userdata_url) == (
        f"{base}/auth",
        f"{base}/token",
        f"{base}/userinfo",
    )
    assert (a.jwks_url, a.end_session_url) == (f"{base}/certs", f"{base}/logout")
    assert a.issuer == "https://kc.example.org/realms/heroes"
    assert a.username_claim == "preferred_username" and a.manage_groups and a.enable_auth_state
    url = a.end_session_redirect(_FakeLogoutRequest(), "ID.TOKEN.X")
    assert url.startswith(f"{base}/logout?")
    assert parse_qs(urlparse(url).query) == {
        "client_id": ["hub"],
        "post_logout_redirect_uri": ["http://127.0.0.1:1/hub/login"],
        "id_token_hint": ["ID.TOKEN.X"],
    }
    a.end_keycloak_session = False
    a.logout_redirect_url = "https://example.org/bye"
    assert a.end_session_redirect(_FakeLogoutRequest(), "ID.TOKEN.X") == "https://example.org/bye"


def test_bad_configuration_names_the_setting():
    with pytest.raises(
        ValueError, match=r"keycloak_realm_url='https://kc.example.org/heroes' is not a Keycloak realm URL"
    ):
        HeroesOAuthenticator(keycloak_realm_url="https://kc.example.org/heroes")
    with pytest.raises(ValueError, match=r"set c.HeroesOAuthenticator.keycloak_realm_url"):
        HeroesOAuthenticator(client_id="hub")


async def test_keycloak_outage_keeps_the_login_restart_without_sessions_requires_login(tmp_path, db_url):
    """Fault injection at the boundary: the provider process is stopped, then started again."""
    from jupyter_heroes.testing.oidc import OIDCProvider

    with OIDCProvider(users={}, workdir=tmp_path / "op") as own:
        own.add_client(CLIENT_ID, SECRET, [CALLBACK], [AFTER_LOGOUT])
        own.set_user("hal", "hal-pw", groups=["/acme"], roles=["researcher"])
        kwargs = dict(
            keycloak_realm_url=own.realm_url,
            client_id=CLIENT_ID,
            client_secret=SECRET,
            oauth_callback_url=CALLBACK,
            enable_pkce=False,
            db_url=db_url,
        )
        lenient = HeroesOAuthenticator(**kwargs)
        strict = HeroesOAuthenticator(keep_auth_when_unreachable=False, **kwargs)
        code, _ = browser_login(own, "hal", "hal-pw")
        state = (await lenient.get_authenticated_user(CallbackArgs(code), None))["auth_state"]
        own.stop()
        assert await lenient.refresh_user(HubUser("hal", state)) is True  # keeps the current login
        assert await strict.refresh_user(HubUser("hal", state)) is False
        own.start()  # same port and keys, but the sessions (in memory) are gone, as after a Keycloak restart
        assert await lenient.refresh_user(HubUser("hal", state)) is False
