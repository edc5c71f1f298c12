"""Bucket-name derivation, object-key validation and SigV4 presigning: pure functions, no services."""

from __future__ import annotations

import ipaddress
import random
import re
import string
from datetime import datetime, timezone
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import pytest
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from jupyter_heroes.data import names, sigv4
from jupyter_heroes.data.errors import InvalidName

S3_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


def assert_s3_valid(name: str) -> None:
    assert S3_NAME.match(name), name
    assert 3 <= len(name) <= 63
    assert ".." not in name and "." not in name
    with pytest.raises(ValueError):
        ipaddress.ip_address(name)
    assert not name.startswith(("xn--", "sthree-", "amzn-s3-demo-")), name
    assert not name.endswith(("-s3alias", "--ol-s3", "--x-s3", "--table-s3")), name


def test_clean_names_are_kept_readable():
    assert names.user_bucket("acme", "alice") == "acme--u-alice"
    assert names.project_bucket("acme", "wing-design") == "acme--p-wing-design"
    assert names.parse_bucket("acme--u-alice") == names.BucketName("acme--u-alice", "acme", "user", "alice")
    assert names.parse_bucket("acme--p-wing-design").kind == "project"


def test_orm_objects_are_accepted():
    class Obj:
        def __init__(self, name: str) -> None:
            self.name = name

    assert names.user_bucket(Obj("acme"), Obj("alice")) == "acme--u-alice"


def test_sanitised_names_get_a_hash_and_differ_by_case():
    bob, Bob = names.user_bucket("acme", "bob"), names.user_bucket("acme", "Bob")
    assert bob == "acme--u-bob"
    assert Bob != bob and re.fullmatch(r"acme--u-bob-h[a-z2-7]{10}", Bob), Bob
    assert names.user_bucket("acme", "jörg.m@example.org") != names.user_bucket("acme", "jorg-m-example-org")
    assert names.user_bucket("acme", "Bob") == Bob  # deterministic


def test_a_user_cannot_pick_a_name_that_lands_on_someone_elses_bucket():
    # the hashed bucket of "Bob" ends in -h<hash>; a user literally named like that is hashed too
    hashed = names.user_bucket("acme", "Bob")
    lookalike = hashed.split("--u-", 1)[1]
    assert names.user_bucket("acme", lookalike) != hashed
    assert names.parse_bucket(names.user_bucket("acme", lookalike)).owner.startswith(lookalike[:20])


def test_long_names_are_cut_with_a_hash_and_stay_distinct():
    a = names.user_bucket("a-very-long-organization-name-indeed", "x" * 100 + "1")
    b = names.user_bucket("a-very-long-organization-name-indeed", "x" * 100 + "2")
    assert a != b
    assert_s3_valid(a)
    assert_s3_valid(b)
    assert len(a) <= 63


def test_organization_part_is_unambiguous():
    # without the "--" separator, org "a" + user "b-u-c" and org "a-u-b" + user "c" would collide
    one = names.user_bucket("a", "b-u-c")
    two = names.user_bucket("a-u-b", "c")
    assert one != two
    assert names.parse_bucket(one).org == "a"
    assert names.parse_bucket(two).org == "a-u-b"
    assert names.org_part("a") != names.org_part("a-u-b")


@pytest.mark.parametrize(
    ("org", "user"),
    [("xn", "alice"), ("sthree", "alice"), ("amzn-s3-demo", "x"), ("acme", "s3alias"), ("acme", "x-s3alias")],
)
def test_reserved_prefixes_and_suffixes_are_avoided(org, user):
    assert_s3_valid(names.user_bucket(org, user))


def test_many_random_names_are_valid_and_distinct():
    rng = random.Random(42)
    alphabet = string.ascii_letters + string.digits + "-_.@ äöü/\\\x00é" + "--"
    seen: dict[str, tuple[str, str]] = {}
    for _ in range(3000):
        org = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        user = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        for kind, fn in (("u", names.user_bucket), ("p", names.project_bucket)):
            name = fn(org, user)
            assert_s3_valid(name)
            parsed = names.parse_bucket(name)
            assert parsed is not None and parsed.org == names.org_part(org)
            key = (org, kind + user)
            assert seen.setdefault(name, key) == key, f"{name} derived from {seen[name]} and {key}"


@pytest.mark.parametrize(
    "bad", ["", "acme", "acme-u-alice", "ACME--u-x", "acme--x-alice", "192.168.1.1", "a--u-b--c", None, 3]
)
def test_validate_bucket_name_refuses_names_the_platform_never_makes(bad):
    with pytest.raises(InvalidName, match="not a HEROES bucket name"):
        names.validate_bucket_name(bad)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("../etc/passwd", r"contains a '\.\.' segment"),
        ("a/../../b", r"contains a '\.\.' segment"),
        ("a/./b", r"contains a '\.' segment"),
        ("/etc/passwd", "is absolute"),
        ("a\x00b", r"control character U\+0000"),
        ("a\x1bb", r"control character U\+001B"),
        ("line\nbreak", r"control character U\+000A"),
        ("a\x7fb", r"control character U\+007F"),
        ("dir\\file", "backslash"),
        ("a//b", "empty segment"),
        ("a/", "empty segment"),
        ("", "must not be empty"),
        ("é" * 513, "1026 bytes long; the limit is 1024"),
        ("d/" + "x" * 256, "longer than 255 bytes"),
        ("a\ud800b", "lone surrogate"),
    ],
)
def test_bad_keys_are_refused_with_a_clear_message(key, message):
    with pytest.raises(InvalidName, match=message):
        names.validate_key(key)


@pytest.mark.parametrize(
    "key", ["file.txt", "dir/sub/file.tar.gz", "données/été 2024.csv", "x" * 255, "a/..b/c..", ".hidden"]
)
def test_good_keys_pass(key):
    assert names.validate_key(key) == key


def test_folders_and_prefixes():
    assert names.validate_key("dir/", allow_folder=True) == "dir/"
    assert names.validate_prefix("") == ""
    assert names.validate_prefix("results/in") == "results/in"
    with pytest.raises(InvalidName, match=r"'\.\.' segment"):
        names.validate_prefix("../")


def test_confinement_helpers():
    assert names.confine("results/i1/", "out/a.txt") == "results/i1/out/a.txt"
    assert names.is_within("results/i1/", "results/i1/out/a.txt")
    assert not names.is_within("results/i1/", "results/i10/a.txt")
    with pytest.raises(InvalidName):
        names.confine("results/i1/", "../i2/a.txt")
    with pytest.raises(ValueError, match="must end with '/'"):
        names.confine("results/i1", "a")
    assert names.confine_path("/scratch/inst", "inputs/a.txt") == "/scratch/inst/inputs/a.txt"
    for bad in ("../x", "/etc/passwd", "a/../../x", "a\\..\\x"):
        with pytest.raises(InvalidName):
            names.confine_path("/scratch/inst", bad)


def test_presign_matches_botocore_and_signs_the_length():
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    url = sigv4.presign(
        method="PUT",
        scheme="http",
        host="127.0.0.1:9000",
        bucket="acme--u-alice",
        key="dir/ä b+c.txt",
        region="us-east-1",
        access_key="AK",
        secret_key="SK",
        expires=300,
        headers={"Content-Length": "42"},
        now=now,
    )
    req = AWSRequest(
        method="PUT",
        url="http://127.0.0.1:9000/acme--u-alice/dir/%C3%A4%20b%2Bc.txt",
        headers={"Content-Length": "42"},
    )
    with mock.patch("botocore.auth.get_current_datetime", return_value=now.replace(tzinfo=None)):
        S3SigV4QueryAuth(Credentials("AK", "SK"), "s3", "us-east-1", expires=300).add_auth(req)
    ours, theirs = parse_qs(urlsplit(url).query), parse_qs(urlsplit(req.url).query)
    assert ours["X-Amz-SignedHeaders"] == ["content-length;host"]
    assert ours["X-Amz-Signature"] == theirs["X-Amz-Signature"]
    # another length gives another signature: the server would refuse a body of a different size
    other = sigv4.presign(
        method="PUT",
        scheme="http",
        host="127.0.0.1:9000",
        bucket="acme--u-alice",
        key="dir/ä b+c.txt",
        region="us-east-1",
        access_key="AK",
        secret_key="SK",
        expires=300,
        headers={"Content-Length": "43"},
        now=now,
    )
    assert parse_qs(urlsplit(other).query)["X-Amz-Signature"] != ours["X-Amz-Signature"]
    with pytest.raises(ValueError, match="between 1 second and 7 days"):
        sigv4.presign(
            method="GET",
            scheme="http",
            host="h",
            bucket="b",
            key="k",
            region="r",
            access_key="a",
            secret_key="s",
            expires=0,
        )
