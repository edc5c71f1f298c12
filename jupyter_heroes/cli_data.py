"""``heroes results`` and ``heroes data``: your files in the organization's object store from a shell,
through :class:`~jupyter_heroes.client.HeroesClient`.

::

    heroes results 3f2a...                     # a workflow's outputs into ./3f2a.../ (again: only what is missing)
    heroes results 3f2a... ~/runs/pi           # ... into ~/runs/pi/
    heroes data buckets                        # the buckets you may use
    heroes data ls results/ [-r]               # your bucket (--bucket: another one you may use)
    heroes data get results/3f2a.../result.json [DEST]
    heroes data put input.csv inputs/          # KEY ending in / keeps the file's name
    heroes data rm inputs/old.csv

Connection options, ``--json`` and exit statuses are those of the workflow commands
(:mod:`jupyter_heroes.cli_workflows`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from .cli_workflows import _client, _common, _print_json, _run, _table
from .client import FINAL_STATES, HeroesError, human_size, key_name, upload_key


def _size(n: object) -> str:
    return human_size(n) if isinstance(n, int) else "-"


@_run
def _results(args: argparse.Namespace) -> int:
    answer = _client(args).download_results(args.id, args.dest)
    if args.json:
        _print_json(answer)
        return 0
    for path in answer["downloaded"]:
        print(f"downloaded {path}")
    for path in answer["kept"]:
        print(f"kept {path} (already there)")
    got, kept = len(answer["downloaded"]), len(answer["kept"])
    if not got and not kept:
        print(f"{answer['instance']} ({answer['state']}) has no outputs in your storage yet")
    else:
        print(f"{got} downloaded ({_size(answer['bytes'])}), {kept} already there, in {answer['directory']}")
    if answer["state"] not in FINAL_STATES:
        print(f"note: the workflow is {answer['state']}; run this again when it has finished for the rest")
    return 0


def _need(paths: list[str], lo: int, hi: int | None, usage: str) -> None:
    if len(paths) < lo or (hi is not None and len(paths) > hi):
        raise HeroesError(f"usage: heroes data {usage}", "usage")


@_run
def _data(args: argparse.Namespace) -> int:
    client = _client(args)
    paths: list[str] = list(args.paths)
    if args.action == "buckets":
        _need(paths, 0, 0, "buckets")
        buckets = client.buckets()
        if args.json:
            _print_json(buckets)
            return 0
        rows = [(b["name"], b["kind"], b.get("owner") or "", "yes" if b.get("mine") else "") for b in buckets]
        print(_table(rows, ("BUCKET", "KIND", "OWNER", "MINE")) if rows else "no buckets yet")
        return 0
    if args.action == "ls":
        _need(paths, 0, 1, "ls [PREFIX], e.g. heroes data ls results/")
        listing = client.ls(paths[0] if paths else "", args.bucket, recursive=args.recursive)
        if args.json:
            _print_json(listing)
            return 0
        rows = [(f, "-", "") for f in listing["folders"]] + [
            (o["key"], _size(o.get("size")), o.get("last_modified") or "") for o in listing["objects"]
        ]
        print(_table(rows, ("KEY", "SIZE", "MODIFIED")) if rows else f"nothing under {listing['prefix']!r}")
        return 0
    if args.action == "get":
        _need(paths, 1, 2, "get KEY [DEST], e.g. heroes data get results/ID/result.json .")
        key = paths[0]
        dest = paths[1] if len(paths) == 2 else key_name(key)
        path = client.download(key, dest, args.bucket)
        if args.json:
            _print_json({"key": key, "path": str(path)})
        else:
            print(path)
        return 0
    if args.action == "put":
        _need(paths, 1, 2, "put LOCAL [KEY], e.g. heroes data put data.csv inputs/data.csv")
        local = paths[0]
        stored = client.upload(upload_key(local, paths[1] if len(paths) == 2 else None), local, args.bucket)
        if args.json:
            _print_json(stored)
        else:
            print(
                f"{stored['bucket']}/{stored['key']} {_size(stored.get('size'))} sha256 {stored.get('sha256')}"
            )
        return 0
    _need(paths, 1, None, "rm KEY [KEY ...], e.g. heroes data rm inputs/old.csv")
    answer = client.delete(paths, args.bucket)
    if args.json:
        _print_json(answer)
        return 0
    for key in answer.get("deleted", []):
        print(f"deleted {key}")
    errors = answer.get("errors") or {}
    for key, why in errors.items():
        print(f"not deleted {key}: {why}")
    return 1 if errors else 0


def _add_results(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "results",
        parents=[_common()],
        help="download a workflow's outputs",
        description="Copy every output of a workflow from your storage into DEST (default ./ID), keeping "
        "their paths. Files already there with the same content are kept, so running it again after an "
        "interruption fetches only what is missing; each download is checked against the store's "
        "checksum.",
    )
    p.add_argument("id", help="a workflow id")
    p.add_argument("dest", nargs="?", default=None, help="the directory to copy into (default: ./ID)")
    p.set_defaults(func=_results)


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        parents=[_common()],
        help="your files in the object store",
        description="ls [PREFIX] | get KEY [DEST] | put LOCAL [KEY] | rm KEY ... | buckets. Keys are paths "
        "in your bucket (--bucket: another bucket you may use, from 'heroes data buckets').",
    )
    p.add_argument("action", choices=["ls", "get", "put", "rm", "buckets"], help="what to do")
    p.add_argument("paths", nargs="*", metavar="PATH", help="the keys and local paths the action takes")
    p.add_argument("--bucket", default=None, help="a bucket from 'heroes data buckets' (default: your own)")
    p.add_argument("-r", "--recursive", action="store_true", help="ls: every key under the prefix")
    p.set_defaults(func=_data)


#: subcommand registrars for :data:`jupyter_heroes.cli.COMMANDS`
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_results, _add_data]
