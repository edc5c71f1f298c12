"""The HEROES demo inside a Binder container (called by ``binder/postBuild`` and ``binder/start``).

Binder gives a visitor one single-user JupyterLab, not a hub of our own, while the HEROES service is a
JupyterHub-managed service that authenticates every call against a hub. So ``start`` runs a small
JupyterHub in the background of the container, on 127.0.0.1 only, with

* the demo of :mod:`jupyter_heroes.demo` (SQLite, organization ``acme``, one user per role, the local
  execution backend as cluster ``local``) prepared at build time by ``postBuild``;
* the HEROES service as its managed service (:func:`jupyter_heroes.hubconfig.install_heroes`);
* :class:`NullProxy` instead of configurable-http-proxy: nobody browses this hub, the service is reached
  directly on its own port, and no Node.js process is needed;
* a ``binder-setup`` hub service whose token (made at start, kept in a mode-600 file) may create the
  demo users' API tokens.

It then publishes the shipped templates (``templates/*.yaml``) as the demo's workflow admin and writes
the environment the visitor's JupyterLab needs to ``<state>/binder.env`` (mode 600):
``HEROES_SERVICE_URL`` (the service, direct), ``HEROES_API_TOKEN`` (a token of the demo user
``researcher``: the Jupyter server extension, the magics and the widgets act as that user; it takes
precedence over Binder's own ``JUPYTERHUB_API_TOKEN``), ``HEROES_ORGANIZATION=acme`` and
``HEROES_CLUSTER=local``. ``start`` sources it before ``exec``-ing the visitor's server.

Usage: ``python3 binder/heroes_binder.py prepare|start|stop``. Where: ``$HEROES_DEMO_DIR`` (default
``~/.heroes-demo``); ports ``$HEROES_BINDER_HUB_PORT`` (default 8081) and
``$HEROES_BINDER_SERVICE_PORT`` (default 10101), on 127.0.0.1. Tokens are never printed.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests
import yaml
from jupyterhub.proxy import Proxy

BINDER_DIR = Path(__file__).resolve().parent
REPO_DIR = BINDER_DIR.parent
SETUP_SERVICE = "binder-setup"
DEMO_ORG = "acme"
RESEARCHER = "researcher"
WORKFLOW_ADMIN = "workflow-admin"
CLUSTER = "local"
START_TIMEOUT = float(os.environ.get("HEROES_BINDER_START_TIMEOUT", "120"))


class NullProxy(Proxy):
    """A proxy that routes nothing: the hub keeps its routing table in memory. Enough for a hub whose
    only clients are on this machine and call the hub and the service on their own ports."""

    should_start = False
    _routes: dict[str, dict[str, Any]]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._routes = {}

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    async def add_route(self, routespec: str, target: str, data: dict[str, Any]) -> None:
        self._routes[routespec] = {"routespec": routespec, "target": target, "data": data}

    async def delete_route(self, routespec: str) -> None:
        self._routes.pop(routespec, None)

    async def get_all_routes(self) -> dict[str, dict[str, Any]]:
        return dict(self._routes)


# --- where -----------------------------------------------------------------------------------------
def state_dir() -> Path:
    from jupyter_heroes.demo import default_state_dir

    return default_state_dir()


def hub_port() -> int:
    return int(os.environ.get("HEROES_BINDER_HUB_PORT", "8081"))


def service_port() -> int:
    return int(os.environ.get("HEROES_BINDER_SERVICE_PORT", "10101"))


def hub_api_url() -> str:
    return f"http://127.0.0.1:{hub_port()}/hub/api"


def service_url() -> str:
    return f"http://127.0.0.1:{service_port()}/services/heroes/"


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def log(message: str) -> None:
    print(f"[heroes-binder] {message}", file=sys.stderr, flush=True)


# --- the hub's configuration -------------------------------------------------------------------------
def configure(c: Any, state: str | Path) -> None:
    """The demo's hub config (see the module docstring) into the JupyterHub config object *c*."""
    from jupyter_heroes.demo import configure as demo_configure
    from jupyter_heroes.demo import free_port

    state = Path(state)
    # the public port is never listened on (NullProxy); a free one keeps demo_configure's URLs valid
    demo_configure(
        c, state, ip="127.0.0.1", port=free_port(), hub_port=hub_port(), service_port=service_port()
    )
    c.JupyterHub.proxy_class = NullProxy
    c.JupyterHub.cleanup_servers = True
    token = (state / "binder-setup-token").read_text().strip()
    c.JupyterHub.services = [*c.JupyterHub.services, {"name": SETUP_SERVICE, "api_token": token}]
    c.JupyterHub.load_roles = [
        *c.JupyterHub.load_roles,
        {
            "name": SETUP_SERVICE,
            "services": [SETUP_SERVICE],
            "scopes": ["admin:users", "tokens", "list:users"],
        },
    ]


CONFIG = """\
# Written by binder/heroes_binder.py at each start; edit that file, not this one.
import sys

sys.path.insert(0, {binder_dir!r})
from heroes_binder import configure  # noqa: E402

configure(get_config(), {state!r})  # noqa: F821
"""


# --- commands ----------------------------------------------------------------------------------------
def prepare() -> Path:
    """Build time: the demo's database (migrated), organizations, users and local cluster."""
    from jupyter_heroes.demo import prepare as demo_prepare

    st, users = demo_prepare(state_dir())
    log(f"demo prepared in {st.state_dir}: organization {DEMO_ORG}, {len(users)} users, cluster {CLUSTER}")
    return st.state_dir


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _hub_pid(state: Path) -> int | None:
    try:
        pid = int((state / "jupyterhub.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _pid_alive(pid) else None


def _up(url: str) -> bool:
    try:
        return requests.get(url, timeout=3).status_code == 200
    except requests.RequestException:
        return False


def _hub_env() -> dict[str, str]:
    """The hub's environment: ours without the variables Binder's own hub gave the container (they
    describe the visitor's server, not this hub)."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith(("JUPYTERHUB_", "JPY_", "HEROES_API_TOKEN"))
    }


def start_hub(state: Path) -> None:
    """Start the background hub (and through it the HEROES service) unless it already runs; wait
    until both answer."""
    if _hub_pid(state) and _up(hub_api_url() + "/"):
        log(f"the demo hub already runs (pid {_hub_pid(state)})")
    else:
        token_file = state / "binder-setup-token"
        _write_private(token_file, secrets.token_hex(32))
        config = state / "binder_jupyterhub_config.py"
        config.write_text(CONFIG.format(binder_dir=str(BINDER_DIR), state=str(state)))
        out = open(state / "jupyterhub.log", "ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(config)],
            cwd=state,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_hub_env(),
            start_new_session=True,  # outlives this script and the exec of the visitor's server
        )
        out.close()
        log(f"starting the demo hub (pid {proc.pid}, log {state / 'jupyterhub.log'})")
    deadline = time.monotonic() + START_TIMEOUT
    for what, url in (
        ("hub", hub_api_url() + "/"),
        ("HEROES service", service_url() + "api/v1/openapi.json"),
    ):
        while not _up(url):
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"the demo {what} did not answer at {url} within {START_TIMEOUT:.0f} s; "
                    f"see {state / 'jupyterhub.log'} and {state / 'heroes-service.log'}"
                )
            time.sleep(0.3)
    log(f"hub on {hub_api_url()}, HEROES service on {service_url()}")


def _hub(method: str, path: str, token: str, body: Any = None) -> requests.Response:
    return requests.request(
        method, hub_api_url() + path, json=body, headers={"Authorization": f"token {token}"}, timeout=30
    )


def user_token(setup_token: str, name: str) -> str:
    r = _hub("POST", f"/users/{name}", setup_token, {})
    if r.status_code not in (201, 409):
        raise SystemExit(f"creating hub user {name} failed: {r.status_code} {r.text[:300]}")
    r = _hub("POST", f"/users/{name}/tokens", setup_token, {"note": "HEROES Binder demo"})
    if r.status_code != 201:
        raise SystemExit(f"creating a token for {name} failed: {r.status_code} {r.text[:300]}")
    return str(r.json()["token"])


def publish_templates(token: str) -> list[str]:
    """Publish ``templates/*.yaml`` in the demo organization (those already there are kept)."""
    url = service_url() + "api/v1/organization/admin/workflow/template"
    headers = {"Authorization": f"token {token}", "X-Heroes-Organization": DEMO_ORG}
    names = []
    for path in sorted((REPO_DIR / "templates").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        r = requests.post(url, json={"template": doc}, headers=headers, timeout=30)
        if r.status_code not in (201, 409):
            raise SystemExit(f"publishing {path.name} failed: {r.status_code} {r.text[:300]}")
        names.append(doc["name"])
    return names


def start() -> Path:
    """Run time: the background hub, the templates, and ``<state>/binder.env`` for the visitor."""
    state = state_dir()
    if not (state / "heroes.sqlite").exists():
        prepare()
    start_hub(state)
    setup = (state / "binder-setup-token").read_text().strip()
    names = publish_templates(user_token(setup, WORKFLOW_ADMIN))
    log(f"templates in {DEMO_ORG}: {', '.join(names)}")
    env = {
        "HEROES_SERVICE_URL": service_url(),
        "HEROES_API_TOKEN": user_token(setup, RESEARCHER),
        "HEROES_ORGANIZATION": DEMO_ORG,
        "HEROES_CLUSTER": CLUSTER,
    }
    text = "".join(f"export {k}='{v}'\n" for k, v in env.items())  # values: URL, hex token, names
    _write_private(state / "binder.env", text)
    log(f"JupyterLab will act as the demo user {RESEARCHER!r} of {DEMO_ORG!r} (environment in binder.env)")
    return state


def stop() -> None:
    """Stop the background hub (it stops the HEROES service)."""
    import signal

    pid = _hub_pid(state_dir())
    if pid:
        os.kill(pid, signal.SIGTERM)
        log(f"sent TERM to the demo hub (pid {pid})")


def main(argv: list[str]) -> None:
    commands = {"prepare": prepare, "start": start, "stop": stop}
    if len(argv) != 1 or argv[0] not in commands:
        raise SystemExit(f"usage: {Path(__file__).name} {'|'.join(commands)}")
    commands[argv[0]]()


if __name__ == "__main__":
    main(sys.argv[1:])
