"""The submission widget in a real browser: a researcher opens the launcher card's notebook in
JupyterLab (spawned by the hub), runs it, fills the generated form (a bad value is refused inline and
Submit stays disabled), submits, and watches the job monitor reach 'completed' live. The kernel finds
the service and its identity in the single-user server's environment. The same widget also serves a
Voila dashboard (core ipywidgets only, no front-end build of ours).

Screenshots go to ``test-artifacts/screenshots/widgets-*.png``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
import requests
import yaml

from jupyter_heroes.serverext.testing import REPO_DIR, lab_hub_config, start_user_server
from jupyter_heroes.testing.base import Component, ComponentError, free_port, pid_alive, tail, wait_for
from jupyter_heroes.testing.browser import NB, hub_login, run_code_cells
from jupyter_heroes.testing.plugin_hub import PLATFORM_ADMIN

pytestmark = [pytest.mark.browser, pytest.mark.hub, pytest.mark.timeout(420)]

USER = "wid-ada"
ORG = "wid-labs"


@pytest.fixture(scope="module")
def lab(hub_factory, tmp_path_factory):
    work = tmp_path_factory.mktemp("widgets-hub")
    hub = hub_factory(extra_config=lab_hub_config(work))
    admin = hub.create_user(PLATFORM_ADMIN)
    token = hub.create_user(USER)
    r = hub.api("POST", "/heroes/admin/organizations", admin, {"name": ORG, "display_name": "Widget Labs"})
    assert r.status_code == 201, r.text
    r = hub.api(
        "POST",
        "/organization/admin/users",
        admin,
        {"username": USER, "roles": ["org-admin", "researcher"]},
        org=ORG,
    )
    assert r.status_code == 201, r.text
    r = hub.api(
        "POST",
        "/organization/admin/cluster",
        token,
        {
            "name": "local",
            "transport": "local",
            "scheduler": "local",
            "scratch_root": str(work / "scratch"),
            "queues": [{"name": "debug"}],
        },
    )
    assert r.status_code == 201, r.text
    doc = yaml.safe_load((REPO_DIR / "templates" / "monte-carlo-pi.yaml").read_text())
    r = hub.api("POST", "/organization/admin/workflow/template", token, {"template": doc})
    assert r.status_code == 201, r.text
    url = start_user_server(hub, USER, token)
    return SimpleNamespace(hub=hub, url=url, token=token)


def test_fill_refuse_submit_and_watch(lab, browser, screenshots_dir):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    try:
        hub_login(page, lab.hub.url, USER)
        page.goto(lab.url + "lab")
        page.wait_for_selector("#jp-main-dock-panel", timeout=120_000)
        # the launcher card's notebook: %load_ext jupyter_heroes, then SubmissionWidget()
        card = page.locator(".jp-LauncherCard", has_text="HEROES workflow")
        card.wait_for(timeout=60_000)
        card.click()
        page.wait_for_function(
            f"() => document.querySelectorAll('{NB} .jp-Cell').length === 3", timeout=60_000
        )
        run_code_cells(page, 2, prompt="[0-9*]+", timeout=60_000)

        widget = page.locator(f"{NB} .heroes-submission")
        widget.wait_for(timeout=90_000)
        samples = widget.locator(".heroes-param-samples input")
        samples.wait_for(timeout=30_000)
        submit = widget.locator("button.heroes-submit")
        # the form comes from the template's declarations; the only cluster is suggested
        assert samples.input_value() == "1000000"
        assert widget.locator(".heroes-param-label input").input_value() == "run"
        assert widget.locator(".heroes-cluster input").input_value() == "local"
        assert widget.locator(".heroes-template select").input_value() == "monte-carlo-pi v1"
        assert "Estimate pi from random samples" in widget.inner_text()
        page.wait_for_function(
            f"() => !document.querySelector('{NB} .heroes-submission button.heroes-submit').disabled",
            timeout=30_000,
        )
        page.screenshot(path=str(screenshots_dir / "widgets-01-form.png"))

        # a bad value: refused next to the field, Submit disabled
        samples.fill("5")
        error = widget.locator(".heroes-param-error", has_text="must be at least 1000")
        error.wait_for(timeout=30_000)
        page.wait_for_function(
            f"() => document.querySelector('{NB} .heroes-submission button.heroes-submit').disabled",
            timeout=30_000,
        )
        assert submit.is_disabled()
        page.screenshot(path=str(screenshots_dir / "widgets-02-refused-inline.png"))

        # fixed, submitted
        samples.fill("50000")
        widget.locator(".heroes-param-label input").fill("from the browser")
        error.wait_for(state="detached", timeout=30_000)
        page.wait_for_function(
            f"() => !document.querySelector('{NB} .heroes-submission button.heroes-submit').disabled",
            timeout=30_000,
        )
        submit.click()
        widget.locator(".heroes-submitted").wait_for(timeout=60_000)
        monitor = widget.locator(".heroes-monitor")
        monitor.wait_for(timeout=30_000)
        assert "monte-carlo-pi v1" in monitor.locator(".heroes-monitor-title").inner_text()
        page.screenshot(path=str(screenshots_dir / "widgets-03-submitted.png"))

        # the monitor follows the event stream to the end
        monitor.locator(".heroes-monitor-title[data-state='completed']").wait_for(timeout=180_000)
        monitor.locator("tr.heroes-step[data-step='estimate'][data-state='completed']").wait_for(
            timeout=30_000
        )
        monitor.locator(".heroes-log", has_text="pi ~").wait_for(timeout=30_000)
        # shown with the final state, not after it
        assert "result.json" in monitor.locator(".heroes-outputs").inner_text()
        assert monitor.locator("button.heroes-cancel").is_disabled()
        monitor.scroll_into_view_if_needed()
        page.screenshot(path=str(screenshots_dir / "widgets-04-completed.png"))
    except Exception:
        page.screenshot(path=str(screenshots_dir / "widgets-failed.png"))
        raise
    finally:
        ctx.close()
    # what the browser submitted is what the service ran
    r = lab.hub.api("GET", "/organization/workflow/instance", lab.token)
    assert r.status_code == 200, r.text
    runs = r.json()
    assert len(runs) == 1
    assert runs[0]["state"] == "completed"
    assert runs[0]["params"] == {"samples": 50000, "seed": 42, "label": "from the browser"}


class Voila(Component):
    """``voila <notebook>`` on a free port, its kernel given the service's address and a token."""

    name = "voila"

    def __init__(self, notebook: Path, env: dict[str, str]) -> None:
        super().__init__(notebook.parent / "voila-run")
        self.notebook = notebook
        self.env = env
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def _start(self) -> None:
        self.port = free_port()
        env = {
            **self.env,
            "JUPYTER_CONFIG_DIR": str(self.workdir / "config"),
            "JUPYTER_RUNTIME_DIR": str(self.workdir / "runtime"),
        }
        argv = [sys.executable, "-m", "voila", str(self.notebook), f"--port={self.port}", "--no-browser"]
        proc = self.spawn(argv, log="voila", env=env, cwd=self.notebook.parent)

        def up() -> bool:
            if not pid_alive(proc.pid):
                raise ComponentError(f"voila exited:\n{tail(self.log_path('voila'))}")
            try:
                return requests.get(self.url + "api/status", timeout=5).status_code < 500
            except requests.ConnectionError:
                return False

        wait_for(up, 60, "voila", log=self.log_path("voila"))


def test_the_widget_in_a_voila_dashboard(lab, browser, screenshots_dir, tmp_path):
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell("# Submit a workflow"),
            nbformat.v4.new_code_cell(
                "from jupyter_heroes.widgets import SubmissionWidget\n\nSubmissionWidget(template='monte-carlo-pi')"
            ),
        ],
        metadata={"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
    )
    path = tmp_path / "dashboard.ipynb"
    nbformat.write(nb, path)
    env = {
        "HEROES_SERVICE_URL": lab.hub.url + "/services/heroes/",
        "JUPYTERHUB_API_TOKEN": lab.token,
        "HEROES_API_TOKEN": "",
        "HEROES_ORGANIZATION": "",
    }
    with Voila(path, env) as voila:
        ctx = browser.new_context(viewport={"width": 1200, "height": 900})
        page = ctx.new_page()
        try:
            page.goto(voila.url, timeout=120_000)
            widget = page.locator(".heroes-submission")
            widget.wait_for(timeout=120_000)
            samples = widget.locator(".heroes-param-samples input")
            samples.fill("12")
            widget.locator(".heroes-param-error", has_text="must be at least 1000").wait_for(timeout=30_000)
            assert widget.locator("button.heroes-submit").is_disabled()
            samples.fill("30000")
            page.wait_for_function(
                "() => !document.querySelector('.heroes-submission button.heroes-submit').disabled",
                timeout=30_000,
            )
            widget.locator("button.heroes-submit").click()
            monitor = widget.locator(".heroes-monitor")
            monitor.locator(".heroes-monitor-title[data-state='completed']").wait_for(timeout=180_000)
            monitor.locator(".heroes-log", has_text="pi ~").wait_for(timeout=30_000)
            page.screenshot(path=str(screenshots_dir / "widgets-05-voila.png"))
            assert "Traceback" not in page.inner_text("body")
        finally:
            ctx.close()
    runs = lab.hub.api("GET", "/organization/workflow/instance", lab.token).json()
    assert [r["params"]["samples"] for r in runs if r["state"] == "completed"].count(30000) == 1
