"""HEROES-FS directory layout: sanitised names, nothing escapes the instance root."""

import pytest

from jupyter_heroes.workflows.heroesfs import InstanceDirs, PathEscapeError, confine, sanitize

IID = "0123456789abcdef0123456789abcdef"


def test_layout_and_sanitised_names():
    d = InstanceDirs.for_instance("/scratch/heroes/", "orgA", "Project X", "alice", IID)
    assert d.root.startswith("/scratch/heroes/orga-")  # "orgA" differs from its sanitised form: hashed suffix
    assert "/project-x-" in d.root and d.root.endswith(f"/alice/{IID}")
    assert d.logs == d.root + "/logs"
    assert d.work == d.root + "/work"
    assert d.path("out/final.txt") == d.root + "/work/out/final.txt"
    assert d.log("simulate") == d.root + "/logs/simulate.out"
    assert d.log("sweep", "err", array=True) == d.root + "/logs/sweep-%a.err"


@pytest.mark.parametrize(
    "evil", ["../../etc", "..", "/etc/passwd", "a/../../b", "a\x00b", "a\nb", "a\\b", ""]
)
def test_nothing_escapes(evil):
    d = InstanceDirs.for_instance("/scratch", "org", "p", "u", IID)
    with pytest.raises(PathEscapeError):
        d.path(evil)
    with pytest.raises(PathEscapeError):
        confine(d.root, evil)


def test_user_controlled_names_never_add_segments():
    d = InstanceDirs.for_instance("/scratch", "../../root", "../x", "a/b", IID)
    rel = d.root.removeprefix("/scratch/")
    assert rel.count("/") == 3 and ".." not in rel.split("/")
    assert sanitize("a/b") != sanitize("a-b")  # distinct names stay distinct
    assert sanitize("alice") == "alice"


def test_confine_accepts_normal_paths_and_bad_roots_are_refused():
    assert confine("/r", "a/./b") == "/r/a/b"
    with pytest.raises(PathEscapeError):
        confine("/r", ".")
    with pytest.raises(ValueError, match="absolute path"):
        InstanceDirs.for_instance("scratch", "o", "p", "u", IID)
    with pytest.raises(ValueError, match="not a HEROES instance id"):
        InstanceDirs.for_instance("/s", "o", "p", "u", "../x")
