"""Where the client finds the service and its token, and how it refuses to start without them (no
service needed)."""

from __future__ import annotations

import pytest

from jupyter_heroes.client import (
    HeroesClient,
    HeroesError,
    default_service_url,
    default_token,
    service_root,
    typed_params,
)


@pytest.mark.parametrize(
    ("env", "url"),
    [
        (
            {"HEROES_SERVICE_URL": "http://127.0.0.1:10101/services/heroes/"},
            "http://127.0.0.1:10101/services/heroes/",
        ),
        (
            {
                "HEROES_SERVICE_URL": "https://x.example/services/heroes/",
                "JUPYTERHUB_PUBLIC_HUB_URL": "https://hub.example/hub/",
            },
            "https://x.example/services/heroes/",
        ),
        (
            {"JUPYTERHUB_PUBLIC_HUB_URL": "https://hub.example/jh/hub/", "JUPYTERHUB_BASE_URL": "/jh/"},
            "https://hub.example/jh/services/heroes/",
        ),
        (
            {"JUPYTERHUB_API_URL": "http://proxy-public:8000/hub/api", "JUPYTERHUB_BASE_URL": "/"},
            "http://proxy-public:8000/services/heroes/",
        ),
        (
            {"JUPYTERHUB_API_URL": "http://10.0.0.1:8081/base/hub/api", "JUPYTERHUB_BASE_URL": "/base"},
            "http://10.0.0.1:8081/base/services/heroes/",
        ),
        ({}, ""),
        ({"JUPYTERHUB_API_URL": "not a url"}, ""),
    ],
)
def test_default_service_url(env, url):
    assert default_service_url(env) == url


def test_default_token_prefers_the_heroes_token():
    assert default_token({"JUPYTERHUB_API_TOKEN": "a"}) == "a"
    assert default_token({"JUPYTERHUB_API_TOKEN": "a", "HEROES_API_TOKEN": "b"}) == "b"
    assert default_token({}) == ""


@pytest.mark.parametrize(
    ("url", "root"),
    [
        ("http://h:1/services/heroes", "http://h:1/services/heroes/"),
        ("http://h:1/services/heroes/api/v1", "http://h:1/services/heroes/"),
        ("http://h:1/services/heroes/api/v1/", "http://h:1/services/heroes/"),
        ("https://h/", "https://h/"),
    ],
)
def test_service_root(url, root):
    assert service_root(url) == root


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("ftp://h/x", "not an http:// or https:// URL"),
        ("h:1/services/heroes", "not an http:// or https:// URL"),
        ("http://u:p@h/services/heroes/", "must not hold a query, fragment or credentials"),
        ("http://h/services/heroes/?token=x", "must not hold a query"),
    ],
)
def test_bad_service_urls_are_refused(url, match):
    with pytest.raises(HeroesError, match=match) as e:
        HeroesClient(url, "t")
    assert e.value.reason == "no_service_url"


def test_missing_url_or_token_says_what_to_set(monkeypatch):
    for name in (
        "HEROES_SERVICE_URL",
        "JUPYTERHUB_PUBLIC_HUB_URL",
        "JUPYTERHUB_API_URL",
        "HEROES_API_TOKEN",
        "JUPYTERHUB_API_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(HeroesError, match=r"Set \$HEROES_SERVICE_URL to https://<hub>/services/heroes/") as e:
        HeroesClient()
    assert e.value.reason == "no_service_url"
    with pytest.raises(HeroesError, match=r"set \$JUPYTERHUB_API_TOKEN") as e:
        HeroesClient("http://127.0.0.1:1/services/heroes/")
    assert e.value.reason == "no_token"
    monkeypatch.setenv("JUPYTERHUB_API_URL", "http://127.0.0.1:8081/hub/api")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "secret-token-value")
    monkeypatch.setenv("HEROES_ORGANIZATION", "acme")
    c = HeroesClient()
    assert c.api_url == "http://127.0.0.1:8081/services/heroes/api/v1"
    assert c.organization == "acme"
    assert "secret-token-value" not in repr(c)


TEMPLATE = {
    "parameters": {
        "n": {"type": "integer"},
        "x": {"type": "number"},
        "flag": {"type": "boolean"},
        "label": {"type": "string"},
    }
}


@pytest.mark.parametrize(
    ("raw", "typed"),
    [
        ({"n": "12"}, {"n": 12}),
        ({"n": "1_000"}, {"n": 1000}),
        ({"n": "-3"}, {"n": -3}),
        ({"n": "1.5"}, {"n": "1.5"}),  # left for the service to refuse, naming 'n'
        ({"n": "1; rm -rf /"}, {"n": "1; rm -rf /"}),
        ({"x": "2.5"}, {"x": 2.5}),
        ({"x": "1e3"}, {"x": 1000.0}),
        ({"flag": "yes"}, {"flag": True}),
        ({"flag": "False"}, {"flag": False}),
        ({"flag": "maybe"}, {"flag": "maybe"}),
        ({"label": "42"}, {"label": "42"}),
        ({"unknown": "7"}, {"unknown": "7"}),
        ({"n": 5}, {"n": 5}),
    ],
)
def test_typed_params(raw, typed):
    assert typed_params(TEMPLATE, raw) == typed
