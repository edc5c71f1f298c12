"""Must-show: a researcher's whole flow in a real browser, on the test bed's Slurm and S3 server.

The researcher (who holds only the researcher role) logs in to a real JupyterHub, opens the HEROES
launcher card in JupyterLab, fills the generated form (a bad value is refused inline and Submit stays
disabled), asks where the workflow should run and sees the decision table with one row per candidate
(the Slurm cluster's partitions; the recommendation fills in the cluster and queue), submits, watches
the job monitor reach 'completed' live, and downloads the output from the monitor's link: the
browser's own Jupyter server (its HEROES server extension) streams it from the researcher's bucket on
the test bed's S3 server (moto). The cluster is the test bed's Slurm, reached over its real sshd.

Screenshots go to ``test-artifacts/screenshots/researcher-*.png``.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from magics.flow_world import build_flow_world

from jupyter_heroes.serverext.testing import lab_hub_config, start_user_server
from jupyter_heroes.testing.browser import NB, hub_login, run_code_cells

pytestmark = [
    pytest.mark.browser,
    pytest.mark.hub,
    pytest.mark.slurm,
    pytest.mark.s3,
    pytest.mark.timeout(600),
]

WIDGET = f"{NB} .heroes-submission"


@pytest.fixture(scope="module")
def flow(hub_factory, s3_server, slurm_cluster, tmp_path_factory):
    work = tmp_path_factory.mktemp("researcher-hub")
    hub = hub_factory(extra_config=lab_hub_config(work))
    world = build_flow_world(hub, "rf", work / "scratch", s3_server, slurm_cluster, local=False)
    url = start_user_server(hub, world.researcher, world.tokens[world.researcher])
    return SimpleNamespace(hub=hub, world=world, url=url, partitions=list(slurm_cluster.partitions))


def submit_enabled(page, enabled: bool) -> None:
    neg = "!" if enabled else ""
    page.wait_for_function(
        f"() => {neg}document.querySelector('{WIDGET} button.heroes-submit').disabled", timeout=30_000
    )


def test_login_form_decide_submit_watch_download(flow, browser, screenshots_dir, tmp_path):
    w = flow.world
    shots: Path = screenshots_dir
    ctx = browser.new_context(viewport={"width": 1500, "height": 1000}, accept_downloads=True)
    page = ctx.new_page()
    try:
        hub_login(page, flow.hub.url, w.researcher)
        page.goto(flow.url + "lab")
        page.wait_for_selector("#jp-main-dock-panel", timeout=120_000)
        card = page.locator(".jp-LauncherCard", has_text="HEROES workflow")
        card.wait_for(timeout=60_000)
        page.screenshot(path=str(shots / "researcher-01-launcher.png"))
        card.click()
        page.wait_for_function(
            f"() => document.querySelectorAll('{NB} .jp-Cell').length === 3", timeout=60_000
        )
        run_code_cells(page, 2, prompt="[0-9*]+", timeout=60_000)

        # --- the form, generated from the template; the only cluster is suggested ---------------------
        widget = page.locator(WIDGET)
        widget.wait_for(timeout=90_000)
        samples = widget.locator(".heroes-param-samples input")
        samples.wait_for(timeout=30_000)
        assert widget.locator(".heroes-template select").input_value() == "monte-carlo-pi v1"
        # a researcher who never ran anything is offered where she may submit: the only cluster
        assert widget.locator(".heroes-cluster input").input_value() == "testbed"
        samples.fill("50000")
        widget.locator(".heroes-param-label input").fill("researcher flow")
        page.screenshot(path=str(shots / "researcher-02-form.png"))

        # --- a bad value: refused inline, Submit disabled ---------------------------------------------
        seed = widget.locator(".heroes-param-seed input")
        seed.fill("-1")
        error = widget.locator(".heroes-param-error", has_text="must be at least 0")
        error.wait_for(timeout=30_000)
        submit_enabled(page, False)
        page.screenshot(path=str(shots / "researcher-03-refused-inline.png"))
        seed.fill("7")
        error.wait_for(state="detached", timeout=30_000)

        # --- the decision table: one row per candidate, the recommendation filled in ------------------
        compare = widget.locator("button.heroes-compare")
        compare.wait_for(state="visible", timeout=30_000)
        compare.click()
        table = widget.locator(".heroes-decision table")
        table.wait_for(timeout=120_000)
        rows = table.locator("tbody tr")
        assert rows.count() == len(flow.partitions)
        headers = [h.strip() for h in table.locator("thead th").all_inner_texts()]
        cluster_col, queue_col, rank_col = (headers.index(n) for n in ("cluster", "queue", "rank"))
        cells = [r.locator("td").all_inner_texts() for r in rows.all()]
        assert sorted((c[cluster_col], c[queue_col]) for c in cells) == sorted(
            ("testbed", p) for p in flow.partitions
        )
        best = [c for c in cells if c[rank_col].strip() == "1"]
        assert len(best) == 1
        assert widget.locator(".heroes-cluster input").input_value() == "testbed"
        queue = widget.locator(".heroes-queue input").input_value()
        assert queue == best[0][queue_col]
        recommended = table.locator("tr.heroes-recommended")
        assert recommended.count() == 1 and recommended.get_attribute("data-queue") == queue
        # the table can be sorted by each measure; the recommendation stays marked
        sort = widget.locator(".heroes-decision-sort select")
        assert sort.locator("option").count() == 5
        sort.select_option(label="CO2e (lowest)")
        page.wait_for_function(
            f"() => document.querySelectorAll('{WIDGET} .heroes-decision tr.heroes-recommended').length === 1",
            timeout=30_000,
        )
        assert table.locator("tbody tr").count() == len(flow.partitions)
        table.scroll_into_view_if_needed()
        page.screenshot(path=str(shots / "researcher-04-decision.png"))
        # under the table, the chart: one point per ranked candidate, the recommendation starred
        chart = widget.locator(".heroes-decision-chart .js-plotly-plot")
        chart.wait_for(timeout=60_000)
        assert "recommended" in widget.locator(".heroes-decision-chart .legendtext").all_text_contents()
        points = widget.locator(".heroes-decision-chart .scatterlayer .point")
        assert points.count() >= len(flow.partitions)  # each candidate's point, and the star on the best
        chart.scroll_into_view_if_needed()
        page.screenshot(path=str(shots / "researcher-04b-chart.png"))

        # --- submit, watch it complete ----------------------------------------------------------------
        submit_enabled(page, True)
        widget.locator("button.heroes-submit").click()
        widget.locator(".heroes-submitted").wait_for(timeout=60_000)
        monitor = widget.locator(".heroes-monitor")
        monitor.wait_for(timeout=30_000)
        monitor.scroll_into_view_if_needed()
        page.screenshot(path=str(shots / "researcher-05-submitted.png"))
        monitor.locator(".heroes-monitor-title[data-state='completed']").wait_for(timeout=240_000)
        monitor.locator("tr.heroes-step[data-step='estimate'][data-state='completed']").wait_for(
            timeout=30_000
        )
        monitor.locator(".heroes-log", has_text="pi ~").wait_for(timeout=30_000)
        link = monitor.locator("a.heroes-download", has_text="result.json")
        link.wait_for(timeout=30_000)
        monitor.scroll_into_view_if_needed()
        page.screenshot(path=str(shots / "researcher-06-completed.png"))

        # --- download the output through the browser's Jupyter server ---------------------------------
        with page.expect_download(timeout=60_000) as info:
            link.click()
        download = info.value
        assert download.suggested_filename == "result.json"
        saved = tmp_path / "result.json"
        download.save_as(saved)
        result = json.loads(saved.read_text())
        page.screenshot(path=str(shots / "researcher-07-downloaded.png"))
    except Exception:
        page.screenshot(path=str(shots / "researcher-failed.png"))
        raise
    finally:
        ctx.close()

    # what the browser did is what the service ran, on Slurm, and what it downloaded is the output
    (inst,) = w.client().instances()
    assert inst["state"] == "completed"
    assert inst["cluster"] == "testbed" and [j["queue"] for j in inst["jobs"]] == [queue]
    assert inst["params"] == {"samples": 50000, "seed": 7, "label": "researcher flow"}
    assert result["label"] == "researcher flow" and result["samples"] == 50000 and result["seed"] == 7
    assert abs(result["pi"] - 3.14159) < 0.1
    outputs = [o for j in inst["jobs"] for o in (j.get("accounting") or {}).get("outputs", [])]
    assert outputs == [f"results/{inst['id']}/result.json"]
