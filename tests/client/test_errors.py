"""How the client's choke point handles answers that are not the service's JSON: a stand-in HTTP server
plays the hub's proxy while the service is away (HTML 503), a broken answer, and a service error.
(A stand-in because stopping the shared hub's service would disturb the other tests; the real
service's JSON errors are tested in test_client.py.)"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from jupyter_heroes.client import HeroesClient, HeroesError


class StandIn:
    def __init__(self) -> None:
        #: queued answers (status, content type, body); the last one repeats
        self.answers: list[tuple[int, str, bytes]] = []
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.bodies: list[bytes] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                stand_in.requests.append((self.command, self.path, dict(self.headers)))
                stand_in.bodies.append(body)
                status, ctype, body = (
                    stand_in.answers.pop(0) if len(stand_in.answers) > 1 else stand_in.answers[0]
                )
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/heroes/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    s = StandIn()
    yield s
    s.server.shutdown()
    s.server.server_close()


HTML_503 = (503, "text/html", b"<html><body>503: Service Unavailable</body></html>")


def test_gets_are_retried_while_the_proxy_answers_503(stand_in):
    stand_in.answers = [HTML_503, HTML_503, (200, "application/json", b'{"name": "ada"}')]
    c = HeroesClient(stand_in.url, "tok-123", "acme", retries=2)
    assert c.me() == {"name": "ada"}
    assert [r[:2] for r in stand_in.requests] == [("GET", "/services/heroes/api/v1/organization/auth/me")] * 3
    headers = stand_in.requests[0][2]
    assert headers["Authorization"] == "token tok-123"
    assert headers["X-Heroes-Organization"] == "acme"


def test_a_post_is_not_retried_and_the_message_says_what_to_do(stand_in):
    stand_in.answers = [HTML_503]
    c = HeroesClient(stand_in.url, "tok", retries=2)
    with pytest.raises(
        HeroesError, match=r"the HEROES service is not available \(503 .*try again in a minute"
    ) as e:
        c.submit("t", cluster="c")
    assert e.value.transient and e.value.status == 503 and e.value.reason == "http_503"
    assert len(stand_in.requests) == 1


def test_the_services_json_error_is_passed_on_untouched(stand_in):
    body = {"message": "internal error in the HEROES service; retry later", "reason": "internal_error"}
    stand_in.answers = [(500, "application/json", json.dumps(body).encode())]
    c = HeroesClient(stand_in.url, "tok", retries=0)
    with pytest.raises(HeroesError) as e:
        c.instances()
    assert (e.value.message, e.value.reason, e.value.status) == (body["message"], "internal_error", 500)


def test_malformed_json_and_foreign_errors(stand_in):
    stand_in.answers = [(200, "application/json", b"{not json")]
    c = HeroesClient(stand_in.url, "tok", retries=0)
    with pytest.raises(HeroesError, match="malformed JSON") as e:
        c.me()
    assert e.value.reason == "bad_response"
    stand_in.answers = [(404, "text/html", b"<h1>Not Found</h1>")]
    with pytest.raises(HeroesError, match="with 404 and no JSON error; check that http://127.0.0.1") as e:
        c.me()
    assert e.value.reason == "http_404"
    stand_in.answers = [(403, "text/html", b"<h1>Forbidden</h1>")]
    with pytest.raises(HeroesError, match=r"needs the scope access:services!service=heroes") as e:
        c.me()


def test_a_silent_service_times_out(stand_in):
    gate = threading.Event()
    stand_in.server.RequestHandlerClass.do_GET = lambda self: gate.wait(5)  # never answers in time
    c = HeroesClient(stand_in.url, "tok", timeout=0.5, retries=0)
    with pytest.raises(HeroesError, match="did not answer GET /organization/auth/me in time") as e:
        c.me()
    gate.set()
    assert e.value.reason == "timeout" and e.value.transient


def test_a_netrc_entry_never_replaces_the_token(stand_in, tmp_path, monkeypatch):
    """requests would send ~/.netrc credentials for the host instead of our Authorization header."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password other-secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    stand_in.answers = [(200, "application/json", b"{}")]
    HeroesClient(stand_in.url, "tok-abc").me()
    assert stand_in.requests[0][2]["Authorization"] == "token tok-abc"
