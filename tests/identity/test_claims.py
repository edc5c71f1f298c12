"""Pure mapping of Keycloak claims (group paths, realm roles) to organizations, projects and roles."""

from __future__ import annotations

import pytest

from jupyter_heroes.identity import map_claims, parse_group_path, sanitize_name


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("acme", "acme"),
        ("ACME Corp.", "acme-corp"),
        ("Crash_Sim 2", "crash-sim-2"),
        ("Équipe Météo", "equipe-meteo"),
        ("--x--", "x"),
        ("a" * 80, "a" * 63),
        ("***", None),
        ("", None),
        ("日本", None),
    ],
)
def test_sanitize_name(raw, expected):
    assert sanitize_name(raw) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/acme", ("acme", None)),
        ("/acme/crash-sim", ("acme", "crash-sim")),
        ("/acme/crash-sim/team-a/x", ("acme", "crash-sim")),  # deeper paths: first two levels
        ("/ACME/Crash Sim/", ("acme", "crash-sim")),
        ("/acme/***", ("acme", None)),
        ("acme/crash-sim", None),  # "Full group path" off in the Keycloak mapper: cannot be placed
        ("crash-sim", None),
        ("/", None),
        ("/***/x", None),
    ],
)
def test_parse_group_path(path, expected):
    assert parse_group_path(path) == expected


def test_map_claims_groups_roles_and_what_is_ignored():
    m = map_claims(
        ["/acme/crash-sim", "/acme/weather", "/Globex", "projectx", "/acme/???"],
        [
            "researcher",
            "acme:billing-admin",
            "offline_access",
            "default-roles-heroes",
            "Bad Role",
            ":x",
            "acme:",
        ],
    )
    assert m.memberships == {"acme": {"crash-sim", "weather"}, "globex": set()}
    assert m.display_names["globex"] == "Globex"
    # Keycloak's own roles pass the mapping; provisioning drops them as unknown ("offline_access" is
    # not even a role name here)
    assert m.global_roles == {"researcher", "default-roles-heroes"}
    assert m.org_roles == {"acme": {"billing-admin"}}
    ignored = "\n".join(m.ignored)
    assert "'projectx'" in ignored and "full group path" in ignored
    assert "'/acme/???'" in ignored
    assert (
        "'offline_access'" in ignored
        and "'Bad Role'" in ignored
        and "':x'" in ignored
        and "'acme:'" in ignored
    )


def test_map_claims_empty_and_none():
    m = map_claims(None, None)
    assert m.memberships == {} and m.global_roles == set() and m.org_roles == {} and m.ignored == []
