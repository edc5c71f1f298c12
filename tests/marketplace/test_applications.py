"""Applications: image and schema validation, versions, visibility, enabling, parameter validation."""

from __future__ import annotations

import pytest

from jupyter_heroes.marketplace import applications as ma
from jupyter_heroes.marketplace.errors import Conflict, InvalidInput, NotAllowed, NotFound

SCHEMA = {
    "type": "object",
    "properties": {"mesh": {"type": "string"}, "iterations": {"type": "integer", "minimum": 1}},
    "required": ["mesh"],
    "additionalProperties": False,
}
LICENCE = {"currency": "EUR", "fixed": "25.00", "fixed_per": "run", "core_hour": "0.002"}


def publish(s, ids, **kw):
    args = {
        "name": "cfd-solver",
        "image": "docker://registry.example.org/appsoft/cfd-solver:2.1",
        "parameters_schema": SCHEMA,
        "price": LICENCE,
        "licence": "Per-run licence, academic discount on request.",
        "visibility": ["acme"],
        "created_by": "packager",
        **kw,
    }
    return ma.publish_application(s, ids.orgs["appsoft"], **args)


def test_versions_visibility_and_enabling(db):
    ids = db.ids
    with db.session() as s:
        v1 = publish(s, ids)
        app_id = v1.application_id
    with db.session() as s:
        v2 = ma.update_application(
            s, app_id, ids.orgs["appsoft"], image="oras://registry.example.org/appsoft/cfd-solver:2.2"
        )
        assert v2.version == 2 and v2.price == v1.price and v2.parameters_schema == SCHEMA
        assert [
            v.image.rsplit(":", 1)[1] for v in ma.application_history(s, app_id, ids.orgs["appsoft"])
        ] == [
            "2.1",
            "2.2",
        ]
        view = ma.get_application(s, app_id, ids.orgs["acme"]).to_dict(s)
        assert view["version"] == 2 and view["price"]["fixed"] == "25.00" and "visibility" not in view
        for other in ("globex", "hpc-centre"):
            with pytest.raises(NotFound, match=f"application {app_id} not found"):
                ma.get_application(s, app_id, ids.orgs[other])
            with pytest.raises(NotFound):
                ma.enable_application(s, ids.orgs[other], app_id)
            assert ma.list_applications(s, ids.orgs[other]) == []
        with pytest.raises(NotFound):
            ma.application_history(s, app_id, ids.orgs["acme"])
        with pytest.raises(NotFound):
            ma.update_application(s, app_id, ids.orgs["hpc-centre"], licence="stolen")
        assert ma.enabled_applications(s, ids.orgs["acme"]) == []
        ma.enable_application(s, ids.orgs["acme"], app_id, enabled_by="acme-admin")
    with db.session() as s:
        (e,) = ma.enabled_applications(s, ids.orgs["acme"])
        assert e.version.version == 2 and not e.terms_changed
        assert "cfd-solver v2 (appsoft)" in e.price.source
        assert ma.application_version_for(s, ids.orgs["acme"], app_id).version == 2
        with pytest.raises(NotFound, match="not enabled"):
            ma.application_version_for(s, ids.orgs["globex"], app_id)
        ma.withdraw_application(s, app_id, ids.orgs["appsoft"])
    with db.session() as s:
        assert ma.enabled_applications(s, ids.orgs["acme"]) == []
        with pytest.raises(Conflict):
            ma.update_application(s, app_id, ids.orgs["appsoft"], licence="x")


def test_parameters_are_validated_against_the_schema(db):
    with db.session() as s:
        v = publish(s, db.ids)
        ma.validate_parameters(v, {"mesh": "wing.msh", "iterations": 10})
        with pytest.raises(InvalidInput, match=r"parameter iterations: 0 is less than the minimum of 1"):
            ma.validate_parameters(v, {"mesh": "wing.msh", "iterations": 0})
        with pytest.raises(InvalidInput, match=r"'mesh' is a required property"):
            ma.validate_parameters(v, {})
        with pytest.raises(
            InvalidInput, match=r"Additional properties are not allowed \('cmd' was unexpected\)"
        ):
            ma.validate_parameters(v, {"mesh": "a", "cmd": "rm -rf /"})


@pytest.mark.parametrize(
    "image",
    [
        "docker://registry.example.org/appsoft/cfd-solver:2.1",
        "registry.example.org:5000/appsoft/cfd_solver",
        "library://appsoft/default/solver:latest",
        "oras://ghcr.io/appsoft/solver@sha256:" + "a" * 64,
        "s3://heroes-images/appsoft/solver-2.1.sif",
        "ubuntu:22.04",
    ],
)
def test_valid_images(image):
    assert ma.check_image(image) == image


@pytest.mark.parametrize(
    "image",
    [
        "",
        "docker://registry/app:1; rm -rf /",
        "docker://registry/app:$(id)",
        "ftp://host/app",
        "registry/../../etc/passwd",
        "s3://bucket/../x.sif",
        "Docker://Registry/App",
        None,
    ],
)
def test_invalid_images_are_refused(image):
    with pytest.raises(InvalidInput, match="is not a container image reference"):
        ma.check_image(image)


def test_publishing_bad_input(db):
    ids = db.ids
    with db.session() as s:
        with pytest.raises(NotAllowed, match="acme is a client organization"):
            ma.publish_application(s, ids.orgs["acme"], name="x", image="ubuntu:22.04")
        for kw, msg in [
            ({"parameters_schema": {"type": "objekt"}}, r"parameters_schema at type: 'objekt' is not valid"),
            ({"parameters_schema": ["not", "a", "schema"]}, r"parameters_schema: a JSON Schema object"),
            ({"price": {"currency": "EUR", "fixed": -5}}, r"fixed: -5 is negative"),
            ({"price": {"currency": "ZZZ"}}, r"'ZZZ' is not an ISO 4217 currency"),
            ({"image": "bad image"}, r"not a container image reference"),
            ({"name": "-x"}, r"application name: '-x' is not a valid name"),
            ({"visibility": {"public": "yes"}}, r"visibility.public: true or false"),
        ]:
            with pytest.raises(InvalidInput, match=msg):
                publish(s, ids, **kw)
        free = ma.publish_application(s, ids.orgs["appsoft"], name="viewer", image="ubuntu:22.04")
        assert free.price == {"currency": "EUR", "fixed": "0", "fixed_per": "job"}
        assert free.parameters_schema == {"type": "object"} and free.visibility["public"] is False
        with pytest.raises(Conflict, match="already publish an application named viewer"):
            ma.publish_application(s, ids.orgs["appsoft"], name="viewer", image="ubuntu:22.04")
