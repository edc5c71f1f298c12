"""A large file up and down through the data API (hub + proxy + HEROES service + S3), with the
service's peak memory.

Starts the test bed's moto_server and a real JupyterHub with configurable-http-proxy and the HEROES
service (both stopped by PID at the end), registers the S3 server for a fresh organization through
``/heroes/admin/organizations/{org}/servers``, then streams ``--size`` MiB (default 2048) generated
on the fly to ``POST /organization/data/upload`` and reads it back from
``GET /organization/data/download``, checking the SHA-256 both ways. The service's peak RSS is read
from ``/proc/<pid>/status`` (VmHWM, reset before each direction through ``/proc/<pid>/clear_refs``;
run as root or as the service's user). ``--json`` prints one JSON object as the last line;
``--rss-limit`` (MB, default 300) makes the exit status 1 if a peak passes it.

    python benchmarks/data_api.py --size 2048
    python benchmarks/data_api.py --size 300 --json
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import select
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests

from jupyter_heroes.testing.base import read_pidfile
from jupyter_heroes.testing.hub import HubTestbed
from jupyter_heroes.testing.memory import peak_rss, reset_peak_rss
from jupyter_heroes.testing.s3 import S3Testbed

MiB = 1024 * 1024
ADMIN = "bench-admin"
USER = "bench-user"


def blocks(size: int, digest: Any, block: int = MiB) -> Iterator[bytes]:
    """*size* bytes made on the fly (every block different), fed to *digest* as they go."""
    base = b"heroes" * (block // 6 + 1)
    i = 0
    while size > 0:
        n = min(block, size)
        chunk = (hashlib.sha256(i.to_bytes(8, "big")).digest() + base)[:n]
        digest.update(chunk)
        yield chunk
        size -= n
        i += 1


def api(hub: HubTestbed, token: str, method: str, path: str, body: Any = None, org: str | None = None) -> Any:
    r = hub.api(method, path, token, body, org=org)
    if r.status_code >= 300:
        raise SystemExit(f"{method} {path}: {r.status_code} {r.text[:300]}")
    return r.json() if r.content else None


def upload(
    hub: HubTestbed, token: str, org: str, bucket: str, key: str, size: int, digest: Any
) -> dict[str, Any]:
    url = urlsplit(hub.api_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=3600)
    conn.putrequest(
        "POST",
        f"{url.path}/organization/data/upload?{urlencode({'bucket': bucket, 'key': key})}",
        skip_accept_encoding=True,
    )
    for k, v in {
        "Authorization": f"token {token}",
        "X-Heroes-Organization": org,
        "Content-Type": "application/octet-stream",
        "Content-Length": str(size),
    }.items():
        conn.putheader(k, v)
    conn.endheaders()
    for chunk in blocks(size, digest):
        if select.select([conn.sock], [], [], 0)[0]:
            break  # answered early (an error): stop sending
        conn.sock.sendall(chunk)
    resp = conn.getresponse()
    body = json.loads(resp.read() or b"{}")
    conn.close()
    if resp.status != 201:
        raise SystemExit(f"upload: {resp.status} {body}")
    return body


def run(size_mib: int) -> dict[str, Any]:
    size = size_mib * MiB
    org = f"bench-{uuid.uuid4().hex[:6]}"
    with S3Testbed() as s3, HubTestbed(platform_admins=[ADMIN]) as hub:
        admin, user = hub.create_user(ADMIN), hub.create_user(USER)
        api(hub, admin, "POST", "/heroes/admin/organizations", {"name": org})
        api(
            hub,
            admin,
            "POST",
            f"/heroes/admin/organizations/{org}/servers",
            {
                "endpoint": s3.endpoint,
                "secure": False,
                "access_key": s3.access_key,
                "secret_key": s3.secret_key,
            },
        )
        api(
            hub,
            admin,
            "POST",
            "/organization/admin/users",
            {"username": USER, "roles": ["researcher"]},
            org=org,
        )
        bucket = api(hub, user, "POST", "/organization/data/bucket", {"kind": "user"}, org=org)["name"]
        pid = read_pidfile(hub.service_pid_file)
        if not pid:
            raise SystemExit("the service wrote no pid file")

        sent = hashlib.sha256()
        base_up = reset_peak_rss(pid)
        t0 = time.monotonic()
        result = upload(hub, user, org, bucket, "bench/big.bin", size, sent)
        up_s = time.monotonic() - t0
        peak_up = peak_rss(pid)
        if result["sha256"] != sent.hexdigest() or result["size"] != size:
            raise SystemExit(f"upload mismatch: {result}")

        got = hashlib.sha256()
        n = 0
        base_down = reset_peak_rss(pid)
        t0 = time.monotonic()
        with requests.get(
            f"{hub.api_url}/organization/data/download",
            params={"bucket": bucket, "key": "bench/big.bin"},
            headers={"Authorization": f"token {user}", "X-Heroes-Organization": org},
            stream=True,
            timeout=3600,
        ) as r:
            r.raise_for_status()
            for chunk in r.iter_content(MiB):
                got.update(chunk)
                n += len(chunk)
        down_s = time.monotonic() - t0
        peak_down = peak_rss(pid)
        if n != size or got.hexdigest() != sent.hexdigest():
            raise SystemExit(f"download mismatch: {n} bytes")
        return {
            "size_mib": size_mib,
            "parts": result["parts"],
            "upload_mib_s": round(size_mib / up_s, 1),
            "upload_seconds": round(up_s, 1),
            "service_rss_before_upload_mb": round(base_up / 1e6),
            "service_peak_rss_upload_mb": round(peak_up / 1e6),
            "download_mib_s": round(size_mib / down_s, 1),
            "download_seconds": round(down_s, 1),
            "service_rss_before_download_mb": round(base_down / 1e6),
            "service_peak_rss_download_mb": round(peak_down / 1e6),
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--size", type=int, default=2048, help="MiB to upload and download (default 2048)")
    p.add_argument("--rss-limit", type=int, default=300, help="MB the service's peak RSS must stay under")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = p.parse_args(argv)
    res = run(args.size)
    for k, v in res.items():
        print(f"{k:32} {v}")
    ok = max(res["service_peak_rss_upload_mb"], res["service_peak_rss_download_mb"]) < args.rss_limit
    res["rss_ok"] = ok
    if args.json:
        print(json.dumps(res))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
