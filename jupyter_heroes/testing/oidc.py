"""A Keycloak-shaped OpenID Connect provider for tests and benchmarks (npm ``oidc-provider``).

``kc-oidc.mjs`` (next to this module) serves a realm at ``http://127.0.0.1:<port>/realms/<realm>``
with Keycloak's endpoint paths, login form and token shapes (see the header of that file). The
realm's users and clients live in a JSON file that the provider re-reads whenever it changes, so a
test changes a user's roles or groups at the provider with :meth:`OIDCProvider.update_user`, or
registers the hub as a client once the hub's port is known with :meth:`OIDCProvider.add_client`::

    with OIDCProvider(users={"ada": {"password": "pw", "groups": ["/acme/sim"], "roles": ["researcher"]}}) as op:
        op.add_client("jupyterhub", "secret", redirect_uris=["http://127.0.0.1:8000/hub/oauth_callback"])
        print(op.realm_url)   # what HeroesOAuthenticator.keycloak_realm_url takes

The npm packages come from ``jupyter_heroes/testing/package.json``, installed into
:func:`~jupyter_heroes.testing.base.node_dir` by ``.ci/install-testbed.sh``.
"""

from __future__ import annotations

import copy
import html
import json
import os
import re
import shutil
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import requests

from .base import Component, ComponentError, free_port, node_dir, wait_for

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "kc-oidc.mjs"

#: users of the default realm: one per kind of claim the identity mapping handles
DEFAULT_USERS: dict[str, dict[str, Any]] = {
    "alice": {
        "password": "alice-pass",
        "email": "alice@example.org",
        "name": "Alice Hero",
        "groups": ["/acme/crash-sim"],
        "roles": ["researcher", "offline_access", "uma_authorization", "default-roles-heroes"],
    },
    "bob": {
        "password": "bob-pass",
        "email": "bob@example.org",
        "name": "Bob Hero",
        "groups": ["/acme/crash-sim", "/acme/weather", "/globex"],
        "roles": ["researcher", "acme:org-admin"],
    },
}


class OIDCProvider(Component):
    """The provider process, its realm file and its signing key, under ``<testbed>/oidc``."""

    name = "oidc"

    def __init__(
        self,
        users: dict[str, dict[str, Any]] | None = None,
        clients: list[dict[str, Any]] | None = None,
        realm: str = "heroes",
        port: int | None = None,
        access_token_ttl: int = 300,
        refresh_token_ttl: int = 1800,
        workdir: Path | None = None,
    ) -> None:
        super().__init__(workdir)
        self.realm = realm
        self.port = port or 0
        self.access_token_ttl = access_token_ttl
        self.refresh_token_ttl = refresh_token_ttl
        self._lock = threading.Lock()
        self._users: dict[str, dict[str, Any]] = copy.deepcopy(users if users is not None else DEFAULT_USERS)
        self._clients: list[dict[str, Any]] = copy.deepcopy(clients or [])
        self.realm_file = self.workdir / "realm.json"
        self.key_file = self.workdir / "signing-key.json"

    # --- addresses ---------------------------------------------------------------------------------
    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}/realms/{self.realm}"

    realm_url = issuer  # Keycloak calls the issuer the realm URL

    def endpoint(self, name: str) -> str:
        """``auth``, ``token``, ``userinfo``, ``certs``, ``logout``, ``revoke``."""
        return f"{self.issuer}/protocol/openid-connect/{name}"

    # --- realm data ----------------------------------------------------------------------------------
    def _write(self) -> None:
        tmp = self.realm_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"users": self._users, "clients": self._clients}, indent=1))
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.realm_file)  # atomic: the provider never reads half a file

    @property
    def users(self) -> dict[str, dict[str, Any]]:
        return copy.deepcopy(self._users)

    def set_user(
        self,
        username: str,
        password: str,
        *,
        email: str = "",
        name: str = "",
        groups: list[str] | None = None,
        roles: list[str] | None = None,
    ) -> None:
        """Create or replace a user (groups as full paths, realm roles by name)."""
        with self._lock:
            self._users[username] = {
                "password": password,
                "email": email or f"{username}@example.org",
                "name": name or username,
                "groups": list(groups or []),
                "roles": list(roles or []),
            }
            self._write()

    def update_user(self, username: str, **changes: Any) -> None:
        """Change some attributes of a user (``roles=[...]``, ``groups=[...]``, ``enabled=False``...);
        the provider sees it at the next request."""
        with self._lock:
            if username not in self._users:
                raise KeyError(f"no user {username!r} in realm {self.realm!r}")
            self._users[username].update(copy.deepcopy(changes))
            self._write()

    def remove_user(self, username: str) -> None:
        with self._lock:
            self._users.pop(username, None)
            self._write()

    def add_client(
        self,
        client_id: str,
        client_secret: str,
        redirect_uris: list[str],
        post_logout_redirect_uris: list[str] | None = None,
        token_endpoint_auth_method: str = "client_secret_post",
    ) -> None:
        """Register (or replace) a confidential client, as a Keycloak admin would."""
        with self._lock:
            self._clients = [c for c in self._clients if c["client_id"] != client_id]
            self._clients.append(
                {
                    "client_id": client_id,
                    "client_secret": client_secret,
                    "redirect_uris": list(redirect_uris),
                    "post_logout_redirect_uris": list(post_logout_redirect_uris or []),
                    "token_endpoint_auth_method": token_endpoint_auth_method,
                }
            )
            self._write()

    # --- lifecycle -----------------------------------------------------------------------------------
    def _start(self) -> None:
        modules = node_dir() / "node_modules"
        if not (modules / "oidc-provider").is_dir() or not (modules / "express").is_dir():
            raise ComponentError(
                f"oidc-provider and express are not installed in {node_dir()}: run .ci/install-testbed.sh "
                f"(or: mkdir -p {node_dir()} && cp {HERE / 'package.json'} {node_dir()}/ && "
                f"cd {node_dir()} && npm install), or point HEROES_TESTBED_NODE at where they are"
            )
        node = shutil.which("node")
        if node is None:
            raise ComponentError("node (Node.js >= 18) is not on PATH: apt-get install nodejs")
        # ES modules resolve packages next to the script, not through NODE_PATH: run a copy of the
        # script from a directory whose node_modules is the installed one
        script = self.workdir / SCRIPT.name
        shutil.copyfile(SCRIPT, script)
        link = self.workdir / "node_modules"
        if link.is_symlink() or link.exists():
            if link.resolve() != modules.resolve():
                link.unlink()
        if not link.exists():
            link.symlink_to(modules)
        if not self.port:
            self.port = free_port()
        self._write()
        self.spawn(
            [node, str(script)],
            log="kc-oidc",
            cwd=self.workdir,
            env={
                "OIDC_PORT": str(self.port),
                "OIDC_REALM": self.realm,
                "OIDC_REALM_FILE": str(self.realm_file),
                "OIDC_KEY_FILE": str(self.key_file),
                "OIDC_ACCESS_TOKEN_TTL": str(self.access_token_ttl),
                "OIDC_REFRESH_TOKEN_TTL": str(self.refresh_token_ttl),
            },
        )
        url = f"{self.issuer}/.well-known/openid-configuration"
        wait_for(
            lambda: requests.get(url, timeout=2).ok,
            30,
            "Keycloak-shaped OIDC provider",
            self.log_path("kc-oidc"),
        )

    def discovery(self) -> dict[str, Any]:
        return requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=10).json()


# --- driving the password form without a browser ----------------------------------------------------
_FORM_RE = re.compile(r'<form id="kc-form-login" action="([^"]+)"')


class LoginFormError(AssertionError):
    """The response is not the provider's login form (the message shows what came instead)."""


def is_login_form(resp: requests.Response) -> bool:
    return 'id="kc-form-login"' in resp.text


def submit_login_form(
    session: requests.Session, form_page: requests.Response, username: str, password: str, **kwargs: Any
) -> requests.Response:
    """POST the credentials into the login form *form_page* shows, following redirects (to the client's
    callback and beyond). Extra keyword arguments go to ``session.post``."""
    m = _FORM_RE.search(form_page.text)
    if m is None:
        raise LoginFormError(
            f"not the login form: {form_page.status_code} {form_page.url}\n{form_page.text[:500]}"
        )
    action = urljoin(form_page.url, html.unescape(m.group(1)))
    return session.post(action, data={"username": username, "password": password}, **kwargs)


def confirm_logout(session: requests.Session, page: requests.Response, **kwargs: Any) -> requests.Response:
    """What a browser does on the provider's logout page (it auto-submits the form when the client sent
    ``id_token_hint``): POST the confirmation with ``logout=yes``."""
    action = re.search(r'<form id="op.logoutForm" method="post" action="([^"]+)"', page.text)
    xsrf = re.search(r'name="xsrf" value="([^"]+)"', page.text)
    if action is None or xsrf is None:
        raise AssertionError(f"not the logout page: {page.status_code} {page.url}\n{page.text[:500]}")
    return session.post(
        urljoin(page.url, html.unescape(action.group(1))),
        data={"xsrf": xsrf.group(1), "logout": "yes"},
        **kwargs,
    )
