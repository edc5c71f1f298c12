"""Serve the admin and vendor dashboards as JupyterHub services: ``install_heroes_apps(c, ...)``.

::

    from jupyter_heroes.hubconfig import install_heroes
    from jupyter_heroes.hubconfig_apps import install_heroes_apps

    install_heroes(c, db_url=..., platform_admins=["alice"])
    install_heroes_apps(c, admin_groups=["heroes-admins"], vendor_groups=["heroes-vendors"])

Each app is a hub-managed service (``heroes-admin`` at ``/services/heroes-admin/``,
``heroes-vendor`` at ``/services/heroes-vendor/``) running Voila on one notebook
(:mod:`jupyter_heroes.dashboards.server`), behind hub login:

- **who gets in** is decided by the hub: the scope ``access:services!service=heroes-admin`` (resp.
  ``heroes-vendor``) is granted through the hub roles ``heroes-admin-app`` / ``heroes-vendor-app`` to
  the users and hub groups given here, and to nobody else (hub admins hold every ``access:services``).
  Anyone else who opens the app gets the hub's 403 page. Put your organization administrators into
  the admin group and your vendors into the vendor group (by hand, through the hub's admin page or
  REST API, or from Keycloak with the authenticator's ``manage_groups``).
- **what they can do** is decided by the HEROES service: the dashboard's kernel calls it with the
  visitor's own OAuth token (the service's ``oauth_client_allowed_scopes`` limits that token to
  reaching the HEROES service), so every call is authorized by the visitor's HEROES roles in the
  organization they act in. A member of the admin group without administrative roles sees a
  dashboard saying so, and any call they make is refused.

Call it after :func:`~jupyter_heroes.hubconfig.install_heroes` (it needs the HEROES service's
address). It is idempotent and merges with the services and roles already configured.

Voila kernels run under the service's Unix account (*unix_user*, default: the hub's). They accept
widget messages only (standalone Voila refuses code sent from the browser), and each is reachable
only by its visitor; still, run the apps under an unprivileged account of their own in production.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from .hubconfig import ACCESS_SCOPE as HEROES_ACCESS_SCOPE
from .hubconfig import SERVICE_NAME as HEROES_SERVICE
from .hubconfig import _get, _merge_role

#: environment variable of the service holding the extra kernel environment (JSON)
KERNEL_ENV_VAR = "HEROES_DASHBOARD_KERNEL_ENV"
APP_SERVICES = {"admin": "heroes-admin", "vendor": "heroes-vendor"}
APP_ROLES = {"admin": "heroes-admin-app", "vendor": "heroes-vendor-app"}
DEFAULT_PORTS = {"admin": 10102, "vendor": 10103}
DEFAULT_GROUPS = {"admin": ("heroes-admins",), "vendor": ("heroes-vendors",)}
DESCRIPTIONS = {
    "admin": "HEROES administration: users, roles, clusters, offers, budgets, reports",
    "vendor": "HEROES marketplace for vendors: offers, applications, revenue",
}


def access_scope(app: str) -> str:
    return f"access:services!service={APP_SERVICES[app]}"


def _heroes_url(c: Any) -> str:
    for s in _get(c, "JupyterHub", "services", []):
        if s.get("name") == HEROES_SERVICE and s.get("url"):
            base = str(_get(c, "JupyterHub", "base_url", "/") or "/").rstrip("/")
            return f"{s['url'].rstrip('/')}{base}/services/{HEROES_SERVICE}/"
    raise ValueError(
        "install_heroes_apps needs the HEROES service: call jupyter_heroes.hubconfig.install_heroes(c, ...) "
        "before install_heroes_apps(c, ...) in jupyterhub_config.py"
    )


def install_heroes_apps(
    c: Any,
    *,
    apps: Iterable[str] = ("admin", "vendor"),
    admin_users: Iterable[str] = (),
    admin_groups: Iterable[str] = DEFAULT_GROUPS["admin"],
    vendor_users: Iterable[str] = (),
    vendor_groups: Iterable[str] = DEFAULT_GROUPS["vendor"],
    ports: Mapping[str, int] | None = None,
    notebook_dir: str | None = None,
    service_url: str | None = None,
    unix_user: str | None = None,
    kernel_env: Mapping[str, str] | None = None,
    extra_args: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """Register the dashboards in the JupyterHub config object *c*; returns their service entries.

    *apps*: which of ``admin`` and ``vendor`` to serve. *admin_users*, *admin_groups* (default
    ``heroes-admins``): hub users and hub groups allowed into the admin app (the groups are created
    empty if missing); *vendor_users*, *vendor_groups* (default ``heroes-vendors``): the same for the
    vendor app. *ports*: app -> port on 127.0.0.1 (default 10102 admin, 10103 vendor). *notebook_dir*:
    where ``admin.ipynb`` / ``vendor.ipynb`` are (default: the ones shipped with jupyter_heroes; the
    service's ``$HEROES_NOTEBOOKS_DIR``). *service_url*: how kernels reach the HEROES service
    (default: its own address from :func:`install_heroes`, bypassing the proxy). *unix_user*: the
    Unix account the services run as (the hub must be allowed to switch to it; default the hub's).
    *kernel_env*: extra environment of every dashboard kernel (``HEROES_ORGANIZATION`` to preselect
    one). *extra_args*: more Voila options (``--VoilaConfiguration.theme=dark``).
    """
    apps = list(apps)
    unknown = [a for a in apps if a not in APP_SERVICES]
    if unknown:
        raise ValueError(f"install_heroes_apps: unknown app(s) {unknown}; choose among {list(APP_SERVICES)}")
    ports = {**DEFAULT_PORTS, **dict(ports or {})}
    heroes_url = service_url or _heroes_url(c)
    who = {
        "admin": (list(admin_users), list(admin_groups)),
        "vendor": (list(vendor_users), list(vendor_groups)),
    }
    entries = []
    services = list(_get(c, "JupyterHub", "services", []))
    load_roles = [dict(r) for r in _get(c, "JupyterHub", "load_roles", [])]
    for app in apps:
        name = APP_SERVICES[app]
        env = {"HEROES_SERVICE_URL": heroes_url}
        if notebook_dir:
            env["HEROES_NOTEBOOKS_DIR"] = str(notebook_dir)
        if kernel_env:
            env[KERNEL_ENV_VAR] = json.dumps(dict(kernel_env))
        command = [sys.executable, "-m", "jupyter_heroes.dashboards.server", app, *extra_args]
        entry: dict[str, Any] = {
            "name": name,
            "url": f"http://127.0.0.1:{int(ports[app])}",
            "command": command,
            "environment": env,
            "oauth_no_confirm": True,
            # the visitor's token, which the kernel uses, reaches the HEROES service and nothing else
            "oauth_client_allowed_scopes": [HEROES_ACCESS_SCOPE],
            "display": True,
            "info": {"description": DESCRIPTIONS[app]},
        }
        if unix_user:
            entry["user"] = unix_user
        services = [s for s in services if s.get("name") != name] + [entry]
        users, groups = who[app]
        fields: dict[str, Any] = {
            "description": f"May open the {name} dashboard",
            "scopes": [access_scope(app)],
        }
        if users:
            fields["users"] = users
        if groups:
            fields["groups"] = groups
        _merge_role(load_roles, APP_ROLES[app], **fields)
        entries.append(entry)
    c.JupyterHub.services = services
    c.JupyterHub.load_roles = load_roles
    return entries
