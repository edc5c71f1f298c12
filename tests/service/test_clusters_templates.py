"""``/organization/admin/cluster`` (keys encrypted at rest, never returned) and workflow templates."""

from __future__ import annotations

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from jupyter_heroes import orm
from jupyter_heroes.crypt import SecretBox

from .conftest import World, ssh_keypair, template_doc

CLUSTERS = "/organization/admin/cluster"
TEMPLATES = "/organization/admin/workflow/template"


def test_enrol_a_cluster_with_a_pinned_host_key(world: World) -> None:
    private, public = ssh_keypair()
    world.secrets["private_key_2"] = private
    body = {
        "name": "wing-hpc",
        "description": "wing cluster",
        "host": "login.example.org",
        "port": 22,
        "username": "svc_heroes",
        "host_key": public,
        "private_key": private,
        "scratch_root": "/scratch/heroes",
        "container_runtime": "apptainer",
        "site": {"pue": 1.3, "grid_zone": "FR"},
        "queues": [
            {"name": "debug", "max_nodes": 2, "cpus_per_node": 8, "max_walltime_s": 3600},
            {"name": "gpu_a100", "gpus_per_node": 4, "arch": "x86_64"},
        ],
    }
    c = world.ok("acme-admin", "POST", CLUSTERS, body, status=201)
    assert "private_key" not in c and c["has_private_key"] is True
    assert c["host_key"] == public and c["transport"] == "ssh" and c["scheduler"] == "slurm"
    assert [q["name"] for q in c["queues"]] == ["debug", "gpu_a100"]
    assert c["queues"][0]["max_nodes"] == 2 and c["queues"][1]["max_nodes"] is None
    assert world.ok("acme-admin", "GET", f"{CLUSTERS}/{c['id']}") == c
    assert c["id"] in {x["id"] for x in world.ok("acme-admin", "GET", CLUSTERS)}

    # at rest: a Fernet blob that only the service's key opens
    with world.db() as s:
        row = s.get(orm.Cluster, c["id"])
        blob = bytes(row.private_key_enc)
    assert private.split("\n")[1].encode() not in blob
    assert SecretBox(world.hub.crypt_key).decrypt(blob).strip() == private.strip()

    r = world.call("acme-admin", "POST", CLUSTERS, body)
    assert r.status_code == 409
    assert world.call("acme-admin", "DELETE", f"{CLUSTERS}/{c['id']}").status_code == 204
    assert world.call("acme-admin", "GET", f"{CLUSTERS}/{c['id']}").status_code == 404
    with world.db() as s:
        assert s.get(orm.Cluster, c["id"]) is None


def _encrypted_key() -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.BestAvailableEncryption(b"passphrase"),
    ).decode()


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"private_key": None}, ["missing required field", "'private_key'", "ssh"]),
        ({"private_key": "not a key at all"}, ["'private_key'", "not an OpenSSH or PEM private key"]),
        ({"private_key": "ENCRYPTED"}, ["'private_key'", "passphrase"]),
        ({"host_key": "ssh-ed25519"}, ["'host_key'", "pin"]),
        ({"host": "bad host;rm -rf /"}, ["'host'"]),
        ({"port": 70000}, ["'port'", "at most 65535"]),
        ({"queues": [{"name": "a"}, {"name": "a"}]}, ["'queues'", "twice"]),
        ({"transport": "telnet"}, ["'transport'", "one of"]),
        ({"scratch_root": "relative/path"}, ["'scratch_root'", "absolute"]),
    ],
)
def test_bad_cluster_enrolment_is_refused(world: World, change: dict, words: list[str]) -> None:
    private, public = ssh_keypair()
    body = {
        "name": "bad-hpc",
        "host": "h.example.org",
        "username": "svc",
        "host_key": public,
        "private_key": private,
    }
    for k, v in change.items():
        if v is None:
            body.pop(k)
        else:
            body[k] = _encrypted_key() if v == "ENCRYPTED" else v
    r = world.call("acme-admin", "POST", CLUSTERS, body)
    assert r.status_code == 400, r.text
    for w in words:
        assert w in r.json()["message"], r.json()
    assert "BEGIN" not in r.text and "bad-hpc" not in {
        c["name"] for c in world.ok("acme-admin", "GET", CLUSTERS)
    }


def test_local_cluster_needs_no_ssh_account(world: World) -> None:
    c = world.ok(
        "acme-admin",
        "POST",
        CLUSTERS,
        {"name": "laptop", "transport": "local", "scheduler": "local"},
        status=201,
    )
    assert c["has_private_key"] is False and c["host"] == ""


def test_template_versions_and_retirement(world: World) -> None:
    t1 = world.ok(
        "acme-wf", "POST", TEMPLATES, {"template": template_doc("cfd", 1), "projects": ["wing"]}, status=201
    )
    assert (t1["name"], t1["version"], t1["state"], t1["projects"]) == ("cfd", 1, "active", ["wing"])
    assert t1["created_by"] == "acme-wf" and t1["spec"]["steps"][0]["command"] == ["echo", "{{ n }}"]
    r = world.call("acme-wf", "POST", TEMPLATES, {"template": template_doc("cfd", 1)})
    assert r.status_code == 409 and "version" in r.json()["message"]
    # YAML text is accepted as well
    t2 = world.ok(
        "acme-wf", "POST", TEMPLATES, {"template": yaml.safe_dump(template_doc("cfd", 2))}, status=201
    )
    assert t2["version"] == 2 and t2["projects"] == []

    r = world.call("acme-wf", "POST", TEMPLATES, {"template": {**template_doc("cfd", 3), "steps": []}})
    assert (
        r.status_code == 400 and r.json()["reason"] == "invalid_template" and "steps" in r.json()["message"]
    )
    r = world.call("acme-wf", "POST", TEMPLATES, {"template": "key: [unclosed"})
    assert r.status_code == 400 and "YAML" in r.json()["message"]
    r = world.call("acme-wf", "POST", TEMPLATES, {"template": template_doc("cfd", 4), "projects": ["nope"]})
    assert r.status_code == 400 and r.json()["reason"] == "unknown_project"

    retired = world.ok("acme-wf", "DELETE", f"{TEMPLATES}/{t1['id']}")
    assert retired["state"] == "retired"
    assert world.ok("acme-wf", "GET", f"{TEMPLATES}/{t1['id']}")["state"] == "retired"
    active = {
        (t["name"], t["version"]) for t in world.ok("acme-wf", "GET", TEMPLATES, params={"state": "active"})
    }
    assert ("cfd", 2) in active and ("cfd", 1) not in active
    everything = {(t["name"], t["version"]) for t in world.ok("acme-wf", "GET", TEMPLATES)}
    assert {("cfd", 1), ("cfd", 2)} <= everything
    r = world.call("acme-wf", "GET", TEMPLATES, params={"state": "gone"})
    assert r.status_code == 400 and "'state'" in r.json()["message"]
