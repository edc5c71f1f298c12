"""The ``binder/`` files build and run the demo the way repo2docker would, minus Docker.

What is reproduced, in repo2docker's documented order:

1. the repository is copied into the "image" (here: the working tree's tracked and untracked-but-not-
   ignored files, as ``repo2docker .`` copies a local directory) and ``HOME`` is that directory, as
   repo2docker's ``REPO_DIR`` defaults to the notebook user's home;
2. ``binder/requirements.txt`` is installed into a FRESH Python environment (``python -m venv``, no
   system site-packages: everything the demo uses must come from that file; pip's download cache is
   used, which changes nothing but the time);
3. ``binder/postBuild`` runs once, with bash, in the repository's directory;
4. ``binder/start`` runs with the visitor's command as its arguments (``exec "$@"``): here once with
   ``jupyter execute`` (nbclient) on the walk-through notebook, once with ``jupyter lab``.

``JUPYTERHUB_API_TOKEN`` and ``JUPYTERHUB_API_URL`` are set to what Binder's own hub would give the
container (values that do not work here), to show that the demo uses its own ``HEROES_*`` settings.

What is not reproduced: the Docker image itself and repo2docker's conda base environment (which
brings its own JupyterLab; here requirements.txt must bring it), ``apt.txt`` (none is needed), the
non-root ``jovyan`` user (these tests run as root), Binder's network and resource limits.
The build is done once per test session (a few minutes the first time, mostly pip).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
import requests
import tomllib

from jupyter_heroes.testing.base import free_port, pid_alive, read_pidfile, stop_pid, wait_for

pytestmark = [pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[1]
BINDER = REPO / "binder"


def _req_name(line: str) -> str:
    return re.split(r"[<>=!~\[ ;]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_requirements_are_the_package_dependencies_and_the_notebook_extra():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {_req_name(d): d.replace(" ", "") for d in meta["dependencies"]}
    for d in meta["optional-dependencies"]["notebook"]:
        wanted.setdefault(_req_name(d), d.replace(" ", ""))
    lines = [
        ln.strip()
        for ln in (BINDER / "requirements.txt").read_text().splitlines()
        if ln.strip() and not ln.lstrip().startswith("#")
    ]
    have = {_req_name(ln): ln.replace(" ", "") for ln in lines}
    assert have == wanted


def test_the_scripts_are_strict_bash_and_start_ends_with_exec():
    for name in ("postBuild", "start"):
        text = (BINDER / name).read_text()
        assert text.startswith("#!/bin/bash\n"), name
        assert "set -euo pipefail" in text, name
        assert os.access(BINDER / name, os.X_OK), f"binder/{name} must be executable"
    lines = [ln for ln in (BINDER / "start").read_text().splitlines() if ln.strip()]
    assert lines[-1] == 'exec "$@"'


def _copy_repo(dest: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    for raw in listed:
        if not raw:
            continue
        rel = raw.decode()
        src = REPO / rel
        if not src.is_file():  # deleted in the working tree
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)


def _run(argv: list[str], env: dict[str, str], cwd: Path, timeout: float, log: Path) -> None:
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.run(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:]
        pytest.fail(f"{' '.join(argv)} exited {proc.returncode}:\n{tail}")


@pytest.fixture(scope="session")
def binder_image(tmp_path_factory):
    """The repository built the repo2docker way in a fresh venv; yields paths and the environment."""
    root = tmp_path_factory.mktemp("binder")
    home = root / "home"
    venv = root / "venv"
    log = root / "build.log"
    _copy_repo(home)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {
        "HOME": str(home),
        "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "HEROES_BINDER_HUB_PORT": str(free_port()),
        "HEROES_BINDER_SERVICE_PORT": str(free_port()),
        # what Binder's own hub gives every container: not for us
        "JUPYTERHUB_API_TOKEN": "binderhub-token-" + secrets.token_hex(8),
        "JUPYTERHUB_API_URL": "http://binderhub.invalid:8081/hub/api",
    }
    for name, value in os.environ.items():  # pip's own settings and proxies, if any
        if name.startswith("PIP_") or name.lower() in ("http_proxy", "https_proxy", "no_proxy"):
            env[name] = value
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    _run([*pip, "install", "-q", "-r", "binder/requirements.txt"], env, home, 900, log)
    _run(["bash", "binder/postBuild"], env, home, 600, log)
    image = SimpleNamespace(home=home, venv=venv, env=env, log=log, state=home / ".heroes-demo")
    try:
        yield image
    finally:
        pid = read_pidfile(image.state / "jupyterhub.pid")
        if pid:
            stop_pid(pid, grace=15)


def _plain(text: str) -> str:
    """*text* without terminal colours."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_postbuild_installed_the_package_its_extensions_and_the_demo(binder_image):
    img = binder_image
    py = str(img.venv / "bin" / "python")
    where = subprocess.run(
        [py, "-c", "import jupyter_heroes; print(jupyter_heroes.__file__)"],
        env=img.env,
        cwd="/",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert where.startswith(str(img.venv)), where  # installed into the environment, not this checkout
    servers = subprocess.run(
        [str(img.venv / "bin" / "jupyter"), "server", "extension", "list"],
        env=img.env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert re.search(r"jupyter_heroes\.serverext\s+enabled", _plain(servers.stdout + servers.stderr))
    labs = subprocess.run(
        [str(img.venv / "bin" / "jupyter"), "labextension", "list"],
        env=img.env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert re.search(r"jupyter-heroes v\S+\s+enabled\s+OK", _plain(labs.stdout + labs.stderr))
    assert (img.state / "heroes.sqlite").exists() and (img.state / "demo-users.json").exists()
    shipped = nbformat.read(REPO / "notebooks" / "walkthrough.ipynb", as_version=4)
    assert nbformat.read(img.home / "walkthrough.ipynb", as_version=4) == shipped


CHECK = """\
import json
print("RESULT " + json.dumps({
    "names": sorted(templates["name"]),
    "ranking": None if ranking is None else ranking.to_dict(orient="records"),
    "cluster": cluster,
    "handle": type(run).__name__,
    "id": run.id,
    "state": run.state,
    "outputs": run.outputs,
    "pi": pi,
    "files": [str(f) for f in files],
    "cell_run": None if cell_run is None else {"state": cell_run.state, "log": cell_run.logs(),
                                               "template": cell_run.data["template"]},
    "env": {k: os.environ.get(k) for k in ("HEROES_SERVICE_URL", "HEROES_ORGANIZATION", "HEROES_CLUSTER")},
}, default=str))
"""


def _outputs_text(cell) -> str:
    parts = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            parts.append(o["text"])
        elif "data" in o and "text/plain" in o["data"]:
            parts.append(o["data"]["text/plain"])
    return "".join(parts)


def test_start_runs_the_walkthrough_against_the_demo(binder_image):
    img = binder_image
    nb = nbformat.read(img.home / "walkthrough.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(CHECK, id="check"))
    nbformat.write(nb, img.home / "walkthrough-check.ipynb")
    _run(
        [
            "bash",
            "binder/start",
            "jupyter",
            "execute",
            "--output=walkthrough-done.ipynb",
            "walkthrough-check.ipynb",
        ],
        img.env,
        img.home,
        420,
        img.log,
    )
    done = nbformat.read(img.home / "walkthrough-done.ipynb", as_version=4)
    check = next(c for c in done.cells if c.get("id") == "check")
    result = json.loads(_outputs_text(check).split("RESULT ", 1)[1])
    port = img.env["HEROES_BINDER_SERVICE_PORT"]
    assert result["env"] == {
        "HEROES_SERVICE_URL": f"http://127.0.0.1:{port}/services/heroes/",
        "HEROES_ORGANIZATION": "acme",
        "HEROES_CLUSTER": "local",
    }
    # every shipped template was published in the demo organization
    assert result["names"] == sorted(p.stem for p in (REPO / "templates").glob("*.yaml"))
    # decide: a table with one row per candidate where the service has the decision module, else the
    # magic's explanation (and the walk-through keeps the demo's cluster)
    openapi = requests.get(f"http://127.0.0.1:{port}/services/heroes/api/v1/openapi.json", timeout=30).json()
    if "post" in openapi.get("paths", {}).get("/organization/decision/decide", {}):
        assert result["ranking"], "the decision table is empty"
        assert {row["cluster"] for row in result["ranking"]} == {"local"}
    else:
        decide = next(c for c in done.cells if "%heroes decide" in c.source)
        assert "has no decision endpoint" in _outputs_text(decide)
        assert result["ranking"] is None
    assert result["cluster"] == "local"
    # submitted, completed on the local backend, its result listed and its log read
    assert result["handle"] == "InstanceHandle"
    assert result["state"] == "completed"
    assert result["outputs"] == [f"results/{result['id']}/result.json"]
    assert abs(result["pi"] - 3.14159) < 0.05
    wait = next(c for c in done.cells if "run.wait" in c.source)
    assert "'completed'" in _outputs_text(wait)
    status = next(c for c in done.cells if "%heroes status" in c.source)
    assert result["id"] in status["outputs"][0]["data"]["text/html"]
    # the demo organization has no object store: the download says so instead of failing
    assert result["files"] == []
    # a cell as the job's script, through the shipped run-python template
    assert result["cell_run"]["template"] == "run-python"
    assert result["cell_run"]["state"] == "completed"
    assert "hello from" in result["cell_run"]["log"]
    # the instance is the demo researcher's, seen through the service directly
    env_file = (img.state / "binder.env").read_text()
    assert oct((img.state / "binder.env").stat().st_mode & 0o777) == "0o600"
    token = re.search(r"HEROES_API_TOKEN='([0-9a-f]+)'", env_file).group(1)
    inst = requests.get(
        f"http://127.0.0.1:{port}/services/heroes/api/v1/organization/workflow/instance/{result['id']}",
        headers={"Authorization": f"token {token}", "X-Heroes-Organization": "acme"},
        timeout=30,
    ).json()
    assert inst["user"] == "researcher" and inst["cluster"] == "local" and inst["state"] == "completed"
    # no token in the notebook, nor in what start printed
    assert token not in nbformat.writes(done)
    assert token not in img.log.read_text(errors="replace")


def test_start_gives_jupyterlab_the_extension_acting_as_the_demo_researcher(binder_image):
    img = binder_image
    port, token = free_port(), secrets.token_hex(16)
    argv = [
        "bash",
        "binder/start",
        "jupyter",
        "lab",
        "--no-browser",
        "--allow-root",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
    ]
    with open(img.log, "ab") as out:
        lab = subprocess.Popen(
            argv, env=img.env, cwd=img.home, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}/"
    auth = {"Authorization": f"token {token}"}
    try:

        def up() -> bool:
            assert lab.poll() is None, f"jupyter lab exited {lab.returncode}"
            return requests.get(base + "api/status", headers=auth, timeout=5).status_code == 200

        wait_for(up, 180, "jupyter lab started by binder/start", img.log)
        # the Jupyter server extension forwards to the demo's service as the demo researcher
        me = requests.get(base + "heroes/api/v1/organization/auth/me", headers=auth, timeout=30)
        assert me.status_code == 200, me.text
        assert me.json()["name"] == "researcher"
        assert [o["name"] for o in me.json()["organizations"]] == ["acme"]
        # and JupyterLab loads the prebuilt HEROES lab extension
        page = requests.get(base + "lab", headers=auth, timeout=30).text
        config = json.loads(re.search(r'id="jupyter-config-data"[^>]*>(.*?)</script>', page, re.S).group(1))
        assert "jupyter-heroes" in [e["name"] for e in config["federated_extensions"]]
    finally:
        if pid_alive(lab.pid):
            os.killpg(lab.pid, signal.SIGTERM)
            try:
                lab.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(lab.pid, signal.SIGKILL)
                lab.wait(10)
