"""Uploads through the server extension are streamed: a 200 MB body goes on to the service chunk by
chunk while the Jupyter server's peak RSS grows by a small fraction of it; sizes are checked before
a byte is read (a real Jupyter server in front of the stand-in of ``conftest.py``)."""

from __future__ import annotations

import hashlib
import json
import os
import socket

import httpx
import pytest

from jupyter_heroes.testing.memory import peak_rss, reset_peak_rss

from .conftest import PREFIX, StandIn

pytestmark = pytest.mark.timeout(180)
MiB = 1024 * 1024
UPLOAD = "/organization/data/upload"


def raw_request(jpserver, head: str, body: bytes = b"") -> tuple[int, dict]:
    """Send *head* (request line and headers, without the blank line) and *body* on a plain socket;
    return the status and the JSON answer. For requests no HTTP client would send as they are."""
    with socket.create_connection(("127.0.0.1", jpserver.port), timeout=30) as sock:
        sock.sendall(head.encode() + b"\r\n\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        header, _, rest = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in header.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    return int(header.split(b" ", 2)[1]), json.loads(rest[:length])


def test_a_200mb_upload_streams_through_with_bounded_memory(jpserver, standin: StandIn):
    size = 200 * MiB
    block = os.urandom(MiB)
    sent = hashlib.sha256()

    def body():
        for i in range(size // MiB):
            chunk = i.to_bytes(4, "big") + block[4:]  # every MiB different
            sent.update(chunk)
            yield chunk

    pid = jpserver.pids[0]
    base = reset_peak_rss(pid)
    r = httpx.post(
        jpserver.url + "heroes/api/v1" + UPLOAD + "?bucket=b&key=big.bin",
        content=body(),
        headers={**jpserver.auth, "Content-Length": str(size), "Content-Type": "application/octet-stream"},
        timeout=120,
    )
    growth = peak_rss(pid) - base
    assert r.status_code == 200, r.text
    assert r.json() == {"size": size, "sha256": sent.hexdigest()}
    seen = standin.seen(UPLOAD)[-1]
    assert seen["query"] == "bucket=b&key=big.bin"
    assert seen["headers"]["Content-Length"] == str(size)
    assert "Transfer-Encoding" not in seen["headers"]
    print(f"\njupyter server peak RSS growth: {growth / MiB:.1f} MiB for a {size // MiB} MiB upload")
    assert growth < 40 * MiB, f"the Jupyter server's RSS grew by {growth / MiB:.1f} MiB"


def test_an_upload_over_the_limit_is_refused_before_a_byte_is_read(jpserver, standin: StandIn):
    before = len(standin.seen(UPLOAD))
    status, answer = raw_request(
        jpserver,
        f"POST /jp/heroes/api/v1{UPLOAD}?bucket=b&key=k HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: token {jpserver.token}\r\nContent-Length: 300000001",
    )
    assert status == 413
    assert answer["reason"] == "upload_too_large"
    assert "max_upload_size" in answer["message"] and "300000000" in answer["message"]
    assert len(standin.seen(UPLOAD)) == before


def test_a_chunked_upload_is_refused_411(jpserver, standin: StandIn):
    before = len(standin.seen(UPLOAD))
    status, answer = raw_request(
        jpserver,
        f"POST /jp/heroes/api/v1{UPLOAD}?bucket=b&key=k HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: token {jpserver.token}\r\nTransfer-Encoding: chunked",
        b"5\r\nhello\r\n0\r\n\r\n",
    )
    assert status == 411
    assert answer["reason"] == "length_required" and "Content-Length" in answer["message"]
    assert len(standin.seen(UPLOAD)) == before


def test_an_upload_without_login_reaches_nothing(jpserver, standin: StandIn):
    before = len(standin.requests)
    r = httpx.post(
        jpserver.url + "heroes/api/v1" + UPLOAD + "?bucket=b&key=k",
        content=b"x" * 1000,
        timeout=30,
    )
    assert r.status_code == 403
    assert len(standin.requests) == before


def test_small_bodies_still_arrive_whole(jpserver, standin: StandIn):
    payload = json.dumps({"name": "x" * 3000}).encode()
    r = httpx.post(
        jpserver.url + "heroes/api/v1/echo/small",
        content=iter([payload[:1000], payload[1000:]]),
        headers={**jpserver.auth, "Content-Type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 200
    assert r.json()["body"] == payload.decode()
    assert standin.seen("/echo/small")[-1]["path"] == PREFIX + "/echo/small"
