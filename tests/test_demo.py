"""``heroes demo``: one command starts JupyterHub with HEROES and demo data; a demo user logs in and
reaches the service. The demo runs as a real subprocess on free ports and is stopped by PID."""

from __future__ import annotations

import json
import re
import shutil
import stat
import subprocess
import sys
import time

import pytest
import requests
from sqlalchemy import select

from jupyter_heroes import dbutil, demo, orm
from jupyter_heroes.testing.base import free_port, pid_alive, port_open, read_pidfile, stop_pid, wait_for


def test_prepare_is_idempotent_and_provisions_one_user_per_role(tmp_path):
    st, users = demo.prepare(tmp_path / "state")
    assert set(users) == set(demo.DEMO_USERS)
    assert stat.S_IMODE(st.users_file.stat().st_mode) == 0o600
    st2, users2 = demo.prepare(tmp_path / "state")
    assert {n: u["password"] for n, u in users2.items()} == {n: u["password"] for n, u in users.items()}
    engine = dbutil.make_engine(st.db_url)
    dbutil.check_schema(engine)
    with dbutil.session_scope(dbutil.session_factory(engine)) as s:
        kinds = {o.name: o.kind for o in s.scalars(select(orm.Organization))}
        assert kinds == {"acme": "client", "heroes": "platform", "hpc-vendor": "provider"}
        held = set(
            s.execute(
                select(orm.User.name, orm.Organization.name, orm.RoleAssignment.role)
                .join(orm.RoleAssignment, orm.RoleAssignment.user_id == orm.User.id)
                .join(orm.Organization, orm.Organization.id == orm.RoleAssignment.org_id)
            ).all()
        )
        # every user holds exactly the role it is named after, in the right organization
        expected = {(n, roles[0].split(":")[0], n) for n, (_, roles) in demo.DEMO_USERS.items()}
        assert held == expected
        clusters = s.scalars(select(orm.Cluster)).all()
        assert [(c.name, c.transport, c.scheduler) for c in clusters] == [("local", "local", "local")]
    engine.dispose()


def _heroes_argv() -> list[str]:
    exe = shutil.which("heroes")
    return [exe] if exe else [sys.executable, "-m", "jupyter_heroes.cli"]


@pytest.mark.hub
@pytest.mark.timeout(300)
def test_heroes_demo_login_home_and_service(tmp_path):
    if shutil.which("configurable-http-proxy") is None:
        pytest.fail("configurable-http-proxy is not installed (npm install -g configurable-http-proxy)")
    state = tmp_path / "demo"
    port = free_port()
    log = tmp_path / "demo.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*_heroes_argv(), "demo", "--state-dir", str(state), "--ip", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            assert proc.poll() is None, f"heroes demo exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            return requests.get(f"{base}/hub/login", timeout=2).status_code == 200

        wait_for(up, 150, "heroes demo", log)
        text = log.read_text()
        assert f"Open http://127.0.0.1:{port}/" in text
        # the banner prints one line per role with its password
        found = dict(re.findall(r"^\s+([a-z-]+)\s+password (\S+)\s+\(", text, re.M))
        assert set(found) == set(demo.DEMO_USERS)
        assert found == {
            n: u["password"] for n, u in json.loads((state / "demo-users.json").read_text())["users"].items()
        }

        s = requests.Session()
        r = s.get(f"{base}/hub/login", timeout=10)
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', r.text).group(1)
        bad = s.post(
            f"{base}/hub/login",
            data={"username": "researcher", "password": "wrong", "_xsrf": xsrf},
            timeout=10,
        )
        assert "/hub/home" not in bad.url
        r = s.post(
            f"{base}/hub/login",
            data={"username": "researcher", "password": found["researcher"], "_xsrf": xsrf},
            timeout=30,
        )
        assert r.status_code == 200 and r.url == f"{base}/hub/home", (r.status_code, r.url)
        assert "researcher" in r.text

        # a token made on the user's behalf (what the hub's token page does), then the service through the proxy
        tok = s.post(
            f"{base}/hub/api/users/researcher/tokens",
            json={"note": "test_demo", "expires_in": 600},
            headers={
                "X-XSRFToken": s.cookies.get("_xsrf", path="/hub/") or "",
                "Referer": f"{base}/hub/token",
            },
            timeout=30,
        )
        assert tok.status_code == 201, tok.text[:500]
        me = requests.get(
            f"{base}/services/heroes/api/v1/organization/auth/me",
            headers={"Authorization": f"token {tok.json()['token']}"},
            timeout=60,
        )
        assert me.status_code == 200, me.text[:500]
        body = me.json()
        assert body["name"] == "researcher"
        acme = {o["name"]: o for o in body["organizations"]}["acme"]
        assert acme["roles"] == [{"name": "researcher", "source": "idp"}]
        assert sorted(p["name"] for p in acme["projects"]) == ["crash-sim", "weather"]
        assert "custom:heroes:submit" in acme["scopes"]

        # the dashboards: the hub lets an org admin into the admin app and keeps the researcher out
        assert f"Admin dashboard: {base}/services/heroes-admin/" in text
        refused = s.get(f"{base}/services/heroes-admin/", timeout=60)
        assert refused.status_code == 403, (refused.status_code, refused.url)
        admin = requests.Session()
        r = admin.get(f"{base}/hub/login", timeout=10)
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', r.text).group(1)
        admin.post(
            f"{base}/hub/login",
            data={"username": "org-admin", "password": found["org-admin"], "_xsrf": xsrf},
            timeout=30,
        )
        page = admin.get(f"{base}/services/heroes-admin/", timeout=120)
        assert page.status_code == 200, (page.status_code, page.url, page.text[:300])
        assert "voila" in page.text.lower()
        proxy_pid = read_pidfile(state / "jupyterhub-proxy.pid")
        assert proxy_pid and pid_alive(proxy_pid)
    finally:
        stop_pid(proc.pid, grace=30)
    # the hub took its proxy and its service down with it
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and port_open(port):
        time.sleep(0.2)
    assert not port_open(port)
    assert not pid_alive(proxy_pid)


def test_heroes_upgrade_db(tmp_path):
    url = f"sqlite:///{tmp_path / 'h.sqlite'}"
    first = subprocess.run(
        [*_heroes_argv(), "upgrade-db", "--db-url", url], capture_output=True, text=True, timeout=120
    )
    assert first.returncode == 0, first.stderr
    assert f"schema upgraded from empty to {dbutil.head_revision()}" in first.stdout
    engine = dbutil.make_engine(url)
    dbutil.check_schema(engine)
    engine.dispose()
    again = subprocess.run(
        [*_heroes_argv(), "upgrade-db", "--db-url", url], capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0 and "nothing to do" in again.stdout
    bad = subprocess.run(
        [*_heroes_argv(), "upgrade-db", "--db-url", f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/x"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1
    assert bad.stderr.startswith("heroes upgrade-db: ") and "Traceback" not in bad.stderr


def test_heroes_cli_help_and_argument_errors():
    top = subprocess.run([*_heroes_argv(), "--help"], capture_output=True, text=True, timeout=60)
    assert top.returncode == 0 and all(c in top.stdout for c in ("demo", "upgrade-db", "service"))
    bogus = subprocess.run([*_heroes_argv(), "demo", "--bogus"], capture_output=True, text=True, timeout=60)
    assert bogus.returncode == 2 and "unrecognized arguments: --bogus" in bogus.stderr
    # every argument after `service` goes to the service application, --help included
    svc = subprocess.run([*_heroes_argv(), "service", "--help"], capture_output=True, text=True, timeout=60)
    assert svc.returncode == 0 and "HeroesService" in svc.stdout
