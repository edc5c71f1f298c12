"""Keycloak login for the hub: :class:`HeroesOAuthenticator`, a GenericOAuthenticator for one realm.

What it adds to oauthenticator's GenericOAuthenticator:

* every endpoint derived from the realm URL (``https://kc.example.org/realms/heroes``):
  ``/protocol/openid-connect/{auth,token,userinfo,certs,logout}``;
* Keycloak's claims: ``preferred_username`` is the hub username; the ``groups`` claim (group paths, with
  the mapper's "Full group path" on) becomes the user's hub groups; the realm roles are read from the
  *access token* (``realm_access.roles``), which Keycloak does not copy into userinfo by default. The
  access token's signature is checked against the realm's JWKS (``certs``), its issuer and ``azp`` too;
* provisioning into the HEROES database (:func:`jupyter_heroes.identity.provision`) at every login and
  every refresh, in a thread pool, so a group or role removed in Keycloak is gone at the next refresh;
* refresh through the refresh-token grant (a new access token, so new roles) every
  ``auth_refresh_age`` seconds and before each spawn; a refused refresh (the Keycloak session ended)
  sends the user back to the login page;
* logout that also ends the Keycloak session (RP-initiated logout with ``id_token_hint`` and
  ``post_logout_redirect_uri``).

Minimal configuration (see ``hub_config/jupyterhub_config.py`` and ``docs/admin/keycloak.md``)::

    c.JupyterHub.authenticator_class = "jupyter_heroes.auth.HeroesOAuthenticator"
    c.HeroesOAuthenticator.keycloak_realm_url = "https://kc.example.org/realms/heroes"
    c.HeroesOAuthenticator.client_id = "jupyterhub"
    c.HeroesOAuthenticator.client_secret = "..."
    c.HeroesOAuthenticator.oauth_callback_url = "https://hub.example.org/hub/oauth_callback"
    c.HeroesOAuthenticator.db_url = "postgresql+psycopg://heroes@db/heroes"
    # and JUPYTERHUB_CRYPT_KEY in the environment (auth state holds the tokens, encrypted)
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import jwt
from oauthenticator.generic import GenericOAuthenticator
from oauthenticator.oauth2 import OAuthLogoutHandler
from sqlalchemy.orm import Session, sessionmaker
from tornado import web
from tornado.httpclient import HTTPClientError
from tornado.httputil import url_concat
from traitlets import Bool, Float, Integer, Set, Unicode, default, validate

from . import dbutil
from .identity import DEFAULT_PLATFORM_ORG, parse_group_path, provision_user

#: asymmetric algorithms accepted for access tokens ("none" and HMAC never: key confusion)
SAFE_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


class HeroesLogoutHandler(OAuthLogoutHandler):
    """Hub logout, then the Keycloak session's end (RP-initiated logout)."""

    _id_token: str | None = None

    async def handle_logout(self) -> None:
        await super().handle_logout()
        # the hub user is still known here (cleared only before render_logout_page)
        user = self.current_user
        if user is not None and self.authenticator.enable_auth_state:
            state = await user.get_auth_state() or {}
            self._id_token = state.get("id_token")

    async def render_logout_page(self) -> None:
        url = self.authenticator.end_session_redirect(self, self._id_token)
        if url:
            self.redirect(url)
            return
        await super().render_logout_page()


class HeroesOAuthenticator(GenericOAuthenticator):
    """GenericOAuthenticator for a Keycloak realm, provisioning HEROES organizations, projects and roles."""

    logout_handler = HeroesLogoutHandler

    # --- Keycloak realm ----------------------------------------------------------------------------
    keycloak_realm_url = Unicode(
        "",
        config=True,
        help="""URL of the Keycloak realm, e.g. ``https://kc.example.org/realms/heroes`` (Keycloak's
        "issuer"). The authorize, token, userinfo, certs (JWKS) and logout URLs default to the realm's
        ``/protocol/openid-connect/*`` endpoints; set those options only to override one of them
        (for instance when the hub reaches Keycloak on an internal address). Required unless
        ``authorize_url``, ``token_url`` and ``userdata_url`` are all set.""",
    )

    @validate("keycloak_realm_url")
    def _validate_realm_url(self, proposal: Any) -> str:
        url = proposal.value.rstrip("/")
        if url and ("/realms/" not in url or not url.startswith(("http://", "https://"))):
            raise ValueError(
                f"HeroesOAuthenticator.keycloak_realm_url={proposal.value!r} is not a Keycloak realm URL: "
                "expected http(s)://<host>[/auth]/realms/<realm>"
            )
        return url

    def _realm_endpoint(self, name: str) -> str:
        return f"{self.keycloak_realm_url}/protocol/openid-connect/{name}" if self.keycloak_realm_url else ""

    @default("authorize_url")
    def _authorize_url_default(self) -> str:
        return self._realm_endpoint("auth")

    @default("token_url")
    def _token_url_default(self) -> str:
        return self._realm_endpoint("token")

    @default("userdata_url")
    def _userdata_url_default(self) -> str:
        return self._realm_endpoint("userinfo")

    jwks_url = Unicode(
        config=True,
        help="""URL of the realm's signing keys (JWKS). Default: the realm's
        ``/protocol/openid-connect/certs``. Access tokens are verified against these keys when
        ``verify_access_token`` is True; empty means the access token is decoded without checking its
        signature (it still comes straight from the token endpoint, over TLS in production).""",
    )

    @default("jwks_url")
    def _jwks_url_default(self) -> str:
        return self._realm_endpoint("certs")

    end_session_url = Unicode(
        config=True,
        help="""Keycloak's end-session (logout) endpoint. Default: the realm's
        ``/protocol/openid-connect/logout``. Empty (with no realm URL) keeps the plain hub logout.""",
    )

    @default("end_session_url")
    def _end_session_url_default(self) -> str:
        return self._realm_endpoint("logout")

    issuer = Unicode(
        config=True,
        help="""Expected ``iss`` of access tokens. Default: ``keycloak_realm_url``. Set it when Keycloak's
        frontend URL (which it writes into tokens) differs from the URL the hub uses to reach it.""",
    )

    @default("issuer")
    def _issuer_default(self) -> str:
        return self.keycloak_realm_url

    verify_access_token = Bool(
        True,
        config=True,
        help="""Check the access token's signature against ``jwks_url``, its expiry, its issuer
        (``issuer``) and that it was issued to this client (``azp``). Turning it off only makes sense
        when no JWKS is reachable from the hub.""",
    )

    access_token_leeway = Integer(
        30,
        config=True,
        help="Clock skew allowed when checking the access token's expiry and issue time, in seconds.",
    )

    jwks_min_refetch_interval = Float(
        60.0,
        config=True,
        help="""Minimum time between two fetches of the JWKS in seconds. Keys are cached; an access token
        signed with an unknown key id (Keycloak rotated its keys) triggers a fetch, at most this often.""",
    )

    # --- claims ---------------------------------------------------------------------------------------
    @default("username_claim")
    def _username_claim_default(self) -> str:
        return "preferred_username"

    @default("scope")
    def _scope_default(self) -> list[str]:
        return ["openid", "profile", "email"]

    @default("login_service")
    def _login_service_default(self) -> str:
        return "Keycloak"

    @default("manage_groups")
    def _manage_groups_default(self) -> bool:
        return True

    @default("enable_auth_state")
    def _enable_auth_state_default(self) -> bool:
        return True

    groups_claim = Unicode(
        "groups",
        config=True,
        help="""Claim holding the user's Keycloak group paths (a "Group Membership" mapper with "Full group
        path" on). Read from userinfo, else from the access token. The paths become the user's hub groups
        (``manage_groups``) and, ``/org/project``, their HEROES organizations and projects.""",
    )

    roles_claim = Unicode(
        "realm_access.roles",
        config=True,
        help="""Dotted path of the realm roles in the decoded access token. Roles are ``role`` (held in
        every organization of the user) or ``org:role`` (in that organization only).""",
    )

    admin_roles = Set(
        Unicode(),
        config=True,
        help="""Realm roles that make a user a hub admin (e.g. ``{"hub-admin"}``). When set, a user without
        any of them loses hub admin status at the next login or refresh, unless listed in
        ``admin_users`` or a member of ``admin_groups``.""",
    )

    allow_organization_members = Bool(
        True,
        config=True,
        help="""Allow every user whose groups place them in at least one organization (a group path
        ``/org[/project]``). Users outside every organization are refused at login and, if their last
        group is removed in Keycloak, sent back to the login page at the next refresh. Other allow
        options (``allowed_users``, ``allowed_groups``, ``allow_all``) still apply.""",
    ).tag(allow_config=True)

    # --- HEROES database ---------------------------------------------------------------------------------
    db_url = Unicode(
        "",
        config=True,
        help="""SQLAlchemy URL of the HEROES database (not the hub's), e.g. ``sqlite:////srv/heroes.sqlite``
        or ``postgresql+psycopg://heroes@db/heroes``. Users, organizations, projects, memberships and
        role assignments are provisioned into it at each login and refresh. Empty: no provisioning
        (the hub still logs users in; the HEROES service then knows nobody). The schema must be at head:
        ``heroes upgrade-db --db-url ...``.""",
    )

    platform_organization = Unicode(
        DEFAULT_PLATFORM_ORG,
        config=True,
        help="""Name of the platform organization (the "HEROES organization" of D3.1): created with kind
        ``platform`` when a group ``/<name>`` first appears, so platform roles (solution-admin,
        tenant-admin, infrastructure-admin) can be held in it.""",
    )

    provision_threads = Integer(
        4,
        config=True,
        help="Threads that run provisioning (blocking database work) off the hub's event loop.",
    )

    provision_timeout = Float(
        30.0,
        config=True,
        help="""Seconds a login or refresh waits for provisioning before failing with 503 (the database
        is unreachable or locked). The thread keeps running and its transaction completes or rolls back.""",
    )

    # --- refresh and logout ---------------------------------------------------------------------------------
    refresh_with_refresh_token = Bool(
        True,
        config=True,
        help="""At each refresh (every ``auth_refresh_age`` seconds, and before a spawn with
        ``refresh_pre_spawn``) get new tokens with the refresh-token grant, so role changes in Keycloak
        (which live in the access token) take effect. A refused grant (session ended or revoked in
        Keycloak) requires a new login. False: oauthenticator's behaviour (reuse the access token
        until userinfo rejects it).""",
    )

    keep_auth_when_unreachable = Bool(
        True,
        config=True,
        help="""When Keycloak cannot be reached at a refresh (connection error, 5xx), keep the user's current
        login, hub groups and HEROES roles and try again after ``auth_refresh_age``, instead of sending
        every user to a login page that cannot work. False: require a new login (strict).""",
    )

    end_keycloak_session = Bool(
        True,
        config=True,
        help="""On hub logout, also end the user's Keycloak session (redirect to ``end_session_url`` with
        ``id_token_hint``), so the next login asks for the password again. The hub's
        ``post_logout_redirect_url`` must be a valid post-logout redirect URI of the Keycloak client.""",
    )

    post_logout_redirect_url = Unicode(
        "",
        config=True,
        help="""Where Keycloak sends the browser after logout. Default: the hub's login page as seen in the
        logout request (``https://<host>/hub/login``).""",
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        missing = [n for n in ("authorize_url", "token_url", "userdata_url") if not getattr(self, n)]
        if missing:
            raise ValueError(
                "HeroesOAuthenticator needs the Keycloak realm: set c.HeroesOAuthenticator.keycloak_realm_url "
                f"(e.g. https://kc.example.org/realms/heroes), or all of {', '.join(missing)}"
            )
        self._jwks: dict[str, jwt.PyJWK] = {}
        self._jwks_fetched = 0.0
        self._jwks_lock = asyncio.Lock()
        self._refresh_locks: dict[str, asyncio.Lock] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._factory: sessionmaker[Session] | None = None
        self._factory_lock = threading.Lock()
        if not self.db_url:
            self.log.warning(
                "HeroesOAuthenticator.db_url is not set: users are logged in but not provisioned into HEROES"
            )

    # --- access token ------------------------------------------------------------------------------------
    async def _signing_key(self, kid: str | None) -> jwt.PyJWK:
        async with self._jwks_lock:
            if kid in self._jwks:
                return self._jwks[kid]
            if not self._jwks or time.monotonic() - self._jwks_fetched >= self.jwks_min_refetch_interval:
                doc = await self.httpfetch(
                    self.jwks_url,
                    "fetching the realm's signing keys",
                    method="GET",
                    headers={"Accept": "application/json"},
                    validate_cert=self.validate_server_cert,
                )
                keys: dict[str, jwt.PyJWK] = {}
                for k in (doc or {}).get("keys", []):
                    if k.get("use", "sig") != "sig":
                        continue
                    try:
                        keys[k.get("kid")] = jwt.PyJWK(k)
                    except jwt.PyJWTError as e:
                        self.log.debug("Skipping a JWKS key %s: %s", k.get("kid"), e)
                self._jwks = keys
                self._jwks_fetched = time.monotonic()
            if kid in self._jwks:
                return self._jwks[kid]
            if kid is None and len(self._jwks) == 1:
                return next(iter(self._jwks.values()))
        raise web.HTTPError(
            500,
            f"The access token is signed with key {kid!r}, which {self.jwks_url} does not list. "
            "Check HeroesOAuthenticator.jwks_url (or keycloak_realm_url).",
        )

    async def decode_access_token(self, token: str) -> dict[str, Any]:
        """The claims of a Keycloak (JWT) access token, verified as ``verify_access_token`` says.

        An opaque (non-JWT) token gives ``{}``: no roles. A JWT that fails verification fails the login
        with a message naming the setting to check (the token came from our own token endpoint, so this
        is a configuration problem, not a user's).
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            self.log.warning("The access token is not a JWT: realm roles are unavailable (no HEROES roles)")
            return {}
        if not (self.verify_access_token and self.jwks_url):
            return jwt.decode(token, options={"verify_signature": False})
        alg = header.get("alg")
        if alg not in SAFE_ALGORITHMS:
            raise web.HTTPError(500, f"The access token uses algorithm {alg!r}, not one of {SAFE_ALGORITHMS}")
        key = await self._signing_key(header.get("kid"))
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                issuer=self.issuer or None,
                leeway=self.access_token_leeway,
                options={"verify_aud": False, "require": ["exp", "iat"]},
            )
        except jwt.PyJWTError as e:
            self.log.error("Access token rejected: %s (issuer expected: %s)", e, self.issuer)
            raise web.HTTPError(
                500,
                f"The access token from Keycloak could not be verified ({e}). "
                "Check HeroesOAuthenticator.keycloak_realm_url / issuer / jwks_url.",
            ) from None
        azp = claims.get("azp", claims.get("client_id"))
        if azp is not None and azp != self.client_id:
            raise web.HTTPError(403, f"The access token was issued to client {azp!r}, not to this hub")
        return claims

    @staticmethod
    def _claim(claims: dict[str, Any], path: str) -> Any:
        value: Any = claims
        for part in path.split("."):
            if not isinstance(value, dict):
                return None
            value = value.get(part)
        return value

    async def build_auth_state_dict(self, token_info: dict, user_info: dict) -> dict:
        auth_state = super().build_auth_state_dict(token_info, user_info)
        claims = await self.decode_access_token(token_info["access_token"])
        roles = self._claim(claims, self.roles_claim) or []
        groups = user_info.get(self.groups_claim)
        if groups is None:
            groups = self._claim(claims, self.groups_claim) or []
        auth_state["heroes"] = {
            "roles": sorted(r for r in roles if isinstance(r, str)),
            "groups": sorted(g for g in groups if isinstance(g, str)),
        }
        return auth_state

    async def get_user_groups(self, auth_state: dict) -> set[str]:
        return set(auth_state.get("heroes", {}).get("groups", []))

    async def update_auth_model(self, auth_model: dict) -> dict:
        if self.admin_roles and not auth_model.get("admin"):
            roles = set(auth_model["auth_state"].get("heroes", {}).get("roles", []))
            auth_model["admin"] = bool(roles & self.admin_roles)
        return auth_model

    async def check_allowed(self, username: str, auth_model: dict | None) -> bool:
        if await super().check_allowed(username, auth_model):
            return True
        if self.allow_organization_members and auth_model:
            groups: Iterable[str] = auth_model.get("groups") or (auth_model.get("auth_state") or {}).get(
                "heroes", {}
            ).get("groups", [])
            if any(parse_group_path(g) for g in groups):
                return True
        return False

    # --- provisioning ---------------------------------------------------------------------------------------
    def _session_factory(self) -> sessionmaker[Session]:
        """Engine and schema check, once (called in a worker thread)."""
        with self._factory_lock:
            if self._factory is None:
                engine = dbutil.make_engine(self.db_url)
                try:
                    dbutil.check_schema(engine)
                except Exception:
                    engine.dispose()
                    raise
                self._factory = dbutil.session_factory(engine)
            return self._factory

    def _provision_blocking(self, name: str, user_info: dict, heroes: dict) -> dict:
        factory = self._session_factory()
        result = provision_user(
            factory,
            name,
            email=user_info.get("email") or "",
            full_name=user_info.get("name") or "",
            groups=heroes.get("groups", []),
            roles=heroes.get("roles", []),
            platform_org=self.platform_organization,
        )
        return result.as_dict()["organizations"]

    async def provision(self, auth_model: dict) -> dict:
        """Provision *auth_model*'s user into the HEROES database (in a thread) and record the result in
        ``auth_state["heroes"]["organizations"]``. Fails the request with 503 if the database is not
        usable; the operator's log says why."""
        if not self.db_url:
            return auth_model
        state = auth_model.get("auth_state") or {}
        heroes = state.setdefault("heroes", {"roles": [], "groups": []})
        user_info = state.get(self.user_auth_state_key) or {}
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.provision_threads, thread_name_prefix="heroes-provision")
        loop = asyncio.get_running_loop()
        call = partial(self._provision_blocking, auth_model["name"], user_info, heroes)
        try:
            orgs = await asyncio.wait_for(loop.run_in_executor(self._executor, call), self.provision_timeout)
        except dbutil.DatabaseSchemaMismatch as e:
            self.log.error("Cannot provision %s: %s", auth_model["name"], e)
            raise web.HTTPError(
                503,
                "HEROES cannot sign you in: its database needs an upgrade. Please tell your administrator.",
            ) from None
        except asyncio.TimeoutError:
            self.log.error(
                "Provisioning %s took more than %.0fs (HeroesOAuthenticator.provision_timeout): is the HEROES "
                "database reachable?",
                auth_model["name"],
                self.provision_timeout,
            )
            raise web.HTTPError(
                503, "HEROES cannot sign you in right now: please try again in a minute."
            ) from None
        except Exception:
            self.log.exception("Provisioning %s into the HEROES database failed", auth_model["name"])
            raise web.HTTPError(
                503, "HEROES cannot sign you in right now: please try again in a minute."
            ) from None
        heroes["organizations"] = orgs
        self.log.info(
            "Provisioned %s: %s",
            auth_model["name"],
            ", ".join(f"{o} ({', '.join(v['roles']) or 'no role'})" for o, v in orgs.items())
            or "no organization",
        )
        return auth_model

    async def run_post_auth_hook(self, handler: web.RequestHandler, auth_model: dict) -> dict:
        # after check_allowed: only allowed users are provisioned
        auth_model = await self.provision(auth_model)
        return await super().run_post_auth_hook(handler, auth_model)

    # --- refresh --------------------------------------------------------------------------------------------
    async def refresh_user(self, user: Any, handler: web.RequestHandler | None = None, **kwargs: Any) -> Any:
        """New tokens through the refresh-token grant, new claims, re-provisioning.

        Returns False (log in again) when Keycloak refuses the refresh token (session ended, user
        disabled) or when the user is no longer allowed; otherwise the new auth model.
        """
        if not self.enable_auth_state:
            return True
        lock = self._refresh_locks.setdefault(user.name, asyncio.Lock())
        async with lock:
            auth_state = await user.get_auth_state()
            if self.refresh_user_hook is not None:
                refreshed = await self._call_refresh_user_hook(user, auth_state)
                if refreshed is not None:
                    return refreshed
            refresh_token = (auth_state or {}).get("refresh_token")
            if self.refresh_with_refresh_token and refresh_token:
                try:
                    token_info = await self.get_token_info(
                        handler, self.build_refresh_token_request_params(refresh_token)
                    )
                    if not token_info.get("refresh_token"):  # Keycloak may keep the old one valid
                        token_info["refresh_token"] = refresh_token
                    auth_model = await self._token_to_auth_model(token_info)
                except (HTTPClientError, web.HTTPError) as e:
                    code = getattr(e, "code", None) or getattr(e, "status_code", 0)
                    if isinstance(e, HTTPClientError) and (e.response is None or code >= 500):
                        return self._unreachable(user, e)
                    self.log.info(
                        "Keycloak refused to refresh %s's tokens (%s): a new login is needed", user.name, e
                    )
                    return False
                except OSError as e:  # connection refused, DNS, TLS, stream closed: Keycloak unreachable
                    return self._unreachable(user, e)
            else:
                auth_model = await super().refresh_user(user, handler, **kwargs)
                if not isinstance(auth_model, dict):
                    return auth_model
            if auth_model["name"] != user.name:
                self.log.warning(
                    "Refresh for %s returned user %s: a new login is needed", user.name, auth_model["name"]
                )
                return False
            if not await self.check_allowed(user.name, auth_model):
                self.log.info(
                    "%s is no longer allowed (groups changed in Keycloak): a new login is needed", user.name
                )
                return False
            return await self.provision(auth_model)

    def _unreachable(self, user: Any, error: BaseException) -> bool:
        if self.keep_auth_when_unreachable:
            self.log.warning(
                "Keycloak unreachable while refreshing %s (%s): keeping the current roles until the next refresh",
                user.name,
                error,
            )
            return True
        self.log.warning(
            "Keycloak unreachable while refreshing %s (%s): a new login is needed", user.name, error
        )
        return False

    # --- logout -----------------------------------------------------------------------------------------
    def end_session_redirect(self, handler: web.RequestHandler, id_token: str | None) -> str:
        """Where the hub's logout sends the browser: Keycloak's end-session endpoint, or
        ``logout_redirect_url``, or '' for the hub's own logout page."""
        if not (self.end_keycloak_session and self.end_session_url):
            return self.logout_redirect_url
        target = self.post_logout_redirect_url or (
            f"{handler.request.protocol}://{handler.request.host}{handler.settings['login_url']}"
        )
        params = {"client_id": self.client_id, "post_logout_redirect_uri": target}
        if id_token:
            params["id_token_hint"] = id_token
        return url_concat(self.end_session_url, params)
