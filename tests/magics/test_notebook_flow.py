"""Must-show: a researcher's whole flow through the ``%heroes`` magics in a notebook run headless by
nbclient in a real kernel, on the test bed's Slurm (over its sshd) with the test bed's S3 server as the
organization's object store. The kernel finds the service and its identity in its environment, as in
a JupyterHub single-user server. Every step's returned object is checked, not only that it ran:

``%heroes templates`` (DataFrame) -> ``%heroes decide`` (DataFrame, one row per candidate queue, one
recommended) -> ``%heroes submit`` to the recommended queue (an InstanceHandle shown as a live
widget) -> ``%heroes wait`` -> ``%heroes status`` (DataFrame, and a handle for one id) -> ``%heroes
logs`` -> ``%heroes data ls`` / ``get`` of the output.
"""

from __future__ import annotations

import json

import nbformat
import pytest
from nbclient import NotebookClient

from .flow_world import FlowWorld, build_flow_world

pytestmark = [
    pytest.mark.hub,
    pytest.mark.s3,
    pytest.mark.slurm,
    pytest.mark.parametrize("hub", ["sqlite"], indirect=True),
    pytest.mark.timeout(420),
]

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

CELLS = {
    "load": "%load_ext jupyter_heroes",
    "templates": "templates = %heroes templates\ntemplates",
    "decide": (
        "ranking = %heroes decide monte-carlo-pi samples=100000 label=notebook-flow\n"
        "best = ranking[ranking['rank'] == 1].iloc[0]\n"
        "ranking"
    ),
    "submit": (
        "run = %heroes submit monte-carlo-pi samples=100000 seed=3 label=notebook-flow "
        "--cluster {best.cluster} --queue {best.queue}\n"
        "run"
    ),
    "wait": "finished = %heroes wait {run.id} --timeout 240\nfinished.state",
    "status": "everything = %heroes status\none = %heroes status {run.id}\neverything",
    "logs": "log = %heroes logs {run.id}\nprint(log)",
    "ls": "listing = %heroes data ls results/{run.id}/\nlisting",
    "get": (
        "import json\n"
        "path = %heroes data get results/{run.id}/result.json downloaded/result.json\n"
        "result = json.loads(open(path).read())\n"
        "result['pi']"
    ),
    "check": """\
import json
print("RESULT " + json.dumps({
    "templates": {"type": type(templates).__name__, "names": list(templates["name"]),
                  "accepts_script": [bool(x) for x in templates["accepts_script"]]},
    "ranking": {"type": type(ranking).__name__,
                "rows": ranking[["cluster", "queue", "rank", "status"]].astype(str).to_dict(orient="records"),
                "decision": ranking.attrs.get("decision"),
                "recommendation": ranking.attrs.get("recommendation")},
    "best": [str(best["cluster"]), str(best["queue"])],
    "run": {"type": type(run).__name__, "id": run.id},
    "finished": {"type": type(finished).__name__, "id": finished.id, "state": finished.state,
                 "outputs": finished.outputs},
    "everything": {"type": type(everything).__name__,
                   "rows": everything[["id", "template", "cluster", "state"]].to_dict(orient="records")},
    "one": {"type": type(one).__name__, "id": one.id, "state": one.state},
    "log": {"type": type(log).__name__, "text": str(log)},
    "listing": {"type": type(listing).__name__, "keys": list(listing["key"]),
                "sizes": [int(s) for s in listing["size"]]},
    "path": str(path),
    "result": {k: result[k] for k in ("pi", "samples", "seed", "label")},
}))
""",
}


@pytest.fixture(scope="module")
def flow_world(hub, s3_server, slurm_cluster, tmp_path_factory) -> FlowWorld:
    # the Slurm cluster only: the decision compares its two partitions
    return build_flow_world(
        hub, "nbf", tmp_path_factory.mktemp("nbf-scratch"), s3_server, slurm_cluster, local=False
    )


def cell_text(c) -> str:
    out = []
    for o in c.get("outputs", []):
        if o.get("output_type") == "stream":
            out.append(o["text"])
        elif "data" in o and "text/plain" in o["data"]:
            out.append(o["data"]["text/plain"])
    return "".join(out)


def test_the_magics_flow_on_slurm_and_s3(flow_world, slurm_cluster, monkeypatch, tmp_path):
    w = flow_world
    for name in ("JUPYTERHUB_PUBLIC_HUB_URL", "JUPYTERHUB_API_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in w.kernel_env().items():
        monkeypatch.setenv(name, value)
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(src, id=cid) for cid, src in CELLS.items()],
        metadata={"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
    )
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    cells = {c["id"]: c for c in nb.cells}
    r = json.loads(cell_text(cells["check"]).split("RESULT ", 1)[1])

    # %heroes templates: the shipped templates the admin published
    assert r["templates"] == {
        "type": "DataFrame",
        "names": ["monte-carlo-pi", "run-python"],
        "accepts_script": [False, True],
    }
    # %heroes decide: one row per candidate queue (the Slurm cluster's partitions), one recommended
    rows = r["ranking"]["rows"]
    assert r["ranking"]["type"] == "DataFrame"
    assert sorted((row["cluster"], row["queue"]) for row in rows) == sorted(
        ("testbed", p) for p in slurm_cluster.partitions
    )
    assert [row["rank"] for row in rows].count("1") == 1
    assert r["ranking"]["decision"]  # the service recorded the decision
    assert r["ranking"]["recommendation"]["cluster"] == "testbed"
    assert r["best"] == [r["ranking"]["recommendation"]["cluster"], r["ranking"]["recommendation"]["queue"]]
    assert "<table" in cells["decide"]["outputs"][0]["data"]["text/html"]
    # %heroes submit: a handle, displayed as the live monitor widget
    assert r["run"]["type"] == "InstanceHandle"
    assert any(WIDGET_VIEW in o.get("data", {}) for o in cells["submit"]["outputs"])
    # %heroes wait: completed on Slurm, its output known
    key = f"results/{r['run']['id']}/result.json"
    assert r["finished"] == {
        "type": "InstanceHandle",
        "id": r["run"]["id"],
        "state": "completed",
        "outputs": [key],
    }
    assert "'completed'" in cell_text(cells["wait"])
    # %heroes status: the list has it, completed; one id gives its handle
    assert r["everything"]["type"] == "DataFrame"
    assert {
        "id": r["run"]["id"],
        "template": "monte-carlo-pi",
        "cluster": "testbed",
        "state": "completed",
    } in r["everything"]["rows"]
    assert r["one"] == {"type": "InstanceHandle", "id": r["run"]["id"], "state": "completed"}
    # %heroes logs: the step's stdout
    assert r["log"]["type"] == "LogText" and "pi ~" in r["log"]["text"]
    # %heroes data ls / get: the output in the researcher's bucket on the S3 server, downloaded
    assert r["listing"]["type"] == "DataFrame" and r["listing"]["keys"] == [key]
    assert r["listing"]["sizes"][0] > 0
    assert r["path"] == "downloaded/result.json"  # next to the notebook
    assert json.loads((tmp_path / "downloaded" / "result.json").read_text())["pi"] == r["result"]["pi"]
    assert r["result"]["label"] == "notebook-flow" and r["result"]["samples"] == 100000
    assert r["result"]["seed"] == 3 and abs(r["result"]["pi"] - 3.14159) < 0.05
    assert str(round(r["result"]["pi"], 4))[:5] in r["log"]["text"]
    # what ran is what was asked for, on the recommended queue, as the researcher
    inst = w.client().instance(r["run"]["id"])
    assert inst["user"] == w.researcher
    assert inst["cluster"] == r["best"][0]
    assert [j["queue"] for j in inst["jobs"]] == [r["best"][1]]
    assert inst["params"] == {"samples": 100000, "seed": 3, "label": "notebook-flow"}
    assert w.tokens[w.researcher] not in nbformat.writes(nb)
