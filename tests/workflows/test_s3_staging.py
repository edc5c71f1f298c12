"""The engine's object-store stager: inputs from the user's bucket to the instance's work directory
on the cluster, outputs back to ``results/<instance>/``, over the cluster's own SSH connection.

First through :class:`ObjectStoreStager` directly, on the test bed's real sshd (an SFTP client
opened on :class:`SSHTransport`'s pooled connection) and moto_server; then end to end: a workflow
submitted through the real hub + service on the test bed's Slurm, its input uploaded through the
data API, its outputs downloaded through it, and the staging progress seen on the event stream.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from jupyter_heroes.clusters.local import LocalTransport
from jupyter_heroes.clusters.ssh import SSHTransport
from jupyter_heroes.data import names
from jupyter_heroes.data.storage import S3Storage
from jupyter_heroes.data.tenancy import Quotas
from jupyter_heroes.testing.plugin_hub import PLATFORM_ADMIN
from jupyter_heroes.workflows.events import EventBus
from jupyter_heroes.workflows.heroesfs import InstanceDirs
from jupyter_heroes.workflows.s3staging import ObjectStoreStager, OrgStore
from jupyter_heroes.workflows.staging import LocalStoreStager, StageContext, StagingError

MiB = 1024 * 1024


class Bed:
    """An S3 storage, an SSH transport to the test bed's sshd, a stager and its events."""

    def __init__(self, s3: Any, sshd: Any, tmp_path: Any, quotas: Quotas | None = None) -> None:
        """*sshd* None: no cluster over SSH (local clusters only)."""
        self.org = "stg" + uuid.uuid4().hex[:8]
        self.user = "alice"
        self.bucket = names.user_bucket(self.org, self.user)
        self.storage = S3Storage(
            endpoint=s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, secure=False
        )
        self.transport: Any = None
        self.scratch = str(tmp_path / "scratch")
        if sshd is not None:
            self.transport = SSHTransport(
                sshd.host,
                port=sshd.port,
                username=sshd.username,
                host_key=sshd.host_key,
                private_key=sshd.private_key,
            )
            self.scratch = str(sshd.scratch_root) + "/s3staging"
        self.events = EventBus()
        self.local_store = tmp_path / "store"
        self.quotas = quotas or Quotas()
        self.stager = ObjectStoreStager(
            self.store_for, LocalStoreStager(self.local_store), self.events, progress_interval=0.0
        )
        self.seen: list[dict[str, Any]] = []

    def store_for(self, org: str) -> OrgStore | None:
        return OrgStore(7, self.storage, self.quotas) if org == self.org else None

    def ctx(self, org: str | None = None) -> StageContext:
        iid = uuid.uuid4().hex
        org = org or self.org
        return StageContext(
            org, self.user, iid, InstanceDirs.for_instance(self.scratch, org, None, self.user, iid)
        )

    async def collect(self) -> None:
        async with self.events.subscribe(lambda e: e.get("type") == "staging") as queue:
            while True:
                self.seen.append(await queue.get())

    async def close(self) -> None:
        if self.transport is not None:
            await self.transport.close()
        await self.storage.close()


@pytest.fixture
async def bed(s3_server, sshd, tmp_path):
    b = Bed(s3_server, sshd, tmp_path)
    listener = asyncio.ensure_future(b.collect())
    await asyncio.sleep(0)
    yield b
    listener.cancel()
    await b.close()


@pytest.mark.s3
@pytest.mark.ssh
async def test_inputs_land_in_the_work_directory_and_outputs_in_results(bed: Bed) -> None:
    await bed.storage.create_bucket(bed.bucket)
    inputs = {
        "single.txt": b"one file\n",
        "data/in.csv": b"a,b\n1,2\n",
        "data/sub/deep.bin": os.urandom(3 * MiB + 5),  # verified by sha256sum on the cluster
        "data/été.txt": "ünïcode\n".encode(),
        "other/not-asked.txt": b"stays in the bucket",
    }
    for key, content in inputs.items():
        await bed.storage.upload(bed.bucket, key, content)
    ctx = bed.ctx()
    t = bed.transport
    await t.makedirs(ctx.dirs.work)

    written = await bed.stager.stage_in(ctx, t, ["single.txt", "data/"])
    assert sorted(written) == sorted(
        f"{ctx.dirs.work}/{k}" for k in ("single.txt", "data/in.csv", "data/sub/deep.bin", "data/été.txt")
    )
    for key, content in inputs.items():
        path = f"{ctx.dirs.work}/{key}"
        if key.startswith("other/"):
            assert not await t.exists(path)
        else:
            assert await t.read_bytes(path) == content, key
    assert not [n for n in await t.listdir(f"{ctx.dirs.work}/data") if n.endswith((".part", ".meta"))]
    # a second run finds every file in place and moves nothing
    bed.seen.clear()
    await bed.stager.stage_in(ctx, t, ["single.txt", "data/"])
    await asyncio.sleep(0.05)
    assert {e["state"] for e in bed.seen} == {"start", "skip"}
    assert {e["file"] for e in bed.seen if e["state"] == "skip"} == {
        "single.txt",
        "in.csv",
        "sub/deep.bin",
        "été.txt",
    }
    assert all(e["instance"] == ctx.instance_id and e["org_id"] == 7 for e in bed.seen)

    # the job's outputs: a file, a directory tree, one output never produced
    await t.write_bytes(f"{ctx.dirs.work}/result.json", b'{"pi": 3.14}')
    await t.makedirs(f"{ctx.dirs.work}/out/deep")
    big = os.urandom(2 * MiB)
    await t.write_bytes(f"{ctx.dirs.work}/out/a.txt", b"A")
    await t.write_bytes(f"{ctx.dirs.work}/out/deep/b.bin", big)
    bed.seen.clear()
    keys = await bed.stager.stage_out(ctx, t, ["result.json", "out", "never-made.txt"])
    prefix = f"results/{ctx.instance_id}/"
    assert keys == [prefix + "out/a.txt", prefix + "out/deep/b.bin", prefix + "result.json"]
    got = {o.key: o async for o in bed.storage.iter_objects(bed.bucket, prefix)}
    assert sorted(got) == keys
    assert got[prefix + "out/deep/b.bin"].size == len(big)
    assert (await bed.storage.stat(bed.bucket, prefix + "out/deep/b.bin")).sha256 == hashlib.sha256(
        big
    ).hexdigest()
    await asyncio.sleep(0.05)
    done = {e["file"] for e in bed.seen if e["direction"] == "out" and e["state"] == "done"}
    assert done == {"result.json", "out/a.txt", "out/deep/b.bin"}
    progress = [e for e in bed.seen if e["state"] == "progress" and e["file"] == "out/deep/b.bin"]
    assert progress and progress[-1]["bytes_done"] == progress[-1]["bytes_total"] == len(big)


@pytest.mark.s3
@pytest.mark.ssh
async def test_refusals_are_clear_and_leave_nothing_outside(bed: Bed, sshd) -> None:
    await bed.storage.create_bucket(bed.bucket)
    await bed.storage.upload(bed.bucket, "ok.txt", b"fine")
    ctx = bed.ctx()
    t = bed.transport
    await t.makedirs(ctx.dirs.work)
    with pytest.raises(StagingError, match="missing.txt") as err:
        await bed.stager.stage_in(ctx, t, ["missing.txt"])
    assert not err.value.transient
    with pytest.raises(StagingError, match=r"'\.\.'"):
        await bed.stager.stage_in(ctx, t, ["../escape.txt"])
    with pytest.raises(StagingError, match="absolute"):
        await bed.stager.stage_in(ctx, t, ["/etc/passwd"])
    assert await t.listdir(ctx.dirs.work) == []

    # outputs: a symlink to a file outside, and a directory symlinked out of the work directory
    await t.write_bytes(f"{ctx.dirs.work}/good.txt", b"good")
    await t.run(["ln", "-s", "/etc/hostname", f"{ctx.dirs.work}/leak.txt"])
    await t.run(["ln", "-s", "/etc", f"{ctx.dirs.work}/etcdir"])
    with pytest.raises(StagingError) as err:
        await bed.stager.stage_out(ctx, t, ["good.txt", "leak.txt", "etcdir/hostname", "etcdir"])
    assert "symbolic link" in str(err.value) and not err.value.transient
    keys = [o.key async for o in bed.storage.iter_objects(bed.bucket, f"results/{ctx.instance_id}/")]
    assert keys == [f"results/{ctx.instance_id}/good.txt"]  # the regular file went, nothing else
    with pytest.raises(StagingError, match="'\\.\\.'"):
        await bed.stager.stage_out(ctx, t, ["../../../../etc/passwd"])


@pytest.mark.s3
@pytest.mark.ssh
async def test_outputs_over_quota_are_refused_before_a_byte_moves(s3_server, sshd, tmp_path) -> None:
    bed = Bed(s3_server, sshd, tmp_path, quotas=Quotas(user_bytes=1 * MiB))
    try:
        ctx = bed.ctx()
        await bed.transport.makedirs(ctx.dirs.work)
        await bed.transport.write_bytes(f"{ctx.dirs.work}/huge.bin", os.urandom(2 * MiB))
        with pytest.raises(StagingError, match="quota") as err:
            await bed.stager.stage_out(ctx, bed.transport, ["huge.bin"])
        assert "exceed the user quota" in str(err.value) and not err.value.transient
        assert [o async for o in bed.storage.iter_objects(bed.bucket)] == []  # the bucket was made, empty
    finally:
        await bed.close()


@pytest.mark.s3
async def test_local_clusters_and_organizations_without_a_store(s3_server, tmp_path) -> None:
    """A local cluster stages through the local file system; an organization without an object
    store goes to the fallback (the service's data_dir)."""

    bed = Bed(s3_server, None, tmp_path)
    local = LocalTransport()
    try:
        await bed.storage.create_bucket(bed.bucket)
        await bed.storage.upload(bed.bucket, "in/x.txt", b"from s3")
        ctx = bed.ctx()
        os.makedirs(ctx.dirs.work)
        assert await bed.stager.stage_in(ctx, local, ["in/x.txt"]) == [f"{ctx.dirs.work}/in/x.txt"]
        work = Path(ctx.dirs.work)
        assert (work / "in" / "x.txt").read_bytes() == b"from s3"
        (work / "r.txt").write_bytes(b"result")
        assert await bed.stager.stage_out(ctx, local, ["r.txt"]) == [f"results/{ctx.instance_id}/r.txt"]

        other = bed.ctx("no-store-org")
        os.makedirs(other.dirs.work)
        user_root = bed.local_store / "no-store-org" / "alice"
        (user_root / "in").mkdir(parents=True)
        (user_root / "in" / "y.txt").write_bytes(b"from data_dir")
        await bed.stager.stage_in(other, local, ["in/y.txt"])
        assert (Path(other.dirs.work) / "in" / "y.txt").read_bytes() == b"from data_dir"
        assert [o async for o in bed.storage.iter_objects(bed.bucket, "in/y")] == []
    finally:
        await local.close()
        await bed.close()


# --- end to end on Slurm, through the hub -----------------------------------------------------------
TEMPLATE = {
    "heroes_template": 1,
    "name": "wordcount",
    "version": 1,
    "parameters": {"text": {"type": "file", "description": "a text file from your bucket"}},
    "steps": [
        {
            "name": "count",
            "command": [
                "python3",
                "-c",
                "import collections, json, sys\n"
                "words = open(sys.argv[1], encoding='utf-8').read().split()\n"
                "json.dump(collections.Counter(words), open('counts.json', 'w'), sort_keys=True)\n",
                "{{ text }}",
            ],
            "inputs": ["{{ text }}"],
            "outputs": ["counts.json"],
            "resources": {"memory_mb": 64, "walltime": "00:05:00"},
        },
        {
            "name": "report",
            "depends_on": ["count"],
            "command": [
                "python3",
                "-c",
                "import json, os\n"
                "c = json.load(open('counts.json'))\n"
                "os.makedirs('report/top', exist_ok=True)\n"
                "open('report/summary.txt', 'w').write(f'{sum(c.values())} words, {len(c)} distinct\\n')\n"
                "open('report/top/first.txt', 'w').write(max(c, key=c.get))\n",
            ],
            "outputs": ["report"],
            "resources": {"memory_mb": 64, "walltime": "00:05:00"},
        },
    ],
}


def ok(hub, token, method, path, body=None, status=200, **kw):
    r = hub.api(method, path, token, body, **kw)
    assert r.status_code == status, f"{method} {path}: {r.status_code} {r.text}"
    return r.json() if r.content else None


@pytest.mark.slurm
@pytest.mark.s3
@pytest.mark.hub
@pytest.mark.timeout(300)
def test_workflow_on_slurm_reads_and_writes_the_users_bucket(hub_factory, slurm_cluster, s3_server) -> None:
    org = "s3wf-" + uuid.uuid4().hex[:6]
    hub = hub_factory()
    admin = hub.create_user(PLATFORM_ADMIN)
    user = hub.create_user("wf-ann")
    ok(hub, admin, "POST", "/heroes/admin/organizations", {"name": org}, status=201)
    ok(
        hub,
        admin,
        "POST",
        f"/heroes/admin/organizations/{org}/servers",
        {
            "endpoint": s3_server.endpoint,
            "secure": False,
            "access_key": s3_server.access_key,
            "secret_key": s3_server.secret_key,
        },
        status=201,
    )
    ok(
        hub,
        admin,
        "POST",
        "/organization/admin/users",
        {"username": "wf-ann", "roles": ["org-admin", "researcher"]},
        status=201,
        org=org,
    )
    ssh = slurm_cluster.ssh
    ok(
        hub,
        user,
        "POST",
        "/organization/admin/cluster",
        {
            "name": "testbed",
            "host": ssh.host,
            "port": ssh.port,
            "username": ssh.username,
            "host_key": ssh.host_key,
            "private_key": ssh.private_key,
            "scratch_root": f"{ssh.scratch_root}/s3wf",
            "queues": [{"name": p} for p in slurm_cluster.partitions],
        },
        status=201,
    )
    ok(hub, user, "POST", "/organization/admin/workflow/template", {"template": TEMPLATE}, status=201)
    bucket = ok(hub, user, "POST", "/organization/data/bucket", {"kind": "user"}, status=201)["name"]
    text = "the quick brown fox jumps over the lazy dog the end " * 200
    r = requests.post(
        f"{hub.api_url}/organization/data/upload",
        params={"bucket": bucket, "key": "texts/fox.txt"},
        data=text.encode(),
        headers={"Authorization": f"token {user}", "Content-Type": "text/plain"},
        timeout=60,
    )
    assert r.status_code == 201, r.text

    # follow the event stream from before the submission
    events: list[dict[str, Any]] = []

    def follow() -> None:
        with requests.get(
            f"{hub.api_url}/organization/workflow/events",
            params={"timeout": 120},
            headers={"Authorization": f"token {user}"},
            stream=True,
            timeout=150,
        ) as resp:
            for line in resp.iter_lines(decode_unicode=True):
                if line and line.startswith("data: "):
                    ev = json.loads(line[6:])
                    events.append(ev)
                    if ev.get("type") == "instance" and ev.get("state") in (
                        "completed",
                        "failed",
                        "cancelled",
                    ):
                        return

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    time.sleep(1.0)

    inst = ok(
        hub,
        user,
        "POST",
        "/organization/workflow/submit",
        {"template": "wordcount", "cluster": "testbed", "params": {"text": "texts/fox.txt"}},
        status=201,
    )
    iid = inst["id"]
    deadline = time.monotonic() + 200
    while time.monotonic() < deadline:
        view = ok(hub, user, "GET", f"/organization/workflow/instance/{iid}")
        if view["state"] in ("completed", "failed", "cancelled"):
            break
        time.sleep(1)
    jobs = {j["step"]: j for j in view["jobs"]}
    assert view["state"] == "completed", {k: (j["state"], j["reason"]) for k, j in jobs.items()}
    assert jobs["count"]["accounting"]["outputs"] == [f"results/{iid}/counts.json"]
    assert jobs["report"]["accounting"]["outputs"] == [
        f"results/{iid}/report/summary.txt",
        f"results/{iid}/report/top/first.txt",
    ]

    def download(key: str) -> bytes:
        r = requests.get(
            f"{hub.api_url}/organization/data/download",
            params={"bucket": bucket, "key": key},
            headers={"Authorization": f"token {user}"},
            timeout=60,
        )
        assert r.status_code == 200, (key, r.text)
        return r.content

    counts = json.loads(download(f"results/{iid}/counts.json"))
    assert counts["the"] == 600 and counts["fox"] == 200 and sum(counts.values()) == 2200
    assert download(f"results/{iid}/report/summary.txt") == b"2200 words, 9 distinct\n"
    assert download(f"results/{iid}/report/top/first.txt") == b"the"
    listing = ok(
        hub,
        user,
        "GET",
        f"/organization/data/bucket/{bucket}/list",
        params={"prefix": f"results/{iid}/", "delimiter": ""},
    )
    assert sorted(o["key"] for o in listing["objects"]) == [
        f"results/{iid}/counts.json",
        f"results/{iid}/report/summary.txt",
        f"results/{iid}/report/top/first.txt",
    ]

    follower.join(timeout=30)
    staging = [e for e in events if e.get("type") == "staging" and e.get("instance") == iid]
    assert ("in", "texts/fox.txt", "done") in {(e["direction"], e["file"], e["state"]) for e in staging}, (
        events
    )
    assert {e["file"] for e in staging if e["direction"] == "out" and e["state"] == "done"} == {
        "counts.json",
        "report/summary.txt",
        "report/top/first.txt",
    }
    assert all("org_id" not in e for e in events)
