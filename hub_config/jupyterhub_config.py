"""Production JupyterHub configuration: Keycloak login (HeroesOAuthenticator) and the HEROES service.

Everything site-specific comes from the environment, so this file is used as is:

=============================  ==========================================================================
HEROES_PUBLIC_URL              public URL of the hub, e.g. ``https://hub.example.org`` (required)
HEROES_KEYCLOAK_REALM_URL      the realm, e.g. ``https://kc.example.org/realms/heroes`` (required)
HEROES_OAUTH_CLIENT_ID         the hub's confidential client in that realm (default ``jupyterhub``)
HEROES_OAUTH_CLIENT_SECRET     its secret (required)
HEROES_DB_URL                  the HEROES database (required), e.g. ``postgresql+psycopg://heroes@db/heroes``;
                               create or upgrade it first with ``heroes upgrade-db --db-url ...``
JUPYTERHUB_CRYPT_KEY           32-byte key(s), hex or base64 (``openssl rand -hex 32``) (required): the
                               users' Keycloak tokens are kept encrypted in the hub's auth state
HEROES_HUB_DB_URL              the hub's own database (default ``sqlite:///jupyterhub.sqlite``)
HEROES_ADMIN_ROLES             comma-separated realm roles that make a user hub admin (default none)
HEROES_PLATFORM_ADMINS         comma-separated usernames that administer the HEROES platform (default none)
HEROES_SERVICE_PORT            local port of the HEROES service (default 10101)
HEROES_AUTH_REFRESH_AGE        seconds between refreshes of a user's Keycloak tokens and roles (default 300)
HEROES_ADMIN_APP_GROUPS        comma-separated hub groups let into the admin dashboard (default heroes-admins)
HEROES_VENDOR_APP_GROUPS       comma-separated hub groups let into the vendor dashboard (default heroes-vendors)
=============================  ==========================================================================

See ``docs/admin/keycloak.md`` for the Keycloak side (client, mappers, groups, roles).
"""

import os
import sys

from jupyter_heroes.hubconfig import install_heroes
from jupyter_heroes.hubconfig_apps import install_heroes_apps

c = get_config()  # noqa: F821


def need(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        sys.exit(
            f"jupyterhub_config.py: set the environment variable {name} (see the table at the top of this file)"
        )
    return value


def csv(name: str) -> list[str]:
    return [v.strip() for v in os.environ.get(name, "").split(",") if v.strip()]


public_url = need("HEROES_PUBLIC_URL").rstrip("/")
need("JUPYTERHUB_CRYPT_KEY")  # checked by JupyterHub too; fail here with the variable's name
db_url = need("HEROES_DB_URL")

c.JupyterHub.public_url = public_url
c.JupyterHub.db_url = os.environ.get("HEROES_HUB_DB_URL", "sqlite:///jupyterhub.sqlite")
c.JupyterHub.default_url = "/hub/home"

c.JupyterHub.authenticator_class = "jupyter_heroes.auth.HeroesOAuthenticator"
c.HeroesOAuthenticator.keycloak_realm_url = need("HEROES_KEYCLOAK_REALM_URL")
c.HeroesOAuthenticator.client_id = os.environ.get("HEROES_OAUTH_CLIENT_ID", "jupyterhub")
c.HeroesOAuthenticator.client_secret = need("HEROES_OAUTH_CLIENT_SECRET")
c.HeroesOAuthenticator.oauth_callback_url = f"{public_url}/hub/oauth_callback"
c.HeroesOAuthenticator.post_logout_redirect_url = f"{public_url}/hub/login"
c.HeroesOAuthenticator.db_url = db_url
c.HeroesOAuthenticator.admin_roles = set(csv("HEROES_ADMIN_ROLES"))
c.HeroesOAuthenticator.auth_refresh_age = int(os.environ.get("HEROES_AUTH_REFRESH_AGE", "300"))
c.HeroesOAuthenticator.refresh_pre_spawn = True

install_heroes(
    c,
    db_url=db_url,
    port=int(os.environ.get("HEROES_SERVICE_PORT", "10101")),
    platform_admins=csv("HEROES_PLATFORM_ADMINS"),
)
# The admin and vendor dashboards (Voila services /services/heroes-admin/ and /services/heroes-vendor/),
# open to the members of these hub groups (docs/admin/dashboard.md); what each visitor may do there
# is decided by the HEROES service from the visitor's own roles.
install_heroes_apps(
    c,
    admin_groups=csv("HEROES_ADMIN_APP_GROUPS") or ["heroes-admins"],
    vendor_groups=csv("HEROES_VENDOR_APP_GROUPS") or ["heroes-vendors"],
)

# Spawner: choose one for your site (e.g. systemdspawner, batchspawner, kubespawner); the default
# LocalProcessSpawner needs a system account per Keycloak user.
# To run users' servers as Slurm jobs on the cluster this hub submits to:
#     load_subconfig(os.path.join(os.path.dirname(__file__), "slurmspawner.py"))
# (see docs/admin/slurm-spawner.md).
