"""A workflow's outputs back to the user: ``HeroesClient.download_results`` (what ``heroes results``,
``%heroes results`` and the JupyterLab *Results* button run) with its parallel downloads, against the
same call one download at a time (``parallel=1``), in the same run.

Starts the test bed's moto_server and a real JupyterHub with configurable-http-proxy and the HEROES
service (both stopped by PID at the end), registers the S3 server for a fresh organization, runs a
real ``monte-carlo-pi`` workflow on the local backend (its ``result.json`` is staged out to the user's
bucket), then puts ``--files`` more objects (``--size`` MiB in all) under its ``results/<id>/``, in
folders, as a larger workflow leaves them. Each round downloads them all into a fresh directory both ways, in
alternating order, and checks every file; a last call on a full directory must keep every file and
download nothing. ``--json`` prints one JSON object as the last line: the medians of the rounds
(``parallel_s``, ``baseline_s``: one at a time, ``ratio``: baseline over parallel, above 1 is faster),
MiB/s both ways, and ``kept_s``, the time to find that nothing needs fetching.

    python benchmarks/results.py --json
    python benchmarks/results.py --files 256 --size 256 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from jupyter_heroes.client import HeroesClient
from jupyter_heroes.testing.hub import HubTestbed
from jupyter_heroes.testing.s3 import S3Testbed

REPO = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024
ADMIN = "bench-admin"
USER = "bench-user"


def _ok(r: Any) -> Any:
    if r.status_code >= 300:
        raise SystemExit(f"{r.request.method} {r.url}: {r.status_code} {r.text[:300]}")
    return r.json() if r.content else None


def run(files: int, size_mib: int, rounds: int, parallel: int) -> dict[str, Any]:
    org = f"bench-{uuid.uuid4().hex[:6]}"
    with S3Testbed() as s3, HubTestbed(platform_admins=[ADMIN]) as hub:
        admin, token = hub.create_user(ADMIN), hub.create_user(USER)
        _ok(hub.api("POST", "/heroes/admin/organizations", admin, {"name": org}))
        _ok(
            hub.api(
                "POST",
                f"/heroes/admin/organizations/{org}/servers",
                admin,
                {
                    "endpoint": s3.endpoint,
                    "secure": False,
                    "access_key": s3.access_key,
                    "secret_key": s3.secret_key,
                },
            )
        )
        roles = ["org-admin", "researcher"]
        _ok(hub.api("POST", "/organization/admin/users", admin, {"username": USER, "roles": roles}, org=org))
        # a real workflow on the local backend, whose result.json the staging writes back
        scratch = Path(tempfile.mkdtemp(prefix="bench-results-scratch-"))
        cluster = {"name": "local", "transport": "local", "scheduler": "local", "scratch_root": str(scratch)}
        _ok(
            hub.api(
                "POST",
                "/organization/admin/cluster",
                token,
                {**cluster, "queues": [{"name": "debug"}]},
                org=org,
            )
        )
        doc = yaml.safe_load((REPO / "templates" / "monte-carlo-pi.yaml").read_text())
        _ok(hub.api("POST", "/organization/admin/workflow/template", token, {"template": doc}, org=org))
        client = HeroesClient(hub.api_url.rsplit("api/v1", 1)[0], token, org, timeout=120)
        run_ = client.submit("monte-carlo-pi", {"samples": 20000}, cluster="local")
        if client.wait(run_["id"], 300)["state"] != "completed":
            raise SystemExit("the workflow did not complete")
        instance = run_["id"]
        # more outputs beside it, in folders, as a larger workflow leaves them
        each = size_mib * MiB // files
        expected: dict[str, bytes] = {}
        for i in range(files):
            rel = f"d{i % 8}/out{i:05d}.bin"
            data = os.urandom(each)
            client.upload(f"results/{instance}/{rel}", data)
            expected[rel] = data

        def fetch(workers: int) -> float:
            dest = Path(tempfile.mkdtemp(prefix="bench-results-"))
            t0 = time.perf_counter()
            answer = client.download_results(instance, dest, parallel=workers)
            seconds = time.perf_counter() - t0
            if len(answer["downloaded"]) != files + 1 or answer["kept"]:  # and the workflow's result.json
                raise SystemExit(
                    f"expected {files + 1} downloads: {len(answer['downloaded'])}, kept {len(answer['kept'])}"
                )
            if "pi" not in json.loads((dest / "result.json").read_text()):
                raise SystemExit("result.json is not the workflow's")
            for rel, data in expected.items():
                if (dest / rel).read_bytes() != data:
                    raise SystemExit(f"{rel} differs")
            return seconds

        ours: list[float] = []
        base: list[float] = []
        for r in range(rounds):
            order = [(ours, parallel), (base, 1)] if r % 2 == 0 else [(base, 1), (ours, parallel)]
            for sink, workers in order:
                sink.append(fetch(workers))
        full = Path(tempfile.mkdtemp(prefix="bench-results-"))
        client.download_results(instance, full, parallel=parallel)
        t0 = time.perf_counter()
        again = client.download_results(instance, full, parallel=parallel)
        kept_s = time.perf_counter() - t0
        if again["downloaded"] or len(again["kept"]) != files + 1:
            raise SystemExit("a second call on a full directory downloaded something")
    p, b = statistics.median(ours), statistics.median(base)
    return {
        "files": files,
        "mib": size_mib,
        "parallel": parallel,
        "parallel_s": round(p, 3),
        "parallel_mib_s": round(size_mib / p, 1),
        "baseline": "download_results(parallel=1)",
        "baseline_s": round(b, 3),
        "baseline_mib_s": round(size_mib / b, 1),
        "ratio": round(b / p, 3),
        "kept_s": round(kept_s, 3),
        "rounds": {"parallel_s": [round(x, 3) for x in ours], "baseline_s": [round(x, 3) for x in base]},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--files", type=int, default=128, help="outputs of the workflow (default 128)")
    p.add_argument("--size", type=int, default=128, help="MiB in all (default 128)")
    p.add_argument("--rounds", type=int, default=3, help="downloads each way, order alternating (default 3)")
    p.add_argument("--parallel", type=int, default=4, help="downloads at a time (default 4, as shipped)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = p.parse_args(argv)
    if args.files < 1 or args.size < 1 or args.rounds < 1 or args.parallel < 1:
        p.error("--files, --size, --rounds and --parallel must be at least 1")
    res = run(args.files, args.size, args.rounds, args.parallel)
    for k, v in res.items():
        print(f"{k:16} {v}")
    if args.json:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
