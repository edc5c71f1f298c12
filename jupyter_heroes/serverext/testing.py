"""Test helpers for the server and lab extensions: a plain Jupyter server running the extension, and
the hub configuration that spawns JupyterLab single-user servers with it.

Both load the extension from this checkout, not from an installation: the server config comes from
``<repo>/jupyter-config`` (``$JUPYTER_CONFIG_PATH``) and the prebuilt lab extension from
``<repo>/jupyter_heroes/labextension`` (linked into a ``$JUPYTER_PATH`` directory). Whether a wheel
installs both where Jupyter finds them is tested separately (``tests/serverext/test_packaging.py``).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import requests

from ..testing.base import Component, ComponentError, free_port, pid_alive, tail, testbed_dir, wait_for
from ..testing.hub import HubTestbed

PACKAGE_DIR = Path(__file__).resolve().parents[1]
REPO_DIR = PACKAGE_DIR.parent
CONFIG_DIR = REPO_DIR / "jupyter-config"
LABEXTENSION_DIR = PACKAGE_DIR / "labextension"
LABEXTENSION_NAME = "jupyter-heroes"


def jupyter_paths(workdir: Path) -> dict[str, str]:
    """Environment making a Jupyter server in *workdir* load the extension from this checkout."""
    if not (CONFIG_DIR / "jupyter_server_config.d" / "jupyter_heroes.json").exists():
        raise ComponentError(f"{CONFIG_DIR} lacks jupyter_server_config.d/jupyter_heroes.json")
    if not (LABEXTENSION_DIR / "package.json").exists():
        raise ComponentError(
            f"{LABEXTENSION_DIR} holds no prebuilt lab extension: cd labextension && npm ci && "
            "npm run build:prod"
        )
    data = workdir / "share" / "jupyter"
    link = data / "labextensions" / LABEXTENSION_NAME
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(LABEXTENSION_DIR, target_is_directory=True)
    # JupyterLab's first-visit "get notified about Jupyter news?" toast would cover the screenshots
    lab_config = workdir / "etc" / "jupyter"
    (lab_config / "labconfig").mkdir(parents=True, exist_ok=True)
    (lab_config / "labconfig" / "default_setting_overrides.json").write_text(
        json.dumps({"@jupyterlab/apputils-extension:notification": {"fetchNews": "false"}})
    )
    return {
        "JUPYTER_CONFIG_PATH": os.pathsep.join([str(CONFIG_DIR), str(lab_config)]),
        "JUPYTER_PATH": str(data),
    }


class JupyterServer(Component):
    """``jupyter server`` on a free port with token authentication and the HEROES extension.

    *service_url* and *api_token* configure the extension (``c.HeroesExtension``); *args* adds
    command-line options. ``url`` ends in the base URL ``/jp/``.
    """

    name = "jupyter-server"

    def __init__(
        self,
        service_url: str,
        api_token: str,
        *,
        args: list[str] | None = None,
        workdir: Path | None = None,
    ) -> None:
        import tempfile

        super().__init__(workdir or Path(tempfile.mkdtemp(prefix="jpserver-", dir=testbed_dir())))
        self.service_url = service_url
        self.api_token = api_token
        self.args = list(args or [])
        self.token = secrets.token_hex(16)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jp/"

    def _start(self) -> None:
        self.port = free_port()
        root = self.workdir / "root"
        root.mkdir(exist_ok=True)
        env = {
            **jupyter_paths(self.workdir),
            "JUPYTER_CONFIG_DIR": str(self.workdir / "config"),
            "JUPYTER_DATA_DIR": str(self.workdir / "data"),
            "JUPYTER_RUNTIME_DIR": str(self.workdir / "runtime"),
            "HEROES_SERVICE_URL": "",
            "HEROES_API_TOKEN": "",
            "JUPYTERHUB_API_TOKEN": "",
        }
        argv = [
            sys.executable,
            "-m",
            "jupyter_server",
            "--no-browser",
            "--allow-root",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            "--ServerApp.base_url=/jp/",
            f"--ServerApp.root_dir={root}",
            f"--IdentityProvider.token={self.token}",
            f"--HeroesExtension.service_url={self.service_url}",
            f"--HeroesExtension.api_token={self.api_token}",
            *self.args,
        ]
        proc = self.spawn(argv, log="jupyter-server", env=env, cwd=self.workdir)

        def up() -> bool:
            if not pid_alive(proc.pid):
                raise ComponentError(f"jupyter server exited:\n{tail(self.log_path('jupyter-server'))}")
            r = requests.get(self.url + "api/status", headers=self.auth, timeout=5)
            return r.status_code == 200

        wait_for(up, 60, "jupyter server", log=self.log_path("jupyter-server"))

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    @property
    def log_text(self) -> str:
        path = self.log_path("jupyter-server")
        return path.read_text(errors="replace") if path.exists() else ""


#: hub config (appended to HubTestbed's) spawning JupyterLab with the HEROES extensions
LAB_HUB_CONFIG = """
import os
from jupyter_heroes.hubconfig import ACCESS_SCOPE

_hub = c.JupyterHub.bind_url.rstrip("/")
# the hub's public address: single-user servers find the service at <public_url>/services/heroes/
c.JupyterHub.public_url = _hub + "/"
c.JupyterHub.spawner_class = "jupyterhub.spawner.SimpleLocalProcessSpawner"
c.SimpleLocalProcessSpawner.home_dir_template = {homes!r} + "/{{username}}"
c.Spawner.default_url = "/lab"
# no announcements fetched from jupyter.org by the test servers
c.Spawner.args = (["--allow-root"] if os.geteuid() == 0 else []) + ["--LabApp.news_url=None"]
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
# added to what install_heroes put there (HEROES_SERVICE_URL ...), not instead of it
c.Spawner.environment.update({env!r})
# the server's own token acts as the user towards the HEROES service
c.Spawner.server_token_scopes = ["users:activity!user", "access:servers!server", ACCESS_SCOPE]
"""


def lab_hub_config(workdir: Path) -> str:
    """``extra_config`` for :class:`HubTestbed`: JupyterLab servers with the HEROES extensions."""
    homes = workdir / "homes"
    homes.mkdir(parents=True, exist_ok=True)
    return LAB_HUB_CONFIG.format(homes=str(homes), env=jupyter_paths(workdir))


def start_user_server(hub: HubTestbed, name: str, token: str, timeout: float = 150.0) -> str:
    """Start *name*'s default server through the hub's API with *name*'s *token* (the tests' admin
    token may not start servers); returns its URL (``<hub>/user/<name>/``)."""
    r = hub.hub_api("POST", f"/users/{name}/server", token=token)
    if r.status_code not in (201, 202, 400):  # 400: already running
        raise ComponentError(f"starting {name}'s server: {r.status_code} {r.text[:300]}")

    def ready() -> bool:
        model: dict[str, Any] = hub.hub_api("GET", f"/users/{name}", token=token).json()
        server = (model.get("servers") or {}).get("")
        return bool(server and server.get("ready"))

    t0 = time.monotonic()
    try:
        wait_for(ready, timeout, f"{name}'s single-user server", interval=0.5)
    except ComponentError as e:
        raise ComponentError(f"{e}\n{hub.log_excerpt(40)}") from None
    hub.server_start_seconds = time.monotonic() - t0  # type: ignore[attr-defined]
    return f"{hub.url}/user/{name}/"


def hub_login(hub: HubTestbed, name: str, password: str = "any") -> requests.Session:
    """A browser-like session logged in to the hub as *name* (the test hub's dummy authenticator)."""
    s = requests.Session()
    s.get(f"{hub.url}/hub/login", timeout=30)
    r = s.post(
        f"{hub.url}/hub/login",
        data={"username": name, "password": password, "_xsrf": s.cookies.get("_xsrf", path="/hub/")},
        timeout=60,
    )
    if r.status_code != 200 or "/hub/login" in r.url:
        raise ComponentError(f"logging in {name} to the hub: {r.status_code} at {r.url}")
    return s
