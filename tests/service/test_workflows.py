"""Workflow endpoints through the real hub + service: templates, submit, instances, logs, cancel,
events; validation, roles (Table 1) and organization isolation. The cluster is the local backend
(real processes on this machine); the same engine on Slurm over SSH is tested in tests/workflows."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests

from .conftest import ACME, GLOBEX

TEMPLATES = Path(__file__).parents[2] / "templates"
HOSTILE = "$(touch /tmp/heroes-pwned) `id`; 'q' \"dq\"\n../x"


@pytest.fixture(scope="module")
def wf(world, tmp_path_factory):
    scratch = tmp_path_factory.mktemp("scratch")
    for org, admin in ((ACME, "acme-admin"), (GLOBEX, "globex-admin")):
        world.ok(
            admin,
            "POST",
            "/organization/admin/cluster",
            {
                "name": "local",
                "transport": "local",
                "scheduler": "local",
                "scratch_root": str(scratch / org),
                "queues": [{"name": "debug"}],
            },
            status=201,
        )
    import yaml

    for f in ("monte-carlo-pi.yaml", "heat-pipeline.yaml"):
        doc = yaml.safe_load((TEMPLATES / f).read_text())
        world.ok("acme-wf", "POST", "/organization/admin/workflow/template", {"template": doc}, status=201)
    return world


def wait_state(world, user, iid, states=("completed", "failed", "cancelled"), timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        inst = world.ok(user, "GET", f"/organization/workflow/instance/{iid}")
        if inst["state"] in states:
            return inst
        time.sleep(0.3)
    raise AssertionError(f"{iid} still {inst['state']}: {inst['jobs']}")


def test_researcher_runs_a_template_end_to_end(wf):
    names = {t["name"] for t in wf.ok("acme-res", "GET", "/organization/workflow/template")}
    assert {"monte-carlo-pi", "heat-pipeline"} <= names
    inst = wf.ok(
        "acme-res",
        "POST",
        "/organization/workflow/submit",
        {"template": "monte-carlo-pi", "cluster": "local", "params": {"samples": 10000, "label": HOSTILE}},
        status=201,
    )
    assert inst["state"] == "submitting" and inst["user"] == "acme-res"
    assert [j["step"] for j in inst["jobs"]] == ["estimate"]
    done = wait_state(wf, "acme-res", inst["id"])
    assert done["state"] == "completed", done["jobs"]
    assert done["jobs"][0]["exit_code"] == 0 and done["jobs"][0]["job_id"]
    assert done["jobs"][0]["accounting"]["outputs"] == [f"results/{inst['id']}/result.json"]
    logs = wf.ok(
        "acme-res", "GET", f"/organization/workflow/instance/{inst['id']}/logs", params={"step": "estimate"}
    )
    assert "pi ~" in logs["text"]
    assert not Path("/tmp/heroes-pwned").exists()
    mine = wf.ok("acme-res", "GET", "/organization/workflow/instance")
    assert inst["id"] in [i["id"] for i in mine]
    # the workflow admin sees the organization's instances, filtered by template
    org_list = wf.ok(
        "acme-wf", "GET", "/organization/admin/workflow/instance", params={"template": "monte-carlo-pi"}
    )
    assert inst["id"] in [i["id"] for i in org_list]
    submits = wf.audit_rows(action="workflow.submit", target=inst["id"])
    assert submits and submits[-1].outcome == "success" and submits[-1].user == "acme-res"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (
            {"template": "monte-carlo-pi", "cluster": "local", "params": {"samples": 5}},
            400,
            "parameter 'samples': 5 is below the minimum 1000",
        ),
        (
            {"template": "monte-carlo-pi", "cluster": "local", "params": {"bogus": 1}},
            400,
            "parameter 'bogus': unknown parameter",
        ),
        (
            {"template": "monte-carlo-pi", "cluster": "local", "params": {"samples": "1; rm -rf /"}},
            400,
            "parameter 'samples': expected an integer",
        ),
        (
            {"template": "heat-pipeline", "cluster": "local", "params": {"initial": "../../etc/passwd"}},
            400,
            "parameter 'initial'",
        ),
        ({"template": "no-such", "cluster": "local"}, 404, "workflow template 'no-such' not found"),
        ({"template": "monte-carlo-pi", "cluster": "nope"}, 404, "cluster 'nope' not found"),
        ({"template": "monte-carlo-pi", "cluster": "local", "queue": "long"}, 400, "has no queue 'long'"),
        ({"template": "monte-carlo-pi", "cluster": "local", "surprise": 1}, 400, "surprise"),
        ({"cluster": "local"}, 400, "template"),
    ],
)
def test_bad_submissions_are_refused_and_store_nothing(wf, body, status, message):
    before = len(wf.ok("acme-res", "GET", "/organization/workflow/instance"))
    r = wf.call("acme-res", "POST", "/organization/workflow/submit", body)
    assert r.status_code == status, r.text
    assert message in r.json()["message"]
    assert len(wf.ok("acme-res", "GET", "/organization/workflow/instance")) == before


def test_roles_without_submit_get_403(wf):
    for user in ("acme-bill", "acme-padm"):
        r = wf.call(
            user, "POST", "/organization/workflow/submit", {"template": "monte-carlo-pi", "cluster": "local"}
        )
        assert r.status_code == 403 and r.json()["reason"] == "missing_scope"
    r = wf.call("acme-res", "GET", "/organization/admin/workflow/instance")
    assert r.status_code == 403


def test_other_users_and_organizations_get_404(wf):
    inst = wf.ok(
        "acme-res",
        "POST",
        "/organization/workflow/submit",
        {"template": "monte-carlo-pi", "cluster": "local", "params": {"samples": 1000}},
        status=201,
    )
    iid = inst["id"]
    wait_state(wf, "acme-res", iid)
    for user in ("globex-res", "globex-admin"):
        for method, path in (
            ("GET", f"/organization/workflow/instance/{iid}"),
            ("DELETE", f"/organization/workflow/instance/{iid}"),
            ("GET", f"/organization/workflow/instance/{iid}/logs"),
        ):
            r = wf.call(user, method, path)
            assert r.status_code == 404, (user, method, path, r.text)
    # globex cannot run acme's template either (it does not exist for them)
    r = wf.call(
        "globex-res",
        "POST",
        "/organization/workflow/submit",
        {"template": "monte-carlo-pi", "cluster": "local"},
    )
    assert r.status_code == 404
    # another acme user without workflows:manage does not see it; the workflow admin does
    assert wf.call("multi-mia", "GET", f"/organization/workflow/instance/{iid}", org=ACME).status_code == 404
    assert wf.call("acme-wf", "GET", f"/organization/workflow/instance/{iid}").status_code == 200
    assert wf.call("acme-res", "GET", "/organization/workflow/instance/" + "0" * 32).status_code == 404
    assert wf.call("acme-res", "GET", "/organization/workflow/instance/not-an-id").status_code == 404


def test_cancel_and_event_stream(wf):
    url = wf.hub.api_url + "/organization/workflow/events"
    with requests.get(
        url,
        headers={"Authorization": f"token {wf.tokens['acme-res']}"},
        params={"timeout": 60},
        stream=True,
        timeout=90,
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        inst = wf.ok(
            "acme-res",
            "POST",
            "/organization/workflow/submit",
            {"template": "monte-carlo-pi", "cluster": "local", "params": {"samples": 2_000_000_000}},
            status=201,
        )
        events = []
        for line in stream.iter_lines(decode_unicode=True):
            if line.startswith("data: "):
                ev = json.loads(line[6:])
                events.append(ev)
                if ev.get("instance") == inst["id"] and ev.get("type") == "job" and ev.get("job_id"):
                    r = wf.call("acme-res", "DELETE", f"/organization/workflow/instance/{inst['id']}")
                    assert r.status_code == 202, r.text
                if (
                    ev.get("instance") == inst["id"]
                    and ev.get("type") == "instance"
                    and ev["state"] == "cancelled"
                ):
                    break
    assert [e for e in events if e.get("instance") == inst["id"] and e.get("state") == "cancelled"]
    assert all("org_id" not in e for e in events)
    assert wait_state(wf, "acme-res", inst["id"])["state"] == "cancelled"
    assert wf.audit_rows(action="workflow.cancel", target=inst["id"])


def test_event_stream_shows_no_other_users_events(wf):
    url = wf.hub.api_url + "/organization/workflow/events"
    with requests.get(
        url,
        headers={"Authorization": f"token {wf.tokens['globex-res']}"},
        params={"timeout": 4},
        stream=True,
        timeout=30,
    ) as stream:
        wf.ok(
            "acme-res",
            "POST",
            "/organization/workflow/submit",
            {"template": "monte-carlo-pi", "cluster": "local", "params": {"samples": 1000}},
            status=201,
        )
        lines = [ln for ln in stream.iter_lines(decode_unicode=True) if ln.startswith("data: ")]
    assert lines == []
