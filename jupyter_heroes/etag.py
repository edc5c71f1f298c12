"""Does a local file hold the same bytes as an object in the store? Told from the object's size and
S3 ETag, without downloading it.

An object stored in one PUT has the MD5 of its content as ETag. One stored in parts has
``md5(md5(part 1) + ... + md5(part N))-N``; the part size is not recorded, so the candidates that give
exactly N parts are tried: whole MiB from the smallest that fits up to the common part sizes of S3
clients (HEROES uses 16 MiB). All candidates are computed in one pass over the file. An ETag of another
form (an encrypted object's, say) never matches: the file is then downloaded again.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from typing import Any

MiB = 1024 * 1024
#: part sizes S3 clients commonly use (HEROES 16 MiB, boto3 8 MiB, rclone 5 MiB, the minio SDK more)
COMMON_PART_SIZES = tuple(m * MiB for m in (5, 8, 10, 16, 32, 50, 64, 100, 128, 256, 512))
_PLAIN = re.compile(r"[0-9a-f]{32}")
_MULTIPART = re.compile(r"([0-9a-f]{32})-([1-9][0-9]{0,4})")
_READ = 4 * MiB


def part_sizes(size: int, parts: int) -> list[int]:
    """Part sizes (whole MiB, at least 5 MiB as S3 requires of every part but the last) that split
    *size* bytes into exactly *parts* parts."""
    if parts < 1 or size < parts:
        return []
    smallest = max(5 * MiB, math.ceil(size / parts / MiB) * MiB)
    out = {smallest, *COMMON_PART_SIZES}
    return sorted(p for p in out if p >= smallest and math.ceil(size / p) == parts)


def same_content(path: str | os.PathLike[str], size: int, etag: str) -> bool:
    """Whether the file at *path* is *size* bytes long and has the object's *etag* (quotes allowed)."""
    try:
        if os.stat(path).st_size != size:
            return False
    except OSError:
        return False
    etag = etag.strip().strip('"').lower()
    if _PLAIN.fullmatch(etag):
        md5 = hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as f:
            while chunk := f.read(_READ):
                md5.update(chunk)
        return md5.hexdigest() == etag
    m = _MULTIPART.fullmatch(etag)
    if m is None:
        return False
    parts = int(m.group(2))
    candidates = part_sizes(size, parts)
    if not candidates:
        return False
    # per candidate part size: the MD5s of its finished parts and the MD5 of the part being read
    state: list[dict[str, Any]] = [
        {"size": p, "done": [], "md5": hashlib.md5(usedforsecurity=False), "left": p} for p in candidates
    ]
    with open(path, "rb") as f:
        while chunk := f.read(_READ):
            view = memoryview(chunk)
            for s in state:
                at = 0
                while at < len(view):
                    take = min(s["left"], len(view) - at)
                    s["md5"].update(view[at : at + take])
                    at += take
                    s["left"] -= take
                    if s["left"] == 0:
                        s["done"].append(s["md5"].digest())
                        s["md5"], s["left"] = hashlib.md5(usedforsecurity=False), s["size"]
    for s in state:
        if s["left"] != s["size"]:  # the last, shorter part
            s["done"].append(s["md5"].digest())
        if len(s["done"]) == parts and hashlib.md5(b"".join(s["done"])).hexdigest() == m.group(1):
            return True
    return False
