"""The server extension forwards heroes/api/v1 faithfully, and fails clearly (a real Jupyter server
in front of the stand-in HTTP server of ``conftest.py``)."""

from __future__ import annotations

import http.client
import json
import time
from urllib.parse import urlsplit

import pytest
import requests

from .conftest import PREFIX, UPSTREAM_TOKEN, StandIn, wait_until

pytestmark = pytest.mark.timeout(120)


def api(jpserver, method: str, path: str, **kw) -> requests.Response:
    headers = {**jpserver.auth, **kw.pop("headers", {})}
    return requests.request(method, jpserver.url + "heroes/api/v1" + path, headers=headers, timeout=30, **kw)


def test_get_forwards_path_query_and_organization_as_the_server_token(jpserver, standin: StandIn):
    r = api(
        jpserver,
        "GET",
        "/echo/organization/workflow/instance?state=running&q=a%20b",
        headers={
            "X-Heroes-Organization": "acme",
            "Accept": "application/json",
            "Cookie": "jupyterhub-session-id=browser-secret; _xsrf=abc",
            "X-Forwarded-For": "10.1.2.3",
            "Referer": "http://evil.example/",
        },
    )
    assert r.status_code == 200, r.text
    assert r.json() == {
        "method": "GET",
        "path": PREFIX + "/echo/organization/workflow/instance",
        "query": "state=running&q=a%20b",
        "body": "",
    }
    seen = standin.seen("/echo/organization/workflow/instance")[-1]
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    # the server's token replaces the browser's credentials; the browser's cookies never leave
    assert headers["authorization"] == f"token {UPSTREAM_TOKEN}"
    assert headers["x-heroes-organization"] == "acme"
    assert headers["accept"] == "application/json"
    for private in ("cookie", "x-forwarded-for", "referer", "x-xsrftoken"):
        assert private not in headers
    assert jpserver.token not in json.dumps(seen["headers"])
    # and the service's cookies and internal headers never reach the browser
    # (the Jupyter server may set its own login cookie, never the service's)
    assert "service-session" not in r.headers.get("Set-Cookie", "")
    assert "X-Internal" not in r.headers
    assert r.headers["ETag"] == '"v1"'
    assert r.headers["Content-Type"] == "application/json; charset=UTF-8"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_mutating_methods_forward_method_and_body_byte_for_byte(jpserver, standin, method):
    body = '{"name": "wing", "note": "caf\u00e9 \\u2603", "n": 1.50}'.encode()
    r = api(
        jpserver,
        method,
        "/echo/organization/admin/groups",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["method"] == method
    seen = standin.requests[-1]
    assert seen["method"] == method
    assert seen["body"] == body
    assert seen["headers"]["Content-Type"] == "application/json"


@pytest.mark.parametrize("status", [201, 400, 403, 404, 409, 429, 500])
def test_status_and_json_body_come_back_unchanged(jpserver, status):
    method = "POST" if status == 201 else "GET"
    r = api(jpserver, method, f"/status/{status}", json={} if method == "POST" else None)
    assert r.status_code == status
    assert r.json() == {"message": f"the service says {status}", "reason": f"r{status}"}
    if status == 429:
        assert r.headers["Retry-After"] == "7"


def test_empty_204_stays_empty(jpserver):
    r = api(jpserver, "DELETE", "/status/204")
    assert r.status_code == 204
    assert r.content == b""


def test_large_answer_arrives_whole(jpserver):
    r = api(jpserver, "GET", "/big")
    assert r.status_code == 200
    rows = r.json()
    assert len(rows) == 3000 and rows[-1]["i"] == 2999
    assert len(r.content) > 250_000


def test_body_over_the_limit_is_refused_before_the_service(jpserver, standin):
    before = len(standin.requests)
    r = api(
        jpserver,
        "POST",
        "/echo/x",
        data=b"{" + b" " * 5000 + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 413
    assert r.json()["reason"] == "body_too_large"
    assert "at most 4096" in r.json()["message"]
    assert len(standin.requests) == before


@pytest.mark.parametrize("path", ["/echo/%2e%2e/oauth_callback", "/echo/a/%2E/b", "/echo/a%5Cb"])
def test_dot_segments_and_backslashes_are_refused(jpserver, standin, path):
    before = len(standin.requests)
    r = api(jpserver, "GET", path)
    assert r.status_code == 400
    assert r.json()["reason"] == "bad_path"
    assert len(standin.requests) == before


def test_without_login_nothing_is_forwarded(jpserver, standin):
    before = len(standin.requests)
    r = requests.get(jpserver.url + "heroes/api/v1/echo/x", timeout=30)
    assert r.status_code == 403
    assert r.json() == {
        "message": "You are not logged in to this Jupyter server: reload the page to log in again",
        "reason": "not_authenticated",
    }
    assert len(standin.requests) == before


def test_xsrf_is_required_on_cookie_authenticated_changes(jpserver, standin):
    s = requests.Session()
    # log in with the token once: the server then knows the browser by its cookie
    assert s.get(jpserver.url + f"api/status?token={jpserver.token}", timeout=30).status_code == 200
    s.get(jpserver.url + "tree", timeout=30)  # a page sets the _xsrf cookie
    xsrf = s.cookies.get("_xsrf")
    assert xsrf
    before = len(standin.requests)
    r = s.post(jpserver.url + "heroes/api/v1/echo/x", json={"a": 1}, timeout=30)
    assert r.status_code == 403
    assert r.json()["reason"] == "xsrf"
    assert "reload the page" in r.json()["message"]
    assert len(standin.requests) == before
    r = s.post(
        jpserver.url + "heroes/api/v1/echo/x", json={"a": 1}, headers={"X-XSRFToken": xsrf}, timeout=30
    )
    assert r.status_code == 200
    assert r.json()["body"] == '{"a": 1}'
    # a cookie-authenticated GET needs no token (JupyterLab's fetches send it anyway)
    assert s.get(jpserver.url + "heroes/api/v1/echo/y", timeout=30).status_code == 200
    # the refusal reads the body first, so the browser's kept-alive connection stays usable
    u = urlsplit(jpserver.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    cookie = "; ".join(f"{c.name}={c.value}" for c in s.cookies)
    try:
        for token, status in ((None, 403), (xsrf, 200)):
            headers = {"Cookie": cookie, "Content-Type": "application/json"}
            if token:
                headers["X-XSRFToken"] = token
            conn.request("POST", u.path + "heroes/api/v1/echo/z", body=b'{"b": 2}', headers=headers)
            answer = conn.getresponse()
            answer.read()
            assert answer.status == status
    finally:
        conn.close()


def test_no_api_path(jpserver):
    r = api(jpserver, "GET", "/")
    assert r.status_code == 404
    assert r.json()["reason"] == "not_found"


def test_proxy_error_pages_become_json(jpserver):
    r = api(jpserver, "GET", "/html/503")
    assert r.status_code == 503
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json()["reason"] == "service_unavailable"
    assert "retry in a moment" in r.json()["message"]
    r = api(jpserver, "GET", "/html/404")
    assert r.status_code == 502
    assert r.json()["reason"] == "service_not_found"
    assert "c.HeroesExtension.service_url" in r.json()["message"]
    assert "proxy error page" in jpserver.log_text  # the operator sees what came back


def test_slow_service_answers_504_in_time(jpserver):
    t0 = time.monotonic()
    r = api(jpserver, "GET", "/slow")
    elapsed = time.monotonic() - t0
    assert r.status_code == 504
    assert r.json()["reason"] == "service_timeout"
    assert elapsed < 5, f"took {elapsed:.1f}s with request_timeout=2"


def test_event_stream_arrives_as_it_is_sent_and_closes_upstream_when_the_browser_leaves(jpserver, standin):
    t0 = time.monotonic()
    r = requests.get(
        jpserver.url + "heroes/api/v1/events",
        headers={**jpserver.auth, "Accept": "text/event-stream", "Last-Event-ID": "3"},
        stream=True,
        timeout=30,
    )
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "text/event-stream"
    assert r.headers["Cache-Control"] == "no-cache"
    events, arrived = [], []
    for line in r.iter_lines(chunk_size=1):
        if line.startswith(b"data: "):
            events.append(json.loads(line[6:]))
            arrived.append(time.monotonic() - t0)
            if len(events) == 3:
                break
    assert [e["n"] for e in events] == [0, 1, 2]
    # streamed, not buffered: the third event came well before the stand-in ever ends the answer
    assert arrived[0] < 1.5 and arrived[2] < 3
    assert standin.seen("/events")[-1]["headers"]["Last-Event-Id"] == "3"
    assert standin.open_streams == 1
    closed = standin.closed_streams
    r.close()  # the browser leaves
    wait_until(
        lambda: standin.closed_streams > closed and standin.open_streams == 0, 10, "upstream stream closed"
    )


def test_a_broken_stream_ends_the_answer(jpserver):
    r = requests.get(
        jpserver.url + "heroes/api/v1/broken-stream",
        headers={**jpserver.auth, "Accept": "text/event-stream"},
        stream=True,
        timeout=30,
    )
    assert r.status_code == 200
    data = b""
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for chunk in r.iter_content(chunk_size=None):
            data += chunk
    assert b'"state": "queued"' in data


def test_service_down_gives_503_json_then_recovers(jpserver, standin: StandIn):
    assert api(jpserver, "GET", "/echo/before").status_code == 200
    standin.stop()
    try:
        t0 = time.monotonic()
        r = api(jpserver, "GET", "/echo/during")
        assert time.monotonic() - t0 < 5
        assert r.status_code == 503
        assert r.json() == {
            "message": "The HEROES service cannot be reached right now (it may be restarting); retry in a "
            "moment. If this persists, ask your administrator (the Jupyter server log has details).",
            "reason": "service_unreachable",
        }
        assert "unreachable for GET /echo/during" in jpserver.log_text
    finally:
        standin.start()
    r = api(jpserver, "GET", "/echo/after")
    assert r.status_code == 200
    assert r.json()["path"].endswith("/echo/after")
    assert UPSTREAM_TOKEN not in jpserver.log_text
