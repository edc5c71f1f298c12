"""DataBrowser against the real hub + service with the test bed's S3 server (moto_server) as the
organization's object store: listing, folders and the breadcrumb, paging, upload with progress,
download (link and local copy), delete behind a confirmation, and the refusals shown to the user."""

from __future__ import annotations

import datetime
import os
import uuid

import pytest
import requests

from jupyter_heroes.client import HeroesClient
from jupyter_heroes.widgets import DataBrowser

pytestmark = [
    pytest.mark.hub,
    pytest.mark.s3,
    pytest.mark.parametrize("hub", ["sqlite"], indirect=True),
    pytest.mark.timeout(240),
]


@pytest.fixture
def world(faces_widgets_world):
    return faces_widgets_world


@pytest.fixture
def client(world) -> HeroesClient:
    return world.client(organization=world.org)


@pytest.fixture
def base() -> str:
    """A folder of its own for each test (the researcher's bucket is shared by the session)."""
    return f"db-{uuid.uuid4().hex[:8]}"


def keys_under(client: HeroesClient, prefix: str) -> list[str]:
    return sorted(o["key"] for o in client.ls(prefix, recursive=True)["objects"])


def test_lists_your_bucket_walks_folders_and_pages(world, client, base):
    for key in ("a.txt", "sub/b.txt", "sub/deep/c.txt", *(f"many/{i}.dat" for i in range(5))):
        client.upload(f"{base}/{key}", f"content of {key}".encode())
    # another user's bucket exists, with a file in it
    other = world.client(world.wf_admin, organization=world.org)
    other_bucket = other.home_bucket()
    other.upload("secret.txt", b"not for the researcher")

    db = DataBrowser(client)
    try:
        home = client.home_bucket(create=False)
        assert db.bucket == home and db.bucket_picker.value == home
        listed = [v for _, v in db.bucket_picker.options]
        assert home in listed and other_bucket not in listed
        assert f"{base}/" in db.folders and db.prefix == ""
        assert "objects" in db.usage_line.value and db.usage is not None and db.usage["objects"] >= 8

        # into the test's folder with its button, then deeper, then back up by the breadcrumb
        button = next(b for b in db.folders_box.children if b.description == f"{base}/")
        button.click()
        assert db.prefix == f"{base}/"
        assert db.folders == [f"{base}/many/", f"{base}/sub/"]
        assert [o["key"] for o in db.objects] == [f"{base}/a.txt"]
        assert [c.description for c in db._checks.values()] == ["a.txt"]
        assert "16 B" in db.objects_box.children[0].children[1].value  # "content of a.txt"
        assert str(datetime.datetime.now(datetime.UTC).year) in db.objects_box.children[0].children[1].value
        db.open_folder(f"{base}/sub/deep")
        assert db.prefix == f"{base}/sub/deep/" and [o["key"] for o in db.objects] == [
            f"{base}/sub/deep/c.txt"
        ]
        assert [b.description for b in db.breadcrumb.children] == [home, f"{base}/", "sub/", "deep/"]
        db.breadcrumb.children[2].click()
        assert db.prefix == f"{base}/sub/" and db.folders == [f"{base}/sub/deep/"]
        db.up_button.click()
        assert db.prefix == f"{base}/"
        db.breadcrumb.children[0].click()
        assert db.prefix == "" and db.up_button.disabled

        # a folder of five objects, two per page: More adds pages until the last
        paged = DataBrowser(client, page_size=2)
        paged.open_folder(f"{base}/many/")
        assert len(paged.objects) == 2 and paged.has_more and paged.more_button.layout.display is None
        paged.more_button.click()
        assert len(paged.objects) == 4 and paged.has_more
        paged.more()
        assert [o["key"] for o in paged.objects] == [f"{base}/many/{i}.dat" for i in range(5)]
        assert not paged.has_more and paged.more_button.layout.display == "none"
        # a page holds folders and objects together: the test's folder in pages of two
        paged.open_folder(f"{base}/")
        while paged.has_more:
            paged.more()
        assert paged.folders == [f"{base}/many/", f"{base}/sub/"] and len(paged.objects) == 1
        paged.close()
        db.open_folder(f"{base}/many/")
        assert len(db.objects) == 5 and not db.has_more
        assert db.more_button.layout.display == "none"

        # an empty folder says so; a folder name with '..' is refused before any call
        db.open_folder(f"{base}/nothing-here/")
        assert db.objects == [] and "this folder is empty" in db.empty_note.value
        db.open_folder(f"{base}/../")
        assert "contains a '..' segment" in db.status.value and db.prefix == f"{base}/nothing-here/"
    finally:
        db.close()


def test_upload_with_progress_then_download(client, base, tmp_path):
    db = DataBrowser(client)
    try:
        db.open_folder(base)
        data = os.urandom(3 * 1024 * 1024 + 17)
        db.upload_folder.value = f"{base}/in"  # the trailing '/' is added
        db.file_upload.value = (
            {
                "name": "big.bin",
                "type": "application/octet-stream",
                "size": len(data),
                "content": memoryview(data),
                "last_modified": datetime.datetime.now(datetime.UTC),
            },
            {
                "name": "note.txt",
                "type": "text/plain",
                "size": 5,
                "content": memoryview(b"hello"),
                "last_modified": datetime.datetime.now(datetime.UTC),
            },
        )
        db.upload_button.click()
        assert "uploaded 2 files" in db.status.value, db.status.value
        # the bar followed the bytes of the last file (a small one: straight to 100) ...
        assert db.progress.value == 100.0 and db.progress.bar_style == "success"
        assert db.file_upload.value == ()
        # ... and of the big one, in many steps (checked again with the big file alone)
        big = db.upload_bytes(f"{base}/in/big2.bin", data)
        assert big is not None and big["size"] == len(data)
        seen = db.progress_seen
        assert seen[0] == 0.0 and seen[-1] == 100.0 and len(seen) > 10
        assert seen == sorted(seen)
        assert "3.1 MB of 3.1 MB" in db.progress_label.value
        assert client.download(f"{base}/in/big.bin") == data
        assert client.download(f"{base}/in/note.txt") == b"hello"
        assert keys_under(client, f"{base}/") == [
            f"{base}/in/big.bin",
            f"{base}/in/big2.bin",
            f"{base}/in/note.txt",
        ]
        # the current folder shows the new folder
        assert db.folders == [f"{base}/in/"]

        # outside a Jupyter server: no links; Save copies the selected objects into a local folder
        db.open_folder(f"{base}/in/")
        assert "heroes-download" not in "".join(r.children[1].value for r in db.objects_box.children)
        db.select(f"{base}/in/note.txt", f"{base}/in/big.bin")
        db.download_dir.value = str(tmp_path / "copies")
        db.save_button.click()
        assert "saved 2 files" in db.status.value
        assert (tmp_path / "copies" / "note.txt").read_bytes() == b"hello"
        assert (tmp_path / "copies" / "big.bin").read_bytes() == data
        # in a Jupyter server: a link through its HEROES extension (the browser's own login)
        db.server_base_url = "/user/fw-res/"
        db.refresh()
        html = "".join(r.children[1].value for r in db.objects_box.children)
        assert (
            f'href="/user/fw-res/heroes/api/v1/organization/data/download?bucket={db.bucket}'
            f"&amp;key={base}%2Fin%2Fnote.txt&amp;organization={client.organization}" in html
        )
    finally:
        db.close()


def test_bad_keys_are_refused_and_service_errors_shown(world, client, base):
    db = DataBrowser(client)
    try:
        # the service's own key rules, before anything is sent
        assert db.upload_bytes("../escape.txt", b"x") is None
        assert "not uploaded: the object key '../escape.txt' contains a '..' segment" in db.status.value
        db.upload_folder.value = f"{base}/../../"
        db.file_upload.value = (
            {
                "name": "a.txt",
                "type": "text/plain",
                "size": 1,
                "content": memoryview(b"a"),
                "last_modified": datetime.datetime.now(datetime.UTC),
            },
        )
        assert db.upload_files() == []
        assert "nothing uploaded" in db.status.value and "'..' segment" in db.status.value
        assert db.upload_bytes("/abs.txt", b"x") is None and "is absolute" in db.status.value
        assert keys_under(client, f"{base}/") == []
        assert not {"escape.txt", "abs.txt", "a.txt"} & {o["key"] for o in client.ls("")["objects"]}
        # nothing chosen, nothing selected: the status line says what to do
        db.file_upload.value = ()
        db.upload_button.click()
        assert "choose files first" in db.status.value
        db.save_button.click()
        assert "select the objects to save first" in db.status.value
        # what the service refuses lands in the status line with its message: another user's bucket
        other_bucket = world.client(world.wf_admin, organization=world.org).home_bucket()
        db.bucket = other_bucket
        assert db.upload_bytes(f"{base}/x.txt", b"x") is None
        assert db.status.value.startswith("<span") and f"{base}/x.txt not uploaded: " in db.status.value
        assert db.progress.bar_style == "danger"
        # a bucket that is not in your list is refused when asked for
        other = DataBrowser(client, bucket=other_bucket)
        assert "is not one you may use" in other.status.value and other.upload_button.disabled
        other.close()
    finally:
        db.close()


def test_delete_asks_first(client, base):
    for name in ("keep.txt", "gone1.txt", "gone2.txt"):
        client.upload(f"{base}/{name}", name.encode())
    db = DataBrowser(client)
    try:
        db.open_folder(base)
        db.delete_button.click()
        assert "select the objects to delete first" in db.status.value
        assert db.confirm_box.layout.display == "none"
        # Delete asks; Cancel leaves the object
        db.select(f"{base}/keep.txt")
        db.delete_button.click()
        assert db.confirm_box.layout.display is None and "Delete 1 object?" in db.confirm_text.value
        assert keys_under(client, f"{base}/") == [
            f"{base}/gone1.txt",
            f"{base}/gone2.txt",
            f"{base}/keep.txt",
        ]
        db.cancel_button.click()
        assert db.confirm_box.layout.display == "none" and "nothing deleted" in db.status.value
        assert f"{base}/keep.txt" in keys_under(client, f"{base}/")
        assert db.confirm_delete() is None  # nothing pending any more
        # Confirm removes exactly what was asked about
        db.select(f"{base}/keep.txt", value=False)
        db.select(f"{base}/gone1.txt", f"{base}/gone2.txt")
        db.delete_button.click()
        assert "Delete 2 objects?" in db.confirm_text.value
        db.confirm_button.click()
        assert "deleted 2 objects" in db.status.value
        assert keys_under(client, f"{base}/") == [f"{base}/keep.txt"]
        assert [o["key"] for o in db.objects] == [f"{base}/keep.txt"] and db.selected == []
    finally:
        db.close()


def test_without_a_service_the_browser_says_what_to_set(world, monkeypatch):
    # (no hub needed; *world* only because this module runs against the hub)
    for name in ("HEROES_SERVICE_URL", "JUPYTERHUB_PUBLIC_HUB_URL", "JUPYTERHUB_API_URL"):
        monkeypatch.delenv(name, raising=False)
    db = DataBrowser()
    assert "Set $HEROES_SERVICE_URL" in db.status.value
    assert db.upload_button.disabled and db.delete_button.disabled and db.bucket_picker.disabled
    assert db.upload_bytes("a.txt", b"a") is None
    db.close()


def test_your_projects_buckets_are_offered(world, client, base):
    project = f"proj-{base[3:]}"
    world.ok(
        world.admin,
        "POST",
        "/organization/admin/groups",
        {"name": project, "members": [world.researcher]},
        status=201,
        org=world.org,
    )
    shared = client.create_bucket("project", project)["name"]
    client.upload("shared.txt", b"for the project", shared)
    db = DataBrowser(client)
    try:
        labels = dict((v, label) for label, v in db.bucket_picker.options)
        home = client.home_bucket(create=False)
        assert db.bucket == home and labels[home].endswith("(yours)")
        assert labels[shared] == f"{shared} (project {project})"
        db.bucket_picker.value = shared
        assert db.bucket == shared and db.prefix == ""
        assert [o["key"] for o in db.objects] == ["shared.txt"]
        assert "1 object, 15 B in all" in db.usage_line.value
        assert db.upload_bytes("from-the-browser.txt", b"x") is not None
        assert "uploaded from-the-browser.txt (1 B)" in db.status.value
        assert client.download("from-the-browser.txt", bucket=shared) == b"x"
        assert [o["key"] for o in db.objects] == ["from-the-browser.txt", "shared.txt"]
        client.upload("by-someone-else.txt", b"yz", shared)
        db.refresh()
        assert [o["key"] for o in db.objects] == ["by-someone-else.txt", "from-the-browser.txt", "shared.txt"]
        assert "3 objects, 18 B in all" in db.usage_line.value
    finally:
        db.close()


@pytest.mark.browser
def test_the_browser_in_a_voila_app(world, client, base, browser, screenshots_dir, tmp_path):
    """The widget served by Voila and used in headless Chromium: walk into a folder, upload a file
    chosen in the page's file input, delete one after confirming."""
    import nbformat
    from browser.test_widgets import Voila  # the same Voila component as the submission widget's test

    client.upload(f"{base}/old.txt", b"to be deleted")
    client.upload(f"{base}/keep.txt", b"stays")
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell("# My data"),
            nbformat.v4.new_code_cell(
                f"from jupyter_heroes.widgets import DataBrowser\n\ndb = DataBrowser()\ndb.open_folder({base!r})\ndb"
            ),
        ],
        metadata={"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
    )
    path = tmp_path / "data.ipynb"
    nbformat.write(nb, path)
    env = {
        "HEROES_SERVICE_URL": world.service_url,
        "JUPYTERHUB_API_TOKEN": world.tokens[world.researcher],
        "HEROES_API_TOKEN": "",
        "HEROES_ORGANIZATION": world.org,
        "JUPYTERHUB_SERVICE_PREFIX": "",
    }
    local = tmp_path / "upload-me.csv"
    local.write_bytes(b"a,b\n1,2\n" * 50_000)
    with Voila(path, env) as voila:
        ctx = browser.new_context(viewport={"width": 1200, "height": 900})
        page = ctx.new_page()
        try:
            page.goto(voila.url, timeout=120_000)
            widget = page.locator(".heroes-data-browser")
            widget.wait_for(timeout=120_000)
            widget.locator(".heroes-data-object", has_text="old.txt").wait_for(timeout=30_000)
            assert widget.locator(".heroes-data-object", has_text="keep.txt").count() == 1
            # the breadcrumb leads to the top, the test's folder button back in
            widget.locator("button.heroes-data-crumb").first.click()
            widget.locator("button.heroes-data-folder", has_text=f"{base}/").click()
            widget.locator("button.heroes-data-crumb", has_text=f"{base}/").wait_for(timeout=30_000)
            # upload through the page's file input into the folder shown
            with page.expect_file_chooser() as chooser:
                widget.locator(".heroes-data-upload").click()
            chooser.value.set_files(str(local))
            widget.locator("button.heroes-data-upload-button").click()
            widget.locator(".heroes-data-status", has_text="uploaded 1 file").wait_for(timeout=60_000)
            widget.locator(".heroes-data-object", has_text="upload-me.csv").wait_for(timeout=30_000)
            bar = widget.locator(".heroes-data-progress .progress-bar")
            assert bar.evaluate("e => e.style.width") == "100%"
            page.screenshot(path=str(screenshots_dir / "data-browser-01-uploaded.png"))
            assert client.download(f"{base}/upload-me.csv") == local.read_bytes()
            # delete asks first
            widget.locator(".heroes-data-object", has_text="old.txt").locator("input").check()
            widget.locator("button.heroes-data-delete").click()
            confirm = widget.locator(".heroes-data-confirm", has_text="Delete 1 object?")
            confirm.wait_for(timeout=30_000)
            page.screenshot(path=str(screenshots_dir / "data-browser-02-confirm.png"))
            assert f"{base}/old.txt" in keys_under(client, f"{base}/")
            widget.locator("button.heroes-data-confirm-yes").click()
            widget.locator(".heroes-data-status", has_text="deleted 1 object").wait_for(timeout=30_000)
            assert keys_under(client, f"{base}/") == [f"{base}/keep.txt", f"{base}/upload-me.csv"]
            assert "Traceback" not in page.inner_text("body")
        finally:
            ctx.close()


def test_the_magic_opens_the_browser(world, client, base, monkeypatch):
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    client.upload(f"{base}/in/m.txt", b"m")
    for name in ("HEROES_API_TOKEN", "JUPYTERHUB_PUBLIC_HUB_URL", "JUPYTERHUB_API_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HEROES_SERVICE_URL", world.service_url)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", world.tokens[world.researcher])
    monkeypatch.setenv("HEROES_ORGANIZATION", world.org)
    cfg = Config()
    cfg.HistoryManager.enabled = False
    sh = InteractiveShell.instance(config=cfg)
    if "jupyter_heroes" not in sh.extension_manager.loaded:
        sh.run_line_magic("load_ext", "jupyter_heroes")
    sh.magics_manager.registry["HeroesMagics"].client = None  # a fresh client from this environment
    try:
        db = sh.run_line_magic("heroes", f"data browse {base}/in")
        assert isinstance(db, DataBrowser)
        assert db.prefix == f"{base}/in/" and [o["key"] for o in db.objects] == [f"{base}/in/m.txt"]
        db.close()
        with pytest.raises(UsageError, match="takes one folder"):
            sh.run_line_magic("heroes", "data browse a/ b/")
    finally:
        sh.reset(new_session=False)


@pytest.mark.timeout(400)
def test_the_download_link_works_through_the_users_jupyter_server(
    hub, hub_factory, s3_server, tmp_path_factory
):
    """The link the browser shows inside a Jupyter server downloads the object through that server's
    HEROES extension with the browser's own hub login (a JupyterLab server spawned by a second hub)."""
    from client.world import build_world

    from jupyter_heroes.serverext.testing import hub_login, lab_hub_config, start_user_server

    work = tmp_path_factory.mktemp("db-lab")
    lab_hub = hub_factory(extra_config=lab_hub_config(work))
    world = build_world(lab_hub, "dl", work / "scratch", s3_server)
    client = world.client(organization=world.org)
    data = os.urandom(200_000)
    client.upload("out/result.bin", data)
    start_user_server(lab_hub, world.researcher, world.tokens[world.researcher])
    db = DataBrowser(client)
    try:
        db.server_base_url = f"/user/{world.researcher}/"
        db.open_folder("out/")
        url = db.download_url("out/result.bin")
        assert url is not None and url.startswith(f"/user/{world.researcher}/heroes/api/v1/")
        assert f'href="{url.replace("&", "&amp;")}"' in db.objects_box.children[0].children[1].value
        session = hub_login(lab_hub, world.researcher)
        r = session.get(lab_hub.url + url, timeout=60)
        assert r.status_code == 200, r.text[:300]
        assert r.content == data
        # without the login the server does not hand it out
        anonymous = requests.get(lab_hub.url + url, timeout=60, allow_redirects=False)
        assert anonymous.status_code in (302, 403) and anonymous.content != data
    finally:
        db.close()
