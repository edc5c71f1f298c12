"""The data browser in JupyterLab, in a real browser: a researcher opens a notebook in her single-user
server (spawned by a real hub), runs ``%load_ext jupyter_heroes`` and ``%heroes data browse``, sees
her own bucket on the test bed's S3 server (moto), uploads a 12 MiB file through the page's file
input into a folder (more than the 10 MiB one websocket message may carry: the page sends it in
slices; the bar reaches 100%, the file is listed), walks into the folder and back with the
breadcrumb, fetches the file from its download link (through her server's HEROES extension, with the
browser's own login) and gets its exact bytes, then deletes it after the confirmation.

Screenshots go to ``test-artifacts/screenshots/data-*.png``; the docs (docs/user/data.md) show them.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import nbformat
import pytest
from magics.flow_world import build_flow_world

from jupyter_heroes.serverext.testing import lab_hub_config, start_user_server
from jupyter_heroes.testing.browser import NB, hub_login, run_code_cells

pytestmark = [pytest.mark.browser, pytest.mark.hub, pytest.mark.s3, pytest.mark.timeout(420)]

WIDGET = f"{NB} .heroes-data-browser"
NOTEBOOK = "my-data.ipynb"
README = b"what is in this bucket\n"


@pytest.fixture(scope="module")
def lab(hub_factory, s3_server, tmp_path_factory):
    work = tmp_path_factory.mktemp("data-page-hub")
    hub = hub_factory(extra_config=lab_hub_config(work))
    world = build_flow_world(hub, "dp", work / "scratch", s3_server, None, local=False)
    client = world.client()
    bucket = client.home_bucket()
    # something already there: a file at the top and one in a folder
    client.upload("readme.txt", README)
    client.upload("inputs/mesh.dat", b"0 0 0\n1 1 1\n")
    url = start_user_server(hub, world.researcher, world.tokens[world.researcher])
    home = work / "homes" / world.researcher
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell("# My data"),
            nbformat.v4.new_code_cell("%load_ext jupyter_heroes"),
            nbformat.v4.new_code_cell("%heroes data browse"),
        ],
        metadata={"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
    )
    nbformat.write(nb, home / NOTEBOOK)
    return SimpleNamespace(hub=hub, world=world, url=url, bucket=bucket, client=client)


def test_browse_upload_walk_download_delete(lab, browser, screenshots_dir, tmp_path):
    w = lab.world
    # over the 10 MiB a websocket message may carry: the page sends it in 4 MiB slices
    data = os.urandom(12 * 1024 * 1024)
    local = tmp_path / "sample.bin"
    local.write_bytes(data)
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    try:
        hub_login(page, lab.hub.url, w.researcher)
        page.goto(lab.url + "lab/tree/" + NOTEBOOK)
        page.wait_for_selector("#jp-main-dock-panel", timeout=120_000)
        page.wait_for_function(
            f"() => document.querySelectorAll('{NB} .jp-Cell').length === 3", timeout=90_000
        )
        run_code_cells(page, 2)

        # --- her own bucket, with what is already in it ---------------------------------------------
        widget = page.locator(WIDGET)
        widget.wait_for(timeout=90_000)
        assert "Traceback" not in page.locator(NB).inner_text()
        widget.locator(".heroes-data-object", has_text="readme.txt").wait_for(timeout=60_000)
        assert widget.locator("select").first.input_value() == f"{lab.bucket} (yours)"
        assert lab.bucket == f"{w.org}--u-{w.researcher}"
        assert widget.locator("button.heroes-data-folder").all_inner_texts() == ["inputs/"]
        assert widget.locator(".heroes-data-usage").inner_text().startswith(f"{lab.bucket}: 2 objects")
        widget.scroll_into_view_if_needed()
        page.screenshot(path=str(screenshots_dir / "data-01-browser.png"))

        # --- upload through the page's file input into a folder ---------------------------------------
        widget.locator(".heroes-chunked-upload input[type=file]").set_input_files(str(local))
        # the picker counts the chosen file (its name and size went to the kernel, not its bytes)
        widget.locator(".heroes-chunked-upload button", has_text="Choose files (1)").wait_for(timeout=60_000)
        widget.locator("input[placeholder^='folder/']").fill("inputs/")
        widget.locator("button.heroes-data-upload-button").click()
        widget.locator(".heroes-data-status", has_text="uploaded 1 file").wait_for(timeout=180_000)
        assert "uploaded 1 file (12.6 MB) to inputs/" in widget.locator(".heroes-data-status").inner_text()
        assert widget.locator(".heroes-chunked-upload button").inner_text() == "Choose files (0)"
        bar = widget.locator(".heroes-data-progress .progress-bar")
        page.wait_for_function(
            f"() => document.querySelector('{WIDGET} .heroes-data-progress .progress-bar').style.width === '100%'",
            timeout=30_000,
        )
        assert bar.evaluate("e => e.style.width") == "100%"
        assert "12.6 MB of 12.6 MB" in widget.inner_text()
        assert widget.locator(".heroes-data-usage").inner_text().startswith(f"{lab.bucket}: 3 objects")

        # --- into the folder: the new file is listed next to the old one ------------------------------
        widget.locator("button.heroes-data-folder", has_text="inputs/").click()
        widget.locator("button.heroes-data-crumb", has_text="inputs/").wait_for(timeout=30_000)
        row = widget.locator(".widget-hbox", has=page.locator(".heroes-data-object", has_text="sample.bin"))
        row.first.wait_for(timeout=30_000)
        assert widget.locator(".heroes-data-object", has_text="mesh.dat").count() == 1
        assert widget.locator(".heroes-data-object", has_text="readme.txt").count() == 0
        assert "12.6 MB" in row.first.inner_text()
        page.screenshot(path=str(screenshots_dir / "data-02-uploaded.png"))

        # --- the breadcrumb leads back to the top, the folder button in again -------------------------
        widget.locator("button.heroes-data-crumb").first.click()
        widget.locator(".heroes-data-object", has_text="readme.txt").wait_for(timeout=30_000)
        assert widget.locator("button.heroes-data-crumb").count() == 1
        assert widget.locator(".heroes-data-object", has_text="sample.bin").count() == 0
        widget.locator("button.heroes-data-folder", has_text="inputs/").click()
        widget.locator("button.heroes-data-crumb", has_text="inputs/").wait_for(timeout=30_000)
        row.first.wait_for(timeout=30_000)

        # --- the download link answers the file's exact bytes, with the browser's login --------------
        href = row.first.locator("a.heroes-download").get_attribute("href")
        assert href and href.startswith(f"/user/{w.researcher}/heroes/api/v1/organization/data/download?")
        answer = page.request.get(lab.hub.url + href, timeout=60_000)
        assert answer.status == 200, answer.text()[:300]
        assert answer.body() == data
        # without the browser's login the same link gives nothing away
        anonymous = browser.new_context()
        try:
            refused = anonymous.request.get(lab.hub.url + href, timeout=60_000, max_redirects=0)
            assert refused.status != 200 or refused.body() != data
        finally:
            anonymous.close()

        # --- delete asks first; Confirm deletes ------------------------------------------------------
        widget.locator(".heroes-data-object", has_text="sample.bin").locator("input").check()
        widget.locator("button.heroes-data-delete").click()
        confirm = widget.locator(".heroes-data-confirm", has_text="Delete 1 object?")
        confirm.wait_for(timeout=30_000)
        assert "inputs/sample.bin" in confirm.inner_text()
        page.screenshot(path=str(screenshots_dir / "data-03-confirm-delete.png"))
        confirm.locator("button.heroes-data-confirm-yes").click()
        widget.locator(".heroes-data-status", has_text="deleted 1 object").wait_for(timeout=60_000)
        widget.locator(".heroes-data-object", has_text="sample.bin").wait_for(
            state="detached", timeout=30_000
        )
        assert widget.locator(".heroes-data-object", has_text="mesh.dat").count() == 1
    except Exception:
        page.screenshot(path=str(screenshots_dir / "data-failed.png"))
        raise
    finally:
        ctx.close()

    # what the page showed is what the store holds: the upload arrived whole, the deletion happened
    keys = sorted(o["key"] for o in lab.client.ls(recursive=True)["objects"])
    assert keys == ["inputs/mesh.dat", "readme.txt"]
    assert lab.client.download("readme.txt") == README
