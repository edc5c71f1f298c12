"""The shipped ``templates/run-python.yaml`` through ``%%heroes submit --template run-python``: the cell body
becomes the job's script, runs on the local backend and on the test bed's Slurm (over its sshd), its
print()s are the step's log and the files it writes under ``out/`` come back to the researcher's bucket
on the test bed's S3 server. The body is full of shell syntax that must arrive as written: were it ever
pasted into a shell line unquoted, ``$(touch ...)`` would create the canary file."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from IPython.core.error import UsageError

from jupyter_heroes.magics import _accepts_script
from jupyter_heroes.widgets.handle import InstanceHandle
from jupyter_heroes.workflows.templates import load_template

from .flow_world import FlowWorld, build_flow_world, shipped_template, slurm_cluster_body

TIMEOUT = 240


def nasty_cell(canary: Path) -> tuple[str, str]:
    """A cell body and the exact text it writes to out/echo.txt."""
    text = f'it\'s "quoted" $(touch {canary}) `touch {canary}` ; | & > {{{{ script }}}} $HOME \\n'
    body = (
        "import os, sys\n"
        "os.makedirs('out/deep', exist_ok=True)\n"
        f"text = {text!r}\n"
        "open('out/echo.txt', 'w').write(text)\n"
        "open('out/deep/n.txt', 'w').write(str(6 * 7))\n"
        "print('argv', sys.argv[1:])\n"
        "print('answer', 6 * 7)\n"
    )
    return body, text


def test_the_shipped_template_takes_the_script_as_one_argument():
    doc = shipped_template("run-python")
    tpl = load_template(doc)
    assert _accepts_script(doc)  # what %%heroes submit checks
    body, _ = nasty_cell(Path("/nonexistent/canary"))
    values = tpl.resolve({"script": body})
    (step,) = tpl.order()
    assert tpl.render_argv(step, values) == ["python3", "-c", body]
    assert tpl.render_list(step.outputs, values) == ["out"]
    # a script is required: a submission without one is refused naming the parameter
    with pytest.raises(Exception, match="script"):
        tpl.resolve({})


@pytest.fixture(scope="module")
def rp_world(hub, s3_server, tmp_path_factory) -> FlowWorld:
    return build_flow_world(hub, "rp", tmp_path_factory.mktemp("rp-scratch"), s3_server)


@pytest.fixture
def shell(rp_world, monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    for name in ("HEROES_API_TOKEN", "JUPYTERHUB_PUBLIC_HUB_URL", "JUPYTERHUB_API_URL"):
        monkeypatch.delenv(name, raising=False)
    env = rp_world.kernel_env()
    env.pop("HEROES_API_TOKEN")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cfg = Config()
    cfg.HistoryManager.enabled = False
    sh = InteractiveShell.instance(config=cfg)
    if "jupyter_heroes" not in sh.extension_manager.loaded:
        sh.run_line_magic("load_ext", "jupyter_heroes")
    sh.magics_manager.registry["HeroesMagics"].client = None  # a fresh client from this environment
    yield sh
    sh.reset(new_session=False)


def run_cell_on(shell, world: FlowWorld, cluster: str, tmp_path: Path) -> None:
    canary = tmp_path / f"canary-{uuid.uuid4().hex[:8]}"
    body, text = nasty_cell(canary)
    handle = shell.run_cell_magic("heroes", f"submit --template run-python --cluster {cluster}", body)
    assert isinstance(handle, InstanceHandle)
    handle.wait(timeout=TIMEOUT)
    assert handle.state == "completed", handle.data
    log = shell.run_line_magic("heroes", f"logs {handle.id}")
    assert "answer 42" in log
    assert "argv []" in log  # the script is python3 -c's program, not an argument to it
    prefix = f"results/{handle.id}/out/"
    assert sorted(handle.outputs) == [prefix + "deep/n.txt", prefix + "echo.txt"]
    got = shell.run_line_magic("heroes", f"data get {prefix}echo.txt {tmp_path / 'echo.txt'}")
    assert Path(got).read_text() == text
    assert not canary.exists(), "the script went through a shell"
    inst = world.client().instance(handle.id)
    assert inst["params"] == {"script": body}
    assert inst["cluster"] == cluster and inst["user"] == world.researcher


@pytest.mark.hub
@pytest.mark.s3
@pytest.mark.parametrize("hub", ["sqlite"], indirect=True)
@pytest.mark.timeout(TIMEOUT + 60)
def test_cell_body_runs_on_the_local_backend(shell, rp_world, tmp_path):
    run_cell_on(shell, rp_world, "local", tmp_path)


@pytest.mark.hub
@pytest.mark.s3
@pytest.mark.slurm
@pytest.mark.parametrize("hub", ["sqlite"], indirect=True)
@pytest.mark.timeout(TIMEOUT + 120)
def test_cell_body_runs_on_slurm(shell, rp_world, slurm_cluster, tmp_path):
    if "testbed" not in rp_world.clusters:
        body = slurm_cluster_body(slurm_cluster, subdir="rp")
        rp_world.ok(rp_world.admin, "POST", "/organization/admin/cluster", body, status=201)
        rp_world.clusters.append("testbed")
    run_cell_on(shell, rp_world, "testbed", tmp_path)


@pytest.mark.hub
@pytest.mark.s3
@pytest.mark.parametrize("hub", ["sqlite"], indirect=True)
def test_too_long_a_cell_is_refused_and_nothing_runs(shell, rp_world):
    before = len(rp_world.client().instances())
    with pytest.raises(UsageError, match=r"parameter 'script': longer than 4096 characters"):
        shell.run_cell_magic("heroes", "submit --template run-python --cluster local", "x = 1\n" * 700)
    # a template without a script parameter does not take a cell
    with pytest.raises(UsageError, match="does not accept a script"):
        shell.run_cell_magic("heroes", "submit --template monte-carlo-pi --cluster local", "print(1)")
    assert len(rp_world.client().instances()) == before
