"""No secret in any answer or log line; errors are always ``{message, reason}`` without a traceback.

Runs over everything the session has sent so far (``HubTestbed.transcript``) plus its own calls that
try to make the service echo secrets back (errors around a submitted private key or secret key). The
file name makes it run after the other service tests, so it checks what they all produced.
"""

from __future__ import annotations

import json

from jupyter_heroes.testing.plugin_hub import PLATFORM_ADMIN

from .conftest import ACME, World, ssh_keypair


def _provoke(world: World) -> None:
    """Calls that carry secrets and fail in various ways, or read back what holds them."""
    private, public = ssh_keypair()
    world.secrets["private_key_3"] = private
    base = {
        "name": "leaky",
        "host": "h.example.org",
        "username": "svc",
        "host_key": public,
        "private_key": private,
    }
    world.call("acme-admin", "POST", "/organization/admin/cluster", {**base, "port": "22"})
    world.call("acme-admin", "POST", "/organization/admin/cluster", {**base, "bogus": private})
    world.call(
        "acme-admin", "POST", "/organization/admin/cluster", {**base, "private_key": private + "x" * 20000}
    )
    world.call("acme-admin", "POST", "/organization/admin/cluster", {**base, "private_key": private[:200]})
    world.call("acme-admin", "POST", "/organization/admin/cluster", {**base, "host_key": private})
    world.call("acme-res", "POST", "/organization/admin/cluster", base)
    world.ok("acme-admin", "POST", "/organization/admin/cluster", base, status=201)
    world.call("acme-admin", "POST", "/organization/admin/cluster", base)  # 409
    world.ok("acme-admin", "GET", "/organization/admin/cluster")
    s3 = "Sup3r-S3cret-" + public[-20:]
    world.secrets["s3_secret_2"] = s3
    srv = {"endpoint": "127.0.0.1:9000", "access_key": "ak", "secret_key": s3}
    world.call(
        PLATFORM_ADMIN, "POST", f"/heroes/admin/organizations/{ACME}/servers", {**srv, "region": "Bad Region"}
    )
    world.call(
        PLATFORM_ADMIN,
        "POST",
        f"/heroes/admin/organizations/{ACME}/servers",
        {**srv, "secret_key": s3 + " x"},
    )
    world.call("acme-admin", "POST", f"/heroes/admin/organizations/{ACME}/servers", srv)
    world.ok(PLATFORM_ADMIN, "POST", f"/heroes/admin/organizations/{ACME}/servers", srv, status=201)
    world.ok(PLATFORM_ADMIN, "GET", f"/heroes/admin/organizations/{ACME}/servers")
    # tokens in query strings end up in access logs if nobody strips them
    world.hub.api("GET", f"/organization/auth/me?token={world.tokens['acme-res']}", world.tokens["acme-res"])


def secret_values(world: World) -> dict[str, str]:
    out = {}
    for name, value in world.secrets.items():
        if name.startswith("private_key"):
            # the base64 body of a key, line by line (a fragment is as bad as the whole)
            for i, line in enumerate(value.splitlines()[1:-1]):
                if len(line) >= 20:
                    out[f"{name}[{i}]"] = line
        else:
            out[name] = value
    return out


def test_no_secret_in_any_answer_or_log(world: World) -> None:
    _provoke(world)
    secrets = secret_values(world)
    client_secret = world.secrets.get("client_secret")
    for method, path, status, text in world.hub.transcript:
        for name, value in secrets.items():
            if name == "client_secret" and method == "POST" and path.endswith("/clients") and status == 201:
                continue  # shown exactly once, on creation
            assert value not in text, f"{name} appears in the answer to {method} {path} ({status})"
    if client_secret:
        shown = [t for m, p, s, t in world.hub.transcript if client_secret in t]
        assert len(shown) == 1
    for log in (world.hub.service_log, world.hub.hub_log):
        content = log.read_text(errors="replace")
        assert content
        for name, value in secrets.items():
            assert value not in content, f"{name} appears in {log.name}"
        assert "PRIVATE KEY-----\n" not in content


def test_errors_are_json_without_traceback(world: World) -> None:
    for method, path in [
        ("GET", "/nowhere"),
        ("PUT", "/organization/auth/me"),
        ("POST", "/heroes/admin/organizations"),
    ]:
        world.call("acme-res", method, path, {})
    world.call(None, "GET", "/organization/auth/me")
    world.call("acme-admin", "POST", "/organization/admin/groups", data=b"\xff\xfe")
    errors = [(m, p, s, t) for m, p, s, t in world.hub.transcript if s >= 400]
    assert len(errors) >= 5
    for method, path, status, text in errors:
        assert status < 500, f"{method} {path}: {status} {text[:300]}"
        body = json.loads(text)
        assert set(body) == {"message", "reason"}, (method, path, body)
        assert body["message"] and body["reason"]
        assert "Traceback" not in text and 'File "' not in text


def test_service_log_is_ecs_json(world: World) -> None:
    docs = world.service_log_lines()  # every (complete) line is a JSON object
    assert docs
    for d in docs:
        assert {"@timestamp", "log.level", "message", "ecs.version"} <= set(d)
    requests_ = [d for d in docs if d.get("event", {}).get("action") == "http.request"]
    assert requests_
    assert all("?" not in d["url"]["path"] for d in requests_)
    assert any(d.get("user", {}).get("name") == "acme-admin" for d in requests_)
    assert any(d.get("heroes", {}).get("organization") == ACME for d in requests_)
