"""The chunked upload's message protocol, with the page simulated in Python: the kernel side gets the
custom messages (with their binary buffers) through ipywidgets' own comm handling, exactly as the
page's JavaScript sends them, and its answers (start, ack, abort) are captured where they would go to
the page. The real page is driven in tests/browser/test_data_browser_page.py (a 12 MiB file).

``ChunkedUpload`` alone (no server), then ``DataBrowser`` storing what the page sent on the real hub +
service with the test bed's S3 server."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from jupyter_heroes.client import HeroesClient
from jupyter_heroes.widgets import DataBrowser
from jupyter_heroes.widgets.upload import ChunkedUpload

pytestmark = [pytest.mark.timeout(240)]


class Page:
    """What the widget's JavaScript does with the kernel's messages: answer start/ack with the next
    slice of the chosen file as a buffer; stop at abort."""

    def __init__(self, widget: ChunkedUpload, files: dict[str, bytes]) -> None:
        self.widget = widget
        self.data = list(files.values())
        self.sent: list[dict[str, Any]] = []  # kernel -> page
        self.slices: list[int] = []  # sizes of the slices the page sent
        self.mangle: Any = None  # a function altering a chunk message before it is delivered
        widget.send = self.receive  # type: ignore[method-assign]
        widget.files = [
            {"name": n, "type": "application/octet-stream", "size": len(d)} for n, d in files.items()
        ]
        self._queue: list[tuple[dict[str, Any], list[bytes]]] = []

    def receive(self, content: dict[str, Any], buffers: Any = None) -> None:
        self.sent.append(content)
        if content["type"] in ("start", "ack") and not content.get("done"):
            data = self.data[content["index"]]
            off = content["offset"]
            piece = data[off : off + self.widget.chunk_size]
            msg = {
                "type": "chunk",
                "transfer": content["transfer"],
                "index": content["index"],
                "offset": off,
                "last": off + len(piece) >= len(data),
            }
            if self.mangle is not None:
                msg = self.mangle(msg)
            self._queue.append((msg, [piece]))

    def run(self) -> None:
        """Deliver the page's messages one at a time (the page waits for each ack)."""
        while self._queue:
            msg, buffers = self._queue.pop(0)
            self.slices.append(len(buffers[0]))
            deliver(self.widget, msg, buffers)


def deliver(widget: ChunkedUpload, content: dict[str, Any], buffers: list[bytes]) -> None:
    """A custom message from the page, through ipywidgets' comm message handling."""
    widget._handle_msg(
        {
            "content": {"data": {"method": "custom", "content": content}},
            "buffers": [memoryview(b) for b in buffers],
        }
    )


def test_slices_with_acks_spooled_to_files():
    up = ChunkedUpload(chunk_size=1000)
    a, b, empty = os.urandom(4500), os.urandom(1000), b""
    page = Page(up, {"a.bin": a, "b.bin": b, "empty.txt": empty})
    got: list[tuple[int, str, bytes]] = []
    paths: list[str] = []
    progress: list[tuple[int, int]] = []
    ended: list[tuple[bool, str]] = []

    def on_file(index: int, meta: dict[str, Any], path: str) -> bool:
        paths.append(path)
        got.append((index, meta["name"], Path(path).read_bytes()))
        return True

    up.transfer(on_file, lambda ok, m: ended.append((ok, m)), lambda r, t: progress.append((r, t)))
    assert up.busy
    page.run()
    assert got == [(0, "a.bin", a), (1, "b.bin", b), (2, "empty.txt", b"")]
    assert ended == [(True, "")] and not up.busy
    # one slice in flight at a time, each at most chunk_size, acked with the next offset
    assert page.slices == [1000, 1000, 1000, 1000, 500, 1000]
    kinds = [(m["type"], m["index"], m["offset"]) for m in page.sent]
    assert kinds == [
        ("start", 0, 0),
        ("ack", 0, 1000),
        ("ack", 0, 2000),
        ("ack", 0, 3000),
        ("ack", 0, 4000),
        ("start", 1, 0),
    ]
    assert progress[-1] == (5500, 5500) and [r for r, _ in progress] == sorted(r for r, _ in progress)
    # the spooled files are gone, the choice is cleared
    assert not any(os.path.exists(p) for p in paths)
    assert up.files == []


def test_out_of_order_slice_aborts_and_cleans_up():
    up = ChunkedUpload(chunk_size=1000)
    page = Page(up, {"a.bin": os.urandom(3000)})
    page.mangle = lambda m: {**m, "offset": 1000} if m["offset"] == 2000 else m  # a slice sent twice
    ended: list[tuple[bool, str]] = []
    files: list[str] = []
    up.transfer(lambda i, m, p: files.append(p) or True, lambda ok, m: ended.append((ok, m)))
    spool = up._active["spool"][1]
    page.run()
    assert ended == [(False, "a.bin: a slice arrived out of order; upload it again")]
    assert page.sent[-1]["type"] == "abort" and files == []
    assert not os.path.exists(spool) and not up.busy
    # late slices of the ended transfer are ignored; the choice stays for another try
    deliver(up, {"type": "chunk", "transfer": 1, "index": 0, "offset": 0, "last": False}, [b"x"])
    assert ended == [(False, "a.bin: a slice arrived out of order; upload it again")]
    assert up.files and up.files[0]["name"] == "a.bin"


def test_a_page_error_and_a_refusing_handler_end_the_transfer():
    up = ChunkedUpload(chunk_size=10)
    page = Page(up, {"a.bin": b"0123456789abc", "b.bin": b"zz"})
    ended: list[tuple[bool, str]] = []
    up.transfer(lambda i, m, p: False, lambda ok, m: ended.append((ok, m)))
    page.run()
    assert ended == [(False, "")] and page.sent[-1]["type"] == "abort"
    assert [m["type"] for m in page.sent] == ["start", "ack", "abort"]  # b.bin never asked for

    up.transfer(lambda i, m, p: True, lambda ok, m: ended.append((ok, m)))
    deliver(up, {"type": "error", "transfer": up._transfer, "message": "could not read a.bin"}, [])
    assert ended[-1] == (False, "could not read a.bin") and not up.busy
    # one transfer at a time
    up.transfer(lambda i, m, p: True, lambda ok, m: None)
    with pytest.raises(RuntimeError, match="already running"):
        up.transfer(lambda i, m, p: True, lambda ok, m: None)
    up.abort()
    assert not up.busy and page.sent[-1] == {"type": "abort", "transfer": up._transfer, "message": "stopped"}


def test_an_abandoned_transfer_is_ended_when_asked_about():
    """The page closed mid-transfer: no slice comes; asking whether it is busy ends it after a while."""
    up = ChunkedUpload(chunk_size=10)
    page = Page(up, {"a.bin": b"0123456789abc"})
    ended: list[tuple[bool, str]] = []
    up.transfer(lambda i, m, p: True, lambda ok, m: ended.append((ok, m)))
    spool = up._active["spool"][1]
    assert up.busy  # just started
    up.stale_after = 0.0
    assert not up.busy
    assert ended == [(False, "no slice came from the page for 0 s; upload again")]
    assert page.sent[-1]["type"] == "abort" and not os.path.exists(spool)
    page.run()  # the slice the page would have sent arrives late: ignored
    assert len(ended) == 1


# --- the data browser storing what the page sends, on the real service + S3 --------------------------
@pytest.fixture
def client(faces_widgets_world) -> HeroesClient:
    return faces_widgets_world.client(organization=faces_widgets_world.org)


@pytest.mark.hub
@pytest.mark.s3
@pytest.mark.parametrize("hub", ["sqlite"], indirect=True)
def test_data_browser_stores_files_sent_in_slices(client):
    base = f"cu-{uuid.uuid4().hex[:8]}"
    db = DataBrowser(client)
    try:
        db.open_folder(base)
        db.file_upload.chunk_size = 256 * 1024
        big, small = os.urandom(1024 * 1024 + 5), b"hello"
        page = Page(db.file_upload, {"big.bin": big, "note.txt": small})
        assert db.upload_files() == []  # started: the page now sends the slices
        assert db.file_upload.busy and "reading 2 files from the page" in db.status.value
        assert db.upload_files() == [] and "an upload is running" in db.status.value
        page.run()
        assert "uploaded 2 files" in db.status.value, db.status.value
        assert [a["key"] for a in db.uploaded] == [f"{base}/big.bin", f"{base}/note.txt"]
        assert client.download(f"{base}/big.bin") == big
        assert client.download(f"{base}/note.txt") == small
        assert not db.upload_button.disabled and db.progress.bar_style == "success"
        assert {o["key"] for o in db.objects} == {f"{base}/big.bin", f"{base}/note.txt"}
        assert page.slices == [256 * 1024] * 4 + [5, 5]

        # a bad name: nothing asked of the page
        page = Page(db.file_upload, {"a.txt": b"a"})
        db.upload_folder.value = f"{base}/../.."
        assert db.upload_files() == [] and page.sent == []
        assert "nothing uploaded" in db.status.value
    finally:
        db.close()


def spooled(path: str) -> bool:
    return os.path.exists(path)


async def test_in_a_running_kernel_an_abandoned_transfer_ends_by_itself():
    """ipykernel runs an event loop: the page closed mid-transfer is noticed without asking busy."""
    up = ChunkedUpload(chunk_size=4)
    up.stale_after = 1.0
    page = Page(up, {"a.bin": b"0123456789abcdef"})
    ended: list[tuple[bool, str]] = []
    up.transfer(lambda i, m, p: True, lambda ok, m: ended.append((ok, m)))
    spool = up._active["spool"][1]
    # two slices 0.1 s apart, then the page goes away
    msg, buffers = page._queue.pop(0)
    deliver(up, msg, buffers)
    await asyncio.sleep(0.1)
    msg, buffers = page._queue.pop(0)
    deliver(up, msg, buffers)
    assert ended == [] and spooled(spool)
    await asyncio.sleep(2.5)
    assert ended == [(False, "no slice came from the page for 1 s; upload again")]
    assert page.sent[-1]["type"] == "abort" and not spooled(spool) and not up.busy


async def test_in_a_running_kernel_a_slow_but_live_transfer_completes():
    up = ChunkedUpload(chunk_size=4)
    up.stale_after = 1.5
    page = Page(up, {"a.bin": b"0123456789abcdef"})
    got: list[bytes] = []
    ended: list[tuple[bool, str]] = []
    up.transfer(lambda i, m, p: got.append(Path(p).read_bytes()) or True, lambda ok, m: ended.append((ok, m)))
    while page._queue:  # a slice every 0.25 s: slow, but never stale
        await asyncio.sleep(0.25)
        msg, buffers = page._queue.pop(0)
        deliver(up, msg, buffers)
    await asyncio.sleep(2)  # no watchdog left behind to abort a finished transfer
    assert ended == [(True, "")] and got == [b"0123456789abcdef"]
    assert [m["type"] for m in page.sent].count("abort") == 0
