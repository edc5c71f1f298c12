"""The Voila service's pieces that need no hub: the kernel environment of a visitor, Voila's command
line from a managed service's environment, and ``install_heroes_apps``."""

from __future__ import annotations

import json
import sys

import pytest
from tornado import web
from traitlets.config import Config

from jupyter_heroes.dashboards import server
from jupyter_heroes.hubconfig import install_heroes
from jupyter_heroes.hubconfig_apps import KERNEL_ENV_VAR, install_heroes_apps

SERVICE_ENV = {
    "PATH": "/usr/bin",
    "JUPYTERHUB_API_TOKEN": "service-token",
    "JPY_API_TOKEN": "service-token",
    "JUPYTERHUB_CLIENT_ID": "service-heroes-admin",
    "JUPYTERHUB_OAUTH_CALLBACK_URL": "/services/heroes-admin/oauth_callback",
    "JUPYTERHUB_API_URL": "http://127.0.0.1:8081/hub/api",
    "JUPYTERHUB_BASE_URL": "/",
    "JUPYTERHUB_SERVICE_NAME": "heroes-admin",
    "HEROES_CRYPT_KEY": "never-in-a-kernel",
    "HEROES_SERVICE_URL": "http://127.0.0.1:10101/services/heroes/",
}


def test_a_kernel_gets_the_visitors_identity_and_none_of_the_services(monkeypatch):
    monkeypatch.setenv(KERNEL_ENV_VAR, json.dumps({"HEROES_ORGANIZATION": "acme"}))
    km = server.VisitorKernelManager()
    env = km.visitor_env(dict(SERVICE_ENV), server.Visitor(name="ada", token="ada-oauth-token"))
    assert env["JUPYTERHUB_API_TOKEN"] == env["HEROES_API_TOKEN"] == "ada-oauth-token"
    assert env["JUPYTERHUB_USER"] == "ada"
    assert env["HEROES_ORGANIZATION"] == "acme"
    assert env["HEROES_SERVICE_URL"] == SERVICE_ENV["HEROES_SERVICE_URL"]
    assert env["JUPYTERHUB_API_URL"] == SERVICE_ENV["JUPYTERHUB_API_URL"]
    assert "service-token" not in env.values()
    for gone in ("JPY_API_TOKEN", "JUPYTERHUB_CLIENT_ID", "JUPYTERHUB_SERVICE_NAME", "HEROES_CRYPT_KEY"):
        assert gone not in env


async def test_no_kernel_without_a_visitor():
    km = server.VisitorKernelManager()
    with pytest.raises(web.HTTPError, match="logged in through the hub"):
        await km.start_kernel(kernel_name="python3")
    assert km.list_kernel_ids() == []


def test_a_malformed_kernel_env_stops_the_service(monkeypatch):
    monkeypatch.setenv(KERNEL_ENV_VAR, "{not json")
    with pytest.raises(SystemExit, match="HEROES_DASHBOARD_KERNEL_ENV is not JSON"):
        server.VisitorKernelManager().kernel_env  # noqa: B018


def test_voila_command_line_from_the_service_environment():
    env = {
        "JUPYTERHUB_SERVICE_URL": "http://127.0.0.1:10102",
        "JUPYTERHUB_SERVICE_PREFIX": "/services/heroes-admin/",
    }
    argv = server.voila_argv("admin", ["--VoilaConfiguration.theme=dark"], env)
    assert argv[0] == str(server.NOTEBOOKS_DIR / "admin.ipynb")
    assert "--port=10102" in argv and "--Voila.ip=127.0.0.1" in argv
    assert "--Voila.base_url=/services/heroes-admin/" in argv
    assert argv[-1] == "--VoilaConfiguration.theme=dark"
    with pytest.raises(SystemExit, match="run this as a JupyterHub managed service"):
        server.voila_argv("admin", [], {})
    with pytest.raises(SystemExit, match="is not a notebook file"):
        server.voila_argv("no-such.ipynb", [], env)


def test_the_shipped_notebooks_are_thin_and_clean(tmp_path, monkeypatch):
    import nbformat

    for app, cls in (("admin", "AdminApp"), ("vendor", "VendorApp")):
        nb = nbformat.read(server.NOTEBOOKS_DIR / f"{app}.ipynb", as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert [c.source for c in code] == [f"from jupyter_heroes.dashboards import {cls}\n\n{cls}()"]
        assert all(not c.outputs and c.execution_count is None for c in code)
        # without the repository (an installed wheel) the same notebook is written at start-up
        made = server.dashboard_notebook(app)
        assert [(c.cell_type, c.source) for c in made.cells] == [(c.cell_type, c.source) for c in nb.cells]
    monkeypatch.setattr(server, "NOTEBOOKS_DIR", tmp_path / "no-checkout")
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    path = server.notebook_path("vendor")
    assert path == tmp_path / "runtime" / "heroes-dashboards" / "vendor.ipynb"
    assert "VendorApp()" in nbformat.read(path, as_version=4).cells[1].source
    monkeypatch.setenv("HEROES_NOTEBOOKS_DIR", str(tmp_path / "mine"))
    assert server.notebook_path("admin") == tmp_path / "mine" / "admin.ipynb"


def test_install_heroes_apps_registers_gated_services():
    c = Config()
    c.JupyterHub.load_roles = [{"name": "heroes-admin-app", "users": ["root"]}]
    install_heroes(c, port=10101)
    entries = install_heroes_apps(
        c,
        admin_users=["ada"],
        ports={"admin": 10200},
        kernel_env={"HEROES_ORGANIZATION": "acme"},
        unix_user="dash",
    )
    assert [e["name"] for e in entries] == ["heroes-admin", "heroes-vendor"]
    admin = {s["name"]: s for s in c.JupyterHub.services}["heroes-admin"]
    assert admin["url"] == "http://127.0.0.1:10200"
    assert admin["command"][:4] == [sys.executable, "-m", "jupyter_heroes.dashboards.server", "admin"]
    assert admin["environment"]["HEROES_SERVICE_URL"] == "http://127.0.0.1:10101/services/heroes/"
    assert json.loads(admin["environment"][KERNEL_ENV_VAR]) == {"HEROES_ORGANIZATION": "acme"}
    assert admin["oauth_client_allowed_scopes"] == ["access:services!service=heroes"]
    assert admin["user"] == "dash"
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    assert roles["heroes-admin-app"]["scopes"] == ["access:services!service=heroes-admin"]
    assert roles["heroes-admin-app"]["users"] == ["root", "ada"]  # merged with what was configured
    assert roles["heroes-admin-app"]["groups"] == ["heroes-admins"]
    assert roles["heroes-vendor-app"]["groups"] == ["heroes-vendors"]
    # everyone reaches the HEROES service, nobody the dashboards through the default role
    assert "access:services!service=heroes-admin" not in roles["user"]["scopes"]
    install_heroes_apps(c, apps=["admin"])  # idempotent
    assert [s["name"] for s in c.JupyterHub.services].count("heroes-admin") == 1


def test_install_heroes_apps_needs_the_service_first():
    with pytest.raises(ValueError, match=r"call jupyter_heroes.hubconfig.install_heroes\(c, ...\) before"):
        install_heroes_apps(Config())
    c = Config()
    install_heroes(c)
    with pytest.raises(ValueError, match=r"unknown app\(s\) \['billing'\]"):
        install_heroes_apps(c, apps=["billing"])
