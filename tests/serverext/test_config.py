"""Configuration of the server extension: where the service is, which token, validation."""

from __future__ import annotations

import pytest
from traitlets import TraitError

from jupyter_heroes.serverext import HeroesExtension, default_service_url
from jupyter_heroes.serverext.upstream import ProxyError, ServiceUpstream


@pytest.mark.parametrize(
    ("env", "url"),
    [
        ({}, ""),
        ({"HEROES_SERVICE_URL": "http://svc:10101/services/heroes/"}, "http://svc:10101/services/heroes/"),
        (
            {
                "HEROES_SERVICE_URL": "http://explicit/",
                "JUPYTERHUB_PUBLIC_HUB_URL": "https://hub.example.org/prefix/hub/",
            },
            "http://explicit/",
        ),
        (
            {
                "JUPYTERHUB_PUBLIC_HUB_URL": "https://hub.example.org/prefix/hub/",
                "JUPYTERHUB_BASE_URL": "/prefix/",
                "JUPYTERHUB_SERVICE_PREFIX": "/prefix/user/ada/",
            },
            "https://hub.example.org/prefix/services/heroes/",
        ),
        (
            {"JUPYTERHUB_PUBLIC_HUB_URL": "http://127.0.0.1:8000/hub/"},
            "http://127.0.0.1:8000/services/heroes/",
        ),
        # without the hub's public address the service cannot be found from the server's environment
        ({"JUPYTERHUB_BASE_URL": "/", "JUPYTERHUB_API_URL": "http://127.0.0.1:8081/hub/api"}, ""),
    ],
)
def test_default_service_url(env, url):
    assert default_service_url(env) == url


def test_traits_default_from_the_environment(monkeypatch):
    monkeypatch.setenv("HEROES_SERVICE_URL", "http://127.0.0.1:10101/services/heroes")
    monkeypatch.delenv("HEROES_API_TOKEN", raising=False)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "server-token")
    ext = HeroesExtension()
    assert ext.service_url == "http://127.0.0.1:10101/services/heroes/"  # a slash is added
    assert ext.api_token == "server-token"
    monkeypatch.setenv("HEROES_API_TOKEN", "explicit-token")
    assert HeroesExtension().api_token == "explicit-token"


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("ftp://svc/", "must be an http:// or https:// URL"),
        ("127.0.0.1:10101", "must be an http:// or https:// URL"),
        ("http://user:pw@svc/", "must not hold a query, fragment or credentials"),
        ("http://svc/?token=x", "must not hold a query, fragment or credentials"),
    ],
)
def test_bad_service_url_names_the_setting(value, match):
    with pytest.raises(TraitError, match=match):
        HeroesExtension(service_url=value)


def test_bad_limits_are_refused():
    with pytest.raises(TraitError, match="c.HeroesExtension.request_timeout must be a positive"):
        HeroesExtension(request_timeout=0)
    with pytest.raises(TraitError, match="max_body_size must be at least 1024 bytes"):
        HeroesExtension(max_body_size=10)


def test_every_option_has_help():
    traits = HeroesExtension.class_traits(config=True)
    own = [n for n, t in traits.items() if t.this_class is HeroesExtension]
    assert {"service_url", "api_token", "connect_timeout", "request_timeout", "max_body_size"} <= set(own)
    for name in own:
        assert len(traits[name].help) > 30, name


def test_unknown_service_url_answers_503_not_configured(monkeypatch):
    monkeypatch.delenv("HEROES_SERVICE_URL", raising=False)
    monkeypatch.delenv("JUPYTERHUB_PUBLIC_HUB_URL", raising=False)
    with pytest.raises(ProxyError) as e:
        HeroesExtension().upstream()
    assert (e.value.status, e.value.reason) == (503, "not_configured")
    assert "HEROES_SERVICE_URL" in e.value.message and "c.HeroesExtension.service_url" in e.value.message


async def test_without_a_token_nothing_is_sent():
    up = ServiceUpstream("http://127.0.0.1:9/services/heroes/", "")
    with pytest.raises(ProxyError) as e:
        async with up.open("GET", "/organization/auth/me"):
            pass
    assert (e.value.status, e.value.reason) == (503, "no_token")
    assert up._client is None  # no connection was even prepared
