"""``DataBrowser``: your buckets in the organization's object store, in a notebook or a Voila app.

Pick a bucket (your own and your projects'), walk its folders (a breadcrumb leads back up), see each
object's size and modification time, page through long folders (``More``), upload files with a
progress bar, download them (a link through this Jupyter server's HEROES extension, or a copy into
a local folder) and delete them after a confirmation. Every call goes through
:class:`~jupyter_heroes.client.HeroesClient`; object keys are checked before upload with the
service's own rules (:func:`jupyter_heroes.data.names.validate_key`), and whatever the service
refuses is shown in the status line with its message. Core ipywidgets, and for the file picker an
``anywidget`` (:class:`~jupyter_heroes.widgets.upload.ChunkedUpload`) that sends files in slices.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, urlencode

import ipywidgets as w

from ..client import HeroesClient, HeroesError
from ..client import human_size as _size
from ..data.errors import InvalidName
from ..data.names import validate_key
from .form import ERROR_STYLE, _esc
from .upload import CHUNK_SIZE, ChunkedUpload

log = logging.getLogger("jupyter_heroes.widgets")

OK_STYLE = "color:#2e7d32;font-size:90%"
INFO_STYLE = "color:#555;font-size:90%"


def _when(stamp: Any) -> str:
    """An ISO timestamp as ``2026-11-22 02:13`` (UTC as the service gives it)."""
    if not stamp:
        return ""
    text = str(stamp).replace("T", " ")
    return text[:16]


class _ProgressReader:
    """The bytes of an upload (in memory, or an open file streamed from disk), read by the HTTP
    library chunk by chunk; *report* gets the bytes sent."""

    def __init__(
        self, data: bytes | BinaryIO, report: Callable[[int], None], size: int | None = None
    ) -> None:
        self._mem = memoryview(data) if isinstance(data, bytes | bytearray | memoryview) else None
        self._file = None if self._mem is not None else data
        self._size = len(self._mem) if self._mem is not None else int(size or 0)
        self._pos = 0
        self._report = report

    def __len__(self) -> int:
        return self._size - self._pos

    def read(self, n: int = -1) -> bytes:
        end = self._size if n is None or n < 0 else min(self._size, self._pos + n)
        if self._mem is not None:
            chunk = bytes(self._mem[self._pos : end])
        else:
            assert self._file is not None
            chunk = self._file.read(end - self._pos)  # type: ignore[union-attr]
        self._pos += len(chunk)
        self._report(self._pos)
        return chunk


class DataBrowser(w.VBox):
    """Browse, upload, download and delete your objects (*client*: default ``HeroesClient()``;
    *bucket*: the bucket to open, default your own).

    State for code and tests: ``bucket``, ``prefix``, ``folders`` and ``objects`` (what is listed so
    far), ``has_more``; actions :meth:`open_folder`, :meth:`up`, :meth:`more`, :meth:`refresh`,
    :meth:`select`, :meth:`upload_bytes`, :meth:`upload_files`, :meth:`save`, :meth:`delete`
    (asks first), :meth:`confirm_delete`, :meth:`cancel_delete`.
    """

    #: the base URL of the Jupyter server this kernel belongs to (``/user/NAME/`` under JupyterHub):
    #: download links go through its HEROES server extension; None: no links, use Save instead
    server_base_url: str | None = os.environ.get("JUPYTERHUB_SERVICE_PREFIX") or None

    def __init__(
        self,
        client: HeroesClient | None = None,
        bucket: str | None = None,
        *,
        page_size: int = 100,
        download_dir: str | os.PathLike[str] = ".",
        **kwargs: Any,
    ) -> None:
        self.client: HeroesClient | None = None
        self.page_size = page_size
        self.bucket: str = ""
        self.prefix: str = ""
        self.buckets: list[dict[str, Any]] = []
        self.folders: list[str] = []
        self.objects: list[dict[str, Any]] = []
        self.usage: dict[str, Any] | None = None
        #: upload progress in percent, as the bar showed it (for inspection)
        self.progress_seen: list[float] = []
        #: what the last Upload stored (the service's answers), for code and tests
        self.uploaded: list[dict[str, Any]] = []
        self._next: str | None = None
        self._checks: dict[str, w.Checkbox] = {}
        self._pending_delete: list[str] = []
        self._last_error = ""

        self.bucket_picker = w.Dropdown(description="Bucket", layout=w.Layout(width="420px"))
        self.bucket_picker.observe(self._bucket_picked, names="value")
        self.refresh_button = w.Button(description="Refresh", icon="refresh", layout=w.Layout(width="100px"))
        self.refresh_button.on_click(lambda _b: self.refresh())
        self.usage_line = w.HTML()
        self.usage_line.add_class("heroes-data-usage")
        self.up_button = w.Button(description="Up", icon="arrow-up", layout=w.Layout(width="70px"))
        self.up_button.on_click(lambda _b: self.up())
        self.up_button.add_class("heroes-data-up")
        self.breadcrumb = w.HBox()
        self.breadcrumb.add_class("heroes-data-breadcrumb")
        self.folders_box = w.VBox()
        self.folders_box.add_class("heroes-data-folders")
        self.objects_box = w.VBox()
        self.objects_box.add_class("heroes-data-objects")
        self.empty_note = w.HTML()
        self.more_button = w.Button(description="More", icon="angle-double-down")
        self.more_button.on_click(lambda _b: self.more())
        self.more_button.add_class("heroes-data-more")
        self.more_button.layout.display = "none"

        self.delete_button = w.Button(description="Delete", icon="trash", button_style="danger")
        self.delete_button.on_click(lambda _b: self.delete())
        self.delete_button.add_class("heroes-data-delete")
        self.confirm_text = w.HTML()
        self.confirm_button = w.Button(description="Confirm", button_style="danger")
        self.confirm_button.on_click(lambda _b: self.confirm_delete())
        self.confirm_button.add_class("heroes-data-confirm-yes")
        self.cancel_button = w.Button(description="Cancel")
        self.cancel_button.on_click(lambda _b: self.cancel_delete())
        self.cancel_button.add_class("heroes-data-confirm-no")
        self.confirm_box = w.HBox([self.confirm_text, self.confirm_button, self.cancel_button])
        self.confirm_box.add_class("heroes-data-confirm")
        self.confirm_box.layout.display = "none"
        self.download_dir = w.Text(value=os.fspath(download_dir), description="Save to")
        self.save_button = w.Button(description="Save selected", icon="download")
        self.save_button.on_click(lambda _b: self.save())
        self.save_button.add_class("heroes-data-save")

        self.file_upload = ChunkedUpload(description="Choose files")
        self.file_upload.add_class("heroes-data-upload")
        self.file_upload.tooltip = (
            f"files chosen here reach the notebook in slices of {CHUNK_SIZE // (1024 * 1024)} MiB, "
            "so any size the platform accepts can be uploaded from the page"
        )
        self.upload_folder = w.Text(
            description="Into",
            placeholder="folder/ (empty: the bucket's top)",
            layout=w.Layout(width="420px"),
        )
        self.upload_button = w.Button(description="Upload", icon="upload", button_style="primary")
        self.upload_button.on_click(lambda _b: self.upload_files())
        self.upload_button.add_class("heroes-data-upload-button")
        self.progress = w.FloatProgress(value=0.0, min=0.0, max=100.0, description="Upload")
        self.progress.add_class("heroes-data-progress")
        self.progress_label = w.HTML()
        self.status = w.HTML()
        self.status.add_class("heroes-data-status")

        super().__init__(
            [
                w.HBox([self.bucket_picker, self.refresh_button]),
                self.usage_line,
                w.HBox([self.up_button, self.breadcrumb]),
                self.folders_box,
                self.objects_box,
                self.empty_note,
                self.more_button,
                w.HBox([self.delete_button, self.download_dir, self.save_button]),
                self.confirm_box,
                w.HBox([self.file_upload, self.upload_folder, self.upload_button]),
                w.HBox([self.progress, self.progress_label]),
                self.status,
            ],
            **kwargs,
        )
        self.add_class("heroes-data-browser")

        try:
            self.client = client if client is not None else HeroesClient()
            self._load_buckets(bucket)
        except HeroesError as e:
            self._error(e.message)
            self._disable()
            return

    # --- buckets -----------------------------------------------------------------------------------
    def _load_buckets(self, wanted: str | None = None) -> None:
        assert self.client is not None
        buckets = self.client.buckets()
        if not any(b.get("kind") == "user" and b.get("mine") for b in buckets) and not wanted:
            self.client.home_bucket()  # your own bucket, created on first use
            buckets = self.client.buckets()
        self.buckets = buckets
        names = [str(b["name"]) for b in buckets]
        if wanted and wanted not in names:
            raise HeroesError(
                f"bucket {wanted!r} is not one you may use; pick one of: {', '.join(names) or 'none'}",
                "not_found",
                404,
            )
        own = next((str(b["name"]) for b in buckets if b.get("kind") == "user" and b.get("mine")), None)
        start = wanted or own or (names[0] if names else "")
        options = [(self._bucket_label(b), str(b["name"])) for b in buckets]
        self.bucket_picker.unobserve(self._bucket_picked, names="value")
        try:
            self.bucket_picker.options = options
            self.bucket_picker.value = start or None
        finally:
            self.bucket_picker.observe(self._bucket_picked, names="value")
        if start:
            self._switch(start)

    @staticmethod
    def _bucket_label(b: dict[str, Any]) -> str:
        if b.get("kind") == "user":
            who = "yours" if b.get("mine") else f"user {b.get('owner', '')}"
        else:
            who = f"project {b.get('owner', '')}"
        return f"{b['name']} ({who})"

    def _bucket_picked(self, change: dict[str, Any]) -> None:
        if change["new"]:
            self._switch(str(change["new"]))

    def _switch(self, bucket: str) -> None:
        self.bucket = bucket
        self.prefix = ""
        self.upload_folder.value = ""
        self._show_usage()
        self._list()

    def _show_usage(self) -> None:
        assert self.client is not None
        try:
            self.usage = self.client.bucket_size(self.bucket)
        except HeroesError as e:
            log.info("no usage line for %s: %s", self.bucket, e.reason)
            self.usage = None
            self.usage_line.value = ""
            return
        n = int(self.usage.get("objects", 0))
        self.usage_line.value = (
            f"<span style='{INFO_STYLE}'>{_esc(self.bucket)}: {n} object{'s' if n != 1 else ''}, "
            f"{_esc(_size(int(self.usage.get('bytes', 0))))} in all</span>"
        )

    # --- listing -----------------------------------------------------------------------------------
    def _page(self, token: str | None) -> dict[str, Any]:
        assert self.client is not None
        params: dict[str, Any] = {"prefix": self.prefix, "delimiter": "/", "limit": self.page_size}
        if token:
            params["continuation"] = token
        path = f"{self.client.DATA_PREFIX}/bucket/{quote(self.bucket, safe='')}/list"
        return self.client.request("GET", path, params=params)

    def _list(self) -> bool:
        """List the current folder from its first page; False (and the reason shown) if it failed."""
        self.folders, self.objects, self._next = [], [], None
        self._pending_delete = []
        self.confirm_box.layout.display = "none"
        ok = self._fetch(None)
        self._render()
        return ok

    def _fetch(self, token: str | None) -> bool:
        try:
            page = self._page(token)
        except HeroesError as e:
            self._error(e.message)
            return False
        self.folders += [f for f in page.get("folders", []) if f not in self.folders]
        self.objects += [o for o in page.get("objects", []) if not o.get("is_folder")]
        self._next = page.get("next") or None
        return True

    @property
    def has_more(self) -> bool:
        return self._next is not None

    def more(self) -> None:
        """Add the next page of the current folder."""
        if self._next is None:
            return
        self._fetch(self._next)
        self._render()

    def refresh(self) -> None:
        """List the bucket list, the usage line and the current folder again."""
        if self.client is None:
            return
        prefix = self.prefix
        try:
            buckets = self.client.buckets()
        except HeroesError as e:
            self._error(e.message)
            return
        if [b["name"] for b in buckets] != [b["name"] for b in self.buckets]:
            self.buckets = buckets
            self.bucket_picker.unobserve(self._bucket_picked, names="value")
            try:
                self.bucket_picker.options = [(self._bucket_label(b), str(b["name"])) for b in buckets]
                if self.bucket in [b["name"] for b in buckets]:
                    self.bucket_picker.value = self.bucket
            finally:
                self.bucket_picker.observe(self._bucket_picked, names="value")
        self._show_usage()
        self.prefix = prefix
        if self._list():
            self._info("refreshed")

    def open_folder(self, prefix: str) -> None:
        """Show folder *prefix* (``""``: the bucket's top; a trailing ``/`` is added)."""
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        if prefix:
            try:
                validate_key(prefix, allow_folder=True, what="folder")
            except InvalidName as e:
                self._error(e.message)
                return
        self.prefix = prefix
        self.upload_folder.value = prefix
        self.status.value = ""
        self._list()

    def up(self) -> None:
        """Show the folder above the current one."""
        if not self.prefix:
            return
        parent = self.prefix.rstrip("/").rpartition("/")[0]
        self.open_folder(parent + "/" if parent else "")

    # --- rendering ---------------------------------------------------------------------------------
    def _render(self) -> None:
        crumbs = [self._crumb(self.bucket or "(no bucket)", "")]
        path = ""
        for seg in [s for s in self.prefix.split("/") if s]:
            path += seg + "/"
            crumbs.append(self._crumb(seg, path))
        self.breadcrumb.children = crumbs
        self.up_button.disabled = not self.prefix

        folder_buttons = []
        for f in self.folders:
            name = f[len(self.prefix) :] if f.startswith(self.prefix) else f
            b = w.Button(description=name, icon="folder", tooltip=f"open {f}", layout=w.Layout(width="auto"))
            b.add_class("heroes-data-folder")
            b.on_click(lambda _b, f=f: self.open_folder(f))
            folder_buttons.append(b)
        self.folders_box.children = folder_buttons

        old = self._checks
        self._checks = {}
        rows = []
        for o in self.objects:
            key = str(o["key"])
            name = key[len(self.prefix) :] if key.startswith(self.prefix) else key
            check = w.Checkbox(
                value=old[key].value if key in old else False,
                description=name,
                indent=False,
                tooltip=key,
                layout=w.Layout(width="360px"),
            )
            check.add_class("heroes-data-object")
            self._checks[key] = check
            url = self.download_url(key)
            link = (
                f"<a class='heroes-download' href=\"{_esc(url)}\" download target='_blank' "
                "title='download'>download</a>"
                if url
                else ""
            )
            info = w.HTML(
                f"<span style='display:inline-block;width:90px;text-align:right'>"
                f"{_esc(_size(int(o.get('size', 0))))}</span>"
                f"<span style='display:inline-block;width:150px;padding-left:12px;color:#555'>"
                f"{_esc(_when(o.get('last_modified')))}</span>{link}"
            )
            rows.append(w.HBox([check, info]))
        self.objects_box.children = rows
        self.empty_note.value = (
            f"<i style='{INFO_STYLE}'>this folder is empty</i>"
            if not self.folders and not self.objects
            else ""
        )
        self.more_button.layout.display = None if self._next else "none"

    def _crumb(self, label: str, prefix: str) -> w.Button:
        b = w.Button(description=label + ("/" if prefix else ""), layout=w.Layout(width="auto"))
        b.add_class("heroes-data-crumb")
        b.on_click(lambda _b: self.open_folder(prefix))
        return b

    def download_url(self, key: str) -> str | None:
        """A link downloading *key* of the current bucket through this Jupyter server's HEROES
        extension (the browser's own login, no token in the page); None outside a Jupyter server."""
        base = self.server_base_url
        if not base or not self.bucket:
            return None
        query = {"bucket": self.bucket, "key": key}
        if self.client is not None and self.client.organization:
            query["organization"] = self.client.organization
        return f"{base.rstrip('/')}/heroes/api/v1/organization/data/download?{urlencode(query)}"

    # --- selection ---------------------------------------------------------------------------------
    @property
    def selected(self) -> list[str]:
        """The keys whose box is ticked."""
        return [k for k, c in self._checks.items() if c.value]

    def select(self, *keys: str, value: bool = True) -> None:
        """Tick (or, with ``value=False``, untick) the boxes of *keys* (listed objects only)."""
        for k in keys:
            if k not in self._checks:
                raise KeyError(f"{k!r} is not listed in {self.bucket}/{self.prefix}")
            self._checks[k].value = value

    # --- delete ------------------------------------------------------------------------------------
    def delete(self) -> None:
        """Ask to delete the selected objects (nothing is deleted before :meth:`confirm_delete`)."""
        keys = self.selected
        if not keys:
            self._error("select the objects to delete first (tick their boxes)")
            return
        self._pending_delete = keys
        n = len(keys)
        self.confirm_text.value = (
            f"<b>Delete {n} object{'s' if n != 1 else ''}?</b> "
            f"<span style='{INFO_STYLE}'>{_esc(', '.join(keys[:5]))}{' …' if n > 5 else ''}; "
            "this cannot be undone</span>"
        )
        self.confirm_box.layout.display = None
        self.status.value = ""

    def cancel_delete(self) -> None:
        """Forget the pending deletion."""
        self._pending_delete = []
        self.confirm_box.layout.display = "none"
        self._info("nothing deleted")

    def confirm_delete(self) -> dict[str, Any] | None:
        """Delete what :meth:`delete` asked about; the service's answer (deleted keys, errors)."""
        keys = self._pending_delete
        self._pending_delete = []
        self.confirm_box.layout.display = "none"
        if not keys or self.client is None:
            self._error("nothing to delete: select objects and press Delete first")
            return None
        try:
            answer = self.client.delete(keys, self.bucket)
        except HeroesError as e:
            self._error(e.message)
            return None
        errors = answer.get("errors") or {}
        self._show_usage()
        self._list()
        if errors:
            detail = "; ".join(f"{k}: {v}" for k, v in list(errors.items())[:5])
            self._error(f"deleted {len(answer.get('deleted', []))}, could not delete {len(errors)}: {detail}")
        else:
            n = len(answer.get("deleted", []))
            self._ok(f"deleted {n} object{'s' if n != 1 else ''}")
        return answer

    # --- download ----------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike[str] | None = None) -> list[Path]:
        """Copy the selected objects into *directory* (default: the "Save to" field); their paths."""
        keys = self.selected
        if not keys or self.client is None:
            self._error("select the objects to save first (tick their boxes)")
            return []
        target = Path(directory if directory is not None else (self.download_dir.value or "."))
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            self._error(f"cannot create the folder {target}: {e.strerror}; choose another one in 'Save to'")
            return []
        saved: list[Path] = []
        for key in keys:
            try:
                saved.append(Path(self.client.download(key, target, self.bucket)))
            except HeroesError as e:
                self._error(f"saved {len(saved)} of {len(keys)}; {key}: {e.message}")
                return saved
        self._ok(f"saved {len(saved)} file{'s' if len(saved) != 1 else ''} to {target}")
        return saved

    # --- upload ------------------------------------------------------------------------------------
    def _set_progress(self, sent: int, total: int) -> None:
        pct = 100.0 if total == 0 else round(100.0 * sent / total, 1)
        if self.progress_seen and pct - self.progress_seen[-1] < 1.0 and pct < 100.0:
            return  # about one update per percent
        self.progress_seen.append(pct)
        self.progress.value = pct
        self.progress_label.value = (
            f"<span style='{INFO_STYLE}'>{_esc(_size(sent))} of {_esc(_size(total))}</span>"
        )

    def upload_bytes(
        self, key: str, data: bytes, *, content_type: str | None = None
    ) -> dict[str, Any] | None:
        """Upload *data* as *key* into the current bucket, the bar following the bytes sent; the
        service's answer, or None (the reason in the status line)."""
        if self.client is None:
            return None
        try:
            validate_key(key)
        except InvalidName as e:
            self._error(f"not uploaded: {e.message}")
            return None
        answer = self._put(key, data, content_type)
        if answer is not None:
            self._show_usage()
            if key.startswith(self.prefix):
                self._list()
            self._ok(f"uploaded {key} ({_size(int(answer.get('size', len(data))))})")
        return answer

    def _put(self, key: str, data: bytes | Path, content_type: str | None) -> dict[str, Any] | None:
        """Send *data* (bytes, or a local file streamed from disk) as *key*, the bar following."""
        if isinstance(data, Path):
            with data.open("rb") as f:
                return self._post(key, f, os.fstat(f.fileno()).st_size, content_type)
        return self._post(key, data, len(data), content_type)

    def _post(
        self, key: str, data: bytes | BinaryIO, total: int, content_type: str | None
    ) -> dict[str, Any] | None:
        assert self.client is not None
        self.progress_seen = []
        self.progress.bar_style = ""
        self._set_progress(0, total)
        headers = {"Content-Type": content_type or "application/octet-stream", "Content-Length": str(total)}
        try:
            answer = self.client.request(
                "POST",
                self.client.DATA_PREFIX + "/upload",
                params={"bucket": self.bucket, "key": key},
                data=_ProgressReader(data, lambda sent: self._set_progress(sent, total), total),  # type: ignore[arg-type]
                headers=headers,
            )
        except HeroesError as e:
            self.progress.bar_style = "danger"
            self._last_error = f"{key} not uploaded: {e.message}"
            self._error(self._last_error)
            return None
        self.progress.bar_style = "success"
        return answer

    def upload_files(self) -> list[dict[str, Any]]:
        """Upload the chosen files into the "Into" folder; the stored objects.

        Files given from Python (``file_upload.value``, with their content) are uploaded at once.
        Files chosen in the page come to the kernel slice by slice (see
        :class:`~jupyter_heroes.widgets.upload.ChunkedUpload`), each streamed on to the platform as
        soon as it is complete: this returns ``[]`` at once and the status line says when they are
        stored (:attr:`uploaded` lists them)."""
        given = list(self.file_upload.value)
        chosen = list(self.file_upload.files)
        if self.file_upload.busy:
            self._error(
                "an upload is running; wait for it to finish (if the page was reloaded during it, "
                "choose the files again and press Upload in a minute)"
            )
            return []
        if not given and not chosen:
            self._error("choose files first (Choose files), then press Upload")
            return []
        folder = self.upload_folder.value.strip()
        if folder and not folder.endswith("/"):
            folder += "/"
        names = [str(f["name"]) for f in (given or chosen)]
        keys = [folder + n for n in names]
        for key in keys:  # all or nothing: check every key before sending any
            try:
                validate_key(key)
            except InvalidName as e:
                self._error(f"nothing uploaded: {e.message}")
                return []
        self.uploaded = []
        if not given:
            self._from_page(chosen, keys, folder)
            return []
        for f, key in zip(given, keys, strict=True):
            answer = self._put(key, bytes(f["content"]), f.get("type") or None)
            if answer is None:
                break
            self.uploaded.append(answer)
        if len(self.uploaded) == len(given):
            self.file_upload.value = ()
        self._uploads_ended(len(given), folder)
        return list(self.uploaded)

    def _from_page(self, chosen: list[dict[str, Any]], keys: list[str], folder: str) -> None:
        self.progress.bar_style = "info"

        def on_bytes(received: int, total: int) -> None:
            self.progress.value = 100.0 if total == 0 else round(100.0 * received / total, 1)
            self.progress_label.value = (
                f"<span style='{INFO_STYLE}'>{_esc(_size(received))} of {_esc(_size(total))} "
                "read from the page</span>"
            )

        def on_file(index: int, meta: dict[str, Any], path: str) -> bool:
            answer = self._put(keys[index], Path(path), str(meta.get("type") or "") or None)
            if answer is None:
                return False
            self.uploaded.append(answer)
            return True

        def on_done(ok: bool, message: str) -> None:
            if message:
                self.progress.bar_style = "danger"
                self._last_error = f"not uploaded: {message}"
                self._error(self._last_error)
            self._uploads_ended(len(chosen), folder)

        self._info(f"reading {len(chosen)} file{'s' if len(chosen) != 1 else ''} from the page")
        self.file_upload.transfer(on_file, on_done, on_bytes)

    def _uploads_ended(self, count: int, folder: str) -> None:
        done = self.uploaded
        if len(done) == count:
            total = sum(int(a.get("size", 0)) for a in done)
            self._ok(
                f"uploaded {len(done)} file{'s' if len(done) != 1 else ''} ({_size(total)}) to {folder or 'the top'}"
            )
        elif done:  # say what did arrive before the refusal
            self._error(f"uploaded {len(done)} of {count}; {self._last_error}")
        self._show_usage()
        if folder == self.prefix or (done and folder.startswith(self.prefix)):
            msg = self.status.value
            self._list()
            self.status.value = msg

    # --- status ------------------------------------------------------------------------------------
    def _error(self, message: str) -> None:
        self.status.value = f"<span style='{ERROR_STYLE}'>{_esc(message)}</span>"

    def _ok(self, message: str) -> None:
        self.status.value = f"<span style='{OK_STYLE}'>{_esc(message)}</span>"

    def _info(self, message: str) -> None:
        self.status.value = f"<span style='{INFO_STYLE}'>{_esc(message)}</span>"

    def _disable(self) -> None:
        for b in (
            self.bucket_picker,
            self.refresh_button,
            self.up_button,
            self.delete_button,
            self.save_button,
            self.upload_button,
            self.file_upload,
        ):
            b.disabled = True
