"""The D3.6 data API through the real hub, proxy and service, on the test bed's S3 server (moto).

A hub of its own (``hub_factory``, SQLite) with quotas for one organization, a small
``max_upload_size`` and the test hubs' 64 KiB ``max_body_size`` (which streamed uploads must not
hit). A platform administrator registers each organization's object store through
``/heroes/admin/organizations/{org}/servers``, pointing at the ``s3_server`` fixture; users get their
roles through the API. Clients are ``requests`` and, for streamed uploads, ``http.client`` (which
stops sending when the service answers early, as browsers and curl do). rclone (Debian's) and boto3
read the same S3 endpoint as independent witnesses.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import select
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import boto3
import pytest
import requests
from botocore.config import Config
from sqlalchemy import select as sql_select

from jupyter_heroes import dbutil, orm
from jupyter_heroes.testing.base import read_pidfile
from jupyter_heroes.testing.hub import HubTestbed
from jupyter_heroes.testing.memory import peak_rss, reset_peak_rss
from jupyter_heroes.testing.plugin_hub import PLATFORM_ADMIN, TEST_MAX_BODY

pytestmark = [pytest.mark.hub, pytest.mark.s3]

MiB = 1024 * 1024
SUFFIX = uuid.uuid4().hex[:6]
ORG = f"dat-{SUFFIX}"  # alice, bob, carol (researchers), dana (data manager), bill (billing only)
OTHER = f"dbt-{SUFFIX}"  # eve: another organization, same S3 server
QORG = f"dqt-{SUFFIX}"  # quinn: a 1 MiB user quota
BARE = f"dnone-{SUFFIX}"  # no object store registered
MAX_UPLOAD = 512 * MiB
#: peak RSS the service may reach while streaming a large upload or download
RSS_LIMIT = 300 * 1000 * 1000
#: size of the streamed upload in the suite (benchmarks/data_api.py --size runs 2 GiB)
BIG = int(os.environ.get("HEROES_TEST_UPLOAD_MIB", "300")) * MiB

USERS: dict[str, tuple[str, list[str], list[str]]] = {
    "alice": (ORG, ["researcher"], ["wing"]),
    "bob": (ORG, ["researcher"], ["wing"]),
    "carol": (ORG, ["researcher"], []),
    "dana": (ORG, ["project-admin"], []),
    "bill": (ORG, ["billing-admin"], []),
    "eve": (OTHER, ["researcher"], ["wing"]),
    "quinn": (QORG, ["researcher"], []),
    "nora": (BARE, ["researcher"], []),
}


class Data:
    """The dedicated hub, tokens, and helpers for the data API."""

    def __init__(self, hub: HubTestbed, s3: Any) -> None:
        self.hub = hub
        self.s3 = s3
        self.tokens: dict[str, str] = {}
        self.http = requests.Session()

    def call(self, user: str, method: str, path: str, json_body: Any = None, **kw: Any) -> requests.Response:
        org = kw.pop("org", USERS[user][0] if user in USERS else None)
        return self.hub.api(method, path, self.tokens[user], json_body, org=org, **kw)

    def ok(
        self, user: str, method: str, path: str, json_body: Any = None, status: int = 200, **kw: Any
    ) -> Any:
        r = self.call(user, method, path, json_body, **kw)
        assert r.status_code == status, f"{method} {path} as {user}: {r.status_code} {r.text}"
        return r.json() if r.content else None

    def err(self, r: requests.Response, status: int, reason: str | None = None) -> dict[str, str]:
        assert r.status_code == status, f"{r.status_code} {r.text[:500]}"
        body = r.json()
        assert set(body) == {"message", "reason"} and body["message"], body
        if reason:
            assert body["reason"] == reason, body
        return body

    def bucket(self, user: str, org: str | None = None) -> str:
        return f"{org or USERS[user][0]}--u-{user}"

    def ensure(self, user: str, kind: str = "user", owner: str | None = None) -> str:
        """The bucket, created if needed (so each test runs alone too)."""
        body = {"kind": kind, "exist_ok": True, **({"owner": owner} if owner else {})}
        return self.ok(user, "POST", "/organization/data/bucket", body, status=201)["name"]

    def headers(self, user: str, org: str | None = None) -> dict[str, str]:
        return {"Authorization": f"token {self.tokens[user]}", "X-Heroes-Organization": org or USERS[user][0]}

    def upload(
        self,
        user: str,
        bucket: str,
        key: str,
        chunks: Iterable[bytes] | bytes,
        size: int | None = None,
        *,
        org: str | None = None,
        stop_after: int | None = None,
        extra_headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """Stream *chunks* as the body of POST /organization/data/upload with Content-Length *size*.
        Stops sending as soon as the service answers (an early refusal); with *stop_after*, drops
        the connection after that many bytes (an interrupted upload) and returns (0, {})."""
        if isinstance(chunks, bytes):
            size = len(chunks) if size is None else size
            chunks = [chunks[i : i + MiB] for i in range(0, len(chunks), MiB)]
        url = urlsplit(self.hub.api_url)
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=600)
        query = urlencode({"bucket": bucket, "key": key})
        conn.putrequest("POST", f"{url.path}/organization/data/upload?{query}", skip_accept_encoding=True)
        hdrs = {**self.headers(user, org), "Content-Type": "application/octet-stream"}
        if size is not None:
            hdrs["Content-Length"] = str(size)
        hdrs.update(extra_headers or {})
        for k, v in hdrs.items():
            conn.putheader(k, v)
        conn.endheaders()
        sock = conn.sock
        sent = 0
        try:
            for chunk in chunks:
                if select.select([sock], [], [], 0)[0]:
                    break  # the service answered before the end of the body
                if stop_after is not None and sent + len(chunk) > stop_after:
                    sock.sendall(chunk[: stop_after - sent])
                    time.sleep(0.5)
                    conn.close()
                    return 0, {}
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        return resp.status, json.loads(body) if body else {}

    def download(self, user: str, bucket: str, key: str, **kw: Any) -> requests.Response:
        return self.http.get(
            f"{self.hub.api_url}/organization/data/download",
            params={"bucket": bucket, "key": key},
            headers=self.headers(user, kw.pop("org", None)),
            timeout=600,
            **kw,
        )

    def boto(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.s3.url,
            aws_access_key_id=self.s3.access_key,
            aws_secret_access_key=self.s3.secret_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )

    def audit(self, action: str) -> list[orm.AuditEntry]:
        engine = dbutil.make_engine(self.hub.db_url)
        try:
            with dbutil.session_factory(engine)() as s:
                q = (
                    sql_select(orm.AuditEntry)
                    .where(orm.AuditEntry.action == action)
                    .order_by(orm.AuditEntry.id)
                )
                return list(s.scalars(q))
        finally:
            engine.dispose()


@pytest.fixture(scope="module")
def data(hub_factory, s3_server, tmp_path_factory) -> Iterator[Data]:
    conf = tmp_path_factory.mktemp("data-conf") / "heroes_data_config.py"
    conf.write_text(
        f"c.QuotaPolicy.org_quotas = {{{QORG!r}: {{'user': {MiB}}}}}\n"
        f"c.HeroesService.max_upload_size = {MAX_UPLOAD}\n"
    )
    extra = (
        "for _svc in c.JupyterHub.services:\n"
        "    if _svc['name'] == 'heroes':\n"
        f"        _svc['command'] = _svc['command'] + ['--HeroesService.config_file={conf}']\n"
    )
    hub = hub_factory(extra_config=extra, max_body_size=TEST_MAX_BODY)
    d = Data(hub, s3_server)
    for name in [PLATFORM_ADMIN, *USERS]:
        d.tokens[name] = hub.create_user(name)
    server = {
        "endpoint": s3_server.endpoint,
        "secure": False,
        "access_key": s3_server.access_key,
        "secret_key": s3_server.secret_key,
    }
    for org in (ORG, OTHER, QORG, BARE):
        d.ok(PLATFORM_ADMIN, "POST", "/heroes/admin/organizations", {"name": org}, status=201, org=None)
        if org != BARE:
            d.ok(
                PLATFORM_ADMIN,
                "POST",
                f"/heroes/admin/organizations/{org}/servers",
                server,
                status=201,
                org=None,
            )
    for org in (ORG, OTHER):
        d.ok(PLATFORM_ADMIN, "POST", "/organization/admin/groups", {"name": "wing"}, status=201, org=org)
    for name, (org, roles, projects) in USERS.items():
        d.ok(
            PLATFORM_ADMIN,
            "POST",
            "/organization/admin/users",
            {"username": name, "roles": roles, "projects": projects},
            status=201,
            org=org,
        )
    yield d
    d.http.close()


def blocks(size: int, seed: bytes = b"", block: int = MiB, digest: Any = None) -> Iterator[bytes]:
    """*size* bytes generated on the fly, every block different; *digest* (a hashlib object) sees
    them as they go."""
    base = hashlib.sha256(seed).digest() * (block // 32 + 1)
    i = 0
    left = size
    while left > 0:
        n = min(block, left)
        chunk = (hashlib.sha256(seed + i.to_bytes(8, "big")).digest() + base)[:n]
        if digest is not None:
            digest.update(chunk)
        yield chunk
        left -= n
        i += 1


# --- buckets --------------------------------------------------------------------------------------
def test_buckets_are_derived_and_created_within_rights(data: Data) -> None:
    assert data.ok("alice", "GET", "/organization/data/list") == []
    mine = data.ok("alice", "POST", "/organization/data/bucket", {"kind": "user"}, status=201)
    assert mine == {
        "name": data.bucket("alice"),
        "kind": "user",
        "owner": "alice",
        "mine": True,
        "created": None,
    }
    data.err(data.call("alice", "POST", "/organization/data/bucket", {}), 409, "conflict")
    assert data.ok("alice", "POST", "/organization/data/bucket", {"exist_ok": True}, status=201)["mine"]
    wing = data.ok(
        "alice", "POST", "/organization/data/bucket", {"kind": "project", "owner": "wing"}, status=201
    )
    assert wing["name"] == f"{ORG}--p-wing" and wing["mine"]
    # not theirs: another user's bucket, a project they are not in, a name the platform does not derive
    e = data.err(
        data.call("alice", "POST", "/organization/data/bucket", {"kind": "user", "owner": "bob"}), 403
    )
    assert "your own bucket" in e["message"]
    data.err(
        data.call("carol", "POST", "/organization/data/bucket", {"kind": "project", "owner": "wing"}), 403
    )
    data.err(
        data.call("alice", "POST", "/organization/data/bucket", {"kind": "project"}), 400, "invalid_request"
    )
    data.err(
        data.call("alice", "POST", "/organization/data/bucket", {"name": "free-name"}), 400, "invalid_field"
    )
    # the data manager creates buckets for members and projects of the organization, and only for them
    bob = data.ok("dana", "POST", "/organization/data/bucket", {"kind": "user", "owner": "bob"}, status=201)
    assert bob == {"name": data.bucket("bob"), "kind": "user", "owner": "bob", "mine": False, "created": None}
    data.err(data.call("dana", "POST", "/organization/data/bucket", {"owner": "ghost"}), 404, "not_found")
    data.err(data.call("dana", "POST", "/organization/data/bucket", {"owner": "eve"}), 404, "not_found")
    data.err(
        data.call("dana", "POST", "/organization/data/bucket", {"kind": "project", "owner": "nope"}), 404
    )

    listed = data.ok("alice", "GET", "/organization/data/list")
    assert [(b["name"], b["kind"], b["mine"]) for b in listed] == [
        (data.bucket("alice"), "user", True),
        (f"{ORG}--p-wing", "project", True),
    ]
    assert all(b["created"] for b in listed)
    assert {b["name"] for b in data.ok("dana", "GET", "/organization/data/list")} == {
        data.bucket("alice"),
        data.bucket("bob"),
        f"{ORG}--p-wing",
    }
    # eve's organization shares the S3 server and has a project of the same name: she sees none of it
    data.ok("eve", "POST", "/organization/data/bucket", {}, status=201)
    assert [b["name"] for b in data.ok("eve", "GET", "/organization/data/list")] == [data.bucket("eve")]
    e = data.err(data.call("bill", "GET", "/organization/data/list"), 403, "missing_scope")
    assert "data:home" in e["message"]
    e = data.err(data.call("nora", "GET", "/organization/data/list"), 409, "no_object_store")
    assert f"/heroes/admin/organizations/{BARE}/servers" in e["message"]

    created = data.audit("data.bucket.create")
    assert {(a.user, a.target, a.status) for a in created} >= {
        ("alice", data.bucket("alice"), 201),
        ("alice", f"{ORG}--p-wing", 201),
        ("dana", data.bucket("bob"), 201),
        ("alice", data.bucket("bob"), 403),
    }


# --- objects --------------------------------------------------------------------------------------
FILES = {
    "hello.txt": b"hello from the data API\n",
    "empty.dat": b"",
    "données/été 2024.csv": "a,b\n1,2\né,ü\n".encode(),
    "inputs/run1/params.json": b'{"n": 3}',
    "inputs/run1/ spaced name .txt": b"kept exactly, spaces included",
    "inputs/run1/deep/x.bin": os.urandom(200_000),
    "big/multipart.bin": os.urandom(37 * MiB + 11),  # three 16 MiB parts
}


def test_upload_list_download_delete(data: Data) -> None:
    bucket = data.ensure("alice")
    folder = data.ok("alice", "POST", f"/organization/data/bucket/{bucket}/", {"path": "results"}, status=201)
    assert folder["key"] == "results/" and folder["is_folder"]
    for key, content in FILES.items():
        status, up = data.upload("alice", bucket, key, content)
        assert status == 201, up
        assert up["size"] == len(content) and up["sha256"] == hashlib.sha256(content).hexdigest()
    assert data.upload("alice", bucket, "big/multipart.bin", FILES["big/multipart.bin"])[1]["parts"] == 3

    top = data.ok("alice", "GET", f"/organization/data/bucket/{bucket}/list")
    assert top["bucket"] == bucket and top["next"] is None
    assert {o["key"] for o in top["objects"]} == {"hello.txt", "empty.dat"}
    assert top["folders"] == sorted(["big/", "données/", "inputs/", "results/"])
    inputs = data.ok(
        "alice", "GET", f"/organization/data/bucket/{bucket}/list", params={"prefix": "inputs/run1/"}
    )
    assert [o["key"] for o in inputs["objects"]] == [
        "inputs/run1/ spaced name .txt",
        "inputs/run1/params.json",
    ]
    assert inputs["folders"] == ["inputs/run1/deep/"]
    # the folder marker of the listed folder is not an entry of it
    assert (
        data.ok("alice", "GET", f"/organization/data/bucket/{bucket}/list", params={"prefix": "results/"})[
            "objects"
        ]
        == []
    )
    # paging through a recursive listing, two at a time
    keys, token, pages = [], None, 0
    while True:
        params = {"delimiter": "", "limit": 2, **({"continuation": token} if token else {})}
        page = data.ok("alice", "GET", f"/organization/data/bucket/{bucket}/list", params=params)
        assert len(page["objects"]) <= 2 and page["folders"] == []
        keys += [o["key"] for o in page["objects"]]
        pages += 1
        token = page["next"]
        if not token:
            break
    assert sorted(keys) == sorted([*FILES, "results/"]) and pages == 4
    data.err(
        data.call("alice", "GET", f"/organization/data/bucket/{bucket}/list", params={"limit": 0}),
        400,
        "invalid_field",
    )

    size = data.ok("alice", "GET", "/organization/data/size", params={"bucket": bucket})
    assert size == {"bucket": bucket, "bytes": sum(map(len, FILES.values())), "objects": len(FILES) + 1}
    data.err(data.call("alice", "GET", "/organization/data/size"), 400, "invalid_field")

    for key, content in FILES.items():
        r = data.download("alice", bucket, key)
        assert r.status_code == 200, r.text
        assert r.content == content, key
        assert r.headers["Content-Type"] == "application/octet-stream"
        assert int(r.headers["Content-Length"]) == len(content)
        assert r.headers["X-Heroes-Sha256"] == hashlib.sha256(content).hexdigest()
    assert (
        "filename*=UTF-8''%C3%A9t%C3%A9%202024.csv"
        in data.download("alice", bucket, "données/été 2024.csv").headers["Content-Disposition"]
    )
    data.err(data.download("alice", bucket, "missing.txt"), 404, "not_found")
    data.err(data.download("alice", bucket, "results/"), 400, "is_folder")

    deleted = data.ok(
        "alice", "DELETE", f"/organization/data/bucket/{bucket}", {"keys": ["hello.txt", "empty.dat"]}
    )
    assert deleted == {"deleted": ["hello.txt", "empty.dat"], "errors": {}}
    data.err(data.download("alice", bucket, "hello.txt"), 404)
    data.err(
        data.call("alice", "DELETE", f"/organization/data/bucket/{bucket}", {"keys": []}),
        400,
        "invalid_field",
    )

    upload = data.audit("data.upload")[-1]
    assert upload.target == f"{bucket}/big/multipart.bin" and upload.status == 201 and upload.user == "alice"
    assert upload.detail["size"] == len(FILES["big/multipart.bin"])
    deletes = data.audit("data.objects.delete")
    assert [(a.status, a.detail.get("keys")) for a in deletes] == [
        (200, ["hello.txt", "empty.dat"]),
        (400, None),
    ]
    assert data.audit("data.folder.create")[0].target == f"{bucket}/results"


def rclone_env(s3: Any) -> dict[str, str]:
    """rclone through environment variables only; AWS_CA_BUNDLE dropped (rclone 1.60 fails with
    LoadCustomCABundleError when it is set, even for http)."""
    return {
        **{k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"},
        "RCLONE_CONFIG": "/dev/null",
        "RCLONE_CONFIG_HEROES_TYPE": "s3",
        "RCLONE_CONFIG_HEROES_PROVIDER": "Other",
        "RCLONE_CONFIG_HEROES_ENDPOINT": s3.url,
        "RCLONE_CONFIG_HEROES_ACCESS_KEY_ID": s3.access_key,
        "RCLONE_CONFIG_HEROES_SECRET_ACCESS_KEY": s3.secret_key,
        "RCLONE_CONFIG_HEROES_REGION": "us-east-1",
        "RCLONE_CONFIG_HEROES_FORCE_PATH_STYLE": "true",
    }


def rclone(s3: Any, *args: str) -> bytes:
    import subprocess

    p = subprocess.run(["rclone", *args], env=rclone_env(s3), capture_output=True, timeout=120)
    assert p.returncode == 0, f"rclone {' '.join(args)}: {p.stderr.decode()[-2000:]}"
    return p.stdout


def test_rclone_sees_exactly_what_the_api_wrote(data: Data, s3_server: Any) -> None:
    bucket = data.ensure("bob", "project", "wing")
    written = {
        "shared/readme.md": b"# wing\n",
        "shared/Ünïcode näme.txt": "ça marche\n".encode(),
        "shared/parts.bin": os.urandom(20 * MiB + 3),
        "zero": b"",
    }
    for key, content in written.items():
        assert data.upload("bob", bucket, key, content)[0] == 201
    data.ok("bob", "POST", f"/organization/data/bucket/{bucket}", {"path": "shared/empty-folder"}, status=201)

    listing = json.loads(rclone(s3_server, "lsjson", "-R", "--files-only", f"heroes:{bucket}"))
    assert {e["Path"]: e["Size"] for e in listing} == {k: len(v) for k, v in written.items()}
    sums = dict(
        reversed(line.split("  ", 1))
        for line in rclone(s3_server, "md5sum", "--download", f"heroes:{bucket}").decode().splitlines()
    )
    assert sums == {k: hashlib.md5(v).hexdigest() for k, v in written.items()}
    assert rclone(s3_server, "cat", f"heroes:{bucket}/shared/parts.bin") == written["shared/parts.bin"]
    dirs = json.loads(rclone(s3_server, "lsjson", "--dirs-only", f"heroes:{bucket}/shared"))
    assert "empty-folder" in {e["Path"] for e in dirs}
    # alice, in the same project, reads bob's upload through the API byte for byte
    assert data.download("alice", bucket, "shared/parts.bin").content == written["shared/parts.bin"]


# --- tenancy --------------------------------------------------------------------------------------
def test_other_tenants_are_refused_everything(data: Data) -> None:
    alice = data.ensure("alice")
    data.ensure("alice", "project", "wing")
    data.ensure("eve")
    status, _ = data.upload("alice", alice, "private/secret.txt", b"alice's secret")
    assert status == 201
    other_org_bucket = data.bucket("eve")
    attempts: list[tuple[str, str, str, Any, dict[str, Any]]] = [
        ("GET", "/organization/data/size", "", None, {"bucket": "{b}"}),
        ("GET", "/organization/data/bucket/{b}/list", "", None, {}),
        ("GET", "/organization/data/download", "", None, {"bucket": "{b}", "key": "private/secret.txt"}),
        ("POST", "/organization/data/bucket/{b}", "", {"path": "intruder"}, {}),
        ("DELETE", "/organization/data/bucket/{b}", "", {"keys": ["private/secret.txt"]}, {}),
        ("POST", "/organization/data/presign", "", {"bucket": "{b}", "key": "private/secret.txt"}, {}),
        (
            "POST",
            "/organization/data/presign",
            "",
            {"bucket": "{b}", "key": "planted.txt", "method": "PUT", "size": 3},
            {},
        ),
    ]

    def call(user: str, bucket: str, org: str | None, i: int) -> requests.Response:
        method, path, _, body, params = attempts[i]
        p = path.replace("{b}", bucket)
        b = json.loads(json.dumps(body).replace("{b}", bucket)) if body else None
        q = {k: v.replace("{b}", bucket) for k, v in params.items()}
        return data.call(user, method, p, b, params=q, **({"org": org} if org else {}))

    def run(user: str, bucket: str, status: int, org: str | None = None) -> None:
        for i in range(len(attempts)):
            e = data.err(call(user, bucket, org, i), status)
            if status == 404:
                # exactly what a bucket that does not exist answers: nothing tells that it does
                ghost = bucket.replace("-alice", "-ghost").replace("-eve", "-ghost")
                same = data.err(call(user, ghost, org, i), 404)
                assert e["message"].replace(bucket, ghost) == same["message"], (e, same)
        up, body = data.upload(user, bucket, "planted.txt", b"x" * 10, org=org)
        assert up == status, body

    run("bob", alice, 403)  # same organization, not his bucket
    run("carol", f"{ORG}--p-wing", 403)  # not in the project
    run("eve", alice, 404)  # another organization's bucket, named from hers
    run("alice", other_org_bucket, 404)  # and the other way round
    run("eve", alice, 404, org=ORG)  # selecting an organization she is not in
    run("bill", alice, 403)  # no data scope at all
    run("alice", "not-a-platform-bucket", 404)  # a name the platform never derives
    # nothing was planted, deleted or changed anywhere
    s3 = data.boto()
    for bucket in (alice, f"{ORG}--p-wing", other_org_bucket):
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
        assert "planted.txt" not in keys and not any(k.startswith("intruder") for k in keys), (bucket, keys)
    assert data.download("alice", alice, "private/secret.txt").content == b"alice's secret"
    # a data manager of the organization reaches every bucket of it, but not another organization's
    assert data.download("dana", alice, "private/secret.txt").content == b"alice's secret"
    data.err(data.download("dana", other_org_bucket, "x"), 404)
    denied = [a for a in data.audit("data.upload") if a.status in (403, 404)]
    assert len(denied) >= 7 and {a.outcome for a in denied} <= {"denied", "failure"}


TRAVERSAL = ["../escape.txt", "a/../../b", "/etc/passwd", "a//b", "./x", "a\\b", "dir/..", "a\x01b"]


def test_traversal_keys_are_refused(data: Data) -> None:
    bucket = data.ensure("alice")
    before = sorted(o["Key"] for o in data.boto().list_objects_v2(Bucket=bucket).get("Contents", []))
    for key in TRAVERSAL:
        status, body = data.upload("alice", bucket, key, b"payload")
        assert status == 400 and body["reason"] == "invalid_name", (key, body)
        data.err(data.download("alice", bucket, key), 400, "invalid_name")
        r = data.call("alice", "POST", "/organization/data/presign", {"bucket": bucket, "key": key})
        data.err(r, 400)
        r = data.call("alice", "POST", f"/organization/data/bucket/{bucket}", {"path": key})
        data.err(r, 400)
        r = data.call("alice", "DELETE", f"/organization/data/bucket/{bucket}", {"keys": [key]})
        data.err(r, 400)
    r = data.call("alice", "GET", f"/organization/data/bucket/{bucket}/list", params={"prefix": "../"})
    data.err(r, 400, "invalid_name")
    e = data.upload("alice", bucket, "../escape.txt", b"x")[1]
    assert "'..'" in e["message"]
    after = sorted(o["Key"] for o in data.boto().list_objects_v2(Bucket=bucket).get("Contents", []))
    assert after == before


# --- quotas, limits, interrupted uploads ----------------------------------------------------------
def incomplete_uploads(data: Data, bucket: str) -> list[str]:
    return [u["Key"] for u in data.boto().list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def test_quota_exceeded_is_refused_before_anything_is_written(data: Data) -> None:
    bucket = data.ensure("quinn")
    assert data.upload("quinn", bucket, "a.bin", os.urandom(600 * 1024))[0] == 201
    status, e = data.upload("quinn", bucket, "b.bin", os.urandom(600 * 1024))
    assert status == 413 and e["reason"] == "quota_exceeded", e
    assert "exceed the user quota" in e["message"] and "1.0 MiB" in e["message"]
    assert "Delete files you no longer need" in e["message"]
    # a presigned PUT is refused the same way
    r = data.call(
        "quinn",
        "POST",
        "/organization/data/presign",
        {"bucket": bucket, "key": "c.bin", "method": "PUT", "size": 600 * 1024},
    )
    data.err(r, 413, "quota_exceeded")
    # replacing an object counts only its growth
    assert data.upload("quinn", bucket, "a.bin", os.urandom(700 * 1024))[0] == 201
    assert sorted(o["Key"] for o in data.boto().list_objects_v2(Bucket=bucket)["Contents"]) == ["a.bin"]
    assert incomplete_uploads(data, bucket) == []
    assert (
        data.ok("quinn", "GET", "/organization/data/size", params={"bucket": bucket})["bytes"] == 700 * 1024
    )
    refused = [a for a in data.audit("data.upload") if a.status == 413]
    assert refused and refused[-1].detail["reason"] == "quota_exceeded"


def test_interrupted_upload_leaves_nothing(data: Data) -> None:
    bucket = data.ensure("alice")
    size = 60 * MiB
    status, _ = data.upload("alice", bucket, "cut/half.bin", blocks(size, b"cut"), size, stop_after=40 * MiB)
    assert status == 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and incomplete_uploads(data, bucket):
        time.sleep(0.2)  # the service aborts the multipart upload when it sees the connection drop
    assert incomplete_uploads(data, bucket) == []
    data.err(data.download("alice", bucket, "cut/half.bin"), 404)
    # an upload that declares more than it sends is the same as a cut one
    keys = [o["Key"] for o in data.boto().list_objects_v2(Bucket=bucket, Prefix="cut/").get("Contents", [])]
    assert keys == []


def test_upload_limits_are_clear(data: Data) -> None:
    bucket = data.ensure("alice")
    # far beyond the 64 KiB JSON body limit: streamed uploads are not subject to it
    status, up = data.upload("alice", bucket, "limits/2mb.bin", os.urandom(2 * MiB))
    assert status == 201 and up["size"] == 2 * MiB
    # larger than max_upload_size: refused from the header alone
    status, e = data.upload("alice", bucket, "limits/huge.bin", iter([b"x" * 1024] * 10), MAX_UPLOAD + 1)
    assert status == 413 and e["reason"] == "upload_too_large" and "max_upload_size" in e["message"], e
    # no Content-Length (chunked): the size cannot be checked first
    url = f"{data.hub.api_url}/organization/data/upload"
    r = data.http.post(
        url,
        params={"bucket": bucket, "key": "limits/chunked.bin"},
        data=iter([b"abc", b"def"]),
        headers=data.headers("alice"),
        timeout=60,
    )
    e = data.err(r, 411, "length_required")
    assert "Content-Length" in e["message"]
    data.err(data.http.post(url, params={"bucket": bucket}, data=b"x", headers=data.headers("alice")), 400)
    # a JSON endpoint still refuses a body over max_body_size
    r = data.call(
        "alice", "POST", f"/organization/data/bucket/{bucket}", {"path": "x" * (TEST_MAX_BODY + 10)}
    )
    data.err(r, 400, "body_too_large")
    keys = [o["Key"] for o in data.boto().list_objects_v2(Bucket=bucket, Prefix="limits/")["Contents"]]
    assert keys == ["limits/2mb.bin"]


# --- presigned URLs -------------------------------------------------------------------------------
def test_presigned_urls(data: Data) -> None:
    bucket = data.ensure("alice")
    content = os.urandom(300_000)
    assert data.upload("alice", bucket, "share/data.bin", content)[0] == 201
    got = data.ok("alice", "POST", "/organization/data/presign", {"bucket": bucket, "key": "share/data.bin"})
    assert got["method"] == "GET" and got["expires"] == 3600 and got["headers"] == {}
    assert got["url"].startswith(data.s3.url + f"/{bucket}/share/data.bin?")
    assert "X-Amz-Signature=" in got["url"] and data.s3.secret_key not in got["url"]
    assert requests.get(got["url"], timeout=30).content == content  # straight from the object store

    put = data.ok(
        "alice",
        "POST",
        "/organization/data/presign",
        {"bucket": bucket, "key": "share/up.txt", "method": "PUT", "size": 5, "expires": 60},
    )
    assert put["headers"] == {"Content-Length": "5"} and "content-length" in put["url"].lower()
    assert requests.put(put["url"], data=b"hello", headers=put["headers"], timeout=30).status_code == 200
    assert data.download("alice", bucket, "share/up.txt").content == b"hello"

    bad = [
        ({"bucket": bucket, "key": "share/missing"}, 404, "not_found"),
        ({"bucket": bucket, "key": "x", "method": "PUT"}, 400, "invalid_field"),
        ({"bucket": bucket, "key": "x", "expires": 8 * 24 * 3600}, 400, "invalid_field"),
        ({"bucket": bucket, "key": "x", "method": "DELETE"}, 400, "invalid_field"),
        ({"bucket": bucket, "key": "x", "method": "PUT", "size": 6 * 1024**3}, 400, "invalid_request"),
    ]
    for body, status, reason in bad:
        data.err(data.call("alice", "POST", "/organization/data/presign", body), status, reason)
    entries = data.audit("data.presign")
    assert {(a.target, a.detail.get("method"), a.status) for a in entries} >= {
        (f"{bucket}/share/data.bin", "GET", 200),
        (f"{bucket}/share/up.txt", "PUT", 200),
    }
    assert all("X-Amz" not in json.dumps(a.detail) for a in entries)


# --- bucket deletion ------------------------------------------------------------------------------
def test_bucket_deletion_needs_a_manager_and_force(data: Data) -> None:
    bucket = data.ensure("dana", "user", "bob")
    assert data.upload("bob", bucket, "keep.txt", b"keep")[0] == 201
    e = data.err(data.call("bob", "DELETE", "/organization/data/bucket", params={"bucket": bucket}), 403)
    assert "data:manage" in e["message"]
    e = data.err(data.call("dana", "DELETE", "/organization/data/bucket", params={"bucket": bucket}), 409)
    assert "not empty" in e["message"] and "force" in e["message"]
    data.err(
        data.call("dana", "DELETE", "/organization/data/bucket", params={"bucket": data.bucket("eve")}), 404
    )
    data.err(data.call("dana", "DELETE", "/organization/data/bucket"), 400, "invalid_field")
    data.ok(
        "dana", "DELETE", "/organization/data/bucket", params={"bucket": bucket, "force": "true"}, status=204
    )
    assert bucket not in {b["name"] for b in data.ok("dana", "GET", "/organization/data/list")}
    deleted = data.audit("data.bucket.delete")
    assert [(a.user, a.status, a.detail.get("force")) for a in deleted if a.target == bucket] == [
        ("bob", 403, False),
        ("dana", 409, False),
        ("dana", 204, True),
    ]


# --- memory: a large upload and download streamed through the service -----------------------------
@pytest.mark.timeout(900)
def test_large_upload_and_download_stream_with_bounded_memory(data: Data) -> None:
    pid = read_pidfile(data.hub.service_pid_file)
    assert pid, "no service pid file"
    bucket = data.ensure("carol")

    sent = hashlib.sha256()
    base = reset_peak_rss(pid)
    t0 = time.monotonic()
    status, up = data.upload("carol", bucket, "big/stream.bin", blocks(BIG, b"big", digest=sent), BIG)
    up_secs = time.monotonic() - t0
    up_peak = peak_rss(pid)
    assert status == 201, up
    assert up["size"] == BIG and up["sha256"] == sent.hexdigest() and up["parts"] == -(-BIG // (16 * MiB))

    base_down = reset_peak_rss(pid)
    got = hashlib.sha256()
    n = 0
    t0 = time.monotonic()
    with data.download("carol", bucket, "big/stream.bin", stream=True) as r:
        assert r.status_code == 200 and int(r.headers["Content-Length"]) == BIG
        for chunk in r.iter_content(MiB):
            got.update(chunk)
            n += len(chunk)
    down_secs = time.monotonic() - t0
    down_peak = peak_rss(pid)
    assert n == BIG and got.hexdigest() == sent.hexdigest()
    print(
        f"\n{BIG // MiB} MiB through the service: upload {BIG / MiB / up_secs:.0f} MiB/s, peak RSS "
        f"{up_peak / 1e6:.0f} MB (from {base / 1e6:.0f} MB); download {BIG / MiB / down_secs:.0f} MiB/s, "
        f"peak RSS {down_peak / 1e6:.0f} MB (from {base_down / 1e6:.0f} MB)"
    )
    assert up_peak < RSS_LIMIT, f"service peak RSS {up_peak / 1e6:.0f} MB during the upload"
    assert down_peak < RSS_LIMIT, f"service peak RSS {down_peak / 1e6:.0f} MB during the download"
    # and far below the size moved: the file never sat in the service's memory
    assert up_peak - base < BIG / 3 and down_peak - base_down < BIG / 3
    data.ok("carol", "DELETE", f"/organization/data/bucket/{bucket}", {"keys": ["big/stream.bin"]})


def test_openapi_documents_the_d36_data_api(data: Data) -> None:
    doc = requests.get(f"{data.hub.api_url}/openapi.json", timeout=30).json()
    for method, path in [
        ("get", "/organization/data/list"),
        ("get", "/organization/data/size"),
        ("post", "/organization/data/bucket"),
        ("delete", "/organization/data/bucket"),
        ("post", "/organization/data/bucket/{bucket}"),
        ("get", "/organization/data/bucket/{bucket}/list"),
        ("delete", "/organization/data/bucket/{bucket}"),
        ("get", "/organization/data/download"),
        ("post", "/organization/data/upload"),
        ("post", "/organization/data/presign"),
    ]:
        op = doc["paths"][path][method]
        assert op["summary"] and op["tags"] == ["Data"], (method, path)
        if method != "get":
            assert op["x-heroes-audit-action"].startswith("data."), (method, path)


def test_an_unreachable_store_is_a_clear_transient_error(data: Data) -> None:
    """An organization whose registered server does not answer (nothing listens on its port)."""
    from jupyter_heroes.testing.base import free_port

    org = f"ddown-{SUFFIX}"
    dead = {
        "endpoint": f"127.0.0.1:{free_port()}",
        "secure": False,
        "access_key": "a",
        "secret_key": "s3-down-secret",
    }
    data.ok(PLATFORM_ADMIN, "POST", "/heroes/admin/organizations", {"name": org}, status=201, org=None)
    data.ok(PLATFORM_ADMIN, "POST", f"/heroes/admin/organizations/{org}/servers", dead, status=201, org=None)
    e = data.err(data.call(PLATFORM_ADMIN, "GET", "/organization/data/list", org=org), 503, "unavailable")
    assert "cannot reach the object store" in e["message"] and "try again" in e["message"]
    status, body = data.upload(PLATFORM_ADMIN, f"{org}--u-{PLATFORM_ADMIN}", "x.txt", b"x", org=org)
    assert status == 503 and body["reason"] == "unavailable", body
    assert "s3-down-secret" not in data.hub.service_log.read_text()


def test_zz_no_secret_in_answers_or_logs(data: Data) -> None:
    """After everything above: the S3 secret key and the users' tokens appear in no answer and no log
    line (presigned URLs carry a signature, never the key)."""
    secrets = {"s3 secret key": data.s3.secret_key, **{f"token {u}": t for u, t in data.tokens.items()}}
    assert len(data.hub.transcript) > 100
    for method, path, status, text in data.hub.transcript:
        for name, value in secrets.items():
            assert value not in text, f"{name} in the answer to {method} {path} ({status})"
    for log in (data.hub.service_log, data.hub.hub_log):
        content = log.read_text(errors="replace")
        for name, value in secrets.items():
            assert value not in content, f"{name} in {log.name}"
    lines = [json.loads(ln) for ln in data.hub.service_log.read_text().splitlines() if ln.startswith("{")]
    assert any("object store of organization" in d["message"] for d in lines)


def test_curl_as_the_docs_show(data: Data, tmp_path: Path) -> None:
    """The commands of docs/api.md and docs/user/data.md, with curl (which sends Expect:
    100-continue for larger bodies)."""
    import subprocess

    bucket = data.ensure("alice")
    src = tmp_path / "mesh.dat"
    src.write_bytes(os.urandom(3 * MiB + 1))
    api = data.hub.api_url
    auth = ["-H", f"Authorization: token {data.tokens['alice']}", "-H", f"X-Heroes-Organization: {ORG}"]
    up = subprocess.run(
        [
            "curl",
            "-sS",
            *auth,
            "-X",
            "POST",
            "-T",
            str(src),
            f"{api}/organization/data/upload?bucket={bucket}&key=inputs/mesh.dat",
        ],
        capture_output=True,
        timeout=60,
    )
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout)["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    out = tmp_path / "back.dat"
    down = subprocess.run(
        [
            "curl",
            "-sS",
            "--fail",
            *auth,
            "-o",
            str(out),
            f"{api}/organization/data/download?bucket={bucket}&key=inputs/mesh.dat",
        ],
        capture_output=True,
        timeout=60,
    )
    assert down.returncode == 0, down.stderr
    assert out.read_bytes() == src.read_bytes()


def test_docs_describe_every_data_endpoint() -> None:
    from jupyter_heroes.service.openapi import endpoints

    root = Path(__file__).resolve().parents[2]
    page = (root / "docs" / "api.md").read_text()
    ops = [(path, m) for path, h, m, _ in endpoints() if h.__module__.endswith("apihandlers.data")]
    assert len(ops) == 10
    for path, method in ops:
        row = next((ln for ln in page.splitlines() if f"`{path}`" in ln), None)
        assert row is not None and method.upper() in row, (method, path)
    for action in ("data.upload", "data.presign", "data.bucket.delete", "data.objects.delete"):
        assert f"`{action}`" in page
    user = (root / "docs" / "user" / "data.md").read_text()
    for needle in ("--u-", "--p-", "presign", "results/<instance id>/", "quota", "`staging` events"):
        assert needle in user, needle
