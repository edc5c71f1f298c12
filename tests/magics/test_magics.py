"""``%heroes`` magics through a real in-process IPython shell, against the real hub + service
(local-backend cluster: real processes)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from IPython.core.error import UsageError

from jupyter_heroes.widgets import InstanceHandle, JobMonitor

pytestmark = [
    pytest.mark.hub,
    pytest.mark.s3,
    pytest.mark.parametrize("hub", ["sqlite"], indirect=True),
    pytest.mark.timeout(240),
]

PWNED = Path("/tmp/heroes-magics-pwned")


def run(shell, line: str):
    return shell.run_line_magic("heroes", line)


def test_templates_dataframe(shell):
    df = run(shell, "templates")
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["name", "version", "description", "parameters", "steps", "accepts_script"]
    rows = df.set_index("name")
    assert sorted(rows.index) == ["monte-carlo-pi", "run-python"]
    assert (
        rows.loc["monte-carlo-pi", "parameters"]
        == "samples:integer=1000000, seed:integer=42, label:string=run"
    )
    assert rows.loc["monte-carlo-pi", "steps"] == "estimate"
    assert not rows.loc["monte-carlo-pi", "accepts_script"] and rows.loc["run-python", "accepts_script"]


def test_submit_wait_status_logs(shell, kernel_env, tmp_path, monkeypatch):
    # the way a notebook cell writes it: assignment, $variables and a quoted value with spaces
    shell.user_ns["n"] = 30000
    result = shell.run_cell(
        'run = %heroes submit monte-carlo-pi samples=$n seed=3 label="two words" --cluster local'
    )
    assert result.success, result.error_in_exec
    handle = shell.user_ns["run"]
    assert isinstance(handle, InstanceHandle)
    assert handle.data["params"] == {"samples": 30000, "seed": 3, "label": "two words"}
    assert handle.data["user"] == kernel_env.researcher
    assert handle.wait(120).state == "completed"
    assert handle.outputs == [f"results/{handle.id}/result.json"]
    assert handle.id in repr(handle) and "completed" in repr(handle)
    logs = run(shell, f"logs {handle.id}")
    assert "pi ~" in logs
    assert run(shell, f"logs {handle.id} --step estimate --err") == ""
    status = run(shell, "status")
    assert list(status.columns) == [
        "id",
        "template",
        "version",
        "cluster",
        "state",
        "steps",
        "created",
        "updated",
    ]
    row = status.set_index("id").loc[handle.id]
    assert (row["template"], row["cluster"], row["state"], row["steps"]) == (
        "monte-carlo-pi",
        "local",
        "completed",
        "estimate=completed",
    )
    one = run(shell, f"status {handle.id}")
    assert isinstance(one, InstanceHandle) and one.state == "completed"
    assert run(shell, f"wait {handle.id} --timeout 10").state == "completed"
    assert handle.id not in set(run(shell, "status --state live")["id"])
    monkeypatch.chdir(tmp_path)
    paths = run(shell, f"results {handle.id}")
    assert paths == [(tmp_path / handle.id / "result.json").resolve()]
    assert json.loads(paths[0].read_text())["samples"] == 30000
    assert handle.download_outputs("copy") == [(tmp_path / "copy" / "result.json").resolve()]


def test_the_handle_displays_a_live_monitor(shell):
    handle = run(shell, "submit monte-carlo-pi samples=20000 --cluster local")
    shell.display_formatter.format(handle)  # what a notebook does with a cell's result
    monitor = handle.monitor()
    assert isinstance(monitor, JobMonitor)
    try:
        assert monitor.wait(120)
        assert monitor.state == "completed"
        assert monitor.jobs["estimate"]["state"] == "completed"
        assert "pi ~" in monitor.log_view.value
        assert f"results/{handle.id}/result.json" in monitor.outputs_view.value
    finally:
        monitor.close()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "submit monte-carlo-pi samples=5 --cluster local",
            r"parameter 'samples': 5 is below the minimum 1000",
        ),
        (
            "submit monte-carlo-pi samples=lots --cluster local",
            r"parameter 'samples': expected an integer, got 'lots'",
        ),
        ("submit monte-carlo-pi colour=red --cluster local", r"parameter 'colour': unknown parameter"),
        ("submit monte-carlo-pi samples=2000", r"say where to run it with --cluster NAME"),
        (
            "submit monte-carlo-pi samples --cluster local",
            r"expected a parameter as key=value, got 'samples'",
        ),
        ("submit monte-carlo-pi seed=1 seed=2 --cluster local", r"parameter 'seed' is given twice"),
        ("submit --cluster local", r"name the template to submit"),
        (
            "submit nope --cluster local",
            r"workflow template 'nope' not found; the templates you may run are: monte-carlo-pi, run-python",
        ),
        ("submit monte-carlo-pi --cluster mars", r"cluster 'mars' not found"),
        (
            "submit monte-carlo-pi --cluster local --queue long",
            r"cluster local has no queue 'long'; its queues are debug",
        ),
        ("submit monte-carlo-pi --cluster local --bogus", r"unrecognized arguments: --bogus"),
        ("status 0123", r"instance id '0123' not found"),
        ("status " + "0" * 32, r"workflow instance '0{32}' not found"),
        ("frobnicate", r"unknown subcommand 'frobnicate' of %heroes; use one of: templates, decide, submit"),
        ("templates --org nowhere-org", r"Organization 'nowhere-org' not found"),
    ],
)
def test_mistakes_are_usage_errors_that_say_what_to_do(shell, line, message):
    before = len(run(shell, "status"))
    with pytest.raises(UsageError, match=message):
        run(shell, line)
    assert len(run(shell, "status")) == before  # nothing was submitted


def test_decide_ranks_and_submit_follows_the_decision(shell):
    df = run(shell, "decide monte-carlo-pi samples=100000")
    assert isinstance(df, pd.DataFrame) and "rank" in df.columns
    best = df[df["rank"] == 1].iloc[0]
    decision = df.attrs["decision"]
    handle = run(
        shell, f"submit monte-carlo-pi samples=100000 --cluster {best['cluster']} --decision {decision}"
    )
    assert isinstance(handle, InstanceHandle)
    magics = shell.magics_manager.registry["HeroesMagics"]
    seen = magics.client.request("GET", f"/organization/decision/{decision}")
    assert seen["instance"] == handle.id and seen["accepted"] is True
    run(shell, f"cancel {handle.id}")
    # a decision is followed once
    with pytest.raises(UsageError, match="decision"):
        run(shell, f"submit monte-carlo-pi samples=100000 --cluster {best['cluster']} --decision {decision}")


def test_cell_magic_runs_the_cell_as_the_script(shell):
    PWNED.unlink(missing_ok=True)
    body = (
        "import sys\n"
        'print("hello from the cell", 6 * 7)\n'
        "print(\"$(touch /tmp/heroes-magics-pwned) `touch /tmp/heroes-magics-pwned`; 'q' {{ n }}\")\n"
        'print("to stderr", file=sys.stderr)\n'
    )
    handle = shell.run_cell_magic("heroes", "submit --template run-python --cluster local", body)
    assert isinstance(handle, InstanceHandle)
    assert handle.data["params"]["script"] == body
    assert handle.wait(120).state == "completed"
    out = handle.logs()
    assert "hello from the cell 42" in out
    assert "$(touch /tmp/heroes-magics-pwned) `touch /tmp/heroes-magics-pwned`; 'q' {{ n }}" in out
    assert "to stderr" in handle.logs(err=True)
    assert not PWNED.exists()
    # the same through a notebook cell
    result = shell.run_cell(
        '%%heroes submit --template run-python repeat=2 --cluster local\nprint("cell two")\n'
    )
    assert result.success, result.error_in_exec
    assert "cell two" in result.result.wait(120).logs()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "submit --template monte-carlo-pi --cluster local",
            r"template monte-carlo-pi does not accept a script: it declares no string parameter 'script'",
        ),
        ("submit --template run-python script=x --cluster local", r"the cell body is the 'script' parameter"),
        ("status", r"%%heroes status is not a cell magic; only %%heroes submit takes a cell"),
    ],
)
def test_cell_magic_mistakes(shell, line, message):
    with pytest.raises(UsageError, match=message):
        shell.run_cell_magic("heroes", line, "print(1)\n")


def test_cancel(shell):
    handle = run(shell, "submit monte-carlo-pi samples=2000000000 --cluster local")
    import time

    deadline = time.monotonic() + 60
    while not handle.refresh().jobs[0]["job_id"]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    after = run(shell, f"cancel {handle.id}")
    assert isinstance(after, InstanceHandle) and after.id == handle.id
    assert after.wait(60).state == "cancelled"


def test_org_option_budget_me_and_help(shell, kernel_env, capsys):
    assert run(shell, f"templates --org {kernel_env.other_org}").empty
    me = run(shell, "me")
    assert me["name"] == kernel_env.researcher
    usage = run(shell, "budget")  # a researcher sees no budgets: their own usage instead
    assert isinstance(usage, pd.DataFrame)
    run(shell, "help")
    run(shell, "submit -h")
    out = capsys.readouterr().out
    assert "Subcommands (%heroes SUBCOMMAND -h for details):" in out
    assert "--cluster CLUSTER" in out
    assert kernel_env.tokens[kernel_env.researcher] not in out


def test_without_a_service_url_the_error_says_what_to_set(shell, monkeypatch):
    for name in ("HEROES_SERVICE_URL", "JUPYTERHUB_PUBLIC_HUB_URL", "JUPYTERHUB_API_URL"):
        monkeypatch.delenv(name, raising=False)
    shell.magics_manager.registry["HeroesMagics"].client = None
    with pytest.raises(UsageError, match=r"Set \$HEROES_SERVICE_URL to https://<hub>/services/heroes/"):
        run(shell, "templates")


def test_data_put_ls_get_rm(shell, kernel_env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "src").mkdir()
    local = tmp_path / "src" / "table.csv"
    local.write_text("a,b\n1,2\n")
    up = run(shell, f"data put {local} inputs/")
    assert up["key"] == "inputs/table.csv" and up["size"] == 8
    buckets = run(shell, "data buckets")
    assert list(buckets.columns) == ["name", "kind", "owner", "mine", "created"]
    assert f"{kernel_env.org}--u-{kernel_env.researcher}" in set(buckets["name"])
    top = run(shell, "data ls")
    assert list(top.columns) == ["key", "size", "last_modified", "is_folder"]
    assert "inputs/" in set(top["key"])
    inside = run(shell, "data ls inputs/")
    assert inside.set_index("key").loc["inputs/table.csv", "size"] == 8
    got = run(shell, "data get inputs/table.csv copy.csv")
    assert got == Path("copy.csv") and (tmp_path / "copy.csv").read_text() == "a,b\n1,2\n"
    assert run(shell, "data get inputs/table.csv") == Path("table.csv")
    assert run(shell, "data rm inputs/table.csv")["deleted"] == ["inputs/table.csv"]
    assert "inputs/table.csv" not in set(run(shell, "data ls -r")["key"])
    with pytest.raises(
        UsageError,
        match=f"object 'inputs/table.csv' in bucket {kernel_env.org}--u-{kernel_env.researcher} does not exist",
    ):
        run(shell, "data get inputs/table.csv")
    with pytest.raises(UsageError, match=r"%heroes data get KEY \[DEST\]"):
        run(shell, "data get a b c")
    with pytest.raises(UsageError, match=r"%heroes data rm KEY"):
        run(shell, "data rm")
    with pytest.raises(UsageError, match=r"argument action: invalid choice: 'cp'"):
        run(shell, "data cp a b")
    with pytest.raises(UsageError, match=f"organization {kernel_env.other_org} has no object store yet"):
        run(shell, f"data ls --org {kernel_env.other_org}")
