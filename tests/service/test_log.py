"""ECS JSON log lines and the redaction of secrets (pure, no services)."""

from __future__ import annotations

import io
import json
import logging

import pytest

from jupyter_heroes.log import ecs, redact_text, redact_value, setup_logging, strip_query

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n-----END OPENSSH PRIVATE KEY-----"


@pytest.fixture
def capture() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handlers = setup_logging(logging.DEBUG, stream=stream, loggers=("heroes.test",))
    yield logging.getLogger("heroes.test"), stream
    lg = logging.getLogger("heroes.test")
    for h in handlers:
        lg.removeHandler(h)


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(ln) for ln in stream.getvalue().splitlines()]


def test_ecs_shape(capture: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = capture
    log.info(
        "created %s",
        "wing",
        extra=ecs(
            "group.create",
            "success",
            organization="acme",
            project="wing",
            user="alice",
            method="POST",
            path="/x?token=abc",
            status=201,
        ),
    )
    [d] = lines(stream)
    assert d["message"] == "created wing" and d["log.level"] == "info"
    assert d["@timestamp"].endswith("Z") and d["ecs.version"]
    assert d["event"] == {"action": "group.create", "outcome": "success"}
    assert d["heroes"] == {"organization": "acme", "project": "wing"}
    assert d["user"] == {"name": "alice"}
    assert d["http"] == {"request": {"method": "POST"}, "response": {"status_code": 201}}
    assert d["url"] == {"path": "/x", "query": "token=[redacted]"}
    assert d["log"]["logger"] == "heroes.test"


def test_secrets_are_redacted_everywhere(capture: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = capture
    log.warning("key %s", KEY)
    log.warning("header Authorization: token 0123456789abcdef0123456789abcdef")
    log.warning("body %s", {"secret_key": "s3cr3t-value", "password": "hunter2", "name": "ok"})
    log.info("x", extra={"heroes.detail": {"client_secret": "cs-123", "private_key": KEY, "n": 1}})
    try:
        raise ValueError(f"boom with password=hunter2 and {KEY}")
    except ValueError:
        log.exception("failed")
    out = stream.getvalue()
    for secret in (
        "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ",
        "0123456789abcdef0123456789abcdef",
        "s3cr3t-value",
        "hunter2",
        "cs-123",
    ):
        assert secret not in out, secret
    docs = lines(stream)
    assert "'name': 'ok'" in docs[2]["message"]
    assert docs[3]["heroes"]["detail"] == {"client_secret": "[redacted]", "private_key": "[redacted]", "n": 1}
    assert docs[4]["error"]["type"] == "ValueError" and "Traceback" in docs[4]["error"]["stack_trace"]
    assert "[redacted private key]" in docs[4]["error"]["stack_trace"]


def test_strip_query_keeps_harmless_parameters() -> None:
    url = "/services/heroes/api/v1/x?organization=acme&token=t0k&code=c&state=s&limit=5"
    out = strip_query(url)
    assert "organization=acme" in out and "limit=5" in out
    assert "t0k" not in out and "code=c" not in out and "state=s" not in out
    assert strip_query("/plain/path") == "/plain/path"


def test_a_line_stays_one_line(capture: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = capture
    log.info("odd \u2028 separators \x85 and\nnewlines", extra=ecs(path="/p\u2029q"))
    out = stream.getvalue()
    assert out.count("\n") == 1 and len(out.splitlines()) == 1
    assert json.loads(out)["message"] == "odd \u2028 separators \x85 and\nnewlines"


def test_redact_value_and_text() -> None:
    assert redact_value({"api_token": "x", "nested": [{"password": "p"}]}) == {
        "api_token": "[redacted]",
        "nested": [{"password": "[redacted]"}],
    }
    assert redact_text("client_secret=abc&x=1") == "client_secret=[redacted]&x=1"
    assert redact_text('{"secret_key": "abc"}') == '{"secret_key": "[redacted]"}'
    assert redact_text("nothing to hide here") == "nothing to hide here"
