"""Install HEROES into a JupyterHub configuration: ``install_heroes(c, ...)`` in ``jupyterhub_config.py``.

::

    from jupyter_heroes.hubconfig import install_heroes
    install_heroes(c, db_url="postgresql+psycopg://heroes@db/heroes", platform_admins=["alice"])

This registers the managed service ``heroes`` (the hub starts, stops and restarts it, and routes
``/services/heroes/`` to it through the proxy), the ``custom:heroes:*`` scopes, and roles so that
every hub user may use the service. It is idempotent and merges with services and roles already
configured. The HEROES database must be at the current schema (``heroes upgrade-db``) unless
``upgrade_db=True``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from . import roles

SERVICE_NAME = "heroes"
ACCESS_SCOPE = f"access:services!service={SERVICE_NAME}"
#: what the service itself may do in the hub: read users and groups (identity provisioning)
SERVICE_SCOPES = ["list:users", "read:users", "list:groups", "read:groups"]
SERVICE_ROLE = "heroes-service"


def _get(c: Any, section: str, name: str, default: Any) -> Any:
    cfg = getattr(c, section)
    if name in cfg:
        return cfg[name]
    return default


def _merge_role(load_roles: list[dict[str, Any]], name: str, **fields: Any) -> None:
    """Add *fields* to the role *name* in *load_roles* (list entries are unioned), or append it."""
    for role in load_roles:
        if role.get("name") == name:
            for key, value in fields.items():
                if isinstance(value, list):
                    merged = list(role.get(key) or [])
                    merged += [v for v in value if v not in merged]
                    role[key] = merged
                else:
                    role.setdefault(key, value)
            return
    load_roles.append({"name": name, **fields})


def _key_from_file(path: str) -> str:
    from cryptography.fernet import Fernet

    if not os.path.exists(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(Fernet.generate_key().decode() + "\n")
    with open(path) as f:
        return f.read().strip()


def install_heroes(
    c: Any,
    *,
    db_url: str | None = None,
    port: int = 10101,
    platform_admins: Iterable[str] = (),
    platform_org: str = "heroes",
    crypt_key: str | None = None,
    crypt_key_file: str | None = None,
    log_file: str | None = None,
    upgrade_db: bool = False,
    extra_env: Mapping[str, str] | None = None,
    extra_args: Iterable[str] = (),
    service_scopes: Iterable[str] = SERVICE_SCOPES,
) -> dict[str, Any]:
    """Register the HEROES service in the JupyterHub config object *c*; returns the service entry.

    *db_url*: the HEROES database (default: ``$HEROES_DB_URL`` or ``sqlite:///jupyter_heroes.sqlite``
    in the hub's working directory). *port*: where the service listens on 127.0.0.1 (the proxy
    routes ``/services/heroes/`` there). *platform_admins*: hub usernames made solution-admin of the
    platform organization *platform_org* at each start. *crypt_key*: Fernet key(s) encrypting stored
    secrets (default: ``$HEROES_CRYPT_KEY`` passed through); or *crypt_key_file*: a file holding the
    key, created (mode 600) with a fresh key if missing. *extra_env*, *extra_args*: more
    environment and command-line options for the service (``--HeroesService.max_body_size=...``).
    """
    env: dict[str, str] = {}
    for name in ("HEROES_CRYPT_KEY", "HEROES_DB_URL", "HEROES_COOKIE_SECRET", "HEROES_LOG_FILE"):
        if os.environ.get(name):
            env[name] = os.environ[name]
    if db_url:
        env["HEROES_DB_URL"] = db_url
    if crypt_key_file and not crypt_key:
        crypt_key = _key_from_file(crypt_key_file)
    if crypt_key:
        env["HEROES_CRYPT_KEY"] = crypt_key
    if log_file:
        env["HEROES_LOG_FILE"] = log_file
    admins = [a for a in platform_admins]
    if admins:
        env["HEROES_PLATFORM_ADMINS"] = ",".join(admins)
    if extra_env:
        env.update(extra_env)
    command = [sys.executable, "-m", "jupyter_heroes.service", f"--HeroesService.platform_org={platform_org}"]
    if upgrade_db:
        command.append("--upgrade-db")
    command += list(extra_args)
    service = {
        "name": SERVICE_NAME,
        "url": f"http://127.0.0.1:{int(port)}",
        "command": command,
        "environment": env,
        "oauth_no_confirm": True,
        "display": True,
        "info": {"description": "Jupyter HEROES: workflows on HPC clusters"},
    }

    services = list(_get(c, "JupyterHub", "services", []))
    services = [s for s in services if s.get("name") != SERVICE_NAME] + [service]
    c.JupyterHub.services = services

    custom = dict(_get(c, "JupyterHub", "custom_scopes", {}))
    custom.update(roles.hub_custom_scopes())
    c.JupyterHub.custom_scopes = custom

    load_roles = [dict(r) for r in _get(c, "JupyterHub", "load_roles", [])]
    _merge_role(load_roles, "user", scopes=["self", ACCESS_SCOPE])
    _merge_role(
        load_roles,
        SERVICE_ROLE,
        description="What the HEROES service may do in the hub",
        scopes=list(service_scopes),
        services=[SERVICE_NAME],
    )
    c.JupyterHub.load_roles = load_roles

    # users' servers (the Jupyter server extension, the %heroes magics and widgets) call the service
    # with the server's own token: it needs the access scope, and the service's address
    token_scopes = list(
        _get(c, "Spawner", "server_token_scopes", []) or ["users:activity!user", "access:servers!server"]
    )
    if ACCESS_SCOPE not in token_scopes:
        token_scopes.append(ACCESS_SCOPE)
    c.Spawner.server_token_scopes = token_scopes
    base_url = str(_get(c, "JupyterHub", "base_url", "/") or "/")
    spawner_env = dict(_get(c, "Spawner", "environment", {}) or {})
    spawner_env.setdefault(
        "HEROES_SERVICE_URL", f"http://127.0.0.1:{int(port)}{base_url.rstrip('/')}/services/{SERVICE_NAME}/"
    )
    c.Spawner.environment = spawner_env
    return service
