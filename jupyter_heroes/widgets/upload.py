"""``ChunkedUpload``: a file picker whose files reach the kernel in slices, so the page can upload
files larger than the Jupyter server's websocket message limit (10 MiB by default).

ipywidgets' ``FileUpload`` reads each chosen file whole and sends it in one message; this widget
(an ``anywidget``: its JavaScript is the string below, no front-end build) keeps the chosen files in
the page and sends only their names, types and sizes (:attr:`ChunkedUpload.files`). When the kernel
calls :meth:`ChunkedUpload.transfer`, the page reads each file in slices of :attr:`chunk_size` bytes
and sends them one at a time as custom messages with the bytes as a binary buffer::

    page -> kernel  {"type": "chunk", "transfer": T, "index": I, "offset": O, "last": bool} + [bytes]
    kernel -> page  {"type": "ack", "transfer": T, "index": I, "offset": O + len(bytes)}
    kernel -> page  {"type": "abort", "transfer": T, "message": ...}            (stop sending)
    page -> kernel  {"type": "error", "transfer": T, "message": ...}            (a file could not be read)

The page sends the next slice only after the ack of the previous one (flow control: at most one
slice in flight, never the whole file in memory). The kernel writes each slice to a temporary file
at its offset (a slice at the wrong offset aborts the transfer) and, once a file is complete, hands
the spooled file to ``on_file(index, meta, path)`` (the data browser streams it to the platform);
``on_done(ok, message)`` ends the transfer.

Python code and tests may also set :attr:`value` as with ``FileUpload`` (dicts with ``name``,
``type``, ``size`` and ``content``); such files are uploaded at once, without the page.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import anywidget
import traitlets as t

log = logging.getLogger("jupyter_heroes.widgets")

#: bytes per slice: well under the server's 10 MiB message limit, large enough to be quick
CHUNK_SIZE = 4 * 1024 * 1024

_ESM = r"""
function render({ model, el }) {
  el.classList.add("heroes-chunked-upload");
  const input = document.createElement("input");
  input.type = "file";
  input.style.display = "none";
  const button = document.createElement("button");
  button.className = "jupyter-widgets jupyter-button widget-button";
  button.type = "button";
  el.appendChild(button);
  el.appendChild(input);
  let chosen = [];
  const label = () => {
    button.textContent = `${model.get("description")} (${model.get("files").length})`;
    button.title = model.get("tooltip") || "";
    button.disabled = model.get("disabled");
    input.multiple = model.get("multiple");
  };
  label();
  model.on("change:files change:description change:disabled change:tooltip change:multiple", label);
  model.on("change:files", () => {
    if (model.get("files").length === 0) { chosen = []; input.value = ""; }
  });
  button.addEventListener("click", () => input.click());
  // several views of one widget (the same output shown twice): only the one the files were chosen
  // in answers the kernel
  let mine = "";
  input.addEventListener("change", () => {
    chosen = Array.from(input.files || []);
    mine = `${Date.now()}-${Math.random()}`;
    model.set("choice", mine);
    model.set("files", chosen.map((f) => ({ name: f.name, type: f.type, size: f.size })));
    model.save_changes();
  });
  const send = async (transfer, index, offset) => {
    if (!mine || model.get("choice") !== mine) return;
    const file = chosen[index];
    if (!file) {
      model.send({ type: "error", transfer, message: `file ${index + 1} is not among the chosen ones; choose again` });
      return;
    }
    const size = model.get("chunk_size");
    const end = Math.min(file.size, offset + size);
    try {
      const buf = await file.slice(offset, end).arrayBuffer();
      model.send({ type: "chunk", transfer, index, offset, last: end >= file.size }, undefined, [buf]);
    } catch (e) {
      model.send({ type: "error", transfer, message: `could not read ${file.name}: ${e}` });
    }
  };
  model.on("msg:custom", (msg) => {
    if (msg.type === "start" || msg.type === "ack") {
      if (msg.done) return;
      send(msg.transfer, msg.index, msg.offset);
    }
  });
}
export default { render };
"""


class ChunkedUpload(anywidget.AnyWidget):
    """Choose files in the page; :meth:`transfer` brings them to the kernel slice by slice."""

    _esm = t.Unicode(_ESM).tag(sync=True)
    description = t.Unicode("Choose files", help="the button's label").tag(sync=True)
    tooltip = t.Unicode("", help="the button's tooltip").tag(sync=True)
    disabled = t.Bool(False, help="no choosing while True").tag(sync=True)
    multiple = t.Bool(True, help="several files at once").tag(sync=True)
    chunk_size = t.Int(CHUNK_SIZE, help="bytes per slice sent by the page").tag(sync=True)
    #: the files chosen in the page: ``[{"name", "type", "size"}]`` (no content)
    files = t.List(t.Dict(), help="the chosen files' names, types and sizes").tag(sync=True)
    #: which of the widget's views holds the chosen files (set by that view)
    choice = t.Unicode("", help="the id of the page view holding the chosen files").tag(sync=True)
    #: seconds without a slice after which a transfer counts as abandoned (the page was closed)
    stale_after = 60.0
    #: files given by Python code (``FileUpload``'s shape, with ``content``); not synced
    value = t.Tuple(help="files with their content, set from Python")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._transfer = 0
        self._active: dict[str, Any] | None = None
        self.on_msg(self._handle)

    # --- the transfer --------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """A transfer is running (and the page sent a slice within :attr:`stale_after` seconds);
        an abandoned one (the page closed or reloaded) is aborted here."""
        if self._active is None:
            return False
        if time.monotonic() - self._active["seen"] > self.stale_after:
            self._finish(False, f"no slice came from the page for {self.stale_after:.0f} s; upload again")
            return False
        return True

    def transfer(
        self,
        on_file: Callable[[int, dict[str, Any], str], bool],
        on_done: Callable[[bool, str], None],
        on_bytes: Callable[[int, int], None] | None = None,
    ) -> None:
        """Ask the page for the chosen files, slice by slice. Each complete file is spooled to a
        temporary path handed to *on_file(index, meta, path)* (False from it stops the transfer; the
        path is removed after); *on_bytes(received, total)* follows the slices; *on_done(ok,
        message)* ends it."""
        if self._active is not None:
            raise RuntimeError("a transfer is already running")
        files = list(self.files)
        self._transfer += 1
        self._active = {
            "id": self._transfer,
            "files": files,
            "total": sum(int(f.get("size", 0)) for f in files),
            "received": 0,
            "seen": time.monotonic(),
            "index": 0,
            "spool": None,
            "on_file": on_file,
            "on_done": on_done,
            "on_bytes": on_bytes,
            "timer": None,
        }
        self._watch()
        self._next_file()

    def _watch(self) -> None:
        """In a running kernel (its event loop), look again when the transfer would turn stale, so a
        page closed mid-transfer ends it (the spool file removed, ``on_done`` told) without waiting
        for the next question to :attr:`busy`."""
        a = self._active
        if a is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (plain Python): busy still ends an abandoned transfer when asked

        def look() -> None:
            a["timer"] = None
            if self._active is a and self.busy:  # busy ends it when stale; else look again later
                self._watch()

        wait = max(0.0, self.stale_after - (time.monotonic() - a["seen"])) + 0.05
        a["timer"] = loop.call_later(wait, look)

    def _next_file(self) -> None:
        a = self._active
        assert a is not None
        while a["index"] < len(a["files"]):
            fd, path = tempfile.mkstemp(prefix="heroes-upload-")
            a["spool"] = (os.fdopen(fd, "wb"), path)
            if int(a["files"][a["index"]].get("size", 0)) == 0:  # nothing to ask the page for
                if not self._file_complete():
                    return
                continue
            a["seen"] = time.monotonic()
            self.send({"type": "start", "transfer": a["id"], "index": a["index"], "offset": 0})
            return
        self._finish(True, "")

    def _file_complete(self) -> bool:
        """Hand the spooled file on; False when the transfer ended (refused)."""
        a = self._active
        assert a is not None
        f, path = a["spool"]
        f.close()
        a["spool"] = None
        try:
            keep_going = a["on_file"](a["index"], a["files"][a["index"]], path)
        except Exception as e:  # the handler's bug must not leave the transfer hanging
            log.exception("upload handler failed")
            keep_going = False
            self._finish(False, f"upload failed: {e}")
            return False
        finally:
            os.unlink(path)
        if not keep_going:
            self._finish(False, "")
            return False
        a["index"] += 1
        return True

    def _finish(self, ok: bool, message: str) -> None:
        a = self._active
        if a is None:
            return
        self._active = None
        if a.get("timer") is not None:
            a["timer"].cancel()
        if a["spool"] is not None:
            f, path = a["spool"]
            f.close()
            os.unlink(path)
        if not ok:
            self.send({"type": "abort", "transfer": a["id"], "message": message})
        else:
            self.files = []
        a["on_done"](ok, message)

    def abort(self, message: str = "stopped") -> None:
        """Stop a running transfer (nothing more is asked of the page)."""
        self._finish(False, message)

    def _handle(self, _widget: Any, content: dict[str, Any], buffers: list[Any]) -> None:
        a = self._active
        if not isinstance(content, dict) or a is None or content.get("transfer") != a["id"]:
            return  # a late message of an ended transfer
        kind = content.get("type")
        if kind == "error":
            self._finish(False, str(content.get("message") or "the page could not send the file"))
            return
        if kind != "chunk":
            return
        index, offset = content.get("index"), content.get("offset")
        f, _path = a["spool"]
        meta = a["files"][a["index"]]
        data = bytes(buffers[0]) if buffers else b""
        size = int(meta.get("size", 0))
        if index != a["index"] or offset != f.tell() or offset + len(data) > size or not data:
            self._finish(False, f"{meta.get('name')}: a slice arrived out of order; upload it again")
            return
        f.write(data)
        a["seen"] = time.monotonic()
        a["received"] += len(data)
        if a["on_bytes"] is not None:
            a["on_bytes"](a["received"], a["total"])
        end = offset + len(data)
        if end < size:
            a["seen"] = time.monotonic()
            self.send({"type": "ack", "transfer": a["id"], "index": index, "offset": end})
            return
        if self._file_complete():
            self._next_file()
