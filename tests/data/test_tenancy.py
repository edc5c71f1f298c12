"""Tenancy and quotas of DataAccess against the real S3 server.

moto, like MinIO with one service account per organization, enforces no per-user policy: isolation
between users and organizations is the platform's own layer, and these tests are what shows it.
"""

from __future__ import annotations

import asyncio
import os
import uuid

import boto3
import pytest

from jupyter_heroes.data import names
from jupyter_heroes.data.errors import Conflict, Forbidden, InvalidName, NotFound, QuotaExceeded
from jupyter_heroes.data.tenancy import DataAccess, QuotaLedger, QuotaPolicy, Quotas

pytestmark = pytest.mark.s3
MiB = 1024 * 1024


@pytest.fixture
def boto(s3_server):
    return boto3.client(
        "s3",
        endpoint_url=s3_server.url,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
        region_name="us-east-1",
    )


@pytest.fixture
def orgs():
    tag = uuid.uuid4().hex[:6]
    return f"acme{tag}", f"globex{tag}"


@pytest.fixture
def make(storage, orgs):
    ledger = QuotaLedger()

    def make(
        user: str, roles, projects=(), org: str | None = None, quotas: Quotas | None = None
    ) -> DataAccess:
        return DataAccess(
            org or orgs[0], user, projects, roles, storage=storage, quotas=quotas, ledger=ledger
        )

    make.ledger = ledger
    return make


@pytest.fixture
async def world(make, orgs):
    """acme: alice (researcher, project wing), bob (researcher), carol (project-admin: data manager),
    dave (application-packager: no data scope); globex: eve (researcher) with a file."""
    acme, globex = orgs
    alice = make("alice", ["researcher"], ["wing"])
    bob = make("bob", ["researcher"])
    carol = make("carol", ["project-admin"])
    dave = make("dave", ["application-packager"])
    eve = make("eve", ["researcher"], org=globex)
    for who in (alice, bob, eve):
        await who.ensure_home_bucket()
    await alice.create_bucket("project", "wing")
    await alice.upload(alice.home_bucket, "notes.txt", b"alice's notes", 13)
    await bob.upload(bob.home_bucket, "secret.txt", b"bob's secret", 12)
    await eve.upload(eve.home_bucket, "plans.txt", b"globex plans", 12)
    return alice, bob, carol, dave, eve


async def test_users_see_their_own_and_their_projects_buckets(world):
    alice, bob, carol, dave, eve = world
    assert [(v.name, v.kind, v.owner, v.mine) for v in await alice.list_buckets()] == [
        (alice.home_bucket, "user", "alice", True),
        (names.project_bucket(alice.org, "wing"), "project", "wing", True),
    ]
    assert [v.name for v in await bob.list_buckets()] == [bob.home_bucket]
    assert [v.name for v in await eve.list_buckets()] == [eve.home_bucket]
    assert await dave.list_buckets() == []


async def test_another_users_bucket_is_forbidden_everywhere(world):
    alice, bob, *_ = world
    b = bob.home_bucket
    calls = [
        alice.list_objects(b),
        alice.stat(b, "secret.txt"),
        alice.open_download(b, "secret.txt"),
        alice.upload(b, "planted.txt", b"x", 1),
        alice.delete_objects(b, ["secret.txt"]),
        alice.create_folder(b, "x"),
        alice.presign_get(b, "secret.txt"),
        alice.presign_put(b, "planted.txt", 1),
        alice.bucket_usage(b),
    ]
    for call in calls:
        with pytest.raises(
            Forbidden, match=f"bucket {b} belongs to another user or project of {alice.org}"
        ) as e:
            await call
        assert e.value.status == 403
    with pytest.raises(Forbidden):
        await alice.create_bucket("user", "bob")
    assert [o.key async for o in bob.storage.iter_objects(b)] == ["secret.txt"]


async def test_another_organizations_bucket_looks_like_it_does_not_exist(world):
    alice, _, carol, _, eve = world
    theirs = eve.home_bucket
    missing = names.user_bucket(eve.org, "nobody")  # same shape, does not exist
    for who in (alice, carol):  # a data manager of acme is no different
        for bucket in (theirs, missing):
            for call in (
                who.list_objects(bucket),
                who.stat(bucket, "plans.txt"),
                who.presign_get(bucket, "plans.txt"),
                who.presign_put(bucket, "x", 1),
                who.upload(bucket, "x", b"x", 1),
                who.delete_bucket(bucket, force=True),
            ):
                with pytest.raises(NotFound) as e:
                    await call
                assert e.value.status == 404
                assert e.value.message == f"bucket {bucket} not found; pick one from your bucket list"
    for bogus in ("not-a-heroes-bucket", "../etc", "", None):
        with pytest.raises(NotFound):
            alice.check(bogus)
    assert theirs not in [v.name for v in await carol.list_buckets()]
    assert [o.key async for o in eve.storage.iter_objects(theirs)] == ["plans.txt"]


async def test_presigned_url_for_another_users_object_is_refused(world):
    alice, bob, *_ = world
    with pytest.raises(Forbidden):
        await alice.presign_get(bob.home_bucket, "secret.txt")
    url = await bob.presign_get(bob.home_bucket, "secret.txt", expires=60)
    assert bob.home_bucket in url
    with pytest.raises(NotFound, match="does not exist"):
        await alice.presign_get(alice.home_bucket, "no-such-file.txt")


async def test_traversal_keys_are_refused(world):
    alice, *_ = world
    b = alice.home_bucket
    for key, msg in [
        ("../bob/secret.txt", r"'\.\.' segment"),
        ("/etc/passwd", "absolute"),
        ("a\x00b", "control character"),
        ("dir\\..\\x", "backslash"),
    ]:
        with pytest.raises(InvalidName, match=msg):
            await alice.upload(b, key, b"x", 1)
        with pytest.raises(InvalidName, match=msg):
            await alice.stat(b, key)
        with pytest.raises(InvalidName, match=msg):
            await alice.presign_put(b, key, 1)
    assert sorted([o.key async for o in alice.storage.iter_objects(b)]) == ["notes.txt"]


async def test_data_managers_see_and_manage_their_organization(world):
    alice, bob, carol, dave, _ = world
    seen = {v.name: v for v in await carol.list_buckets()}
    assert set(seen) == {alice.home_bucket, bob.home_bucket, names.project_bucket(alice.org, "wing")}
    assert seen[bob.home_bucket].owner == "bob" and not seen[bob.home_bucket].mine
    info, chunks = await carol.open_download(bob.home_bucket, "secret.txt")
    assert info.size == 12 and b"".join([c async for c in chunks]) == b"bob's secret"
    created = await carol.create_bucket("user", "frank")
    assert created.name == names.user_bucket(alice.org, "frank")
    with pytest.raises(Forbidden, match="only data managers"):
        await alice.delete_bucket(alice.home_bucket, force=True)
    with pytest.raises(Conflict, match="not empty"):
        await carol.delete_bucket(bob.home_bucket)
    await carol.delete_bucket(bob.home_bucket, force=True)
    assert bob.home_bucket not in [v.name for v in await carol.list_buckets()]
    with pytest.raises(Forbidden, match="no access to data; ask your organization admin") as e:
        await dave.list_objects(alice.home_bucket)
    assert e.value.reason == "no_data_scope"


async def test_scopes_are_accepted_as_they_are(storage, orgs):
    who = DataAccess(orgs[0], "zed", [], ["custom:heroes:data:home"], storage=storage)
    assert who.has_home and not who.is_manager
    mgr = DataAccess(orgs[0], "zed", [], ["custom:heroes:data:manage"], storage=storage)
    assert mgr.is_manager


async def test_user_quota_is_enforced_before_writing(make, boto):
    alice = make("alice", ["researcher"], quotas=Quotas(user_bytes=10 * MiB))
    b = await alice.ensure_home_bucket()
    await alice.upload(b, "a.bin", os.urandom(6 * MiB), 6 * MiB)

    async def never_read():
        raise AssertionError("the source must not be read when the quota refuses the upload")
        yield b""  # pragma: no cover

    with pytest.raises(
        QuotaExceeded,
        match=r"storing 5\.0 MiB would exceed the user quota of .*: 6\.0 MiB of 10\.0 MiB used, 4\.0 MiB left\. Delete files",
    ) as e:
        await alice.upload(b, "b.bin", never_read(), 5 * MiB)
    assert e.value.status == 413 and e.value.reason == "quota_exceeded"
    assert [o["Key"] for o in boto.list_objects_v2(Bucket=b)["Contents"]] == ["a.bin"]
    assert boto.list_multipart_uploads(Bucket=b).get("Uploads", []) == []
    # replacing a file counts only what it grows by
    await alice.upload(b, "a.bin", os.urandom(7 * MiB), 7 * MiB)
    # a presigned PUT is issued only within what is left
    with pytest.raises(QuotaExceeded, match="3.0 MiB left"):
        await alice.presign_put(b, "c.bin", size=4 * MiB)
    url = await alice.presign_put(b, "c.bin", size=3 * MiB)
    assert "content-length%3Bhost" in url
    assert make.ledger.reserved(alice._store_id, b) == 0


async def test_concurrent_uploads_cannot_pass_a_quota_together(make):
    alice = make("alice", ["researcher"], quotas=Quotas(user_bytes=8 * MiB))
    b = await alice.ensure_home_bucket()
    gate, reading = asyncio.Event(), asyncio.Event()

    async def held_open():
        reading.set()  # the first read happens after the quota check, with the bytes reserved
        yield os.urandom(1 * MiB)
        await gate.wait()
        for _ in range(4):
            yield os.urandom(1 * MiB)

    first = asyncio.ensure_future(alice.upload(b, "first.bin", held_open(), 5 * MiB))
    await reading.wait()
    assert make.ledger.reserved(alice._store_id, b) == 5 * MiB
    with pytest.raises(QuotaExceeded, match=r"0 B plus 5\.0 MiB being uploaded of 8\.0 MiB used"):
        await alice.upload(b, "second.bin", os.urandom(4 * MiB), 4 * MiB)
    gate.set()
    await first
    assert make.ledger.reserved(alice._store_id, b) == 0
    assert (await alice.bucket_usage(b)).bytes == 5 * MiB


async def test_organization_quota_covers_every_bucket(make):
    q = Quotas(user_bytes=100 * MiB, project_bytes=100 * MiB, org_bytes=12 * MiB)
    alice = make("alice", ["researcher"], ["wing"], quotas=q)
    bob = make("bob", ["researcher"], quotas=q)
    await alice.ensure_home_bucket()
    await bob.ensure_home_bucket()
    wing = (await alice.create_bucket("project", "wing")).name
    await alice.upload(alice.home_bucket, "a.bin", os.urandom(6 * MiB), 6 * MiB)
    await bob.upload(bob.home_bucket, "b.bin", os.urandom(5 * MiB), 5 * MiB)
    with pytest.raises(
        QuotaExceeded, match=rf"would exceed the quota of {alice.org}: 11\.0 MiB of 12\.0 MiB used"
    ):
        await alice.upload(wing, "p.bin", os.urandom(2 * MiB), 2 * MiB)
    usage = await alice.usage()
    assert usage["organization"] == {"used": 11 * MiB, "quota": 12 * MiB}
    assert usage["user"]["used"] == 6 * MiB


async def test_failed_upload_leaves_nothing_and_releases_its_reservation(make, boto):
    alice = make("alice", ["researcher"], quotas=Quotas(user_bytes=100 * MiB))
    b = await alice.ensure_home_bucket()

    async def dies():
        for _ in range(13):
            yield os.urandom(1 * MiB)
        raise ConnectionResetError("browser closed the tab")

    with pytest.raises(ConnectionResetError):
        await alice.upload(b, "half.bin", dies(), 30 * MiB)
    assert "Contents" not in boto.list_objects_v2(Bucket=b)
    assert boto.list_multipart_uploads(Bucket=b).get("Uploads", []) == []
    assert make.ledger.reserved(alice._store_id, b) == 0


def test_quota_policy_defaults_and_overrides():
    p = QuotaPolicy(user_quota=10, org_quota=100, org_quotas={"acme": {"user": 20, "org": 0}})
    assert p.quotas_for("acme") == Quotas(user_bytes=20, project_bytes=None, org_bytes=None)
    assert p.quotas_for("globex") == Quotas(user_bytes=10, project_bytes=None, org_bytes=100)
    with pytest.raises(ValueError, match=r"unknown keys \['users'\]; use 'user', 'project', 'org'"):
        QuotaPolicy(org_quotas={"acme": {"users": 1}}).quotas_for("acme")
