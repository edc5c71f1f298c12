"""The shipped walkthrough notebook (decide -> submit -> results) executed headless by nbclient in a real
kernel, which finds the service and its identity in its environment as in a JupyterHub server."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = [
    pytest.mark.hub,
    pytest.mark.s3,
    pytest.mark.parametrize("hub", ["sqlite"], indirect=True),
    pytest.mark.timeout(300),
]

WALKTHROUGH = Path(__file__).resolve().parents[2] / "notebooks" / "walkthrough.ipynb"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

CHECK = """\
import json
print("RESULT " + json.dumps({
    "columns": list(templates.columns),
    "names": sorted(templates["name"]),
    "handle": type(run).__name__,
    "state": run.state,
    "id": run.id,
    "outputs": run.outputs,
    "pi": pi,
    "cluster": cluster,
    "ranking": None if ranking is None else list(ranking.columns),
    "files": [str(f) for f in files],
    "result": result,
    "listing": None if listing is None else list(listing["key"]),
}))
"""


def cell(nb, cell_id: str):
    return next(c for c in nb.cells if c.get("id") == cell_id)


def text_of(c) -> str:
    out = []
    for o in c.get("outputs", []):
        if o.get("output_type") == "stream":
            out.append(o["text"])
        elif "data" in o and "text/plain" in o["data"]:
            out.append(o["data"]["text/plain"])
    return "".join(out)


def test_walkthrough_runs_end_to_end(kernel_env, monkeypatch, tmp_path):
    monkeypatch.setenv("HEROES_CLUSTER", "local")
    nb = nbformat.read(WALKTHROUGH, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), (
        "ship the notebook without outputs"
    )
    nb.cells.append(nbformat.v4.new_code_cell(CHECK, id="check"))
    NotebookClient(
        nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()

    result = json.loads(text_of(cell(nb, "check")).split("RESULT ", 1)[1])
    assert result["columns"] == ["name", "version", "description", "parameters", "steps", "accepts_script"]
    assert result["names"] == ["monte-carlo-pi", "run-python"]
    assert result["handle"] == "InstanceHandle"
    assert result["state"] == "completed"
    assert result["outputs"] == [f"results/{result['id']}/result.json"]
    assert abs(result["pi"] - 3.14159) < 0.05
    assert result["cluster"] == "local"
    # the output came back from the researcher's bucket into the notebook's directory
    key = f"results/{result['id']}/result.json"
    assert result["files"] == [str(tmp_path / "results" / result["id"] / "result.json")]
    assert result["result"]["label"] == "walkthrough" and result["result"]["samples"] == 200000
    assert result["result"]["pi"] == pytest.approx(result["pi"], abs=1e-4)
    assert result["listing"] == [key]
    # the submission cell's output is the live monitor widget
    submit_outputs = cell(nb, "submit")["outputs"]
    assert any(WIDGET_VIEW in o.get("data", {}) for o in submit_outputs), submit_outputs
    assert "'completed'" in text_of(cell(nb, "wait"))
    assert "pi ~" in text_of(cell(nb, "results"))
    assert "monte-carlo-pi" in cell(nb, "templates")["outputs"][0]["data"]["text/html"]
    status_html = cell(nb, "status")["outputs"][0]["data"]["text/html"]
    assert result["id"] in status_html
    # the instance is the researcher's, in the environment's organization
    inst = kernel_env.client(organization=kernel_env.org).instance(result["id"])
    assert inst["user"] == kernel_env.researcher and inst["params"]["label"] == "walkthrough"
    # and no token leaked into the notebook
    assert kernel_env.tokens[kernel_env.researcher] not in nbformat.writes(nb)
