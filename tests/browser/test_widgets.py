"""The submission widget in a real browser: a researcher opens the launcher card's notebook in
JupyterLab (spawned by the hub), runs it, fills the generated form (a bad value is refused inline and
Submit stays disabled), submits, and watches the job monitor reach 'completed' live. The kernel finds
the service and its identity in the single-user server's environment.

Screenshots go to ``test-artifacts/screenshots/widgets-*.png``.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import yaml

from jupyter_heroes.serverext.testing import REPO_DIR, lab_hub_config, start_user_server
from jupyter_heroes.testing.plugin_hub import PLATFORM_ADMIN

pytestmark = [pytest.mark.browser, pytest.mark.hub, pytest.mark.timeout(420)]

USER = "wid-ada"
ORG = "wid-labs"
NB = ".jp-NotebookPanel:not(.lm-mod-hidden)"


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


def login(page, hub, username: str) -> None:
    page.goto(f"{hub.url}/hub/login")
    page.fill("#username_input", username)
    page.fill("#password_input", "any password (dummy authenticator)")
    page.click("#login_submit")


def test_fill_refuse_submit_and_watch(lab, browser, screenshots_dir):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    try:
        login(page, lab.hub, USER)
        page.goto(lab.url + "lab")
        page.wait_for_selector("#jp-main-dock-panel", timeout=120_000)
        # the launcher card's notebook: %load_ext jupyter_heroes, then SubmissionWidget()
        card = page.locator(".jp-LauncherCard", has_text="HEROES workflow")
        card.wait_for(timeout=60_000)
        card.click()
        page.wait_for_function(
            f"() => document.querySelectorAll('{NB} .jp-Cell').length === 3", timeout=60_000
        )
        page.wait_for_selector(f"{NB} .jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=90_000)
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

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
        assert "result.json" in monitor.locator(".heroes-outputs").inner_text()
        assert monitor.locator("button.heroes-cancel").is_disabled()
        monitor.scroll_into_view_if_needed()
        page.screenshot(path=str(screenshots_dir / "widgets-04-completed.png"))
    finally:
        ctx.close()
    # what the browser submitted is what the service ran
    r = lab.hub.api("GET", "/organization/workflow/instance", lab.token)
    assert r.status_code == 200, r.text
    runs = r.json()
    assert len(runs) == 1
    assert runs[0]["state"] == "completed"
    assert runs[0]["params"] == {"samples": 50000, "seed": 42, "label": "from the browser"}
