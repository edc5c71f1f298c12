"""Provisioning into the database: idp memberships and roles are replaced at each login/refresh,
local ones (made by admins through the API) are kept. Runs on SQLite and on the test bed's PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from jupyter_heroes import dbutil, orm
from jupyter_heroes.identity import provision, provision_user


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def factory(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'heroes.sqlite'}"
    else:
        url = request.getfixturevalue("postgres").new_database("ident")
    dbutil.upgrade(url)
    engine = dbutil.make_engine(url)
    yield dbutil.session_factory(engine)
    engine.dispose()


def _prov(factory, username="ada", groups=(), roles=(), **kw):
    with dbutil.session_scope(factory) as s:
        return provision(s, username, groups=groups, roles=roles, **kw)


def _rows(factory, model, username="ada"):
    with dbutil.session_scope(factory) as s:
        uid = s.scalar(select(orm.User.id).where(orm.User.name == username))
        return s.scalars(select(model).where(model.user_id == uid)).all()


def test_first_login_creates_user_orgs_projects_and_roles(factory):
    res = _prov(
        factory,
        groups=["/acme/crash-sim", "/acme/weather", "/globex"],
        roles=["researcher", "globex:billing-admin", "offline_access", "default-roles-heroes"],
        email="ada@example.org",
        full_name="Ada Lovelace",
    )
    assert res.as_dict()["organizations"] == {
        "acme": {"kind": "client", "projects": ["crash-sim", "weather"], "roles": ["researcher"]},
        "globex": {"kind": "client", "projects": [], "roles": ["billing-admin", "researcher"]},
    }
    assert any("default-roles-heroes" in i for i in res.ignored)
    with dbutil.session_scope(factory) as s:
        u = s.scalar(select(orm.User).where(orm.User.name == "ada"))
        assert (u.email, u.full_name) == ("ada@example.org", "Ada Lovelace")
        assert u.last_login is not None
        assert {o.name for o in s.scalars(select(orm.Organization))} == {"acme", "globex"}
    assert {m.source for m in _rows(factory, orm.OrgMember)} == {"idp"}
    assert {a.source for a in _rows(factory, orm.RoleAssignment)} == {"idp"}


def test_idp_memberships_and_roles_are_replaced_local_ones_kept(factory):
    _prov(factory, groups=["/acme/crash-sim", "/globex/lab"], roles=["researcher", "acme:billing-admin"])
    # an admin adds, through the API, a local membership in "initech" with a local role, and a local
    # role in acme
    with dbutil.session_scope(factory) as s:
        uid = s.scalar(select(orm.User.id).where(orm.User.name == "ada"))
        ini = orm.Organization(name="initech")
        s.add(ini)
        s.flush()
        acme = s.scalar(select(orm.Organization).where(orm.Organization.name == "acme"))
        s.add(orm.OrgMember(user_id=uid, org_id=ini.id, source="local"))
        s.add(orm.RoleAssignment(user_id=uid, org_id=ini.id, role="workflow-admin", source="local"))
        s.add(orm.RoleAssignment(user_id=uid, org_id=acme.id, role="project-admin", source="local"))
    # Keycloak: globex group and the billing-admin role removed
    res = _prov(factory, groups=["/acme/crash-sim"], roles=["researcher"])
    assert res.as_dict()["organizations"] == {
        "acme": {"kind": "client", "projects": ["crash-sim"], "roles": ["project-admin", "researcher"]},
        # the global role applies in every organization of the user, local memberships included
        "initech": {"kind": "client", "projects": [], "roles": ["researcher", "workflow-admin"]},
    }
    srcs = {(a.role, a.source) for a in _rows(factory, orm.RoleAssignment)}
    assert ("project-admin", "local") in srcs and ("workflow-admin", "local") in srcs
    assert ("billing-admin", "idp") not in srcs
    # the organization itself stays (other users, data): only the membership is gone
    with dbutil.session_scope(factory) as s:
        assert s.scalar(select(orm.Organization).where(orm.Organization.name == "globex")) is not None
    # everything removed in Keycloak: only the local standing is left
    res = _prov(factory, groups=[], roles=[])
    assert res.as_dict()["organizations"] == {
        "initech": {"kind": "client", "projects": [], "roles": ["workflow-admin"]},
    }
    assert {m.source for m in _rows(factory, orm.OrgMember)} == {"local"}
    assert {a.role for a in _rows(factory, orm.RoleAssignment)} == {"project-admin", "workflow-admin"}


def test_local_membership_is_not_turned_into_idp(factory):
    """A membership both local and in Keycloak stays local: removing the group keeps it."""
    with dbutil.session_scope(factory) as s:
        u = orm.User(name="ada")
        o = orm.Organization(name="acme")
        s.add_all([u, o])
        s.flush()
        s.add(orm.OrgMember(user_id=u.id, org_id=o.id, source="local"))
    _prov(factory, groups=["/acme"])
    assert [m.source for m in _rows(factory, orm.OrgMember)] == ["local"]
    res = _prov(factory, groups=[])
    assert list(res.organizations) == ["acme"]


def test_role_kinds_custom_roles_and_foreign_org_roles(factory):
    with dbutil.session_scope(factory) as s:
        acme = orm.Organization(name="acme")
        vendor = orm.Organization(name="vendorx", kind="provider")
        s.add_all([acme, vendor])
        s.flush()
        s.add(orm.Role(org_id=acme.id, name="crash-engineer", scopes=["custom:heroes:submit"]))
    res = _prov(
        factory,
        groups=["/acme", "/vendorx", "/heroes/ops"],
        roles=[
            "solution-admin",  # platform-only: only in "heroes", the platform organization
            "crash-engineer",  # acme's own role: only where it is defined
            "vendorx:resource-provider",  # provider role in a provider organization
            "acme:resource-provider",  # provider role in a client organization: ignored
            "initech:researcher",  # not a member of initech: ignored
        ],
    )
    orgs = res.as_dict()["organizations"]
    assert orgs["heroes"] == {"kind": "platform", "projects": ["ops"], "roles": ["solution-admin"]}
    assert orgs["acme"]["roles"] == ["crash-engineer"]
    assert orgs["vendorx"] == {"kind": "provider", "projects": [], "roles": ["resource-provider"]}
    ignored = "\n".join(res.ignored)
    assert "initech:researcher" in ignored and "not a member" in ignored
    assert "acme:resource-provider" in ignored


def test_platform_org_name_is_configurable(factory):
    res = _prov(factory, groups=["/ops"], roles=["tenant-admin"], platform_org="ops")
    assert res.as_dict()["organizations"]["ops"] == {
        "kind": "platform",
        "projects": [],
        "roles": ["tenant-admin"],
    }


def test_sanitised_names_and_unplaceable_groups(factory):
    res = _prov(factory, groups=["/ACME Corp/Crash Sim", "crash-sim", "/acme corp/weather/deep/er"])
    orgs = res.as_dict()["organizations"]
    assert orgs == {"acme-corp": {"kind": "client", "projects": ["crash-sim", "weather"], "roles": []}}
    with dbutil.session_scope(factory) as s:
        o = s.scalar(select(orm.Organization).where(orm.Organization.name == "acme-corp"))
        assert o.display_name == "ACME Corp"


def test_provision_rejects_empty_username(factory):
    with dbutil.session_scope(factory) as s, pytest.raises(ValueError, match="needs a username"):
        provision(s, "", groups=["/acme"])


def test_concurrent_first_logins_create_each_org_once(factory):
    """Eight users of a new organization log in at the same moment: one organization, eight members."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def login(i: int) -> None:
        try:
            barrier.wait()
            provision_user(factory, f"user{i}", groups=["/newco/p1"], roles=["researcher"], attempts=5)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=login, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    with dbutil.session_scope(factory) as s:
        assert [o.name for o in s.scalars(select(orm.Organization))] == ["newco"]
        assert len(s.scalars(select(orm.OrgMember)).all()) == 8
        assert len(s.scalars(select(orm.ProjectMember)).all()) == 8
        assert len(s.scalars(select(orm.RoleAssignment)).all()) == 8
