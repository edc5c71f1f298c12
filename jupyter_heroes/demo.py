"""``heroes demo``: the whole product on one machine with embedded defaults, in one command.

What it sets up in a state directory (``~/.heroes-demo`` unless ``--state-dir``), keeping it across
runs (passwords stay the same; delete the directory to start afresh):

* ``heroes.sqlite``: the HEROES database, migrated to head;
* a client organization ``acme`` (projects ``crash-sim`` and ``weather``) with the local execution
  backend enrolled as cluster ``local``, the platform organization ``heroes`` and a provider
  organization ``hpc-vendor``; one user per role of D3.1 Table 1, named after the role, provisioned
  through :func:`jupyter_heroes.identity.provision` exactly as a Keycloak login would be;
* ``demo-users.json`` (mode 600): the users, their groups, roles and random passwords;
* ``jupyterhub_config.py``: JupyterHub on ``127.0.0.1:8000`` with :class:`DemoAuthenticator` (checks
  those passwords), ``SimpleLocalProcessSpawner`` (no system users; homes under ``home/``), and the
  HEROES service through :func:`jupyter_heroes.hubconfig.install_heroes`.

Then it prints where to go and who can log in, and *becomes* JupyterHub (``exec``): its PID is the
hub's, so stopping it is one ``kill``.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import shutil
import socket
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyterhub.auth import Authenticator
from sqlalchemy import select
from traitlets import Unicode

from . import dbutil, orm
from .identity import provision

DEMO_ORG = "acme"
PLATFORM_ORG = "heroes"
PROVIDER_ORG = "hpc-vendor"

#: username -> (groups, roles): one user per role, named after it
DEMO_USERS: dict[str, tuple[list[str], list[str]]] = {
    "researcher": (["/acme/crash-sim", "/acme/weather"], ["acme:researcher"]),
    "workflow-admin": (["/acme/crash-sim"], ["acme:workflow-admin"]),
    "application-packager": (["/acme/crash-sim"], ["acme:application-packager"]),
    "project-admin": (["/acme/crash-sim", "/acme/weather"], ["acme:project-admin"]),
    "billing-admin": (["/acme"], ["acme:billing-admin"]),
    "org-admin": (["/acme"], ["acme:org-admin"]),
    "solution-admin": (["/heroes"], ["heroes:solution-admin"]),
    "tenant-admin": (["/heroes"], ["heroes:tenant-admin"]),
    "infrastructure-admin": (["/heroes"], ["heroes:infrastructure-admin"]),
    "resource-provider": (["/hpc-vendor"], ["hpc-vendor:resource-provider"]),
    "application-provider": (["/hpc-vendor"], ["hpc-vendor:application-provider"]),
}
#: hub admins and HEROES platform administrators of the demo
PLATFORM_ADMINS = ["solution-admin"]
#: who the hub lets into the admin and vendor dashboards (what they may do there is the service's call)
DASHBOARD_USERS = {
    "admin": ["org-admin", "billing-admin", "project-admin", "tenant-admin", "solution-admin"],
    "vendor": ["resource-provider", "application-provider"],
}

_ORGS = {
    DEMO_ORG: ("ACME Engineering (demo client organization)", "client"),
    PLATFORM_ORG: ("HEROES platform", "platform"),
    PROVIDER_ORG: ("HPC Vendor (demo provider)", "provider"),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def default_state_dir() -> Path:
    return Path(os.environ.get("HEROES_DEMO_DIR", Path.home() / ".heroes-demo"))


@dataclass
class DemoState:
    state_dir: Path

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.state_dir / 'heroes.sqlite'}"

    @property
    def users_file(self) -> Path:
        return self.state_dir / "demo-users.json"

    @property
    def config_file(self) -> Path:
        return self.state_dir / "jupyterhub_config.py"

    def crypt_key(self) -> str:
        """The Fernet key the service encrypts stored secrets with (made once, kept in the state dir)."""
        path = self.state_dir / "heroes_crypt_key"
        if not path.exists():
            from cryptography.fernet import Fernet

            _write_private(path, Fernet.generate_key().decode())
        return path.read_text().strip()


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def load_users(path: Path) -> dict[str, dict[str, Any]]:
    return json.loads(path.read_text())["users"]


def prepare(state_dir: Path) -> tuple[DemoState, dict[str, dict[str, Any]]]:
    """Create (or reuse) the demo's database, users and data under *state_dir*. Idempotent."""
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, stat.S_IRWXU)
    st = DemoState(state_dir)
    users: dict[str, dict[str, Any]] = load_users(st.users_file) if st.users_file.exists() else {}
    for name, (groups, roles) in DEMO_USERS.items():
        entry = users.setdefault(name, {"password": secrets.token_urlsafe(9)})
        entry["groups"], entry["roles"] = groups, roles
    _write_private(st.users_file, json.dumps({"users": users}, indent=1))

    dbutil.upgrade(st.db_url)
    engine = dbutil.make_engine(st.db_url)
    try:
        with dbutil.session_scope(dbutil.session_factory(engine)) as s:
            for oname, (display, kind) in _ORGS.items():
                org = s.scalar(select(orm.Organization).where(orm.Organization.name == oname))
                if org is None:
                    s.add(orm.Organization(name=oname, display_name=display, kind=kind))
            s.flush()
            for name, (groups, roles) in DEMO_USERS.items():
                provision(
                    s,
                    name,
                    email=f"{name}@demo.heroes.invalid",
                    full_name=name.replace("-", " ").title(),
                    groups=groups,
                    roles=roles,
                    platform_org=PLATFORM_ORG,
                )
            acme = s.scalar(select(orm.Organization).where(orm.Organization.name == DEMO_ORG))
            assert acme is not None
            if (
                s.scalar(
                    select(orm.Cluster).where(orm.Cluster.org_id == acme.id, orm.Cluster.name == "local")
                )
                is None
            ):
                scratch = state_dir / "scratch"
                scratch.mkdir(exist_ok=True)
                cluster = orm.Cluster(
                    org_id=acme.id,
                    name="local",
                    description="This machine (the demo's local execution backend)",
                    transport="local",
                    scheduler="local",
                    host="localhost",
                    scratch_root=str(scratch),
                    site={"pue": 1.5, "grid_zone": "FR"},
                )
                cluster.queues.append(
                    orm.ClusterQueue(name="default", max_nodes=1, cpus_per_node=os.cpu_count() or 1)
                )
                s.add(cluster)
    finally:
        engine.dispose()
    return st, users


class DemoAuthenticator(Authenticator):
    """Username and password from the demo's users file. For the demo only: the passwords are random
    but kept in clear in a file only the demo's owner can read."""

    users_file = Unicode(
        config=True,
        help='JSON file of the demo users (``{"users": {name: {"password": ...}}}``), written by heroes demo.',
    )

    def _users(self) -> dict[str, dict[str, Any]]:
        return load_users(Path(self.users_file))

    def check_allow_config(self) -> None:  # every user in the file may log in
        pass

    async def authenticate(self, handler: Any, data: dict[str, str]) -> dict[str, Any] | None:
        username = (data or {}).get("username", "")
        password = (data or {}).get("password", "")
        entry = self._users().get(username)
        if entry is None or not hmac.compare_digest(entry["password"].encode(), password.encode()):
            self.log.warning("Demo login failed for %r", username)
            return None
        return {"name": username}

    def check_allowed(self, username: str, authentication: dict | None = None) -> bool:
        return username in self._users()


def configure(
    c: Any,
    state_dir: str | Path,
    *,
    ip: str = "127.0.0.1",
    port: int = 8000,
    hub_port: int = 0,
    proxy_api_port: int = 0,
    service_port: int = 0,
) -> None:
    """Fill the JupyterHub config *c* for the demo in *state_dir* (prepared by :func:`prepare`)."""
    from .hubconfig import install_heroes
    from .hubconfig_apps import install_heroes_apps

    st = DemoState(Path(state_dir))
    c.JupyterHub.bind_url = f"http://{ip}:{port}"
    c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{hub_port or free_port()}"
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{proxy_api_port or free_port()}"
    c.ConfigurableHTTPProxy.should_start = True
    c.JupyterHub.db_url = f"sqlite:///{st.state_dir / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(st.state_dir / "jupyterhub_cookie_secret")
    c.JupyterHub.pid_file = str(st.state_dir / "jupyterhub.pid")
    c.ConfigurableHTTPProxy.pid_file = str(st.state_dir / "jupyterhub-proxy.pid")
    c.JupyterHub.default_url = "/hub/home"
    c.JupyterHub.authenticator_class = DemoAuthenticator
    c.DemoAuthenticator.users_file = str(st.users_file)
    c.Authenticator.admin_users = set(PLATFORM_ADMINS)
    c.JupyterHub.spawner_class = "jupyterhub.spawner.SimpleLocalProcessSpawner"
    c.SimpleLocalProcessSpawner.home_dir_template = str(st.state_dir / "home" / "{username}")
    c.Spawner.default_url = "/lab"
    if os.geteuid() == 0:
        c.Spawner.args = ["--allow-root"]
    install_heroes(
        c,
        db_url=st.db_url,
        port=service_port or free_port(),
        platform_admins=PLATFORM_ADMINS,
        platform_org=PLATFORM_ORG,
        crypt_key=st.crypt_key(),
        log_file=str(st.state_dir / "heroes-service.log"),
        extra_env={"HEROES_DEMO": "1"},
    )
    install_heroes_apps(
        c,
        admin_users=DASHBOARD_USERS["admin"],
        vendor_users=DASHBOARD_USERS["vendor"],
        ports={"admin": free_port(), "vendor": free_port()},
    )


CONFIG_TEMPLATE = """\
# Written by `heroes demo`; rewritten at each run. Edit jupyter_heroes/demo.py, not this file.
from jupyter_heroes.demo import configure

configure(get_config(), {state_dir!r}, ip={ip!r}, port={port!r})  # noqa: F821
"""


def banner(st: DemoState, users: dict[str, dict[str, Any]], ip: str, port: int) -> str:
    host = "127.0.0.1" if ip in ("0.0.0.0", "", "::") else ip
    width = max(len(n) for n in users)
    lines = [
        "",
        "Jupyter HEROES demo",
        f"  Open http://{host}:{port}/ and log in as one of these users (one per role):",
        "",
    ]
    for name in DEMO_USERS:
        groups, roles = DEMO_USERS[name]
        lines.append(f"    {name:<{width}}  password {users[name]['password']}   ({', '.join(roles)})")
    lines += [
        "",
        f"  State (database, users, homes, logs): {st.state_dir}  - delete it to start afresh",
        f"  REST API: http://{host}:{port}/services/heroes/api/v1/  (log in first)",
        f"  Admin dashboard: http://{host}:{port}/services/heroes-admin/  "
        f"({', '.join(DASHBOARD_USERS['admin'])})",
        f"  Vendor dashboard: http://{host}:{port}/services/heroes-vendor/  "
        f"({', '.join(DASHBOARD_USERS['vendor'])})",
        "  Stop with Ctrl-C.",
        "",
    ]
    return "\n".join(lines)


def run(state_dir: Path, ip: str = "127.0.0.1", port: int = 8000) -> None:
    """Prepare, print the banner, then exec JupyterHub (does not return)."""
    if shutil.which("configurable-http-proxy") is None:
        sys.exit(
            "heroes demo needs configurable-http-proxy (npm): npm install -g configurable-http-proxy "
            "(or run scripts/demo.sh, which installs it)"
        )
    st, users = prepare(state_dir)
    st.config_file.write_text(CONFIG_TEMPLATE.format(state_dir=str(st.state_dir), ip=ip, port=port))
    print(banner(st, users, ip, port), flush=True)
    os.chdir(st.state_dir)
    argv = [sys.executable, "-m", "jupyterhub", "-f", str(st.config_file)]
    os.execv(sys.executable, argv)
