"""Staging between the real S3 server and a cluster directory: a local directory here, SFTP through
the test bed's real sshd in test_staging_sftp.py."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from pathlib import Path

import boto3
import pytest

from jupyter_heroes.data import names
from jupyter_heroes.data.errors import Forbidden, InvalidName, QuotaExceeded
from jupyter_heroes.data.staging import Stager, StagingError
from jupyter_heroes.data.storage import SHA256_META
from jupyter_heroes.data.target import LocalTarget
from jupyter_heroes.data.tenancy import DataAccess, QuotaLedger, Quotas

pytestmark = pytest.mark.s3
MiB = 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
async def target():
    t = LocalTarget()
    yield t
    await t.close()


@pytest.fixture
async def bucket(storage, org_name):
    name = names.user_bucket(org_name, "alice")
    await storage.create_bucket(name)
    return name


@pytest.fixture
def boto(s3_server):
    return boto3.client(
        "s3",
        endpoint_url=s3_server.url,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
        region_name="us-east-1",
    )


INPUTS = {
    "mesh/wing.msh": os.urandom(700_000),
    "mesh/parts/flap.msh": os.urandom(50_000),
    "params.json": b'{"mach": 0.8}',
    "empty.dat": b"",
    "big/field.bin": os.urandom(11 * MiB + 5),  # multipart with the fixture's 5 MiB parts
}


async def put_inputs(storage, bucket, prefix="inputs/run1/"):
    await storage.create_folder(bucket, prefix)  # a marker for the prefix itself is not an input
    for k, v in INPUTS.items():
        await storage.upload(bucket, prefix + k, v)
    await storage.create_folder(bucket, prefix + "scratch")


async def test_inputs_and_outputs_round_trip_like_rclone_check(storage, target, bucket, tmp_path, caplog):
    await put_inputs(storage, bucket)
    inst = tmp_path / "inst-1"
    events = []
    stager = Stager(storage, target, on_event=events.append, parallel=3)

    with caplog.at_level(logging.INFO, logger="jupyter_heroes.data.staging"):
        report = await stager.stage_in(bucket, str(inst), prefix="inputs/run1/", subdir="inputs")
    assert tree(inst / "inputs") == INPUTS
    assert (inst / "inputs/scratch").is_dir()
    assert (
        report.summary()["failed"] == 0
        and report.copied == len(INPUTS) + 1
        and report.bytes == sum(map(len, INPUTS.values()))
    )
    assert not list(inst.rglob("*.part*"))
    rec = {r.file: r for r in report.records}["big/field.bin"]
    doc = rec.to_ecs()
    assert doc["event"] == {
        "action": "data.stage_in",
        "outcome": "success",
        "duration": doc["event"]["duration"],
    }
    assert doc["file"] == {"path": "big/field.bin", "size": len(INPUTS["big/field.bin"])}
    t = doc["heroes"]["transfer"]
    assert (t["outcome"], t["bytes"], t["sha256"]) == (
        "copied",
        len(INPUTS["big/field.bin"]),
        sha(INPUTS["big/field.bin"]),
    )
    assert t["seconds"] > 0 and doc["event"]["duration"] > 0
    # every file logged with its outcome, as ECS fields
    logged = {
        r.__dict__["heroes.transfer"]["file"]: r for r in caplog.records if hasattr(r, "heroes.transfer")
    }
    assert set(logged) == {*INPUTS, "scratch/"}
    assert logged["params.json"].__dict__["event.outcome"] == "success"
    # progress events: start ... progress ... done per file, the last progress at the full size
    big = [e for e in events if e.file == "big/field.bin"]
    assert big[0].kind == "start" and big[-1].kind == "done"
    assert [e.bytes_done for e in big if e.kind == "progress"][-1] == len(INPUTS["big/field.bin"])

    # a second run finds everything in place: nothing moves
    again = await stager.stage_in(bucket, str(inst), prefix="inputs/run1/", subdir="inputs")
    assert (again.copied, again.skipped, again.bytes) == (0, len(INPUTS) + 1, 0)

    # a changed input is copied again, alone
    await storage.upload(bucket, "inputs/run1/params.json", b'{"mach": 0.85}')
    third = await stager.stage_in(bucket, str(inst), prefix="inputs/run1/", subdir="inputs")
    assert [r.file for r in third.records if r.outcome == "copied"] == ["params.json"]
    assert (inst / "inputs/params.json").read_bytes() == b'{"mach": 0.85}'

    # outputs go to results/<instance>/ with their checksum recorded
    out = inst / "outputs"
    (out / "fields").mkdir(parents=True)
    (out / "fields/p.vtk").write_bytes(os.urandom(6 * MiB))
    (out / "log.txt").write_text("converged\n")
    report = await stager.stage_out(str(inst), bucket, "inst-1", subdir="outputs")
    assert report.copied == 2
    for rel in ("fields/p.vtk", "log.txt"):
        info = await storage.stat(bucket, f"results/inst-1/{rel}")
        assert info.sha256 == sha((out / rel).read_bytes())
    again = await stager.stage_out(str(inst), bucket, "inst-1", subdir="outputs")
    assert (again.copied, again.skipped, again.bytes) == (0, 2, 0)
    (out / "log.txt").write_text("converged after 12 iterations\n")
    third = await stager.stage_out(str(inst), bucket, "inst-1", subdir="outputs")
    assert [r.file for r in third.records if r.outcome == "copied"] == ["log.txt"]


async def test_interrupted_copy_resumes_from_the_part_file(storage, target, bucket, tmp_path):
    data = os.urandom(24 * MiB)
    await storage.upload(bucket, "in/data.bin", data)
    inst = tmp_path / "inst"
    stager = Stager(storage, target, chunk_size=256 * 1024)
    task: asyncio.Future | None = None

    def stop_midway(e):
        if e.kind == "progress" and e.bytes_done >= 9 * MiB and task is not None:
            task.cancel()

    stager.on_event = stop_midway
    task = asyncio.ensure_future(stager.stage_in(bucket, str(inst), prefix="in/"))
    with pytest.raises(asyncio.CancelledError):
        await task
    part = inst / "data.bin.part"
    done = part.stat().st_size
    assert 9 * MiB <= done < len(data) and not (inst / "data.bin").exists()
    assert (inst / "data.bin.part.meta").exists()

    stager.on_event = None
    report = await stager.stage_in(bucket, str(inst), prefix="in/")
    rec = report.records[0]
    assert (rec.outcome, rec.resumed_from, rec.bytes) == ("resumed", done, len(data) - done)
    assert (inst / "data.bin").read_bytes() == data and rec.sha256 == sha(data)
    assert not part.exists() and not (inst / "data.bin.part.meta").exists()


async def test_a_part_file_of_another_version_is_not_resumed(storage, target, bucket, tmp_path):
    inst = tmp_path / "inst"
    inst.mkdir()
    await storage.upload(bucket, "in/data.bin", os.urandom(3 * MiB))
    stager = Stager(storage, target, resumable_size=MiB)
    old = await storage.stat(bucket, "in/data.bin")
    # a .part left by an interrupted copy of the old version
    (inst / "data.bin.part").write_bytes(b"x" * MiB)
    (inst / "data.bin.part.meta").write_text(
        f'{{"bucket": "{bucket}", "key": "in/data.bin", "etag": "{old.etag}", "size": {old.size}}}'
    )
    new = os.urandom(3 * MiB)
    await storage.upload(bucket, "in/data.bin", new)
    rec = (await stager.stage_in(bucket, str(inst), prefix="in/")).records[0]
    assert (rec.outcome, rec.resumed_from) == ("copied", 0)
    assert (inst / "data.bin").read_bytes() == new
    assert not (inst / "data.bin.part").exists() and not (inst / "data.bin.part.meta").exists()


async def test_small_files_restart_instead_of_resuming(storage, target, bucket, tmp_path):
    inst = tmp_path / "inst"
    inst.mkdir()
    data = os.urandom(MiB)
    await storage.upload(bucket, "in/small.bin", data)
    (inst / "small.bin.part").write_bytes(data[:1000])  # left by a crash
    stager = Stager(storage, target)  # resumable_size 8 MiB: no .part.meta bookkeeping below it
    rec = (await stager.stage_in(bucket, str(inst), prefix="in/")).records[0]
    assert (rec.outcome, rec.resumed_from, rec.bytes) == ("copied", 0, MiB)
    assert sorted(p.name for p in inst.iterdir()) == ["small.bin"]


@pytest.mark.parametrize("uploader", ["heroes", "other"])
async def test_a_corrupted_part_file_fails_verification_then_recovers(
    storage, target, boto, bucket, tmp_path, uploader
):
    data = os.urandom(2 * MiB)
    if uploader == "heroes":  # the SHA-256 is recorded: the file as it lands is checked against it
        await storage.upload(bucket, "in/data.bin", data)
        message = r"data.bin: the file on the cluster does not match the object's checksum \(sha256 "
    else:  # no recorded SHA-256: the bytes are hashed on the way, the resumed prefix read back
        boto.put_object(Bucket=bucket, Key="in/data.bin", Body=data)
        message = "data.bin: the bytes received do not match the object's checksum"
    info = await storage.stat(bucket, "in/data.bin")
    assert bool(info.sha256) is (uploader == "heroes")
    inst = tmp_path / "inst"
    inst.mkdir()
    # same version, but the bytes on disk were damaged
    (inst / "data.bin.part").write_bytes(b"\0" * MiB)
    (inst / "data.bin.part.meta").write_text(
        f'{{"bucket": "{bucket}", "key": "in/data.bin", "etag": "{info.etag}", "size": {info.size}}}'
    )
    stager = Stager(storage, target, resumable_size=MiB)
    with pytest.raises(StagingError, match=message) as e:
        await stager.stage_in(bucket, str(inst), prefix="in/")
    assert e.value.reason == "checksum_mismatch" and not e.value.transient
    assert list(inst.iterdir()) == []  # neither the damaged file nor its record is left
    report = await stager.stage_in(bucket, str(inst), prefix="in/")
    assert report.records[0].outcome == "copied" and (inst / "data.bin").read_bytes() == data


async def test_a_wrong_recorded_checksum_fails_and_leaves_nothing(storage, target, boto, bucket, tmp_path):
    """The recorded SHA-256 is what the file that lands must match: an object whose content no
    longer matches it (written by another tool, metadata kept) never reaches its place."""
    data = os.urandom(3 * MiB)
    boto.put_object(
        Bucket=bucket,
        Key="in/data.bin",
        Body=data,
        Metadata={SHA256_META: hashlib.sha256(b"other").hexdigest()},
    )
    boto.put_object(Bucket=bucket, Key="in/fine.bin", Body=b"fine", Metadata={SHA256_META: sha(b"fine")})
    inst = tmp_path / "inst"
    stager = Stager(storage, target)
    with pytest.raises(StagingError, match="data.bin: the file on the cluster does not match") as e:
        await stager.stage_in(bucket, str(inst), prefix="in/")
    assert [r.file for r in e.value.report.failed] == ["data.bin"]
    assert sorted(p.name for p in inst.iterdir()) == ["fine.bin"]
    assert (inst / "fine.bin").read_bytes() == b"fine"


async def test_traversal_keys_never_leave_the_instance_directory(storage, target, boto, bucket, tmp_path):
    await storage.upload(bucket, "in/ok.txt", b"fine")
    # S3 itself accepts such keys: plant them with another client
    boto.put_object(Bucket=bucket, Key="in/../../escaped.txt", Body=b"escaped")
    boto.put_object(Bucket=bucket, Key="in/a\\..\\..\\b.txt", Body=b"escaped")
    inst = tmp_path / "deep" / "inst"
    stager = Stager(storage, target)
    with pytest.raises(StagingError, match="failed for 2 of 3 files") as e:
        await stager.stage_in(bucket, str(inst), prefix="in/")
    report = e.value.report
    bad = {r.file: r for r in report.failed}
    assert set(bad) == {"../../escaped.txt", "a\\..\\..\\b.txt"}
    assert all(r.reason == "invalid_name" for r in bad.values())
    assert (inst / "ok.txt").read_bytes() == b"fine"
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["ok.txt"]
    with pytest.raises(InvalidName, match=r"'\.\.' segment"):
        await stager.stage_in(bucket, str(inst), prefix="in/", keys=["in/../../escaped.txt"])
    with pytest.raises(InvalidName, match="single path segment"):
        await stager.stage_out(str(inst), bucket, "../other")


async def test_symlinks_cannot_be_used_to_escape(storage, target, bucket, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not for the bucket")
    inst = tmp_path / "inst"
    (inst / "outputs").mkdir(parents=True)
    (inst / "evil").symlink_to(outside)
    (inst / "link.txt").symlink_to(outside / "secret.txt")
    (inst / "outputs/leak.txt").symlink_to(outside / "secret.txt")
    (inst / "outputs/real.txt").write_text("a result")
    await storage.upload(bucket, "in/evil/x.txt", b"planted through a symlinked directory")
    await storage.upload(bucket, "in/link.txt", b"written through a symlink")
    stager = Stager(storage, target)

    report = await stager.stage_in(bucket, str(inst), prefix="in/", check=False)
    why = {r.file: r.error for r in report.failed}
    assert "resolves outside the instance directory" in why["evil/x.txt"]
    assert "exists and is not a regular file" in why["link.txt"]
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_text() == "not for the bucket"

    report = await stager.stage_out(str(inst), bucket, "i1", subdir="outputs", check=False)
    assert [r.file for r in report.records if r.outcome == "copied"] == ["real.txt"]
    assert {r.file: r.error for r in report.failed} == {
        "leak.txt": "leak.txt: is a symbolic link; outputs are copied only from regular files"
    }
    assert [o.key async for o in storage.iter_objects(bucket, "results/")] == ["results/i1/real.txt"]


async def test_outputs_must_fit_the_quota_before_anything_moves(storage, target, org_name, tmp_path):
    alice = DataAccess(
        org_name,
        "alice",
        [],
        ["researcher"],
        storage=storage,
        quotas=Quotas(user_bytes=5 * MiB),
        ledger=QuotaLedger(),
    )
    bucket = await alice.ensure_home_bucket()
    out = tmp_path / "inst/outputs"
    out.mkdir(parents=True)
    (out / "a.bin").write_bytes(os.urandom(3 * MiB))
    (out / "b.bin").write_bytes(os.urandom(3 * MiB))
    stager = Stager(storage, target, access=alice)
    with pytest.raises(QuotaExceeded, match=r"storing 6\.0 MiB would exceed the user quota"):
        await stager.stage_out(str(tmp_path / "inst"), bucket, "i1", subdir="outputs")
    assert [o async for o in storage.iter_objects(bucket)] == []
    (out / "b.bin").unlink()
    assert (await stager.stage_out(str(tmp_path / "inst"), bucket, "i1", subdir="outputs")).copied == 1
    # and staging checks the caller's rights on the bucket
    bob = names.user_bucket(org_name, "bob")
    with pytest.raises(Forbidden):
        await stager.stage_in(bob, str(tmp_path / "inst"), prefix="")


async def test_parallelism_is_bounded(storage, target, bucket, tmp_path):
    for i in range(12):
        await storage.upload(bucket, f"many/f{i:02d}.bin", os.urandom(300_000))
    running, peak = 0, 0

    def track(e):
        nonlocal running, peak
        if e.kind == "start":
            running += 1
            peak = max(peak, running)
        elif e.kind in ("done", "skip", "error"):
            running -= 1

    report = await Stager(storage, target, parallel=3, on_event=track).stage_in(
        bucket, str(tmp_path / "i"), prefix="many/"
    )
    assert report.copied == 12 and peak == 3
