"""The HEROES JupyterLab extension in a real browser: a user logs in to the hub, JupyterLab (spawned by
SimpleLocalProcessSpawner) shows the HEROES sidebar with what the service says through the server
extension, the launcher card opens the workflow notebook, and the palette has the HEROES commands.

Screenshots go to ``test-artifacts/screenshots/labext-*.png``.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import yaml
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from jupyter_heroes.serverext.testing import REPO_DIR, lab_hub_config, start_user_server
from jupyter_heroes.testing.browser import hub_login
from jupyter_heroes.testing.plugin_hub import PLATFORM_ADMIN

pytestmark = [pytest.mark.browser, pytest.mark.hub, pytest.mark.s3, pytest.mark.timeout(400)]

USER = "lab-ivy"
ORGS = {"ivy-labs": "Ivy Labs", "ivy-sims": "Ivy Simulations"}
WORK_ORG = "ivy-labs"  # where Ivy runs workflows (org-admin + researcher); researcher only in the other


@pytest.fixture(scope="module")
def lab(hub_factory, tmp_path_factory, s3_server):
    work = tmp_path_factory.mktemp("labext-hub")
    hub = hub_factory(extra_config=lab_hub_config(work))
    admin = hub.create_user(PLATFORM_ADMIN)
    token = hub.create_user(USER)
    for name, display in ORGS.items():
        r = hub.api("POST", "/heroes/admin/organizations", admin, {"name": name, "display_name": display})
        assert r.status_code == 201, r.text
        roles = ["org-admin", "researcher"] if name == WORK_ORG else ["researcher"]
        r = hub.api("POST", "/organization/admin/users", admin, {"username": USER, "roles": roles}, org=name)
        assert r.status_code == 201, r.text
    # the work organization's object store: where the workflows' outputs go
    r = hub.api(
        "POST",
        f"/heroes/admin/organizations/{WORK_ORG}/servers",
        admin,
        {
            "endpoint": s3_server.endpoint,
            "secure": False,
            "access_key": s3_server.access_key,
            "secret_key": s3_server.secret_key,
        },
    )
    assert r.status_code == 201, r.text
    # a cluster of the local backend (real processes on this machine) and a template to run on it
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
        org=WORK_ORG,
    )
    assert r.status_code == 201, r.text
    doc = yaml.safe_load((REPO_DIR / "templates" / "monte-carlo-pi.yaml").read_text())
    r = hub.api("POST", "/organization/admin/workflow/template", token, {"template": doc}, org=WORK_ORG)
    assert r.status_code == 201, r.text
    # start the server ahead of the browser (the spawn is not what this test is about)
    url = start_user_server(hub, USER, token)
    return SimpleNamespace(hub=hub, url=url, token=token, home=work / "homes" / USER)


def test_sidebar_launcher_notebook_and_palette(lab, browser, screenshots_dir):
    ctx = browser.new_context(viewport={"width": 1400, "height": 850})
    page = ctx.new_page()
    api_calls: list[tuple[str, int]] = []

    def record(response) -> None:
        if "/heroes/api/v1/" in response.url:
            # the path under the user's server; JupyterLab adds a cache-busting query to GETs
            path = response.url.split(f"/user/{USER}/", 1)[-1].split("?")[0]
            api_calls.append((path, response.status))

    page.on("response", record)
    try:
        hub_login(page, lab.hub.url, USER)
        page.goto(lab.url + "lab")
        page.wait_for_selector("#jp-main-dock-panel", timeout=120_000)
        card = page.locator(".jp-LauncherCard", has_text="HEROES workflow")
        card.wait_for(timeout=60_000)
        page.screenshot(path=str(screenshots_dir / "labext-01-launcher.png"))
        # the launcher has a HEROES section with the card
        assert page.locator(".jp-Launcher-sectionTitle", has_text="HEROES").count() == 1
        assert card.get_attribute("title") == "Open a notebook that submits a workflow to an HPC cluster"

        # --- the sidebar -------------------------------------------------------------------------
        tab = page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab[title='HEROES workflows']")
        assert tab.count() == 1
        tab.click()
        panel = page.locator("#jupyter-heroes-panel")
        panel.wait_for(state="visible", timeout=30_000)
        assert panel.locator("h2").inner_text().lower() == "heroes workflows"
        # the organizations come from /organization/auth/me through the server extension
        select = panel.locator("select.jp-heroes-org")
        page.wait_for_function(
            "() => document.querySelectorAll('#jupyter-heroes-panel select.jp-heroes-org option').length === 2",
            timeout=30_000,
        )
        assert sorted(select.locator("option").all_inner_texts()) == sorted(ORGS.values())
        assert select.is_visible()
        select.select_option(WORK_ORG)
        status = panel.locator(".jp-heroes-status")
        panel.locator(".jp-heroes-empty", has_text="No workflows yet").wait_for(timeout=30_000)
        # the service's event stream is found and followed through the server extension
        page.wait_for_function(
            "() => document.querySelector('#jupyter-heroes-panel .jp-heroes-status').dataset.mode === 'stream'",
            timeout=30_000,
        )
        assert status.inner_text() == "Live: updates as they happen."
        assert ("heroes/api/v1/organization/auth/me", 200) in api_calls
        assert ("heroes/api/v1/organization/workflow/instance", 200) in api_calls

        # a workflow submitted elsewhere (here: the REST API) appears and moves on its own
        r = lab.hub.api(
            "POST",
            "/organization/workflow/submit",
            lab.token,
            {"template": "monte-carlo-pi", "cluster": "local", "params": {"samples": 20000}},
            org=WORK_ORG,
        )
        assert r.status_code == 201, r.text
        iid = r.json()["id"]
        row = panel.locator(f"li.jp-heroes-instance[data-instance='{iid}']")
        row.wait_for(timeout=30_000)
        assert row.locator(".jp-heroes-instance-title").inner_text() == "monte-carlo-pi v1"
        page.screenshot(path=str(screenshots_dir / "labext-02-sidebar-live.png"))
        page.wait_for_function(
            f"() => document.querySelector(\"li.jp-heroes-instance[data-instance='{iid}']\")"
            ".dataset.state === 'completed'",
            timeout=120_000,
        )
        badge = row.locator(".jp-heroes-instance-head .jp-heroes-state")
        assert badge.inner_text() == "completed"
        assert "jp-heroes-state-success" in (badge.get_attribute("class") or "")
        assert row.locator(".jp-heroes-cancel").count() == 0  # finished: nothing to cancel
        assert (
            lab.hub.api("GET", f"/organization/workflow/instance/{iid}", lab.token, org=WORK_ORG).json()[
                "state"
            ]
            == "completed"
        )
        page.screenshot(path=str(screenshots_dir / "labext-03-sidebar-completed.png"))
        # no Refresh click and no polling: the list followed the stream
        assert status.inner_text() == "Live: updates as they happen."

        # the other organization has its own (empty) list
        before = len(api_calls)
        select.select_option("ivy-sims")
        panel.locator(".jp-heroes-empty", has_text="No workflows yet").wait_for(timeout=30_000)
        assert row.count() == 0
        assert ("heroes/api/v1/organization/workflow/instance", 200) in api_calls[before:]

        # --- the launcher card opens the workflow notebook ----------------------------------------
        page.locator(".jp-Launcher").first.wait_for()
        card.click()
        page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", timeout=60_000)
        notebook_tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text="heroes-workflow.ipynb")
        notebook_tab.wait_for(timeout=30_000)
        page.wait_for_function(
            "() => document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell').length === 3",
            timeout=30_000,
        )
        code = page.locator(
            ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .cm-content"
        ).all_inner_texts()
        assert code[0].strip() == "%load_ext jupyter_heroes"
        assert "SubmissionWidget()" in code[1]
        heading = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-MarkdownOutput h1")
        heading.wait_for(timeout=30_000)
        assert heading.inner_text().startswith("HEROES workflow")
        page.screenshot(path=str(screenshots_dir / "labext-04-notebook.png"))
        saved = json.loads((lab.home / "heroes-workflow.ipynb").read_text())
        assert saved["cells"][1]["source"] in ("%load_ext jupyter_heroes", ["%load_ext jupyter_heroes"])
        assert saved["metadata"]["kernelspec"]["name"] == "python3"

        # --- the command palette --------------------------------------------------------------------
        page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook").click(
            position={"x": 600, "y": 400}
        )
        page.keyboard.press("Escape")
        palette = page.locator("#command-palette")
        for _ in range(3):  # the shortcut is lost now and then while the notebook takes the focus
            page.keyboard.press("Control+Shift+C")
            try:
                palette.wait_for(state="visible", timeout=5_000)
                break
            except PlaywrightTimeout:
                page.keyboard.press("Escape")
        palette.wait_for(state="visible", timeout=5_000)
        palette.locator("input").fill("HEROES")
        items = palette.locator(".lm-CommandPalette-item .lm-CommandPalette-itemLabel")
        items.first.wait_for(timeout=10_000)
        page.screenshot(path=str(screenshots_dir / "labext-05-palette.png"))
        labels = set(items.all_inner_texts())
        assert {
            "Open HEROES Workflows Panel",
            "Refresh HEROES Workflows",
            "New HEROES Workflow Notebook",
        } <= labels, labels
        # a second notebook from the palette gets the next free name
        palette.locator(".lm-CommandPalette-item", has_text="New HEROES Workflow Notebook").click()
        page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text="heroes-workflow-1.ipynb").wait_for(
            timeout=30_000
        )
        assert (lab.home / "heroes-workflow-1.ipynb").exists()

        # --- Results: the outputs land in the server's files and the file browser shows them -------
        # (last: the file browser moves to the results, and new notebooks go where it is)
        def show_panel() -> None:  # a click on the tab of the shown panel would fold the sidebar
            if not panel.is_visible():
                tab.click()
            panel.wait_for(state="visible", timeout=30_000)

        show_panel()
        select.select_option(WORK_ORG)
        row.wait_for(timeout=30_000)
        results = row.locator("button.jp-heroes-results")
        assert results.inner_text() == "Results"
        results.click()
        # (the file browser opens in the sidebar's place: the notice is there, hidden with the panel)
        notice = panel.locator(".jp-heroes-notice[data-kind='done']")
        notice.wait_for(state="attached", timeout=60_000)
        assert notice.text_content() == f"1 file copied into heroes-results/{iid}."
        copied = lab.home / "heroes-results" / iid / "result.json"
        stored = lab.hub.api(
            "GET",
            "/organization/data/download",
            lab.token,
            org=WORK_ORG,
            params={"bucket": f"{WORK_ORG}--u-{USER}", "key": f"results/{iid}/result.json"},
        )
        assert stored.status_code == 200, stored.text
        assert copied.read_bytes() == stored.content and json.loads(stored.content)["samples"] == 20000
        listing = page.locator(".jp-FileBrowser .jp-DirListing-itemText", has_text="result.json")
        listing.wait_for(timeout=30_000)
        assert f"heroes-results/{iid}" in page.locator(
            ".jp-FileBrowser .jp-BreadCrumbs"
        ).inner_text().replace(" ", "")
        page.screenshot(path=str(screenshots_dir / "labext-06-results.png"))
        # again, from the sidebar (the file browser took its place): the file is there, nothing is copied
        show_panel()
        results.click()
        panel.locator(".jp-heroes-notice", has_text="0 files copied").wait_for(
            state="attached", timeout=60_000
        )
        assert panel.locator(".jp-heroes-notice").text_content() == (
            f"0 files copied into heroes-results/{iid} (1 already there)."
        )
    finally:
        ctx.close()
    # nothing the browser asked of the HEROES API failed in the server extension itself
    assert not [c for c in api_calls if c[1] in (502, 503, 504)], api_calls
