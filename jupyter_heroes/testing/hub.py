"""A real JupyterHub (with configurable-http-proxy) running the HEROES service, for tests and demos.

::

    with HubTestbed(platform_admins=["padmin"]) as hub:
        token = hub.create_user("padmin")
        r = hub.api("GET", "/organization/auth/me", token)

The hub runs from a config file written into its working directory that calls
:func:`jupyter_heroes.hubconfig.install_heroes`; ``extra_config`` (Python text) is appended to it, so
another authenticator can be configured (``c.JupyterHub.authenticator_class = ...``). Extra config
must *add to* ``c.JupyterHub.services`` / ``load_roles``, not replace them. Every port is free-picked
on 127.0.0.1. The HEROES database (a SQLite file in the working directory, or *db_url*) is migrated
before the hub starts. Stopping sends TERM to the hub (which stops the proxy and the service), then
stops the proxy and the service by their PID files in case the hub could not.
"""

from __future__ import annotations

import json
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from cryptography.fernet import Fernet

from .. import dbutil
from .base import (
    Component,
    ComponentError,
    free_port,
    pid_alive,
    read_pidfile,
    stop_pid,
    tail,
    testbed_dir,
    wait_for,
)

SERVICE_PREFIX = "/services/heroes"
API_PREFIX = SERVICE_PREFIX + "/api/v1"

CONFIG = """\
# Written by jupyter_heroes.testing.hub.HubTestbed; rewritten at each start.
from jupyter_heroes.hubconfig import install_heroes

c = get_config()  # noqa: F821
c.JupyterHub.bind_url = {bind_url!r}
c.JupyterHub.hub_bind_url = {hub_bind_url!r}
c.ConfigurableHTTPProxy.api_url = {proxy_api_url!r}
c.ConfigurableHTTPProxy.should_start = True
c.ConfigurableHTTPProxy.pid_file = {proxy_pid_file!r}
c.JupyterHub.pid_file = {pid_file!r}
c.JupyterHub.db_url = {hub_db_url!r}
c.JupyterHub.cookie_secret_file = {cookie_secret_file!r}
c.JupyterHub.authenticator_class = "dummy"  # any password; users are created through the API
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = "simple"
c.JupyterHub.cleanup_servers = True
c.JupyterHub.log_level = "INFO"

# the tests' admin token: a hub service allowed to create users and their tokens
c.JupyterHub.services = [{{"name": "heroes-tests", "api_token": {admin_token!r}}}]
c.JupyterHub.load_roles = [
    {{
        "name": "heroes-tests",
        "services": ["heroes-tests"],
        "scopes": ["admin:users", "tokens", "admin:groups", "list:users", "read:users", "list:services"],
    }}
]

install_heroes(
    c,
    db_url={db_url!r},
    port={service_port!r},
    platform_admins={platform_admins!r},
    crypt_key={crypt_key!r},
    log_file={service_log!r},
    extra_args={extra_args!r},
    extra_env={extra_env!r},
)

{restart_poll}
# --- extra config ---
{extra_config}
"""

RESTART_POLL = """
# test bed only: JupyterHub notices a dead managed service at its spawner's next poll (30 s by
# default, not configurable); a faster-polling spawner class makes fault-injection tests quick
import jupyterhub.services.service as _service
from traitlets import Int as _Int


class _FastPollServiceSpawner(_service._ServiceSpawner):
    poll_interval = _Int({seconds})


_service._ServiceSpawner = _FastPollServiceSpawner
"""


class HubTestbed(Component):
    """JupyterHub + configurable-http-proxy + the HEROES managed service on free ports.

    Attributes after :meth:`start`: ``url`` (the proxy, public), ``api_url`` (the HEROES API through
    the proxy), ``admin_token`` (hub admin:users + tokens), ``db_url`` (the HEROES DB),
    ``service_log`` (the service's JSON log), ``start_seconds`` (how long start took).
    """

    name = "hub"
    stop_grace = 15.0

    def __init__(
        self,
        *,
        db_url: str | None = None,
        platform_admins: list[str] | tuple[str, ...] = (),
        extra_config: str = "",
        extra_env: dict[str, str] | None = None,
        hub_env: dict[str, str] | None = None,
        max_body_size: int | None = None,
        crypt_key: str | None = None,
        workdir: Path | None = None,
        start_timeout: float = 90.0,
        service_restart_poll: float | None = None,
    ) -> None:
        """*service_restart_poll*: seconds between the hub's checks that the managed HEROES service is
        alive (JupyterHub restarts it when it died; 30 s by default, and not configurable): for
        fault-injection tests that kill the service."""
        workdir = workdir or Path(tempfile.mkdtemp(prefix="hub-", dir=testbed_dir()))
        super().__init__(workdir)
        self.platform_admins = list(platform_admins)
        self.extra_config = extra_config
        self.extra_env = dict(extra_env or {})
        self.hub_env = dict(hub_env or {})
        self.max_body_size = max_body_size
        # None: a fresh key; "": none (the service then refuses to store secrets)
        self.crypt_key = Fernet.generate_key().decode() if crypt_key is None else crypt_key
        self.db_url = db_url or f"sqlite:///{self.workdir / 'heroes.sqlite'}"
        self.start_timeout = start_timeout
        self.service_restart_poll = service_restart_poll
        self.admin_token = secrets.token_hex(32)
        self.port = self.hub_port = self.proxy_api_port = self.service_port = 0
        self.start_seconds = 0.0
        self.session = requests.Session()
        #: every HEROES API call made through :meth:`api`: (method, path, status, response text)
        self.transcript: list[tuple[str, str, int, str]] = []

    # --- paths ------------------------------------------------------------------------------------
    @property
    def config_file(self) -> Path:
        return self.workdir / "jupyterhub_config.py"

    @property
    def hub_log(self) -> Path:
        return self.log_path("jupyterhub")

    @property
    def service_log(self) -> Path:
        return self.workdir / "heroes-service.log"

    @property
    def pid_file(self) -> Path:
        return self.workdir / "jupyterhub.pid"

    @property
    def proxy_pid_file(self) -> Path:
        return self.workdir / "jupyterhub-proxy.pid"

    @property
    def service_pid_file(self) -> Path:
        return self.workdir / "heroes-service.pid"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return self.url + API_PREFIX

    # --- lifecycle --------------------------------------------------------------------------------
    def write_config(self) -> None:
        extra_args = [
            f"--HeroesService.pid_file={self.service_pid_file}",
            # workflows in tests finish in seconds: poll their clusters often
            "--WorkflowEngine.poll_interval=0.5",
            "--WorkflowEngine.sweep_interval=5",
        ]
        if self.max_body_size:
            extra_args.append(f"--HeroesService.max_body_size={self.max_body_size}")
        text = CONFIG.format(
            bind_url=self.url,
            hub_bind_url=f"http://127.0.0.1:{self.hub_port}",
            proxy_api_url=f"http://127.0.0.1:{self.proxy_api_port}",
            proxy_pid_file=str(self.proxy_pid_file),
            pid_file=str(self.pid_file),
            hub_db_url=f"sqlite:///{self.workdir / 'jupyterhub.sqlite'}",
            cookie_secret_file=str(self.workdir / "jupyterhub_cookie_secret"),
            admin_token=self.admin_token,
            db_url=self.db_url,
            service_port=self.service_port,
            platform_admins=self.platform_admins,
            crypt_key=self.crypt_key,
            service_log=str(self.service_log),
            extra_args=extra_args,
            extra_env=self.extra_env,
            extra_config=self.extra_config,
            restart_poll=RESTART_POLL.format(seconds=max(1, round(self.service_restart_poll)))
            if self.service_restart_poll
            else "",
        )
        self.config_file.write_text(text)

    #: a port chosen free can be taken before the hub binds it (another process's connection):
    #: the hub then exits with "Failed to bind"; start again on new ports, this many times at most
    port_attempts = 3

    def _start(self) -> None:
        dbutil.upgrade(self.db_url)  # the service refuses an outdated database
        for attempt in range(1, self.port_attempts + 1):
            try:
                self._start_on_free_ports()
                return
            except ComponentError as e:
                lost_race = "Failed to bind" in str(e) or "EADDRINUSE" in str(e)
                if not lost_race or attempt == self.port_attempts:
                    raise
                self.stop()  # what the failed start left (its proxy), by PID
                self.session = requests.Session()
                if self.hub_log.exists():  # kept for the record; the next attempt logs afresh
                    self.hub_log.rename(self.hub_log.with_name(f"jupyterhub.failed-{attempt}.log"))

    def _start_on_free_ports(self) -> None:
        t0 = time.monotonic()
        self.port, self.hub_port, self.proxy_api_port, self.service_port = (free_port() for _ in range(4))
        self.write_config()
        self.spawn(
            [sys.executable, "-m", "jupyterhub", "-f", str(self.config_file)],
            log="jupyterhub",
            cwd=self.workdir,
            env=self.hub_env,
        )
        proc_pid = self.pids[-1]

        def died() -> str:
            """Why the start cannot succeed any more ("" while it still can)."""
            if not pid_alive(proc_pid):
                return f"jupyterhub exited during start:\n{self.log_excerpt()}"
            if self.hub_log.exists() and "Service heroes exited" in self.hub_log.read_text(errors="replace"):
                return f"the HEROES service exited during start:\n{self.log_excerpt()}"
            return ""

        # a death ends the wait at once (wait_for takes an exception for "not yet")
        def hub_up() -> bool:
            return bool(died()) or requests.get(f"{self.url}/hub/api/", timeout=5).status_code == 200

        def service_up() -> bool:
            return bool(died()) or requests.get(f"{self.api_url}/openapi.json", timeout=5).status_code == 200

        try:
            wait_for(hub_up, self.start_timeout, "jupyterhub")
            if why := died():
                raise ComponentError(why)
            wait_for(service_up, self.start_timeout, "HEROES service behind the proxy")
            if why := died():
                raise ComponentError(why)
        except ComponentError as e:
            if "exited" in str(e):
                raise
            raise ComponentError(f"{e}\n{self.log_excerpt()}") from None
        self.start_seconds = time.monotonic() - t0

    def log_excerpt(self, lines: int = 25) -> str:
        """The end of the hub's log without the proxy's error-page noise, and of the service's log."""
        text = self.hub_log.read_text(errors="replace") if self.hub_log.exists() else ""
        keep = [ln for ln in text.splitlines() if ln.startswith(("[", "{", "The HEROES"))]
        hub = "\n".join(ln for ln in keep if "/hub/error/404" not in ln and "xsrf cookie" not in ln)
        return (
            f"--- {self.hub_log} (filtered):\n"
            + "\n".join(hub.splitlines()[-lines:])
            + f"\n--- {self.service_log}:\n{tail(self.service_log, 10)}"
        )

    def stop(self) -> None:
        super().stop()  # TERM the hub: it stops its proxy and managed services
        for pidfile in (self.proxy_pid_file, self.service_pid_file):
            pid = read_pidfile(pidfile)
            if pid:
                stop_pid(pid, grace=self.stop_grace)
        self.session.close()

    # --- hub REST API -----------------------------------------------------------------------------
    def hub_api(
        self, method: str, path: str, json_body: Any = None, token: str | None = None
    ) -> requests.Response:
        """Call the hub's REST API (``/hub/api`` + *path*) with the admin token (or *token*)."""
        return self.session.request(
            method,
            f"{self.url}/hub/api{path}",
            json=json_body,
            headers={"Authorization": f"token {token or self.admin_token}"},
            timeout=30,
        )

    def create_user(self, name: str, *, admin: bool = False, scopes: list[str] | None = None) -> str:
        """Create hub user *name* (if new) and return a fresh API token for them."""
        r = self.hub_api("POST", f"/users/{name}", {"admin": admin})
        if r.status_code not in (201, 409):
            raise ComponentError(f"creating hub user {name}: {r.status_code} {r.text[:300]}")
        body: dict[str, Any] = {"note": "heroes tests", "expires_in": 24 * 3600}
        if scopes is not None:
            body["scopes"] = scopes
        r = self.hub_api("POST", f"/users/{name}/tokens", body)
        if r.status_code != 201:
            raise ComponentError(f"creating a token for {name}: {r.status_code} {r.text[:300]}")
        return r.json()["token"]

    # --- HEROES REST API through the proxy --------------------------------------------------------
    def api(
        self,
        method: str,
        path: str,
        token: str | None = None,
        json: Any = None,
        *,
        org: str | None = None,
        data: bytes | str | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        """Call the HEROES API (``/services/heroes/api/v1`` + *path*) through the proxy.

        *org* sends ``X-Heroes-Organization``; *data* sends a raw body (for malformed-input tests).
        """
        h = {"Accept": "application/json"}
        if token:
            h["Authorization"] = f"token {token}"
        if org:
            h["X-Heroes-Organization"] = org
        if data is not None:
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        body = data if data is not None else (None if json is None else _dumps(json))
        if json is not None and data is None:
            h.setdefault("Content-Type", "application/json")
        r = self.session.request(
            method,
            self.api_url + path,
            data=body,
            params=params,
            headers=h,
            timeout=60,
            allow_redirects=False,
        )
        self.transcript.append((method, path, r.status_code, r.text))
        return r


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()
