"""HeroesClient against the real hub + HEROES service (local-backend cluster: real processes)."""

from __future__ import annotations

import logging
import threading
import time

import pytest
import requests

from jupyter_heroes.client import FINAL_STATES, HeroesClient, HeroesError, typed_params
from jupyter_heroes.testing.base import free_port

from .world import CLUSTER

pytestmark = [
    pytest.mark.hub,
    pytest.mark.s3,
    pytest.mark.parametrize("hub", ["sqlite"], indirect=True),
    pytest.mark.timeout(240),
]


@pytest.fixture
def world(faces_client_world):
    return faces_client_world


def test_me_and_organizations(world):
    c = world.client()
    me = c.me()
    assert me["name"] == world.researcher
    assert sorted(o["name"] for o in me["organizations"]) == sorted([world.org, world.other_org])
    lab = next(o for o in me["organizations"] if o["name"] == world.org)
    assert "custom:heroes:submit" in lab["scopes"]


def test_a_member_of_two_organizations_must_choose_and_is_told_so(world):
    c = world.client()
    with pytest.raises(HeroesError) as e:
        c.templates()
    assert e.value.status == 400 and e.value.reason == "organization_required"
    assert world.org in e.value.message and world.other_org in e.value.message
    # the service's message, not a traceback or a generic HTTP text
    assert "Traceback" not in str(e.value)
    names = {t["name"] for t in c.with_organization(world.org).templates()}
    assert names == {"monte-carlo-pi", "run-python"}
    assert c.with_organization(world.other_org).templates() == []


def test_templates_carry_their_parameter_declarations(world):
    c = world.client(organization=world.org)
    t = c.template("monte-carlo-pi")
    assert t["version"] == 1
    assert t["parameters"]["samples"] == {
        "type": "integer",
        "default": 1000000,
        "min": 1000,
        "max": 2000000000,
        "description": "Number of random points",
    }
    with pytest.raises(
        HeroesError,
        match="workflow template 'nope' not found; the templates you may run are: monte-carlo-pi, run-python",
    ) as e:
        c.template("nope")
    assert e.value.status == 404


def test_submit_follow_events_wait_logs(world, caplog):
    caplog.set_level(logging.DEBUG, logger="jupyter_heroes.client")
    c = world.client(organization=world.org)
    params = typed_params(
        c.template("monte-carlo-pi"), {"samples": "20000", "seed": "7", "label": "from the client"}
    )
    assert params == {"samples": 20000, "seed": 7, "label": "from the client"}
    inst = c.submit("monte-carlo-pi", params, cluster=CLUSTER)
    assert inst["state"] == "submitting" and inst["params"]["samples"] == 20000
    events = []
    with c.events(inst["id"], timeout=120) as stream:
        for ev in stream:
            events.append(ev)
            if ev["type"] in ("instance", "snapshot") and ev["state"] in FINAL_STATES:
                break
    assert events[0]["type"] == "snapshot" and events[0]["data"]["id"] == inst["id"]
    assert all(ev["instance"] == inst["id"] for ev in events)
    assert events[-1]["state"] == "completed", events
    job_states = [ev["state"] for ev in events if ev["type"] == "job"]
    snapshot_states = [j["state"] for ev in events if ev["type"] == "snapshot" for j in ev["data"]["jobs"]]
    assert "completed" in job_states + snapshot_states
    done = c.wait(inst["id"], timeout=60)
    assert done["state"] == "completed"
    assert done["jobs"][0]["exit_code"] == 0
    assert done["jobs"][0]["accounting"]["outputs"] == [f"results/{inst['id']}/result.json"]
    out = c.logs(inst["id"])
    assert out["step"] == "estimate" and out["stream"] == "out" and "pi ~" in out["text"]
    assert c.logs(inst["id"], "estimate", stream="err")["stream"] == "err"
    assert inst["id"] in [i["id"] for i in c.instances()]
    assert inst["id"] in [i["id"] for i in c.instances("final")]
    assert inst["id"] not in [i["id"] for i in c.instances("live")]
    # the choke point logs method, path and status; never the token
    assert "POST /organization/workflow/submit -> 201" in caplog.text
    assert world.tokens[world.researcher] not in caplog.text
    assert world.tokens[world.researcher] not in repr(c)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"samples": "5"}, "parameter 'samples': 5 is below the minimum 1000"),
        ({"samples": "many"}, "parameter 'samples': expected an integer, got 'many'"),
        ({"colour": "red"}, "parameter 'colour': unknown parameter"),
    ],
)
def test_invalid_parameters_come_back_with_the_services_message(world, params, message):
    c = world.client(organization=world.org)
    before = len(c.instances())
    with pytest.raises(HeroesError, match=message) as e:
        c.submit("monte-carlo-pi", typed_params(c.template("monte-carlo-pi"), params), cluster=CLUSTER)
    assert e.value.status == 400 and e.value.reason == "invalid_parameter"
    assert not e.value.transient
    assert len(c.instances()) == before


def test_cancel(world):
    c = world.client(organization=world.org)
    inst = c.submit("monte-carlo-pi", {"samples": 2_000_000_000}, cluster=CLUSTER)
    deadline = time.monotonic() + 60
    while not c.instance(inst["id"])["jobs"][0]["job_id"]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    after = c.cancel(inst["id"])
    assert after["id"] == inst["id"]
    assert c.wait(inst["id"], timeout=60)["state"] == "cancelled"


def test_unknown_and_hostile_ids_are_404(world):
    c = world.client(organization=world.org)
    for bad in ("0" * 32, "../../admin/cluster", "x?y=1"):
        with pytest.raises(HeroesError) as e:
            c.instance(bad)
        assert e.value.status == 404, bad
    # another user's instance is not found either
    mine = c.submit("monte-carlo-pi", {"samples": 1000}, cluster=CLUSTER)
    other = world.client(world.wf_admin)  # a workflow admin sees it (workflows:manage) ...
    assert other.instance(mine["id"])["user"] == world.researcher
    admin = world.client(world.admin, organization=world.other_org)  # ... another organization does not
    with pytest.raises(HeroesError) as e:
        admin.instance(mine["id"])
    assert e.value.status == 404
    c.wait(mine["id"], timeout=60)


def test_event_stream_reconnects_when_the_service_ends_it(world):
    """The service closes a stream after its ``timeout``; the iterator opens the next one, which
    begins with a fresh snapshot."""
    c = world.client(organization=world.org)
    inst = c.submit("monte-carlo-pi", {"samples": 1000}, cluster=CLUSTER)
    c.wait(inst["id"], timeout=60)
    stream = c.events(inst["id"], timeout=0.5)
    snapshots = []
    for ev in stream:
        if ev["type"] == "snapshot":
            snapshots.append(ev)
        if len(snapshots) == 3:
            break
    stream.close()
    assert stream.connections >= 3
    assert all(s["state"] == "completed" for s in snapshots)


def test_close_wakes_a_blocked_reader_at_once(world):
    """A monitor's thread blocks reading the stream between events; closing the stream from another
    thread ends its iteration at once, not at the next keep-alive."""
    c = world.client(organization=world.org)
    inst = c.submit("monte-carlo-pi", {"samples": 1000}, cluster=CLUSTER)
    c.wait(inst["id"], timeout=60)
    stream = c.events(inst["id"], timeout=300)
    got: list = []
    t = threading.Thread(target=lambda: got.extend(stream), daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while not got:  # the snapshot arrived; nothing else will until a keep-alive in 15 s
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(0.5)
    t0 = time.monotonic()
    stream.close()
    t.join(timeout=10)
    assert not t.is_alive()
    assert time.monotonic() - t0 < 3
    assert [ev["type"] for ev in got] == ["snapshot"]


def test_threads_share_a_client(world):
    c = world.client(organization=world.org)
    errors: list[BaseException] = []
    results: list[str] = []

    def work() -> None:
        try:
            for _ in range(5):
                results.append(c.me()["name"])
                c.instances(limit=5)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert results == [world.researcher] * 30


def test_budgets_and_usage(world):
    researcher = world.client(organization=world.org)
    with pytest.raises(HeroesError) as e:
        researcher.budgets()
    assert e.value.status == 403 and e.value.reason == "missing_scope"
    assert "billing" in e.value.message
    assert isinstance(researcher.usage(), list)
    admin = world.client(world.admin, organization=world.org)
    created = admin.request("POST", "/organization/budgets", json_body={"limit": "100", "currency": "EUR"})
    assert [b["id"] for b in admin.budgets()] == [created["id"]]


def test_endpoints_the_service_lacks_are_named(world):
    c = world.client(organization=world.org)
    assert c.has_endpoint("/organization/workflow/submit", "post")
    assert not c.has_endpoint("/organization/workflow/submit", "delete")
    with pytest.raises(HeroesError, match=r"has no frobnication endpoint \(GET /organization/frob\)") as e:
        c._require("/organization/frob", "get", "frobnication")
    assert e.value.reason == "not_available"


def test_bad_token_and_unreachable_service(world):
    bad = HeroesClient(world.service_url, "not-a-token", world.org)
    with pytest.raises(HeroesError) as e:
        bad.me()
    assert e.value.status in (401, 403) and not e.value.transient
    assert "not-a-token" not in e.value.message
    gone = HeroesClient(f"http://127.0.0.1:{free_port()}/services/heroes/", "t", retries=1)
    t0 = time.monotonic()
    with pytest.raises(
        HeroesError, match=r"cannot reach the HEROES service at http://127\.0\.0\.1:\d+/services/heroes/"
    ) as e:
        gone.me()
    assert e.value.reason == "unreachable" and e.value.transient and e.value.status is None
    assert time.monotonic() - t0 < 10
    # a POST is never retried (it might have been carried out)
    with pytest.raises(HeroesError):
        gone.submit("x", cluster="y")


def test_the_direct_service_url_works_like_the_proxy(world):
    """``HEROES_SERVICE_URL`` set by install_heroes points at the service's own port."""
    port = world.hub.service_port
    direct = HeroesClient(
        f"http://127.0.0.1:{port}/services/heroes/", world.tokens[world.researcher], world.org
    )
    assert direct.me()["name"] == world.researcher
    assert requests.get(direct.api_url + "/openapi.json", timeout=10).status_code == 200


def test_data_upload_list_download_delete(world, tmp_path):
    c = world.client(organization=world.org)
    bucket = c.home_bucket()
    assert bucket == f"{world.org}--u-{world.researcher}"
    assert c.upload("inputs/hello.txt", b"hello\n")["size"] == 6
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * 20000)  # 5 MB, streamed from the file
    up = c.upload("inputs/big.bin", big)
    assert up["size"] == big.stat().st_size and up["bucket"] == bucket
    top = c.ls()  # earlier workflows wrote results/
    assert "inputs/" in top["folders"] and top["objects"] == []
    listing = c.ls("inputs/")
    assert sorted(o["key"] for o in listing["objects"]) == ["inputs/big.bin", "inputs/hello.txt"]
    everything = [o["key"] for o in c.ls(recursive=True)["objects"]]
    assert {"inputs/big.bin", "inputs/hello.txt"} <= set(everything)
    assert not [k for k in everything if k.endswith("/")]
    assert c.download("inputs/hello.txt") == b"hello\n"
    saved = c.download("inputs/big.bin", tmp_path / "out")
    assert saved.read_bytes() == big.read_bytes()
    assert [p.name for p in (tmp_path / "out").parent.iterdir() if p.name.startswith(".")] == []
    assert c.bucket_size()["objects"] == len(everything)
    assert c.delete(["inputs/hello.txt"])["deleted"] == ["inputs/hello.txt"]
    with pytest.raises(HeroesError) as e:
        c.download("inputs/hello.txt")
    assert e.value.status == 404
    with pytest.raises(HeroesError, match="is not a file"):
        c.upload("x", tmp_path / "missing.bin")
    # an organization without an object store says who registers one
    other = world.client(organization=world.other_org)
    with pytest.raises(HeroesError, match="has no object store yet") as e:
        other.buckets()
    assert e.value.reason == "no_object_store"


def test_workflow_outputs_are_downloaded(world, tmp_path):
    c = world.client(organization=world.org)
    inst = c.submit("monte-carlo-pi", {"samples": 5000, "label": "to the bucket"}, cluster=CLUSTER)
    done = c.wait(inst["id"], timeout=120)
    key = f"results/{inst['id']}/result.json"
    assert done["jobs"][0]["accounting"]["outputs"] == [key]
    import json as _json

    result = _json.loads(c.download(key))
    assert result["label"] == "to the bucket" and result["samples"] == 5000
    assert 2.5 < result["pi"] < 3.8
