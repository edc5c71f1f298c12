"""Bucket names derived from organizations, users and projects; object-key and path validation.

Bucket names are never typed by users: they are derived, deterministically, from the organization
and the owner (a user or a project)::

    <org>--u-<user>        a user's own bucket          acme--u-alice
    <org>--p-<project>     a project's shared bucket    acme--p-wing-design

Each part is *sanitised* to lowercase letters, digits and single hyphens. When sanitising changed a
part (``Bob`` -> ``bob``, ``jörg.m`` -> ``j-rg-m``), when it is too long, or when the clean part
happens to look like a hashed one, the part becomes ``<start>-h<10 base32 chars of sha256(raw)>``,
so that ``Bob`` and ``bob`` get different buckets and nobody can pick a name that lands on someone
else's bucket short of a 50-bit hash collision. Parts never contain ``--``, so the first ``--``
always ends the organization part: :func:`parse_bucket` reads the owner back without ambiguity, and
an organization named ``a`` can never claim buckets of an organization named ``a-u-b``.

Every name is a valid S3 bucket name (3-63 characters, ``[a-z0-9-]``, starts and ends with a letter
or digit, no dots so never IP-like, none of AWS's reserved prefixes and suffixes).

Object keys arriving from users are checked by :func:`validate_key`: no ``..`` or ``.`` segments,
no absolute keys, no empty segments, no NUL or other control characters, no backslashes, at most
1024 bytes of UTF-8 and 255 bytes per segment (keys become file names on clusters when staged).
:func:`confine` joins a key under a prefix; :func:`confine_path` a relative path under a directory.
"""

from __future__ import annotations

import base64
import hashlib
import posixpath
import re
import unicodedata
from dataclasses import dataclass

from .errors import InvalidName

MAX_BUCKET_LEN = 63
MAX_ORG_PART = 20
MAX_KEY_BYTES = 1024
MAX_SEGMENT_BYTES = 255
HASH_CHARS = 10

USER = "u"
PROJECT = "p"
KINDS = {USER: "user", PROJECT: "project"}

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_HASHED_RE = re.compile(r"(?:^|-)h[a-z2-7]{" + str(HASH_CHARS) + r"}$")
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", "--x-s3", "--table-s3")


def _digest(raw: str) -> str:
    return (
        base64.b32encode(hashlib.sha256(raw.encode("utf-8", "surrogatepass")).digest())
        .decode()
        .lower()[:HASH_CHARS]
    )


def _sanitise(raw: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", raw.lower()).strip("-")


def component(raw: str, max_len: int, *, force_hash: bool = False) -> str:
    """One part of a bucket name: *raw* itself if it is already clean and short enough, else its
    sanitised start followed by ``-h`` and a hash of the exact *raw* string."""
    if max_len < HASH_CHARS + 3:
        raise ValueError(f"a bucket name part needs at least {HASH_CHARS + 3} characters, got {max_len}")
    clean = _sanitise(raw)
    if not force_hash and clean == raw and 0 < len(clean) <= max_len and not _HASHED_RE.search(clean):
        return clean
    base = clean[: max_len - HASH_CHARS - 2].rstrip("-")
    return (base + "-" if base else "") + "h" + _digest(raw)


def _name(obj: object) -> str:
    """Accept an ORM object (``.name``) or a plain string."""
    name = getattr(obj, "name", obj)
    if not isinstance(name, str):
        raise TypeError(f"expected a name or an object with .name, got {type(obj).__name__}")
    return name


def org_part(org: object) -> str:
    """The organization part of its bucket names (also the prefix a data manager's listing keeps)."""
    raw = _name(org)
    part = component(raw, MAX_ORG_PART)
    if (part + "--").startswith(_RESERVED_PREFIXES):
        part = "h" + _digest(raw)
    return part


def _bucket(org: object, kind: str, owner: object) -> str:
    o = org_part(org)
    raw = _name(owner)
    room = MAX_BUCKET_LEN - len(o) - 2 - len(kind) - 1
    name = f"{o}--{kind}-{component(raw, room)}"
    if name.endswith(_RESERVED_SUFFIXES):
        name = f"{o}--{kind}-{component(raw, room, force_hash=True)}"
    assert is_valid_bucket_name(name), name
    return name


def user_bucket(org: object, user: object) -> str:
    """The bucket of *user* in *org* (names or ORM objects)."""
    return _bucket(org, USER, user)


def project_bucket(org: object, project: object) -> str:
    """The shared bucket of *project* in *org* (names or ORM objects)."""
    return _bucket(org, PROJECT, project)


@dataclass(frozen=True)
class BucketName:
    """What a derived bucket name says about its owner (parts as they appear in the name)."""

    name: str
    org: str
    kind: str  # "user" | "project"
    owner: str


def is_valid_bucket_name(name: str) -> bool:
    return (
        isinstance(name, str)
        and bool(_BUCKET_RE.match(name))
        and not name.startswith(_RESERVED_PREFIXES)
        and not name.endswith(_RESERVED_SUFFIXES)
    )


def parse_bucket(name: str) -> BucketName | None:
    """Split a derived bucket name into organization, kind and owner parts; None for any other name."""
    if not is_valid_bucket_name(name) or "--" not in name:
        return None
    org, rest = name.split("--", 1)
    m = re.fullmatch(r"([a-z])-([a-z0-9][a-z0-9-]*)", rest)
    if not org or not m or m.group(1) not in KINDS or "--" in rest:
        return None
    return BucketName(name, org, KINDS[m.group(1)], m.group(2))


def validate_bucket_name(name: object) -> str:
    """*name* if it is a bucket name this platform could have derived, else :class:`InvalidName`."""
    if not isinstance(name, str) or parse_bucket(name) is None:
        shown = name if isinstance(name, str) and len(name) <= 80 and name.isprintable() else "(not shown)"
        raise InvalidName(
            f"{shown!s} is not a HEROES bucket name. Bucket names are made by the platform "
            "(<organization>--u-<user> or <organization>--p-<project>); pick one from the bucket list."
        )
    return name


# --- object keys -----------------------------------------------------------------------------------


def _describe(ch: str) -> str:
    return f"U+{ord(ch):04X}" + (f" ({unicodedata.name(ch)})" if unicodedata.name(ch, "") else "")


def validate_key(key: object, *, allow_folder: bool = False, what: str = "object key") -> str:
    """Return *key* if it is a safe relative object key, else raise :class:`InvalidName` saying why.

    With *allow_folder*, a trailing ``/`` (a folder marker or listing prefix) is accepted.
    """
    if not isinstance(key, str):
        raise InvalidName(f"the {what} must be a string")
    if not key:
        raise InvalidName(f"the {what} must not be empty")
    for i, ch in enumerate(key):
        cat = unicodedata.category(ch)
        if cat == "Cc":
            raise InvalidName(
                f"the {what} contains a control character {_describe(ch)} at position {i}; remove it"
            )
        if cat == "Cs":
            raise InvalidName(f"the {what} is not valid Unicode (lone surrogate at position {i})")
    if "\\" in key:
        raise InvalidName(f"the {what} {key!r} contains a backslash; use '/' to separate folders")
    if key.startswith("/"):
        raise InvalidName(
            f"the {what} {key!r} is absolute; give it relative to the bucket, without a leading '/'"
        )
    size = len(key.encode("utf-8"))
    if size > MAX_KEY_BYTES:
        raise InvalidName(f"the {what} is {size} bytes long; the limit is {MAX_KEY_BYTES} bytes of UTF-8")
    segments = key.split("/")
    if allow_folder and key.endswith("/"):
        segments = segments[:-1]
    for seg in segments:
        if seg in (".", ".."):
            raise InvalidName(
                f"the {what} {key!r} contains a {seg!r} segment; give the path without '.' or '..'"
            )
        if seg == "":
            raise InvalidName(f"the {what} {key!r} contains an empty segment ('//') or a trailing '/'")
        if len(seg.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise InvalidName(f"a segment of the {what} is longer than {MAX_SEGMENT_BYTES} bytes; shorten it")
    return key


def validate_prefix(prefix: object) -> str:
    """A listing prefix: empty, or a key that may end with ``/`` or part of a name."""
    if prefix in (None, ""):
        return ""
    return validate_key(prefix, allow_folder=True, what="prefix")


def is_within(prefix: str, key: str) -> bool:
    """True if *key* lies under folder *prefix* (``""`` or ending with ``/``)."""
    if prefix and not prefix.endswith("/"):
        raise ValueError(f"a confinement prefix must end with '/', got {prefix!r}")
    return key.startswith(prefix)


def confine(prefix: str, relative: str) -> str:
    """``prefix + relative`` after checking *relative* (so the result cannot leave *prefix*)."""
    if prefix:
        validate_key(prefix, allow_folder=True, what="prefix")
        if not prefix.endswith("/"):
            raise ValueError(f"a confinement prefix must end with '/', got {prefix!r}")
    key = prefix + validate_key(relative, allow_folder=True, what="path")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidName(
            f"the object key under {prefix!r} would exceed {MAX_KEY_BYTES} bytes; use a shorter path"
        )
    return key


def confine_path(root: str, relative: str) -> str:
    """Absolute POSIX path of *relative* under directory *root*, refusing anything that would leave it
    (``..``, absolute paths, backslashes, control characters)."""
    if not root.startswith("/"):
        raise ValueError(f"the root directory must be absolute, got {root!r}")
    root = posixpath.normpath(root)
    rel = validate_key(relative, allow_folder=True, what="path").rstrip("/")
    path = posixpath.normpath(posixpath.join(root, rel))
    if path != root and not path.startswith(
        root.rstrip("/") + "/"
    ):  # pragma: no cover - validate_key prevents it
        raise InvalidName(f"the path {relative!r} leaves {root}")
    return path
