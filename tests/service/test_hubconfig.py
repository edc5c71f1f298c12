"""``install_heroes(c)``: what it adds to a hub config, idempotently, without clobbering (pure)."""

from __future__ import annotations

import sys
from pathlib import Path

from traitlets.config import Config

from jupyter_heroes import roles
from jupyter_heroes.hubconfig import ACCESS_SCOPE, install_heroes


def test_registers_service_scopes_and_roles() -> None:
    c = Config()
    svc = install_heroes(
        c,
        db_url="sqlite:///x.sqlite",
        port=12345,
        platform_admins=["alice", "bob"],
        crypt_key="k",
        extra_env={"X": "1"},
        extra_args=["--HeroesService.max_body_size=2048"],
    )
    [service] = c.JupyterHub.services
    assert service is svc
    assert service["name"] == "heroes" and service["url"] == "http://127.0.0.1:12345"
    assert service["command"][:3] == [sys.executable, "-m", "jupyter_heroes.service"]
    assert "--HeroesService.max_body_size=2048" in service["command"]
    env = service["environment"]
    assert env["HEROES_DB_URL"] == "sqlite:///x.sqlite" and env["HEROES_PLATFORM_ADMINS"] == "alice,bob"
    assert env["HEROES_CRYPT_KEY"] == "k" and env["X"] == "1"
    assert set(c.JupyterHub.custom_scopes) == set(roles.SCOPES)
    by_name = {r["name"]: r for r in c.JupyterHub.load_roles}
    assert by_name["user"]["scopes"] == ["self", ACCESS_SCOPE]
    assert by_name["heroes-service"]["services"] == ["heroes"]


def test_merges_with_existing_config_and_is_idempotent() -> None:
    c = Config()
    c.JupyterHub.services = [{"name": "other", "url": "http://127.0.0.1:1"}]
    c.JupyterHub.custom_scopes = {"custom:mine:x": {"description": "mine"}}
    c.JupyterHub.load_roles = [
        {"name": "user", "scopes": ["self", "access:servers!user"]},
        {"name": "ops", "users": ["carol"], "scopes": ["admin:users"]},
    ]
    for _ in range(3):
        install_heroes(c, port=1)
    assert [s["name"] for s in c.JupyterHub.services] == ["other", "heroes"]
    assert (
        "custom:mine:x" in c.JupyterHub.custom_scopes and "custom:heroes:submit" in c.JupyterHub.custom_scopes
    )
    by_name = {r["name"]: r for r in c.JupyterHub.load_roles}
    assert by_name["user"]["scopes"] == ["self", "access:servers!user", ACCESS_SCOPE]
    assert by_name["ops"] == {"name": "ops", "users": ["carol"], "scopes": ["admin:users"]}
    assert len(c.JupyterHub.load_roles) == 3


def test_crypt_key_file_is_created_once(tmp_path: Path) -> None:
    keyfile = tmp_path / "heroes_crypt_key"
    c = Config()
    k1 = install_heroes(c, crypt_key_file=str(keyfile))["environment"]["HEROES_CRYPT_KEY"]
    k2 = install_heroes(c, crypt_key_file=str(keyfile))["environment"]["HEROES_CRYPT_KEY"]
    assert k1 == k2 and len(k1) == 44
    assert keyfile.stat().st_mode & 0o777 == 0o600


def test_user_servers_may_call_the_service():
    from traitlets.config import Config

    from jupyter_heroes.hubconfig import install_heroes

    c = Config()
    c.JupyterHub.base_url = "/jh/"
    c.Spawner.environment = {"KEEP": "1"}
    install_heroes(c, port=10555)
    assert "access:services!service=heroes" in c.Spawner.server_token_scopes
    assert "access:servers!server" in c.Spawner.server_token_scopes  # the defaults are kept
    assert c.Spawner.environment == {
        "KEEP": "1",
        "HEROES_SERVICE_URL": "http://127.0.0.1:10555/jh/services/heroes/",
    }
    install_heroes(c, port=10555)  # idempotent
    assert c.Spawner.server_token_scopes.count("access:services!service=heroes") == 1
