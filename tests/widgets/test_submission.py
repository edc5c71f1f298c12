"""SubmissionWidget and JobMonitor objects against the real hub + service (local-backend cluster):
the form comes from the template's declarations, a bad value is refused inline, Submit calls the
service, and the monitor follows the event stream to the end."""

from __future__ import annotations

import threading
import time

import ipywidgets as w
import pytest

from jupyter_heroes.widgets import JobMonitor, SubmissionWidget

pytestmark = [
    pytest.mark.hub,
    pytest.mark.s3,
    pytest.mark.parametrize("hub", ["sqlite"], indirect=True),
    pytest.mark.timeout(240),
]


@pytest.fixture
def world(faces_widgets_world):
    return faces_widgets_world


def monitor_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("heroes-monitor-")]


def test_researcher_fills_the_form_submits_and_watches(world):
    sw = SubmissionWidget(world.client())
    try:
        # a member of two organizations chooses; the other has no templates
        assert sw.org_picker.layout.display is None
        assert sorted(v for _, v in sw.org_picker.options) == sorted([world.org, world.other_org])
        sw.org_picker.value = world.other_org
        assert sw.template_picker.options == () and sw.form is None
        assert "No workflow templates are available" in sw.status.value
        sw.org_picker.value = world.org
        assert [v for _, v in sw.template_picker.options] == ["monte-carlo-pi", "run-python"]
        assert sw.template_picker.value == "monte-carlo-pi"
        assert set(sw.form.fields) == {"samples", "seed", "label"}
        assert isinstance(sw.form.fields["samples"].input, w.IntText)
        assert "Estimate pi" in sw.template_info.value
        # a researcher who has run nothing yet is offered where she may submit: the only cluster is filled in
        assert list(sw.cluster_box.options) == ["local"] and sw.cluster_box.value == "local"
        assert not sw.submit_button.disabled
        sw.cluster_box.value = ""
        assert sw.submit_button.disabled and sw.submit_button.tooltip == "choose a cluster first"
        sw.cluster_box.value = "local"
        assert not sw.submit_button.disabled
        # a bad value: red message next to the field, Submit disabled, nothing sent
        sw.form.fields["samples"].value = 5
        assert "must be at least 1000" in sw.form.fields["samples"].error.value
        assert sw.submit_button.disabled
        assert "samples" in sw.submit_button.tooltip
        assert sw.submit() is None and "fix the marked parameters first: samples" in sw.status.value
        assert world.client(organization=world.org).instances() == []
        sw.form.fields["samples"].value = 20000
        sw.form.fields["label"].value = "from the widget"
        assert not sw.submit_button.disabled
        sw.submit_button.click()
        inst = sw.instance
        assert inst is not None and inst["params"] == {
            "samples": 20000,
            "seed": 42,
            "label": "from the widget",
        }
        assert "submitted workflow" in sw.status.value and inst["id"] in sw.status.value
        mon = sw.monitor
        assert isinstance(mon, JobMonitor) and sw.monitor_box.children == (mon,)
        assert mon.wait(120), mon.events
        assert mon.state == "completed"
        assert "data-state='completed'" in mon.title.value
        assert mon.jobs["estimate"]["state"] == "completed" and mon.jobs["estimate"]["exit_code"] == 0
        assert "data-step='estimate' data-state='completed'" in mon.steps_box.children[0].value
        assert mon.cancel_button.disabled
        assert "pi ~" in mon.log_view.value
        assert f"results/{inst['id']}/result.json" in mon.outputs_view.value
        # the output's copy to the researcher's bucket, from the stream's staging events
        staged = [e for e in mon.events if e["type"] == "staging"]
        assert staged and {e["file"] for e in staged} == {"result.json"}
        assert "output <code>result.json</code> done" in mon.staging_view.value
        # the events came from the stream (a snapshot, then job and instance events)
        assert mon.events[0]["type"] == "snapshot"
        assert {"job", "instance"} <= {e["type"] for e in mon.events} or mon.events[0]["state"] == "completed"
        # the next widget suggests the cluster used before
        again = SubmissionWidget(world.client(organization=world.org))
        assert again.cluster_box.value == "local" and list(again.cluster_box.options) == ["local"]
        again.close()
        # Compare, then Submit: the submission follows the decision, which records the choice
        df = sw.compare()
        decision = df.attrs["decision"]
        followed = sw.submit()
        client = world.client(organization=world.org)
        seen = client.request("GET", f"/organization/decision/{decision}")
        assert seen["instance"] == followed["id"] and seen["chosen"] and seen["accepted"] is True
        # changed values after Compare: the comparison no longer describes the run, so it is not sent
        sw.compare()
        sw.form.fields["seed"].value = 43
        again_inst = sw.submit()
        assert again_inst is not None
        assert (
            client.request("GET", f"/organization/decision/{sw.decision.attrs['decision']}")["instance"]
            is None
        )
        for i in (followed, again_inst):
            client.cancel(i["id"])
    finally:
        sw.close()
    time.sleep(0.2)
    assert not monitor_threads()


def test_the_services_refusal_is_shown_next_to_the_field(world):
    sw = SubmissionWidget(world.client(organization=world.org), template="monte-carlo-pi", cluster="local")
    try:
        # a form older than the template's rules (here: its minimum forgotten) lets a value through ...
        field = sw.form.fields["samples"]
        field.decl.pop("min")
        field.value = 5
        assert not sw.submit_button.disabled
        assert sw.submit() is None
        # ... and the service's message lands next to it
        assert "5 is below the minimum 1000" in field.error.value
        assert (
            "the service refused the submission: parameter 'samples': 5 is below the minimum 1000"
            in sw.status.value
        )
        assert sw.monitor is None and not sw.submit_button.disabled
        sw.cluster_box.value = "mars"
        field.value = 5000
        assert sw.submit() is None and "cluster 'mars' not found" in sw.status.value
    finally:
        sw.close()


def test_an_admin_gets_clusters_queues_and_the_budget(world):
    admin = world.client(world.admin, organization=world.org)
    admin.request("POST", "/organization/budgets", json_body={"limit": "250", "currency": "EUR"})
    sw = SubmissionWidget(admin)
    try:
        assert sw.org_picker.layout.display is None  # the admin is in two organizations
        assert sw.org_picker.value == world.org
        assert list(sw.cluster_box.options) == ["local"] and sw.cluster_box.value == "local"
        assert list(sw.queue_box.options) == ["debug"]
        assert "Budget (organization): 0.00 of 250.00 EUR spent, 250.00 available" in sw.budget.value
    finally:
        sw.close()
    researcher = SubmissionWidget(world.client(organization=world.org))
    try:
        assert "heroes-budget-line" in researcher.budget.value  # their own usage instead
        assert "Budget" not in researcher.budget.value
    finally:
        researcher.close()


def test_a_template_with_a_script_parameter(world):
    sw = SubmissionWidget(world.client(organization=world.org), template="run-python", cluster="local")
    try:
        assert sw.form.problems == {"script": "required"} and sw.submit_button.disabled
        sw.form.fields["script"].value = "print('widget', 6 * 7)"
        sw.form.fields["repeat"].value = 9
        assert sw.form.problems == {"repeat": "must be at most 5"}
        sw.form.fields["repeat"].value = 2
        inst = sw.submit()
        assert inst is not None
        assert sw.monitor.wait(120) and sw.monitor.state == "completed"
        assert "widget 42" in sw.monitor.log_view.value
    finally:
        sw.close()


def test_monitor_applies_events_and_stops_on_close(world):
    c = world.client(organization=world.org)
    inst = c.submit("monte-carlo-pi", {"samples": 2_000_000_000}, cluster="local")
    mon = JobMonitor(c, inst, follow=False)
    try:
        assert mon.state == "submitting" and not mon.following
        # events as the stream delivers them (other instances' are ignored)
        mon.apply_event({"type": "job", "instance": "f" * 32, "step": "estimate", "state": "failed"})
        mon.apply_event(
            {
                "type": "job",
                "instance": inst["id"],
                "step": "estimate",
                "state": "queued",
                "reason": "Priority",
                "job_id": "77",
            }
        )
        row = mon.steps_box.children[0].value
        assert "data-state='queued'" in row and "Priority" in row and "job 77" in row
        mon.apply_event({"type": "instance", "instance": inst["id"], "state": "queued"})
        assert mon.state == "queued" and "data-state='queued'" in mon.title.value
        assert not mon.cancel_button.disabled
        assert len(mon.events) == 2
        # now follow the real stream: it is running
        mon.start()
        deadline = time.monotonic() + 60
        while mon.jobs["estimate"].get("state") != "running":
            assert time.monotonic() < deadline, mon.events
            time.sleep(0.1)
        assert mon.following
        # the cancel button cancels it, and the stream shows the end
        mon.cancel_button.click()
        assert mon.wait(60) and mon.state == "cancelled"
        assert mon.cancel_button.disabled
    finally:
        mon.close()
    assert not mon.following


def test_closing_a_following_monitor_stops_its_thread(world):
    c = world.client(organization=world.org)
    inst = c.submit("monte-carlo-pi", {"samples": 2_000_000_000}, cluster="local")
    mon = JobMonitor(c, inst["id"])
    try:
        deadline = time.monotonic() + 30
        while len(mon.events) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert mon.following
        t0 = time.monotonic()
        mon.close()
        assert not mon.following and time.monotonic() - t0 < 5
    finally:
        c.cancel(inst["id"])
    assert c.wait(inst["id"], 60)["state"] == "cancelled"
