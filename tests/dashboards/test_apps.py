"""The dashboards' widgets against a real HEROES service (the session's hub), driven the way a
visitor's clicks drive them: set the widgets' values, press the buttons' handlers, read what they
show. Every call goes through the visitor's own HeroesClient, so what one may do is what the
service allows their roles."""

from __future__ import annotations

import pytest

from jupyter_heroes.client import HeroesError
from jupyter_heroes.dashboards import AdminApp, VendorApp
from jupyter_heroes.dashboards.admin import ClustersSection, parse_document
from jupyter_heroes.dashboards.common import cell, table
from jupyter_heroes.dashboards.vendor import price_from, visibility_from

from .conftest import ORG, PROVIDER

pytestmark = pytest.mark.timeout(300)


def titles(app) -> list[str]:
    return [app.tabs.get_title(i) for i in range(len(app.tabs.children))]


def test_an_org_admin_gets_the_tabs_of_her_scopes_and_creates_a_role(dash_world):
    app = AdminApp(dash_world.client("admin"))
    assert app.organization == ORG
    assert titles(app) == [
        "Users",
        "Groups",
        "Roles",
        "Clusters",
        "Templates",
        "Offers",
        "Budgets",
        "Reports",
        "Audit",
    ]
    users = app.section("Users")
    assert "data-key='dashu-rob'" in users.listing.value and "researcher" in users.listing.value

    roles = app.section("Roles")
    roles.name.value = "bucket-keeper"
    roles.scope_boxes["data:manage"].value = True
    roles.create()
    assert "role bucket-keeper created with data:manage" in roles.notice.value
    assert "data-key='bucket-keeper'" in roles.listing.value
    assert roles.name.value == "" and not roles.scope_boxes["data:manage"].value
    # a scope she does not hold: the service's refusal, shown; the form keeps what was typed
    roles.name.value = "publisher"
    roles.scope_boxes["resources:publish"].value = True
    roles.create()
    assert "you lack custom:heroes:resources:publish" in roles.notice.value
    assert roles.name.value == "publisher"
    # nothing ticked: said before anything is sent
    roles.scope_boxes["resources:publish"].value = False
    roles.create()
    assert "tick at least one scope" in roles.notice.value
    names = [r["name"] for r in dash_world.api("admin").roles()]
    assert "bucket-keeper" in names and "publisher" not in names

    roles.assign_user.value = "dashu-tim"
    roles.assign_role.value = "bucket-keeper"
    roles.assign()
    assert "dashu-tim now holds bucket-keeper" in roles.notice.value


def test_enrol_a_local_cluster_and_see_its_check(dash_world):
    app = AdminApp(dash_world.client("admin"))
    cl = app.section("Clusters")
    assert isinstance(cl, ClustersSection)
    cl.name.value = "dash-local"
    cl.transport.value = "local"
    cl.scheduler.value = "local"
    cl.scratch.value = str(dash_world.work / "admin-scratch")
    cl.queues.value = "debug"
    cl.enrol()
    assert cl.busy and cl.enrol_button.disabled
    threads = [t for t in __import__("threading").enumerate() if t.name == "heroes-dash-heroes-clusters"]
    for t in threads:
        t.join(120)
    assert not cl.busy and not cl.enrol_button.disabled
    assert "cluster dash-local enrolled and checked: compliant" in cl.notice.value, cl.notice.value
    assert cl.last_check is not None and cl.last_check["compliant"] is True
    assert [i["status"] for i in cl.last_check["items"]] == ["ok"] * len(cl.last_check["items"])
    assert "class='heroes-check-item'" in cl.report.value and "data-status='ok'" in cl.report.value
    assert "data-key='dash-local'" in cl.listing.value
    # the same name again: the service's 409, the listing unchanged
    cl.enrol()
    for t in [t for t in __import__("threading").enumerate() if t.name == "heroes-dash-heroes-clusters"]:
        t.join(60)
    assert f"cluster dash-local already exists in {ORG}" in cl.notice.value


def test_a_researcher_administers_nothing_and_the_service_refuses_her(dash_world):
    app = AdminApp(dash_world.client("researcher"))
    assert app.tabs.children == ()
    assert "dashu-rob administers no organization" in app.notice.value
    # her kernel calls the service with her token: refused whatever the dashboard would try
    api = dash_world.api("researcher")
    with pytest.raises(HeroesError, match="users:manage") as e:
        api.create_role("sneaky", ["data:manage"])
    assert e.value.status == 403 and e.value.reason == "missing_scope"
    with pytest.raises(HeroesError) as e:
        api.clusters()
    assert e.value.status == 403


def test_a_vendor_publishes_an_offer_and_an_admin_enables_it(dash_world):
    vendor = VendorApp(dash_world.client("vendor"))
    assert vendor.organization == PROVIDER
    assert titles(vendor) == ["Offers", "Usage and revenue"]  # no apps:publish: no Applications tab
    offers = vendor.section("Offers")
    assert offers.cluster.options == ()  # a resource provider without clusters:manage types the cluster
    offers.name.value = "dashu-debug"
    offers.cluster.value = "local"
    offers.queue.value = "nope"
    offers.rates["fixed"].value = "0.10"
    offers.visibility.value = ORG
    offers.publish()
    assert "error" in offers.notice.value and "nope" in offers.notice.value  # a queue the cluster lacks
    offers.queue.value = "debug"
    offers.rates["core_hour"].value = "abc"
    offers.publish()
    assert "price.core_hour" in offers.notice.value
    offers.rates["core_hour"].value = "0.02"
    offers.publish()
    assert f"offer dashu-debug published (version 1, visible to {ORG})" in offers.notice.value
    assert "data-key='dashu-debug'" in offers.listing.value
    assert offers.cluster.options == ("local",)  # learnt from its own offers
    revenue = vendor.section("Usage and revenue")
    assert "no client has run on your offers" in revenue.by_client.value

    admin = AdminApp(dash_world.client("admin"))
    market = admin.section("Offers")
    market.offer_picker.value = None  # nothing picked: said, nothing sent
    market.disable()
    assert "pick an offer first" in market.notice.value
    (oid,) = [v for label, v in market.offer_picker.options if label.startswith("dashu-debug")]
    market.offer_picker.value = oid
    market.enable()
    assert f"offer {oid} enabled" in market.notice.value
    assert "data-enabled='true'" in market.offer_list.value
    market.disable()
    assert f"offer {oid} disabled" in market.notice.value
    assert [e["name"] for e in dash_world.api("admin").enabled_offers()] == []
    offers.picker.value = oid  # the vendor withdraws it: the admin can no longer enable it
    offers.withdraw()
    assert f"offer {oid} withdrawn" in offers.notice.value
    market.refresh()
    market.offer_picker.value = None
    market.enable()
    assert "no offer is published to this organization yet" in market.notice.value


def test_budgets_reports_and_decision_performance(dash_world):
    admin = AdminApp(dash_world.client("admin"))
    budgets = admin.section("Budgets")
    budgets.limit.value = "-5"
    budgets.create()
    assert "error" in budgets.notice.value
    budgets.limit.value = "1500"
    budgets.create()
    assert "of 1500" in budgets.notice.value and "EUR created" in budgets.notice.value
    assert "1500" in budgets.listing.value
    assert len(budgets.figure.outputs) == 1
    assert "application/vnd.plotly.v1+json" in budgets.figure.outputs[0]["data"]
    reports = admin.section("Reports")
    assert "no finished jobs in this organization yet" in reports.listing.value
    # the performance report: a table (empty yet) when the service has it, "not available" if not
    if dash_world.client("admin").has_endpoint("/organization/decision/performance"):
        assert "no finished job was submitted from a decision yet" in reports.performance.value
    else:
        assert "Decision performance not available" in reports.performance.value


def test_a_platform_admin_sees_organizations_and_health(dash_world):
    app = AdminApp(dash_world.client("padmin"))
    assert "Platform" in titles(app)
    assert ORG in app.org_picker.options and PROVIDER in app.org_picker.options
    platform = app.section("Platform")
    assert f"data-key='{ORG}'" in platform.listing.value
    assert "answering" in platform.health.value and "provider" in platform.health.value
    platform.name.value = "dashu-new"
    platform.kind.value = "provider"
    platform.create()
    assert "organization dashu-new created" in platform.notice.value
    assert "data-key='dashu-new'" in platform.listing.value
    # the platform reaches a client organization it is not a member of, with its platform scopes
    app.org_picker.value = ORG
    assert "Users" in titles(app)
    assert "data-key='dashu-ada'" in app.section("Users").listing.value


def test_helpers():
    assert cell([{"name": "org-admin", "source": "idp"}, {"name": "researcher", "source": "local"}]) == (
        "org-admin (idp), researcher"
    )
    assert cell({"fixed": "0.1", "core_hour": "0.02"}) == "fixed=0.1, core_hour=0.02"
    html = table([{"a": "<b>x</b>"}], ["a"], key="a")
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x" not in html
    assert price_from("eur", {"fixed": " 0.5 ", "core_hour": ""}) == {"currency": "EUR", "fixed": "0.5"}
    assert visibility_from("public") == "public"
    assert visibility_from("acme, globex") == ["acme", "globex"]
    assert visibility_from("") == []
    assert parse_document("name: x\nsteps: []") == {"name": "x", "steps": []}
    with pytest.raises(ValueError, match="must be a mapping"):
        parse_document("- a\n- b")
    with pytest.raises(ValueError, match="paste the template"):
        parse_document("  ")


def test_performance_rendering():
    from jupyter_heroes.dashboards.admin import performance_figure, render_any

    jobs = [
        {
            "model_version": "3",
            "actual_s": 60.0,
            "predicted_s": 90.0,
            "predicted_low_s": 40.0,
            "predicted_high_s": 200.0,
        },
        {"model_version": "4", "actual_s": 600.0, "predicted_s": 500.0},
    ]
    fig = performance_figure(jobs)
    assert [t.name for t in fig.data] == ["3", "4", "exact"]
    assert list(fig.data[0].error_y.array) == [110.0] and list(fig.data[0].error_y.arrayminus) == [50.0]
    assert fig.layout.xaxis.type == "log" and list(fig.data[2].x) == [60.0, 600.0]
    zero = performance_figure([{"model_version": "1", "actual_s": 0.0, "predicted_s": 5.0}])
    assert zero.layout.xaxis.type is None and list(zero.data[-1].x) == [0.0, 5.0]
    html = render_any({"accuracy": 0.5, "groups": [{"a": 1}, {"b": "<i>"}]}, css="t")
    assert "<h5>groups</h5>" in html and "&lt;i&gt;" in html and "0.5" in html
