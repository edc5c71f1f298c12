"""Voila as a JupyterHub service whose kernels act as the visiting user.

``python -m jupyter_heroes.dashboards.server admin`` (or ``vendor``, or the path of a notebook) is
the command of the hub-managed services ``heroes-admin`` and ``heroes-vendor`` that
:func:`jupyter_heroes.hubconfig_apps.install_heroes_apps` registers. It runs standalone Voila (one
notebook, no file browser, no contents API, kernels that accept widget messages but no code from the
browser) with three changes:

- **login through the hub** (:class:`HubIdentityProvider`): JupyterHub's OAuth
  (:class:`jupyterhub.services.auth.HubOAuth`, configured from the ``JUPYTERHUB_*`` environment the
  hub gives a managed service). A visitor without ``access:services!service=<this service>`` gets
  the hub's 403; one who is not logged in is sent to the hub's login page.
- **each kernel acts as its visitor** (:class:`VisitorKernelManager`, fed by :func:`prelaunch_hook`):
  the kernel's environment carries the visitor's own OAuth token (``JUPYTERHUB_API_TOKEN`` /
  ``HEROES_API_TOKEN``, scoped by the service's ``oauth_client_allowed_scopes`` to reaching the
  HEROES service) and none of the service's: the HEROES service authorizes every call of the
  dashboard with the visitor's roles, exactly as if they called the API themselves.
- **a kernel belongs to its visitor** (:class:`KernelOwnerAuthorizer`): another hub user who learns
  a kernel's id cannot connect to it or shut it down (403).
"""

from __future__ import annotations

import contextvars
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from jupyter_server.utils import url_path_join
from jupyterhub.singleuser.extension import JupyterHubAuthorizer, JupyterHubIdentityProvider
from tornado import web
from traitlets import Dict, List, Unicode, default

#: the notebooks shipped with jupyter_heroes, by app name
NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent.parent / "notebooks"
APPS = ("admin", "vendor")

#: environment variables of the service a visitor's kernel never inherits (the service's own hub
#: identity and OAuth client, HEROES secrets): the kernel runs code on behalf of the visitor only
SERVICE_ONLY_ENV = (
    "JUPYTERHUB_API_TOKEN",
    "JPY_API_TOKEN",
    "HEROES_API_TOKEN",
    "JUPYTERHUB_CLIENT_ID",
    "JUPYTERHUB_OAUTH_CALLBACK_URL",
    "JUPYTERHUB_OAUTH_SCOPES",
    "JUPYTERHUB_OAUTH_ACCESS_SCOPES",
    "JUPYTERHUB_OAUTH_CLIENT_ALLOWED_SCOPES",
    "JUPYTERHUB_SERVICE_URL",
    "JUPYTERHUB_SERVICE_PREFIX",
    "JUPYTERHUB_SERVICE_NAME",
    "JUPYTERHUB_SSL_KEYFILE",
    "JUPYTERHUB_SSL_CERTFILE",
    "JUPYTERHUB_SSL_CLIENT_CA",
    "HEROES_CRYPT_KEY",
    "HEROES_DB_URL",
    "HEROES_COOKIE_SECRET",
)


@dataclass(frozen=True)
class Visitor:
    name: str
    token: str


#: the visitor of the request being rendered; set by :func:`prelaunch_hook` and read by
#: :meth:`VisitorKernelManager.start_kernel` in the same request's task (Voila calls the hook and
#: then starts the kernel from the same coroutine, so the value cannot leak to another request)
current_visitor: contextvars.ContextVar[Visitor | None] = contextvars.ContextVar(
    "heroes_visitor", default=None
)


def prelaunch_hook(handler: web.RequestHandler, notebook: Any = None, cwd: str = "") -> None:
    """Voila's ``prelaunch_hook``: remember who is visiting and with which token, for the kernel
    about to start. No visitor token (which hub login always provides): 403, no kernel."""
    user = handler.current_user
    ip = handler.settings.get("identity_provider")
    hub_auth = getattr(ip, "hub_auth", None)
    token = hub_auth.get_token(handler) if hub_auth is not None else None
    if user is None or not token:
        raise web.HTTPError(403, "log in through the hub to open this dashboard")
    current_visitor.set(Visitor(name=user.username, token=token))


class VisitorKernelManager(AsyncMappingKernelManager):
    """Starts each kernel with its visitor's identity (see the module docstring) and remembers
    whose it is."""

    kernel_env = Dict(
        Unicode(),
        help="Extra environment variables for every dashboard kernel (e.g. HEROES_ORGANIZATION); default "
        "from $HEROES_DASHBOARD_KERNEL_ENV (JSON, written by install_heroes_apps(kernel_env=...)). The "
        "visitor's token and name are always set; the service's own secrets never are.",
    ).tag(config=True)

    keep_env = List(
        Unicode(),
        ["JUPYTERHUB_API_URL", "JUPYTERHUB_BASE_URL", "JUPYTERHUB_PUBLIC_HUB_URL", "JUPYTERHUB_HOST"],
        help="JUPYTERHUB_* variables of the service passed on to kernels (addresses only, never a "
        "token or an OAuth client); every other JUPYTERHUB_* variable is removed.",
    ).tag(config=True)

    @default("kernel_env")
    def _default_kernel_env(self) -> dict[str, str]:
        text = os.environ.get("HEROES_DASHBOARD_KERNEL_ENV", "").strip()
        if not text:
            return {}
        try:
            value = json.loads(text)
        except ValueError:
            raise SystemExit(
                "$HEROES_DASHBOARD_KERNEL_ENV is not JSON; install_heroes_apps writes it"
            ) from None
        return {str(k): str(v) for k, v in dict(value).items()}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.owners: dict[str, str] = {}

    def visitor_env(self, base: dict[str, str], visitor: Visitor) -> dict[str, str]:
        env = {
            k: v
            for k, v in base.items()
            if k not in SERVICE_ONLY_ENV and (not k.startswith("JUPYTERHUB_") or k in self.keep_env)
        }
        env.update(self.kernel_env)
        env["JUPYTERHUB_API_TOKEN"] = visitor.token
        env["HEROES_API_TOKEN"] = visitor.token
        env["JUPYTERHUB_USER"] = visitor.name
        return env

    async def start_kernel(self, *, kernel_name: str | None = None, **kwargs: Any) -> str:
        visitor = current_visitor.get()
        if visitor is None:
            raise web.HTTPError(403, "a dashboard kernel starts only for a visitor logged in through the hub")
        kwargs["env"] = self.visitor_env(dict(kwargs.get("env") or os.environ), visitor)
        kernel_id = await super().start_kernel(kernel_name=kernel_name, **kwargs)
        self.owners[kernel_id] = visitor.name
        self.log.info("dashboard kernel %s started for %s", kernel_id, visitor.name)
        return kernel_id

    def remove_kernel(self, kernel_id: str) -> Any:
        self.owners.pop(kernel_id, None)
        return super().remove_kernel(kernel_id)


class HubIdentityProvider(JupyterHubIdentityProvider):
    """JupyterHub's identity provider for a standalone Voila: its OAuth callback and logout are
    served under the service's prefix (standalone Voila does not prefix an identity provider's
    handlers, jupyter_server does)."""

    def get_handlers(self) -> list[tuple[Any, ...]]:
        prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")
        return [(url_path_join(prefix, path), *rest) for path, *rest in super().get_handlers()]


class KernelOwnerAuthorizer(JupyterHubAuthorizer):
    """The hub's access check, plus: a kernel is reached only by the visitor it was started for."""

    def is_authorized(self, handler: web.RequestHandler, user: Any, action: str, resource: str) -> bool:
        if not super().is_authorized(handler, user, action, resource):
            return False
        kernel_id = (getattr(handler, "path_kwargs", None) or {}).get("kernel_id")
        if resource == "kernels" and kernel_id:
            owners = getattr(handler.settings.get("kernel_manager"), "owners", {})
            owner = owners.get(kernel_id)
            if owner is not None and owner != user.username:
                self.log.warning("%s refused access to the kernel of %s", user.username, owner)
                return False
        return True


#: app -> (class, the notebook's introduction): what ``notebooks/<app>.ipynb`` holds
NOTEBOOK_CELLS = {
    "admin": (
        "AdminApp",
        "Manage your organization's users, groups, roles, clusters, templates, offers and budgets, and read "
        "its usage, cost and decision reports. Platform administrators also manage organizations. Served by "
        "the hub at `/services/heroes-admin/`; see `docs/admin/dashboard.md`.",
    ),
    "vendor": (
        "VendorApp",
        "Publish your clusters' queues as offers and your applications with licence prices; see who uses "
        "them and your revenue. Served by the hub at `/services/heroes-vendor/`; see "
        "`docs/vendor/dashboard.md`.",
    ),
}


def dashboard_notebook(app: str) -> Any:
    """The notebook of *app* (``admin`` or ``vendor``): an introduction and one cell showing the app."""
    import nbformat

    cls, intro = NOTEBOOK_CELLS[app]
    return nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell(intro),
            nbformat.v4.new_code_cell(f"from jupyter_heroes.dashboards import {cls}\n\n{cls}()"),
        ],
        metadata={
            "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
    )


def notebook_path(app: str) -> Path:
    """``admin`` / ``vendor`` -> its notebook: in ``$HEROES_NOTEBOOKS_DIR`` if set, else the repository's
    ``notebooks/`` (a source checkout), else written from :func:`dashboard_notebook` into the Jupyter
    runtime directory (an installed wheel). Anything else is taken as the path of a notebook."""
    if app not in APPS:
        return Path(app)
    env = os.environ.get("HEROES_NOTEBOOKS_DIR")
    if env:
        return Path(env) / f"{app}.ipynb"
    shipped = NOTEBOOKS_DIR / f"{app}.ipynb"
    if shipped.is_file():
        return shipped
    import nbformat
    from jupyter_core.paths import jupyter_runtime_dir

    target = Path(jupyter_runtime_dir()) / "heroes-dashboards" / f"{app}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(dashboard_notebook(app), target)
    return target


def voila_argv(app: str, extra: list[str] | None = None, env: dict[str, str] | None = None) -> list[str]:
    """The command line of Voila for *app* in a hub-managed service (address and prefix from the
    ``JUPYTERHUB_SERVICE_*`` environment the hub sets)."""
    env = dict(os.environ if env is None else env)
    url = env.get("JUPYTERHUB_SERVICE_URL", "")
    prefix = env.get("JUPYTERHUB_SERVICE_PREFIX", "/")
    if not url:
        raise SystemExit(
            "JUPYTERHUB_SERVICE_URL is not set: run this as a JupyterHub managed service "
            "(install_heroes_apps in jupyterhub_config.py), not by hand"
        )
    parts = urlsplit(url)
    nb = notebook_path(app)
    if not nb.is_file():
        raise SystemExit(
            f"{nb} is not a notebook file; pass admin, vendor or the path of a notebook (or set $HEROES_NOTEBOOKS_DIR)"
        )
    return [
        str(nb),
        "--no-browser",
        f"--Voila.ip={parts.hostname or '127.0.0.1'}",
        f"--port={parts.port or 80}",
        f"--Voila.base_url={prefix}",
        f"--Voila.server_url={prefix}",
        *(extra or []),
    ]


def main(argv: list[str] | None = None) -> None:
    """``python -m jupyter_heroes.dashboards.server admin|vendor|NOTEBOOK [voila options]``."""
    from traitlets.config import Config
    from voila.app import Voila

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(main.__doc__)
        print("The dashboards: " + ", ".join(APPS))
        raise SystemExit(0 if args else 2)
    cfg = Config()
    cfg.Voila.identity_provider_class = HubIdentityProvider
    cfg.Voila.authorizer_class = KernelOwnerAuthorizer
    cfg.VoilaConfiguration.multi_kernel_manager_class = VisitorKernelManager
    cfg.VoilaConfiguration.prelaunch_hook = prelaunch_hook
    cfg.VoilaConfiguration.show_tracebacks = False
    cfg.VoilaConfiguration.preheat_kernel = False
    cfg.VoilaConfiguration.file_allowlist = []  # /voila/files serves nothing of the service's directory
    app = Voila(config=cfg)
    app.initialize(voila_argv(args[0], args[1:]))
    app.start()


if __name__ == "__main__":
    main()
