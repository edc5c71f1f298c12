"""The service process on its own: start-up checks, configuration errors, a hub it cannot reach."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import requests

from jupyter_heroes import dbutil, orm
from jupyter_heroes.marketplace.sample import seed
from jupyter_heroes.testing.base import free_port, wait_for


def service_env(tmp_path: Path, port: int, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTERHUB_", "HEROES_"))}
    env.update(
        JUPYTERHUB_SERVICE_URL=f"http://127.0.0.1:{port}",
        JUPYTERHUB_SERVICE_PREFIX="/services/heroes/",
        JUPYTERHUB_API_URL=f"http://127.0.0.1:{free_port()}/hub/api",  # nothing listens there
        JUPYTERHUB_API_TOKEN="service-token-not-checked-here",
        JUPYTERHUB_CLIENT_ID="service-heroes",
        JUPYTERHUB_SERVICE_NAME="heroes",
        HEROES_LOG_FILE=str(tmp_path / "service.log"),
    )
    env.update(more)
    return env


def run_service(tmp_path: Path, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jupyter_heroes.service", *args],
        env=service_env(tmp_path, free_port(), **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
    )


def test_an_empty_database_is_refused_with_the_upgrade_command(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    cp = run_service(tmp_path, f"--HeroesService.db_url={url}")
    assert cp.returncode == 1
    assert "has no schema yet" in cp.stderr and "heroes upgrade-db --db-url" in cp.stderr
    assert "Traceback" not in cp.stderr


def test_an_outdated_database_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    dbutil.upgrade(url, "0001")
    if dbutil.head_revision() == "0001":
        pytest.skip("only one migration exists, nothing is outdated")
    cp = run_service(tmp_path, f"--HeroesService.db_url={url}")
    assert cp.returncode == 1 and "schema revision 0001" in cp.stderr and "heroes upgrade-db" in cp.stderr


def test_bad_configuration_fails_at_start_naming_the_setting(tmp_path: Path) -> None:
    cp = run_service(tmp_path, "--HeroesService.max_body_size=10")
    assert cp.returncode == 2 and "c.HeroesService.max_body_size must be at least 1024" in cp.stderr
    cp = run_service(tmp_path, "--upgrade-db", HEROES_CRYPT_KEY="not-a-fernet-key")
    assert cp.returncode == 2 and "HEROES_CRYPT_KEY" in cp.stderr and "Fernet.generate_key()" in cp.stderr
    assert "Traceback" not in cp.stderr


def start_service(tmp_path: Path, port: int, *args: str) -> subprocess.Popen:
    """The service as the hub starts it, in the background (its log in tmp_path/service.log)."""
    return subprocess.Popen(
        [sys.executable, "-m", "jupyter_heroes.service", *args],
        env=service_env(tmp_path, port),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen, Path]]:
    port = free_port()
    pidfile = tmp_path / "service.pid"
    proc = start_service(
        tmp_path,
        port,
        "--upgrade-db",
        f"--HeroesService.pid_file={pidfile}",
        "--HeroesService.platform_admins=['alice']",
    )
    url = f"http://127.0.0.1:{port}/services/heroes/api/v1"
    try:
        wait_for(
            lambda: requests.get(f"{url}/openapi.json", timeout=2).ok,
            60,
            "HEROES service",
            tmp_path / "service.log",
        )
        yield url, proc, pidfile
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_standalone_service_without_a_reachable_hub(
    service: tuple[str, subprocess.Popen, Path], tmp_path: Path
) -> None:
    url, proc, pidfile = service
    assert pidfile.read_text().strip() == str(proc.pid)
    # --upgrade-db created the schema in the working directory's default database
    assert (tmp_path / "jupyter_heroes.sqlite").exists()
    r = requests.get(f"{url}/organization/auth/me", timeout=10)
    assert r.status_code == 401 and r.json()["reason"] == "not_authenticated"
    r = requests.get(
        f"{url}/organization/auth/me", headers={"Authorization": "token abcdef0123456789"}, timeout=30
    )
    assert r.status_code == 503, r.text
    assert r.json()["reason"] == "hub_unavailable" and "Traceback" not in r.text
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert not pidfile.exists()
    log = (tmp_path / "service.log").read_text()
    assert "cannot check credentials with the hub" in log and "abcdef0123456789" not in log
    assert "made alice solution-admin" in log


def test_start_rebuilds_the_predictors_of_the_most_recently_active_organizations(tmp_path: Path) -> None:
    """A restarted service reads the recent organizations' history into their runtime predictors by
    itself, beside the API (c.OrgPredictors.warm_orgs), and says so in its log."""
    url = f"sqlite:///{tmp_path / 'history.sqlite'}"
    dbutil.upgrade(url)
    engine = dbutil.make_engine(url)
    end = datetime(2026, 11, 21, 22, 0)
    with dbutil.session_scope(dbutil.session_factory(engine)) as s:
        ids = seed(s)
        for org, jobs in (("acme", 40), ("globex", 25)):
            for i in range(jobs):
                inst = orm.WorkflowInstance(
                    org_id=ids.orgs[org],
                    user_id=ids.users["alice"],
                    template_id=ids.templates[org],
                    state="completed",
                )
                s.add(inst)
                s.flush()
                s.add(
                    orm.Job(
                        instance_id=inst.id,
                        step="main",
                        state="completed",
                        submitted=end - timedelta(hours=i, minutes=30),
                        finished=end - timedelta(hours=i),
                        accounting={"elapsed_s": 1500.0 + i},
                    )
                )
    engine.dispose()
    proc = start_service(
        tmp_path, free_port(), f"--HeroesService.db_url={url}", "--OrgPredictors.warm_orgs=1"
    )
    log = tmp_path / "service.log"
    try:
        # acme's jobs finished last; with room for one organization only acme is rebuilt
        wait_for(lambda: log.exists() and "decision.warmup" in log.read_text(), 60, "predictor warm-up", log)
        line = next(ln for ln in log.read_text().splitlines() if "decision.warmup" in ln)
        assert "runtime predictors of 1 organization(s) ready, 0 of them restored" in line, line
        assert "40 finished jobs read" in line, line
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        # stopping saved acme's predictor beside the database (c.OrgPredictors.state_dir) ...
        state = tmp_path / "heroes-predictors"
        assert [f.name for f in state.iterdir()] == [f"{ids.orgs['acme']}.predictor"]
        assert state.stat().st_mode & 0o777 == 0o700
        assert (state / f"{ids.orgs['acme']}.predictor").stat().st_mode & 0o777 == 0o600
        # ... and the next start restores it instead of reading the 40 jobs again
        log.write_text("")
        proc = start_service(
            tmp_path, free_port(), f"--HeroesService.db_url={url}", "--OrgPredictors.warm_orgs=1"
        )
        wait_for(lambda: "decision.warmup" in log.read_text(), 60, "predictor warm-up", log)
        lines = log.read_text().splitlines()
        line = next(ln for ln in lines if "decision.warmup" in ln)
        assert "1 organization(s) ready, 1 of them restored" in line and "0 finished jobs read" in line, line
        restore = next(ln for ln in lines if "decision.restore" in ln)
        assert "40 finished jobs learnt" in restore and '"success"' in restore, restore
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
