"""``hub_config/jupyterhub_config.py`` (production, Keycloak): loads from the environment, fails
naming the missing variable."""

from __future__ import annotations

from pathlib import Path

import pytest
from traitlets.config.loader import PyFileConfigLoader

CONFIG = Path(__file__).resolve().parents[2] / "hub_config" / "jupyterhub_config.py"

ENV = {
    "HEROES_PUBLIC_URL": "https://hub.example.org/",
    "HEROES_KEYCLOAK_REALM_URL": "https://kc.example.org/realms/heroes",
    "HEROES_OAUTH_CLIENT_SECRET": "s3cret",
    "HEROES_DB_URL": "postgresql+psycopg://heroes@db/heroes",
    "JUPYTERHUB_CRYPT_KEY": "0" * 64,
    "HEROES_ADMIN_ROLES": "hub-admin, ops",
    "HEROES_PLATFORM_ADMINS": "root-of-trust",
}


def _load():
    return PyFileConfigLoader(CONFIG.name, path=str(CONFIG.parent)).load_config()


def test_production_config_from_environment(monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    c = _load()
    assert c.JupyterHub.authenticator_class == "jupyter_heroes.auth.HeroesOAuthenticator"
    a = c.HeroesOAuthenticator
    assert a.keycloak_realm_url == "https://kc.example.org/realms/heroes"
    assert (a.client_id, a.client_secret) == ("jupyterhub", "s3cret")
    assert a.oauth_callback_url == "https://hub.example.org/hub/oauth_callback"
    assert a.post_logout_redirect_url == "https://hub.example.org/hub/login"
    assert a.db_url == ENV["HEROES_DB_URL"]
    assert a.admin_roles == {"hub-admin", "ops"}
    assert c.JupyterHub.public_url == "https://hub.example.org"
    (svc,) = [s for s in c.JupyterHub.services if s["name"] == "heroes"]
    assert svc["environment"]["HEROES_DB_URL"] == ENV["HEROES_DB_URL"]
    assert svc["environment"]["HEROES_PLATFORM_ADMINS"] == "root-of-trust"
    # the dashboards are served, open to the default hub groups
    names = {s["name"] for s in c.JupyterHub.services}
    assert {"heroes-admin", "heroes-vendor"} <= names
    groups = {r["name"]: r.get("groups", []) for r in c.JupyterHub.load_roles}
    assert any("heroes-admins" in g for g in groups.values()), groups
    assert any("heroes-vendors" in g for g in groups.values()), groups
    # the options set here exist on the authenticator (no silently ignored typo)
    from jupyter_heroes.auth import HeroesOAuthenticator

    traits = HeroesOAuthenticator.class_traits(config=True)
    assert set(a) <= set(traits), set(a) - set(traits)


@pytest.mark.parametrize(
    "missing",
    [
        "HEROES_PUBLIC_URL",
        "HEROES_KEYCLOAK_REALM_URL",
        "HEROES_OAUTH_CLIENT_SECRET",
        "HEROES_DB_URL",
        "JUPYTERHUB_CRYPT_KEY",
    ],
)
def test_production_config_names_a_missing_variable(monkeypatch, missing):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv(missing)
    with pytest.raises(SystemExit, match=f"set the environment variable {missing}"):
        _load()
