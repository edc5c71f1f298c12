"""The admin and vendor dashboards in a real browser, served by a real JupyterHub as the Voila services
``heroes-admin`` and ``heroes-vendor`` (``install_heroes_apps``), behind hub login and gated by hub
groups:

- an organization admin opens the admin app, creates a role, enrols the test bed's Slurm cluster
  (over the test bed's OpenSSH, host key pinned) and sees its compliance check item by item;
- a researcher opening the admin app is refused by the hub (403); one who has been let in by the
  hub anyway (put into the admin group) gets a dashboard that says they administer nothing, and the
  service refuses their calls: the kernel acts as the visitor, not as a service identity;
- a vendor publishes an offer in the vendor app; the org admin enables it in the admin app; it is
  then a candidate of a researcher's decision.

Screenshots go to ``test-artifacts/screenshots/dashboard-*.png`` (used by docs/admin/dashboard.md
and docs/vendor/dashboard.md).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import yaml

from jupyter_heroes.client import HeroesClient
from jupyter_heroes.serverext.testing import REPO_DIR
from jupyter_heroes.testing.base import free_port
from jupyter_heroes.testing.browser import hub_login
from jupyter_heroes.testing.plugin_hub import PLATFORM_ADMIN

pytestmark = [pytest.mark.browser, pytest.mark.hub, pytest.mark.slurm, pytest.mark.timeout(600)]

ORG = "dash-corp"
PROVIDER = "dash-hpc"
ADMIN = "dash-ada"
RESEARCHER = "dash-rob"
VENDOR = "dash-vera"
#: a researcher an operator let into the admin app by mistake
INTRUDER = "dash-ric"
OFFER = "dash-debug"
TEMPLATE = "monte-carlo-pi"


@pytest.fixture(scope="module")
def apps(hub_factory, tmp_path_factory):
    """A hub serving both dashboards; ORG (a client) with an org admin and a researcher, PROVIDER
    (a vendor) with a resource provider and a local cluster the platform enrolled for it."""
    work = tmp_path_factory.mktemp("dashboards-hub")
    ports = {"admin": free_port(), "vendor": free_port()}
    hub = hub_factory(
        extra_config=(
            "from jupyter_heroes.hubconfig_apps import install_heroes_apps\n"
            f"install_heroes_apps(c, ports={ports!r})\n"
        )
    )
    padmin = hub.create_user(PLATFORM_ADMIN)
    tokens = {u: hub.create_user(u) for u in (ADMIN, RESEARCHER, VENDOR, INTRUDER)}

    def ok(r, status=201):
        assert r.status_code == status, r.text
        return r.json() if r.text else None

    ok(hub.api("POST", "/heroes/admin/organizations", padmin, {"name": ORG, "display_name": "Dash Corp"}))
    ok(hub.api("POST", "/heroes/admin/organizations", padmin, {"name": PROVIDER, "kind": "provider"}))
    ok(
        hub.api(
            "POST", "/organization/admin/users", padmin, {"username": ADMIN, "roles": ["org-admin"]}, org=ORG
        )
    )
    ok(
        hub.api(
            "POST",
            "/organization/admin/users",
            padmin,
            {"username": RESEARCHER, "roles": ["researcher"]},
            org=ORG,
        )
    )
    ok(
        hub.api(
            "POST",
            "/organization/admin/users",
            padmin,
            {"username": INTRUDER, "roles": ["researcher"]},
            org=ORG,
        )
    )
    ok(
        hub.api(
            "POST",
            "/organization/admin/users",
            padmin,
            {"username": VENDOR, "roles": ["resource-provider"]},
            org=PROVIDER,
        )
    )
    local = {
        "name": "local",
        "transport": "local",
        "scheduler": "local",
        "scratch_root": str(work / "scratch"),
        "queues": [{"name": "debug"}],
    }
    ok(hub.api("POST", "/organization/admin/cluster", padmin, local, org=PROVIDER))
    own = {**local, "name": "own", "scratch_root": str(work / "own-scratch")}
    ok(hub.api("POST", "/organization/admin/cluster", tokens[ADMIN], own, org=ORG))
    doc = yaml.safe_load((REPO_DIR / "templates" / f"{TEMPLATE}.yaml").read_text())
    ok(hub.api("POST", "/organization/admin/workflow/template", tokens[ADMIN], {"template": doc}, org=ORG))
    # the hub decides who gets into which app: its groups (install_heroes_apps' defaults)
    for group, user in (
        ("heroes-admins", ADMIN),
        ("heroes-admins", PLATFORM_ADMIN),
        ("heroes-vendors", VENDOR),
    ):
        r = hub.hub_api("POST", f"/groups/{group}/users", {"users": [user]})
        assert r.status_code == 200, r.text
    return SimpleNamespace(
        hub=hub,
        tokens=tokens,
        padmin=padmin,
        admin_url=f"{hub.url}/services/heroes-admin/",
        vendor_url=f"{hub.url}/services/heroes-vendor/",
    )


def login(page, hub, username: str) -> None:
    hub_login(page, hub.url, username)
    page.wait_for_url("**/hub/**", timeout=60_000)


def open_app(browser, apps, username: str, url: str, css: str):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = ctx.new_page()
    login(page, apps.hub, username)
    page.goto(url, timeout=120_000)
    page.locator(f".{css}").wait_for(timeout=120_000)
    return ctx, page


def tab(page, title: str) -> None:
    page.locator(".lm-TabBar-tab", has_text=title).first.click()


def test_org_admin_creates_a_role_and_enrols_a_cluster(apps, browser, screenshots_dir, slurm_cluster):
    ctx, page = open_app(browser, apps, ADMIN, apps.admin_url, "heroes-admin-app")
    try:
        app = page.locator(".heroes-admin-app")
        assert f"signed in as {ADMIN}" in app.locator(".heroes-visitor").inner_text()
        # the tabs follow the visitor's scopes in the organization: an org admin has no Platform tab
        titles = page.locator(".lm-TabBar-tab").all_inner_texts()
        assert {"Users", "Roles", "Clusters", "Offers", "Budgets", "Reports"} <= {t.strip() for t in titles}
        assert "Platform" not in {t.strip() for t in titles}
        page.locator(".heroes-user-list tr[data-key='dash-rob']").wait_for(timeout=30_000)
        page.screenshot(path=str(screenshots_dir / "dashboard-admin-01-users.png"))

        # a role with an administrative scope the admin holds
        tab(page, "Roles")
        roles = page.locator(".heroes-roles")
        roles.locator(".heroes-role-name input").fill("data-steward")
        roles.locator(".heroes-role-description input").fill("looks after the project buckets")
        roles.locator(".heroes-scope-data-manage input").check()
        roles.locator(".heroes-scope-data-home input").check()
        roles.locator("button.heroes-role-create").click()
        row = roles.locator(".heroes-role-list tr[data-key='data-steward']")
        row.wait_for(timeout=30_000)
        assert "data:manage" in row.inner_text() and "organization" in row.inner_text()
        assert "role data-steward created" in roles.locator(".heroes-notice").inner_text()
        page.screenshot(path=str(screenshots_dir / "dashboard-admin-02-role.png"))
        # ... and one with a scope the admin does not hold is refused with the service's reason
        roles.locator(".heroes-role-name input").fill("vendor-ish")
        roles.locator(".heroes-scope-resources-publish input").check()
        roles.locator("button.heroes-role-create").click()
        roles.locator(".heroes-notice .error", has_text="you lack custom:heroes:resources:publish").wait_for(
            timeout=30_000
        )

        # enrol the test bed's Slurm cluster over SSH; the compliance check runs and shows item by item
        ssh = slurm_cluster.ssh
        tab(page, "Clusters")
        cl = page.locator(".heroes-clusters")
        cl.locator(".heroes-cluster-name input").fill("testbed")
        cl.locator(".heroes-cluster-host input").fill(ssh.host)
        cl.locator(".heroes-cluster-port input").fill(str(ssh.port))
        cl.locator(".heroes-cluster-user input").fill(ssh.username)
        cl.locator(".heroes-cluster-hostkey textarea").fill(ssh.host_key)
        cl.locator(".heroes-cluster-key textarea").fill(ssh.private_key)
        cl.locator(".heroes-cluster-scratch input").fill(str(ssh.scratch_root))
        cl.locator(".heroes-cluster-queues input").fill("debug, long")
        page.screenshot(path=str(screenshots_dir / "dashboard-admin-03-enrol.png"))
        cl.locator("button.heroes-cluster-enrol").click()
        report = cl.locator(".heroes-check[data-cluster='testbed']")
        report.wait_for(timeout=300_000)
        items = cl.locator("tr.heroes-check-item")
        statuses = {
            items.nth(i).get_attribute("data-key"): items.nth(i).get_attribute("data-status")
            for i in range(items.count())
        }
        for name in (
            "POSIX login shell",
            "sbatch present",
            "Slurm version",
            "scratch writable from a compute node",
        ):
            assert statuses[name] == "ok", statuses
        assert report.get_attribute("data-compliant") == "true", statuses
        cl.locator(".heroes-notice", has_text="enrolled and checked: compliant").wait_for(timeout=30_000)
        # the private key left the browser once enrolled
        assert cl.locator(".heroes-cluster-key textarea").input_value() == ""
        cl.locator(".heroes-cluster-list tr[data-key='testbed']").wait_for(timeout=30_000)
        report.scroll_into_view_if_needed()
        page.screenshot(path=str(screenshots_dir / "dashboard-admin-04-check.png"))

        # a budget, drawn by plotly's renderer inside Voila
        tab(page, "Budgets")
        budgets = page.locator(".heroes-budgets")
        budgets.locator(".heroes-budget-limit input").fill("2500")
        budgets.locator("button.heroes-budget-create").click()
        budgets.locator(".heroes-budget-list td.limit", has_text="2500").wait_for(timeout=30_000)
        budgets.locator(".js-plotly-plot").wait_for(timeout=60_000)
        page.screenshot(path=str(screenshots_dir / "dashboard-admin-08-budgets.png"))
        assert "Traceback" not in page.inner_text("body")
    except Exception:
        page.screenshot(path=str(screenshots_dir / "dashboard-failed-admin.png"))
        raise
    finally:
        ctx.close()
    # what the browser did is what the service holds, done by the admin herself (the audit trail)
    hub, token = apps.hub, apps.tokens[ADMIN]
    role = hub.api("GET", "/organization/admin/roles/data-steward", token).json()
    assert role["scopes"] == ["custom:heroes:data:home", "custom:heroes:data:manage"]
    clusters = hub.api("GET", "/organization/admin/cluster", token).json()
    (testbed,) = [c for c in clusters if c["name"] == "testbed"]
    assert testbed["has_private_key"] and [q["name"] for q in testbed["queues"]] == ["debug", "long"]
    entries = hub.api("GET", "/organization/admin/audit", token, params={"limit": 50}).json()
    by_action = {(e["action"], e["user"], e["outcome"]) for e in entries}
    assert ("role.create", ADMIN, "success") in by_action
    assert ("role.create", ADMIN, "denied") in by_action
    assert ("cluster.create", ADMIN, "success") in by_action
    assert ("cluster.check", ADMIN, "success") in by_action


def test_a_researcher_is_refused_by_the_hub(apps, browser, screenshots_dir):
    ctx = browser.new_context(viewport={"width": 1200, "height": 800})
    page = ctx.new_page()
    try:
        login(page, apps.hub, RESEARCHER)
        response = page.goto(apps.admin_url, timeout=60_000)
        assert response is not None and response.status == 403
        assert "You do not have permission to access JupyterHub service heroes-admin" in page.inner_text(
            "body"
        )
        assert page.locator(".heroes-admin-app").count() == 0
        page.screenshot(path=str(screenshots_dir / "dashboard-admin-05-refused.png"))
        # the vendor app too
        response = page.goto(apps.vendor_url, timeout=60_000)
        assert response is not None and response.status == 403
    finally:
        ctx.close()


def test_a_platform_admin_manages_organizations(apps, browser, screenshots_dir):
    ctx, page = open_app(browser, apps, PLATFORM_ADMIN, apps.admin_url, "heroes-admin-app")
    try:
        tab(page, "Platform")
        platform = page.locator(".heroes-platform")
        platform.locator(f".heroes-org-list tr[data-key='{ORG}']").wait_for(timeout=30_000)
        health = platform.locator(".heroes-health-table")
        assert "answering" in health.locator("tr[data-key='service']").inner_text()
        platform.locator(".heroes-org-name input").fill("dash-newco")
        platform.locator(".heroes-org-display input").fill("New Co")
        platform.locator("button.heroes-org-create").click()
        platform.locator(".heroes-org-list tr[data-key='dash-newco']").wait_for(timeout=30_000)
        page.screenshot(path=str(screenshots_dir / "dashboard-admin-10-platform.png"))
    finally:
        ctx.close()
    orgs = apps.hub.api("GET", "/heroes/admin/organizations", apps.padmin).json()
    assert {"name": "dash-newco", "display_name": "New Co", "kind": "client"}.items() <= next(
        o for o in orgs if o["name"] == "dash-newco"
    ).items()


def kernel_id(page) -> str:
    return page.evaluate("JSON.parse(document.getElementById('jupyter-config-data').textContent).kernelId")


def test_the_kernel_acts_as_its_visitor(apps, browser, screenshots_dir):
    """The hub lets a researcher in (an operator put them into the admin group): the dashboard's
    kernel is theirs, with their identity, so it shows them nothing to administer; and they cannot
    reach an admin's kernel."""
    r = apps.hub.hub_api("POST", "/groups/heroes-admins/users", {"users": [INTRUDER]})
    assert r.status_code == 200, r.text
    ctx_i, page_i = open_app(browser, apps, INTRUDER, apps.admin_url, "heroes-admin-app")
    ctx_a, page_a = open_app(browser, apps, ADMIN, apps.admin_url, "heroes-admin-app")
    try:
        app = page_i.locator(".heroes-admin-app")
        # the service answered /me for the visitor's own token, not a service identity
        assert f"signed in as {INTRUDER}" in app.locator(".heroes-visitor").inner_text()
        app.locator(".heroes-notice .error", has_text=f"{INTRUDER} administers no organization").wait_for(
            timeout=30_000
        )
        assert page_i.locator(".lm-TabBar-tab").count() == 0
        page_i.screenshot(path=str(screenshots_dir / "dashboard-admin-07-no-admin-roles.png"))

        # each kernel belongs to its visitor: the admin's kernel is hers alone
        admins_kernel = kernel_id(page_a)
        url = f"{apps.admin_url}api/kernels/{admins_kernel}"
        assert ctx_a.request.get(url).status == 200
        assert ctx_i.request.get(url).status == 403
        assert ctx_i.request.delete(url).status == 403
        assert ctx_a.request.get(url).status == 200  # still alive
    finally:
        ctx_i.close()
        ctx_a.close()


def test_a_vendor_publishes_an_offer_that_an_admin_enables(apps, browser, screenshots_dir):
    ctx, page = open_app(browser, apps, VENDOR, apps.vendor_url, "heroes-vendor-app")
    try:
        offers = page.locator(".heroes-vendor-offers")
        offers.locator(".heroes-offer-name input").fill(OFFER)
        offers.locator(".heroes-offer-cluster input").fill("local")
        offers.locator(".heroes-offer-queue input").fill("debug")
        offers.locator(".heroes-offer-fixed input").fill("0.10")
        offers.locator(".heroes-offer-core-hour input").fill("-0.02")
        offers.locator(".heroes-offer-terms textarea").fill("Best effort; scratch is wiped after 30 days.")
        offers.locator(".heroes-offer-visibility input").fill(ORG)
        # a negative price: the service's refusal, naming the field
        offers.locator("button.heroes-offer-publish").click()
        offers.locator(".heroes-notice .error", has_text="price.core_hour").wait_for(timeout=30_000)
        assert offers.locator(f".heroes-vendor-offer-list tr[data-key='{OFFER}']").count() == 0
        offers.locator(".heroes-offer-core-hour input").fill("0.02")
        offers.locator("button.heroes-offer-publish").click()
        row = offers.locator(f".heroes-vendor-offer-list tr[data-key='{OFFER}']")
        row.wait_for(timeout=30_000)
        assert row.get_attribute("data-state") == "active"
        assert "core_hour=0.02" in row.inner_text() and ORG in row.inner_text()
        page.screenshot(path=str(screenshots_dir / "dashboard-vendor-01-offer.png"))
        tab(page, "Usage and revenue")
        page.locator(".heroes-revenue-clients").wait_for(timeout=30_000)
        page.screenshot(path=str(screenshots_dir / "dashboard-vendor-02-revenue.png"))
    except Exception:
        page.screenshot(path=str(screenshots_dir / "dashboard-failed-vendor.png"))
        raise
    finally:
        ctx.close()

    # not enabled yet: not a candidate of the researcher's decision
    assert f"{PROVIDER}/local" not in decide(apps)[1]

    # the client's org admin sees it in the admin app and enables it
    ctx, page = open_app(browser, apps, ADMIN, apps.admin_url, "heroes-admin-app")
    try:
        tab(page, "Offers")
        market = page.locator(".heroes-market")
        row = market.locator(f".heroes-offer-list tr[data-key='{OFFER}']")
        row.wait_for(timeout=30_000)
        assert row.get_attribute("data-enabled") == "false"
        market.locator(".heroes-offer-picker select").select_option(label=f"{OFFER} ({PROVIDER}) v1")
        market.locator("button.heroes-offer-enable").click()
        market.locator(f".heroes-offer-list tr[data-key='{OFFER}'][data-enabled='true']").wait_for(
            timeout=30_000
        )
        page.screenshot(path=str(screenshots_dir / "dashboard-admin-06-offers.png"))
    except Exception:
        page.screenshot(path=str(screenshots_dir / "dashboard-failed-enable.png"))
        raise
    finally:
        ctx.close()
    enabled = apps.hub.api("GET", "/organization/admin/offers", apps.tokens[ADMIN]).json()
    assert [(e["name"], e["enabled_by"], e["accepted_version"]) for e in enabled] == [(OFFER, ADMIN, 1)]
    # now it is a candidate of the researcher's decision, at the vendor's price
    decision, rows = decide(apps)
    assert f"{PROVIDER}/local" in rows, rows
    assert rows[f"{PROVIDER}/local"]["queue"] == "debug"

    # the researcher runs there, from that decision: the vendor sees the client and the revenue, the
    # admin the cost and how good the runtime prediction was
    client = HeroesClient(apps.hub.url + "/services/heroes/", apps.tokens[RESEARCHER])
    body = {
        "template": TEMPLATE,
        "cluster": f"{PROVIDER}/local",
        "queue": "debug",
        "params": {"samples": 100000},
        "decision": decision,
    }
    inst = client.request("POST", "/organization/workflow/submit", json_body=body)
    assert client.wait(inst["id"], timeout=240)["state"] == "completed"

    ctx, page = open_app(browser, apps, VENDOR, apps.vendor_url, "heroes-vendor-app")
    try:
        tab(page, "Usage and revenue")
        revenue = page.locator(".heroes-revenue")
        used = revenue.locator(".heroes-revenue-clients tr", has_text=ORG)
        used.wait_for(timeout=60_000)
        assert OFFER in used.inner_text() and "EUR=" in used.inner_text()
        revenue.locator(".js-plotly-plot").wait_for(timeout=60_000)
        page.screenshot(path=str(screenshots_dir / "dashboard-vendor-02-revenue.png"))
    finally:
        ctx.close()
    ctx, page = open_app(browser, apps, ADMIN, apps.admin_url, "heroes-admin-app")
    try:
        tab(page, "Reports")
        reports = page.locator(".heroes-reports")
        reports.locator(".heroes-usage-list td.jobs", has_text="1").first.wait_for(timeout=60_000)
        perf = reports.locator(".heroes-performance-table tr[data-key]")
        perf.first.wait_for(timeout=60_000)
        assert perf.first.locator("td.count").inner_text() == "1"
        reports.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
        page.screenshot(path=str(screenshots_dir / "dashboard-admin-09-reports.png"), full_page=True)
    finally:
        ctx.close()


def decide(apps) -> tuple[str, dict[str, dict]]:
    """The researcher's decision for TEMPLATE through HeroesClient.decide: its id, and cluster label -> row."""
    client = HeroesClient(apps.hub.url + "/services/heroes/", apps.tokens[RESEARCHER])
    df = client.decide(TEMPLATE, {"samples": 100000})
    rows = {str(r["cluster"]): dict(r) for r in df.to_dict("records")}
    assert "own" in rows, rows  # the organization's own cluster is always a candidate
    return str(df.attrs["decision"]), rows
