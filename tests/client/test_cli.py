"""``heroes templates|decide|submit|status|cancel|logs`` against the real hub + service."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from jupyter_heroes.cli import main

pytestmark = [
    pytest.mark.hub,
    pytest.mark.s3,
    pytest.mark.parametrize("hub", ["sqlite"], indirect=True),
    pytest.mark.timeout(240),
]


@pytest.fixture
def env(faces_client_world, monkeypatch):
    w = faces_client_world
    for name in ("HEROES_SERVICE_URL", "HEROES_API_TOKEN", "JUPYTERHUB_PUBLIC_HUB_URL", "JUPYTERHUB_API_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", w.tokens[w.researcher])
    monkeypatch.setenv("HEROES_ORGANIZATION", w.org)
    return w


def heroes(w, capsys, *argv: str) -> tuple[int, str, str]:
    code = main([argv[0], "--url", w.service_url, *argv[1:]])
    out, err = capsys.readouterr()
    return code, out, err


def test_templates_submit_wait_status_logs(env, capsys):
    code, out, _ = heroes(env, capsys, "templates")
    assert code == 0
    assert out.splitlines()[0].split() == ["NAME", "VERSION", "PARAMETERS", "DESCRIPTION"]
    assert "monte-carlo-pi  1        samples:integer=1000000, seed:integer=42, label:string=run" in out
    code, out, err = heroes(
        env,
        capsys,
        "submit",
        "monte-carlo-pi",
        "samples=20000",
        "label=cli run",
        "--cluster",
        "local",
        "--wait",
    )
    assert code == 0, err
    lines = out.splitlines()
    iid = lines[0].split()[0]
    assert lines[0] == f"{iid} submitting"
    assert "  estimate: completed" in lines
    assert lines[-1] == f"{iid} completed"
    code, out, _ = heroes(env, capsys, "status", iid)
    assert code == 0
    assert out.splitlines()[0] == f"{iid} monte-carlo-pi v1 on local: completed"
    assert f"  results/{iid}/result.json" in out
    code, out, _ = heroes(env, capsys, "logs", iid, "--step", "estimate")
    assert code == 0 and out.startswith("pi ~")
    code, out, _ = heroes(env, capsys, "status", "--json")
    items = json.loads(out)
    assert iid in [i["id"] for i in items]
    assert next(i for i in items if i["id"] == iid)["params"]["label"] == "cli run"
    code, out, _ = heroes(env, capsys, "status")
    assert out.splitlines()[0].split() == ["ID", "TEMPLATE", "CLUSTER", "STATE", "CREATED"]
    assert any(line.startswith(iid) and " completed " in line for line in out.splitlines())


def test_submit_without_wait_then_cancel(env, capsys):
    code, out, _ = heroes(
        env, capsys, "submit", "monte-carlo-pi", "samples=2000000000", "--cluster", "local", "--json"
    )
    assert code == 0
    inst = json.loads(out)
    code, out, _ = heroes(env, capsys, "cancel", inst["id"])
    assert code == 0 and out.startswith(f"{inst['id']} ")
    client = env.client(organization=env.org)
    assert client.wait(inst["id"], 60)["state"] == "cancelled"
    code, out, _ = heroes(env, capsys, "wait", inst["id"], "--timeout", "60")
    assert code == 1 and out.splitlines()[-1] == f"{inst['id']} cancelled"
    code, out, _ = heroes(env, capsys, "submit", "monte-carlo-pi", "samples=20000", "--cluster", "local")
    iid = out.split()[0]
    code, out, _ = heroes(env, capsys, "wait", iid)
    assert code == 0 and "  estimate: completed" in out.splitlines()
    assert out.splitlines()[-1] == f"{iid} completed"
    # --wait on a workflow that does not complete exits 1
    code, out, _ = heroes(
        env, capsys, "submit", "run-python", "script=raise SystemExit(3)", "--cluster", "local", "--wait"
    )
    assert code == 1
    assert out.splitlines()[-1].endswith(" failed")


def test_decide_then_submit_following_it_with_its_advice(env, capsys):
    code, out, err = heroes(
        env,
        capsys,
        "decide",
        "monte-carlo-pi",
        "samples=20000",
        "--strategy",
        "fastest",
        "--deadline",
        "2099-01-01T00:00:00Z",
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["RANK", "CLUSTER", "QUEUE", "STATUS"]
    assert lines[1].split()[:4] == ["1", "local", "debug", "ranked"], out
    m = re.search(
        r"^decision (\S+): submit with heroes submit monte-carlo-pi \.\.\. --cluster local", out, re.M
    )
    assert m and "recommended: local / debug" in out, out
    assert re.search(r"^note: runtimes predicted by \S", out, re.M), out  # the service's notes
    code, out, err = heroes(env, capsys, "decide", "monte-carlo-pi", "samples=20000", "--json")
    assert "NaN" not in out  # strict JSON: unknown values are null
    answer = json.loads(out)
    assert code == 0 and answer["decision"] != m.group(1)  # every comparison is recorded
    assert answer["candidates"][0]["advice"]["estimate"]["walltime_s"] > 0
    code, out, err = heroes(
        env,
        capsys,
        "submit",
        "monte-carlo-pi",
        "samples=20000",
        "--cluster",
        "local",
        "--queue",
        "debug",
        "--decision",
        m.group(1),
        "--accept-advice",
        "--memory",
        "estimate=300",
        "--json",
    )
    assert code == 0, err
    res = json.loads(out)["resources"]["estimate"]
    assert res["memory_mb"] == 300 and res["memory_source"] == "user", res
    assert res["walltime_source"] == "advice" and res["source"] == "user+advice", res


def test_usage_counts_a_finished_run(env, capsys):
    code, out, err = heroes(env, capsys, "usage", "--by", "template", "--json")
    assert code == 0, err
    before = sum(r["jobs"] for r in json.loads(out) if r.get("template") == "monte-carlo-pi v1")
    code, out, err = heroes(
        env, capsys, "submit", "monte-carlo-pi", "samples=20000", "--cluster", "local", "--wait"
    )
    assert code == 0, err
    code, out, err = heroes(env, capsys, "usage", "--by", "template")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["TEMPLATE", "JOBS", "CORE-H", "ENERGY-KWH", "COST"]
    row = next(line for line in lines[1:] if line.startswith("monte-carlo-pi"))
    m = re.match(r"monte-carlo-pi v1 +(\d+) +(\d+\.\d\d) +(-|\d+\.\d{3}) +(-|\d+\.\d\d \w{3})", row)
    # at least this run more (the other tests' runs may end meanwhile)
    assert m and int(m.group(1)) >= before + 1, out
    code, out, _ = heroes(env, capsys, "usage", "--by", "template", "--json")
    now = next(r for r in json.loads(out) if r["template"] == "monte-carlo-pi v1")
    assert now["jobs"] >= int(m.group(1)) and float(m.group(2)) <= now["core_hours"] + 0.005
    code, out, err = heroes(env, capsys, "usage", "--by", "nonsense")
    assert code == 1 and "nonsense" in err


def test_me_names_the_organization_and_roles(env, capsys):
    code, out, _ = heroes(env, capsys, "me")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == env.researcher
    assert lines[1].split() == ["ORGANIZATION", "ROLES", "PROJECTS"]
    row = next(line for line in lines[2:] if line.startswith(env.org + " "))
    assert "researcher" in row, out
    code, out, _ = heroes(env, capsys, "me", "--json")
    assert env.org in [o["name"] for o in json.loads(out)["organizations"]]


def test_results_come_back_once_and_data_round_trips(env, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = heroes(
        env, capsys, "submit", "monte-carlo-pi", "samples=20000", "--cluster", "local", "--wait"
    )
    assert code == 0, err
    iid = out.splitlines()[0].split()[0]
    code, out, err = heroes(env, capsys, "results", iid)
    assert code == 0, err
    result = tmp_path / iid / "result.json"
    assert f"downloaded {result}" in out.splitlines()
    client = env.client(organization=env.org)
    stored = client.download(f"results/{iid}/result.json")
    assert result.read_bytes() == stored and json.loads(stored)["samples"] == 20000
    assert out.splitlines()[-1].startswith(
        f"1 downloaded ({len(stored)} B), 0 already there, in {tmp_path / iid}"
    )
    # again: the file is there with the same content, nothing is fetched
    code, out, _ = heroes(env, capsys, "results", iid, "--json")
    answer = json.loads(out)
    assert (answer["downloaded"], answer["kept"], answer["bytes"]) == ([], [str(result)], 0)
    # a damaged copy of the same size is fetched again, into another directory too
    result.write_bytes(stored[:-2] + (b"x}" if stored[-2:] != b"x}" else b"y}"))
    code, out, _ = heroes(env, capsys, "results", iid, "elsewhere")
    assert code == 0 and result.read_bytes() != stored
    assert (tmp_path / "elsewhere" / "result.json").read_bytes() == stored
    code, out, _ = heroes(env, capsys, "results", iid, str(tmp_path / iid))
    assert f"downloaded {result}" in out.splitlines() and result.read_bytes() == stored
    # more outputs, in folders: only the new ones come (several at a time), the paths kept
    extra = {f"plots/p{i}.txt": os.urandom(3000 + i) for i in range(6)}
    for rel, data in extra.items():
        client.upload(f"results/{iid}/{rel}", data)
    code, out, _ = heroes(env, capsys, "results", iid, "--json")
    answer = json.loads(out)
    assert answer["kept"] == [str(result)]
    assert answer["downloaded"] == [str(tmp_path / iid / rel) for rel in sorted(extra)]
    assert answer["bytes"] == sum(len(d) for d in extra.values())
    assert all((tmp_path / iid / rel).read_bytes() == d for rel, d in extra.items())

    (tmp_path / "in.csv").write_text("a,b\n1,2\n")
    code, out, err = heroes(env, capsys, "data", "put", "in.csv", "inputs/")
    assert code == 0, err
    assert re.fullmatch(r"\S+/inputs/in\.csv 8 B sha256 [0-9a-f]{64}", out.strip()), out
    code, out, _ = heroes(env, capsys, "data", "ls", "inputs/")
    assert out.splitlines()[0].split() == ["KEY", "SIZE", "MODIFIED"]
    assert out.splitlines()[1].split()[:3] == ["inputs/in.csv", "8", "B"]
    code, out, _ = heroes(env, capsys, "data", "get", "inputs/in.csv", "back.csv")
    assert code == 0 and (tmp_path / "back.csv").read_text() == "a,b\n1,2\n"
    code, out, _ = heroes(env, capsys, "data", "ls", "results/", "-r", "--json")
    assert f"results/{iid}/result.json" in [o["key"] for o in json.loads(out)["objects"]]
    code, out, _ = heroes(env, capsys, "data", "rm", "inputs/in.csv")
    assert (code, out.strip()) == (0, "deleted inputs/in.csv")
    code, out, _ = heroes(env, capsys, "data", "ls", "inputs/")
    assert out.strip() == "nothing under 'inputs/'"
    code, out, _ = heroes(env, capsys, "data", "buckets")
    mine = [line.split() for line in out.splitlines()[1:] if line.split()[-1] == "yes"]
    assert [row[1] for row in mine] == ["user"], out


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (
            ["submit", "monte-carlo-pi", "samples=5", "--cluster", "local"],
            1,
            "heroes submit: parameter 'samples': 5 is below the minimum 1000",
        ),
        (
            ["submit", "monte-carlo-pi", "samples", "--cluster", "local"],
            2,
            "heroes submit: expected a parameter as key=value, got 'samples'",
        ),
        (["submit", "nope", "--cluster", "local"], 1, "heroes submit: workflow template 'nope' not found"),
        (
            ["submit", "monte-carlo-pi", "--cluster", "local", "--accept-advice"],
            2,
            "heroes submit: --accept-advice takes the advice of a comparison: add --decision ID",
        ),
        (
            ["submit", "monte-carlo-pi", "--cluster", "local", "--walltime", "estimate"],
            2,
            "heroes submit: --walltime takes STEP=VALUE, got 'estimate'",
        ),
        (["decide", "monte-carlo-pi", "samples"], 2, "heroes decide: expected a parameter as key=value"),
        (["decide", "monte-carlo-pi", "samples=5"], 1, "heroes decide: parameter 'samples'"),
        (
            ["decide", "monte-carlo-pi", "--budget", "5 eur"],
            1,
            "local/debug: no price published for this queue, so the budget cannot be checked",
        ),
        (["decide", "monte-carlo-pi", "--budget", "5 ZZZ"], 1, "ZZZ"),
        (["status", "0" * 32], 1, f"heroes status: workflow instance '{'0' * 32}' not found"),
        (["wait", "0" * 32], 1, f"heroes wait: workflow instance '{'0' * 32}' not found"),
        (["results", "0" * 32], 1, f"heroes results: workflow instance '{'0' * 32}' not found"),
        (["data", "get"], 2, "heroes data: usage: heroes data get KEY [DEST]"),
        (["data", "ls", "a/", "b/"], 2, "heroes data: usage: heroes data ls [PREFIX]"),
        (["data", "put", "/no/such/file.csv"], 1, "heroes data: /no/such/file.csv is not a file"),
        (["data", "ls", "../"], 1, "'..' segment"),
        (["logs", "0" * 32], 1, "not found"),
        (["templates", "--org", "nowhere-org"], 1, "Organization 'nowhere-org' not found"),
    ],
)
def test_errors_are_one_line_on_stderr(env, capsys, argv, code, message):
    got, out, err = heroes(env, capsys, *argv)
    assert got == code
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert env.tokens[env.researcher] not in err + out


def test_the_installed_command(env):
    """The ``heroes`` entry point registers the workflow commands; the token comes from the environment."""
    proc = subprocess.run(
        [sys.executable, "-m", "jupyter_heroes.cli", "templates", "--json", "--url", env.service_url],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(t["name"] for t in json.loads(proc.stdout)) == ["monte-carlo-pi", "run-python"]
    proc = subprocess.run(
        [sys.executable, "-m", "jupyter_heroes.cli", "templates", "--url", env.service_url],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k not in ("JUPYTERHUB_API_TOKEN", "HEROES_API_TOKEN")},
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "heroes templates: no API token: set $JUPYTERHUB_API_TOKEN to a token from the hub's Token page "
        "(/hub/token), or pass one (token=... in Python, --token to the heroes command)"
    )
