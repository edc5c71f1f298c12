"""The submission widget's "Use the recommended walltime and memory" checkbox, against the real hub +
service (local-backend cluster): hidden until a comparison advised the chosen cluster, then its
ticking submits with ``accept_advice`` (the instance asks for the advised walltime and memory); a
tick that no longer matches the comparison is refused with what to do, and nothing is sent."""

from __future__ import annotations

import pytest
from client.world import World, build_world

from jupyter_heroes.widgets import SubmissionWidget
from jupyter_heroes.widgets.submission import HIDDEN

pytestmark = [
    pytest.mark.hub,
    pytest.mark.s3,
    pytest.mark.parametrize("hub", ["sqlite"], indirect=True),
    pytest.mark.timeout(240),
]


@pytest.fixture(scope="module")
def world(hub, s3_server, tmp_path_factory) -> World:
    """A world of its own (the submissions here must not show up in other widget tests' lists)."""
    return build_world(hub, "fwa", tmp_path_factory.mktemp("fwa-scratch"), s3_server)


def test_ticking_the_checkbox_submits_with_the_advice(world):
    client = world.client(organization=world.org)
    sw = SubmissionWidget(client)
    submitted = []
    try:
        assert sw.advice_row.layout.display == HIDDEN  # nothing compared yet
        sw.template_picker.value = "monte-carlo-pi"
        df = sw.compare()
        assert sw.cluster_box.value == "local"
        advice = df[df["cluster"] == "local"].iloc[0]["advice"]["estimate"]
        assert sw.advice_row.layout.display is None and sw.advice_box.value is False
        assert sw.advice_box.description == "Use the recommended walltime and memory"
        assert f"estimate: {advice['walltime']}, {advice['memory_mb']} MB" in sw.advice_info.value
        # another cluster name (not a row of the comparison): nothing advised, the checkbox hides
        sw.cluster_box.value = "elsewhere"
        assert sw.advice_row.layout.display == HIDDEN and sw.advice() is None
        sw.cluster_box.value = "local"
        assert sw.advice_row.layout.display is None
        # a changed value after Compare: the advice no longer describes this run, so it is refused
        sw.advice_box.value = True
        sw.form.fields["seed"].value = 7
        before = len(client.instances())
        assert sw.submit() is None
        assert "press Compare again" in sw.status.value and "untick" in sw.status.value
        assert len(client.instances()) == before and not sw.submit_button.disabled
        # compared again, ticked, submitted: the instance asks for the advice, the decision is followed
        df = sw.compare()
        sw.advice_box.value = True
        inst = sw.submit()
        assert inst is not None
        submitted.append(inst)
        est = inst["resources"]["estimate"]
        assert (est["walltime_s"], est["memory_mb"], est["source"]) == (
            advice["walltime_s"],
            advice["memory_mb"],
            "advice",
        )
        seen = client.request("GET", f"/organization/decision/{df.attrs['decision']}")
        assert seen["instance"] == inst["id"]
        assert sw.advice_row.layout.display == HIDDEN  # the decision is used: Compare again for the next
        # unticked: the template's resources
        sw.compare()
        sw.advice_box.value = False
        plain = sw.submit()
        submitted.append(plain)
        assert plain["resources"]["estimate"]["source"] == "template"
    finally:
        for i in submitted:
            client.cancel(i["id"])
        sw.close()
