"""Users' notebook servers as Slurm jobs (issue 3 item 10): a real hub with ``use_slurm_spawner`` on the
test bed's Slurm (this machine is the submit host and the only compute node).

Why the server runs as root here: the hub runs as root and Python lives under ``/root/.pyenv``, which
other accounts cannot read (``/root`` is mode 700), so a job running as the unprivileged ``heroes``
account could not start ``jupyterhub-singleuser``. The hub user is therefore named ``root`` (batchspawner
needs a Unix account of the hub user's name), jobs are submitted through
``runuser -m -u {username} --`` (``sudo`` is not installed here; production uses ``sudo -E -u``), and
the server gets ``--allow-root``. The Slurm side is real: sbatch, squeue, scancel, slurmd, srun.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from jupyter_heroes.testing.base import wait_for

USER = "root"
BIN = Path(sys.executable).parent

EXTRA_CONFIG = """
from jupyter_heroes.spawners import use_slurm_spawner

use_slurm_spawner(
    c,
    partition="debug",
    runtime="00:10:00",
    exec_prefix="runuser -m -u {{username}} --",
    singleuser_cmd=[{singleuser!r}],
    batchspawner_cmd={wrapper!r},
    args=["--allow-root"],
    homedir={homes!r} + "/{{username}}",
    start_timeout=60,
    http_timeout=60,
    poll_interval=0.5,
    user_options=["partition"],
)
c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0}}  # POST .../server returns without waiting for the job
# a token that may start and stop servers and read their state (the test bed's admin token may not)
c.JupyterHub.services = [*c.JupyterHub.services, {{"name": "slurm-tests", "api_token": {servers_token!r}}}]
c.JupyterHub.load_roles = [
    *c.JupyterHub.load_roles,
    {{"name": "slurm-tests", "services": ["slurm-tests"], "scopes": ["admin:servers", "read:users"]}},
]
"""


def squeue(job_id: str) -> str:
    """``STATE USER NAME`` of *job_id* while Slurm still lists it as queued or running, else ``""``."""
    cp = subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%T %u %j %P"], capture_output=True, text=True, timeout=15
    )
    return cp.stdout.strip() if cp.returncode == 0 else ""


def squeue_all() -> str:
    return subprocess.run(
        ["squeue", "-h", "-o", "%i %u %j"], capture_output=True, text=True, timeout=15
    ).stdout.strip()


@pytest.mark.slurm
@pytest.mark.hub
@pytest.mark.timeout(180)
def test_server_runs_as_slurm_job(slurm, hub_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    wrapper = shutil.which("batchspawner-singleuser", path=str(BIN))
    singleuser = shutil.which("jupyterhub-singleuser", path=str(BIN))
    assert wrapper and singleuser, f"batchspawner and jupyterhub must be installed in {BIN}"
    homedir = tmp_path / "home" / USER
    homedir.mkdir(parents=True)
    admin = secrets.token_hex(32)
    hub = hub_factory(
        extra_config=EXTRA_CONFIG.format(
            singleuser=singleuser, wrapper=wrapper, homes=str(homedir.parent), servers_token=admin
        )
    )
    token = hub.create_user(USER)

    def api(method: str, path: str) -> requests.Response:
        return hub.hub_api(method, path, token=admin)

    def api_json(method: str, path: str, body: object) -> requests.Response:
        return hub.hub_api(method, path, body, token=admin)

    t0 = time.monotonic()

    # bad choices fail at submission with a message saying what to do, and leave no job behind
    def failed_spawn(options: dict[str, str]) -> str:
        """Start with *options*; return the hub's failure message from the progress event stream."""
        r = api_json("POST", f"/users/{USER}/server", options)
        assert r.status_code == 202, r.text
        with requests.get(
            f"{hub.url}/hub/api/users/{USER}/server/progress",
            headers={"Authorization": f"token {token}"},
            stream=True,
            timeout=60,
        ) as events:
            for line in events.iter_lines(decode_unicode=True):
                if line and line.startswith("data:"):
                    event = json.loads(line[5:])
                    if event.get("failed"):
                        break
                    assert not event.get("ready"), event
            else:
                pytest.fail("the progress stream ended without a failure event")
        wait_for(lambda: not api("GET", f"/users/{USER}").json()["pending"], 30, "the failed spawn to clear")
        return str(event["message"])

    msg = failed_spawn({"partition": "no-such-partition"})
    assert "Submitting your notebook server to Slurm failed" in msg, msg
    assert "invalid partition" in msg.lower(), msg  # sbatch's own reason is passed on
    # options outside the allow-list, or with shell characters, are refused before anything is submitted
    r = api_json("POST", f"/users/{USER}/server", {"prologue": "id"})
    assert r.status_code == 400, r.text
    assert "The server option 'prologue' cannot be chosen here (allowed: partition)" in r.json()["message"]
    r = api_json("POST", f"/users/{USER}/server", {"partition": "long;id"})
    assert r.status_code == 400, r.text
    assert "The server option 'partition' has an invalid value" in r.json()["message"]
    assert squeue_all() == ""

    r = api_json("POST", f"/users/{USER}/server", {"partition": "long"})
    model = api("GET", f"/users/{USER}").json()
    # JupyterHub 6 answers 201 or 202 here depending on timing; the user model is what tells "pending"
    assert r.status_code in (201, 202), r.text
    assert model["pending"] == "spawn", model
    assert model["servers"][""]["ready"] is False, model

    # the hub submitted a job: its id is in the spawner's state, and squeue lists it
    def job_id() -> str | None:
        state = api("GET", f"/users/{USER}?include_stopped_servers=1").json()
        jid = ((state.get("servers") or {}).get("", {}).get("state") or {}).get("job_id")
        return jid or None

    jid = wait_for(job_id, 30, "the Slurm job id in the spawner's state")
    assert jid.isdigit()
    queued = squeue(jid)
    assert queued.split()[0] in ("PENDING", "CONFIGURING", "RUNNING"), queued
    assert queued.split()[1:] == [USER, "spawner-jupyterhub", "long"], queued

    def ready() -> bool:
        m = api("GET", f"/users/{USER}").json()
        return bool(m["servers"].get("", {}).get("ready"))

    try:
        wait_for(ready, 75, "the notebook server in the Slurm job")
    except Exception:
        logs = "\n".join(p.read_text(errors="replace")[-2000:] for p in homedir.glob("*.log"))
        pytest.fail(f"server not ready; job {jid}: {squeue(jid)!r}\njob log:\n{logs}\n{hub.log_excerpt(40)}")
    assert squeue(jid).split()[0] == "RUNNING"

    # reachable through the proxy with the user's own token
    r = requests.get(
        f"{hub.url}/user/{USER}/api/status", headers={"Authorization": f"token {token}"}, timeout=30
    )
    assert r.status_code == 200, r.text[:500]
    assert "started" in r.json()
    # the job ran in the configured directory ({username} expanded) and logs there
    assert (homedir / f"jupyterhub_slurmspawner_{jid}.log").exists(), sorted(homedir.iterdir())
    # the server reported its port through batchspawner's hub API handler (patched registration)
    server = api("GET", f"/users/{USER}").json()["servers"][""]
    assert server["url"] == f"/user/{USER}/"

    # stop: the hub cancels the job and Slurm no longer lists it
    r = api("DELETE", f"/users/{USER}/server")
    assert r.status_code in (202, 204), r.text
    wait_for(lambda: squeue(jid) == "", 30, f"Slurm job {jid} to end")
    wait_for(lambda: not api("GET", f"/users/{USER}").json()["servers"], 30, "the hub to drop the server")
    sacct = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-j", jid, "-o", "State"], capture_output=True, text=True, timeout=30
    ).stdout.strip()
    assert sacct.startswith("CANCELLED"), sacct
    assert time.monotonic() - t0 < 90


@pytest.mark.timeout(30)
def test_use_slurm_spawner_config_and_script() -> None:
    """Pure: the options land in the config and the rendered batch script (no Slurm, no hub)."""
    from batchspawner.batchspawner import format_template
    from jupyterhub import apihandlers
    from traitlets.config import Config

    from jupyter_heroes.spawners import API_PATH, use_slurm_spawner

    c = Config()
    c.Spawner.environment = {"HEROES_SERVICE_URL": "http://127.0.0.1:10101/services/heroes/"}
    cls = use_slurm_spawner(
        c, partition="gpu", account="proj1", qos="short", memory="4G", nprocs=2, environment={"A": "1"}
    )
    assert c.JupyterHub.spawner_class is cls
    assert c.SlurmSpawner.exec_prefix == "sudo -E -u {username}"
    assert c.SlurmSpawner.cmd == ["jupyterhub-singleuser"]
    assert c.Spawner.environment == {
        "HEROES_SERVICE_URL": "http://127.0.0.1:10101/services/heroes/",
        "A": "1",
    }
    assert any(h[0] == API_PATH for h in apihandlers.default_handlers)
    script = format_template(
        cls.class_traits()["batch_script"].default_value,
        homedir="/home/u",
        keepvars="PATH",
        partition="gpu",
        account="proj1",
        qos="short",
        runtime="8:00:00",
        memory="4G",
        nprocs="2",
        gres="",
        reservation="",
        options="",
        prologue="module load python",
        epilogue="",
        srun="srun",
        cmd="batchspawner-singleuser jupyterhub-singleuser",
    )
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --account=proj1",
        "#SBATCH --qos=short",
        "#SBATCH --mem=4G",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --chdir=/home/u",
        "module load python",
        "srun batchspawner-singleuser jupyterhub-singleuser",
    ):
        assert line in script.splitlines(), (line, script)
    assert "--gres" not in script


@pytest.mark.timeout(30)
def test_hub_config_snippet(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """``hub_config/slurmspawner.py`` loads through ``load_subconfig`` and reads its environment."""
    from traitlets.config.loader import PyFileConfigLoader

    snippet = Path(__file__).resolve().parents[1] / "hub_config" / "slurmspawner.py"
    (tmp_path / "slurmspawner.py").write_text(snippet.read_text())
    (tmp_path / "jupyterhub_config.py").write_text('c = get_config()\nload_subconfig("slurmspawner.py")\n')
    monkeypatch.setenv("HEROES_SLURM_PARTITION", "interactive")
    monkeypatch.setenv("HEROES_SLURM_CPUS", "4")
    monkeypatch.setenv("HEROES_SLURM_EXEC_PREFIX", "runuser -m -u {username} --")
    c = PyFileConfigLoader("jupyterhub_config.py", path=str(tmp_path)).load_config()
    assert c.SlurmSpawner.req_partition == "interactive"
    assert c.SlurmSpawner.req_nprocs == "4"
    assert c.SlurmSpawner.req_runtime == "8:00:00"
    assert c.SlurmSpawner.exec_prefix == "runuser -m -u {username} --"
    assert c.JupyterHub.spawner_class.__name__ == "HeroesSlurmSpawner"
