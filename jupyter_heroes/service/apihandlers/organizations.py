"""``/heroes/admin/organizations``: platform administration (needs ``organizations:manage`` held in
the platform organization: solution-admin or tenant-admin).

An organization's *clients* are API clients (OAuth client id + secret; the secret is generated,
shown once and only its hash stored). Its *servers* are its object store (S3-protocol endpoint and
credentials; the secret key is stored encrypted and never returned).
"""

from __future__ import annotations

import secrets
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import delete, select

from ... import orm
from ...crypt import NoEncryptionKey, hash_secret, new_client_secret
from .. import schemas
from ..auth import ApiError, not_found
from ..handlers import APIHandler, endpoint, routes
from ..views import find_org, org_view

SCOPE = "organizations:manage"
TAG = "HEROES admin"

#: every endpoint here: held in the platform organization, not confined to the caller's organization
platform_endpoint = partial(endpoint, scope=SCOPE, platform=True, org=False)

_Row = TypeVar("_Row", orm.OrgClient, orm.OrgServer)


class PlatformHandler(APIHandler):
    tag = TAG
    path_params = {"org": schemas.REF}

    def target(self, name: str) -> orm.Organization:
        self.path_arg("org", name, "Organization")
        org = find_org(self.db, name)
        self.audit_org_id, self.audit_org_name = org.id, org.name
        self.ecs_fields["heroes.organization"] = org.name
        return org

    def rows(self, model: type[_Row], target: orm.Organization, order: Any) -> list[_Row]:
        """*target*'s rows of *model* (clients or servers), in *order*."""
        return list(self.db.scalars(select(model).where(model.org_id == target.id).order_by(order)))

    def remove(self, row: _Row | None, target: orm.Organization, what: str) -> None:
        """Delete *row* if it belongs to *target*; 404 naming *what* otherwise."""
        if row is None or row.org_id != target.id:
            raise not_found(f"{what} of organization '{target.name}'")
        self.db.delete(row)
        self.db.commit()


def client_view(c: orm.OrgClient, org: orm.Organization) -> dict[str, Any]:
    return {
        "client_id": c.client_id,
        "organization": org.name,
        "description": c.description or "",
        "created": c.created,
    }


def server_view(sv: orm.OrgServer, org: orm.Organization) -> dict[str, Any]:
    return {
        "id": sv.id,
        "organization": org.name,
        "kind": sv.kind,
        "endpoint": sv.endpoint,
        "secure": bool(sv.secure),
        "region": sv.region,
        "access_key": sv.access_key,
        "has_secret_key": sv.secret_key_enc is not None,
        "created": sv.created,
    }


class OrganizationListAPIHandler(PlatformHandler):
    path = "/heroes/admin/organizations"

    @platform_endpoint(
        summary="List organizations",
        response=schemas.ORGANIZATION_LIST,
    )
    def get(self) -> list[dict[str, Any]]:
        q = select(orm.Organization).order_by(orm.Organization.name)
        return [org_view(self.db, o) for o in self.db.scalars(q)]

    @platform_endpoint(
        summary="Create an organization",
        body=schemas.ORGANIZATION_CREATE,
        response=schemas.ORGANIZATION,
        status=201,
        action="organization.create",
        errors=(409,),
    )
    def post(self) -> dict[str, Any]:
        """Add its first administrator with ``POST /organization/admin/users?organization=<name>``
        (``roles: [org-admin]``)."""
        s, body = self.db, self.body
        name = body["name"]
        self.audit(name, kind=body.get("kind", "client"))
        self.ecs_fields["heroes.organization"] = name
        if s.scalar(select(orm.Organization.id).where(orm.Organization.name == name)):
            raise ApiError(409, f"organization {name} already exists", "exists")
        org = orm.Organization(
            name=name, display_name=body.get("display_name", name), kind=body.get("kind", "client")
        )
        s.add(org)
        s.commit()
        self.audit_org_id, self.audit_org_name = org.id, org.name
        return org_view(s, org)


class OrganizationAPIHandler(PlatformHandler):
    path = "/heroes/admin/organizations/{org}"

    @platform_endpoint(summary="Get an organization", response=schemas.ORGANIZATION)
    def get(self, org: str) -> dict[str, Any]:
        return org_view(self.db, self.target(org))

    @platform_endpoint(
        summary="Delete an organization and everything it holds",
        status=204,
        action="organization.delete",
        errors=(409,),
    )
    def delete(self, org: str) -> None:
        """Deletes its projects, memberships, roles, clusters, templates, workflows, budgets, clients
        and servers. Its audit entries are kept. The platform organization cannot be deleted."""
        self.audit(org)
        target = self.target(org)
        if target.name == self.heroes.platform_org or target.kind == "platform":
            raise ApiError(409, "the platform organization cannot be deleted", "platform_org")
        # the database cascades to everything the organization holds
        self.db.execute(delete(orm.Organization).where(orm.Organization.id == target.id))
        self.db.commit()
        return None


class ClientListAPIHandler(PlatformHandler):
    path = "/heroes/admin/organizations/{org}/clients"

    @platform_endpoint(
        summary="List an organization's API clients",
        response=schemas.CLIENT_LIST,
    )
    def get(self, org: str) -> list[dict[str, Any]]:
        target = self.target(org)
        return [client_view(c, target) for c in self.rows(orm.OrgClient, target, orm.OrgClient.client_id)]

    @platform_endpoint(
        summary="Create an API client for an organization (the secret is returned once)",
        body=schemas.CLIENT_CREATE,
        response=schemas.CLIENT_CREATED,
        status=201,
        action="client.create",
    )
    def post(self, org: str) -> dict[str, Any]:
        """The answer holds ``client_secret``; it is not stored (only a salted hash) and cannot be
        shown again: create a new client if it is lost."""
        target = self.target(org)
        secret = new_client_secret()
        client_id = f"{target.name}-{secrets.token_hex(6)}"
        c = orm.OrgClient(
            org_id=target.id,
            client_id=client_id,
            description=self.body.get("description", ""),
            secret_hash=hash_secret(secret),
        )
        self.db.add(c)
        self.db.commit()
        self.audit(client_id)
        return {**client_view(c, target), "client_secret": secret}


class ClientAPIHandler(PlatformHandler):
    path = "/heroes/admin/organizations/{org}/clients/{client_id}"
    path_params = {"org": schemas.REF, "client_id": {"type": "string", "pattern": r"^[a-z0-9-]{1,128}$"}}

    @platform_endpoint(
        summary="Delete an organization's API client",
        status=204,
        action="client.delete",
    )
    def delete(self, org: str, client_id: str) -> None:
        self.audit(client_id)
        target = self.target(org)
        c = self.db.scalar(
            select(orm.OrgClient).where(
                orm.OrgClient.org_id == target.id, orm.OrgClient.client_id == client_id
            )
        )
        self.remove(c, target, f"Client '{client_id[:128]}'")
        return None


class ServerListAPIHandler(PlatformHandler):
    path = "/heroes/admin/organizations/{org}/servers"

    @platform_endpoint(
        summary="List an organization's object-store servers",
        response=schemas.SERVER_LIST,
    )
    def get(self, org: str) -> list[dict[str, Any]]:
        target = self.target(org)
        return [server_view(sv, target) for sv in self.rows(orm.OrgServer, target, orm.OrgServer.id)]

    @platform_endpoint(
        summary="Register an object-store server for an organization",
        body=schemas.SERVER_CREATE,
        response=schemas.SERVER,
        status=201,
        action="server.create",
        errors=(503,),
    )
    def post(self, org: str) -> dict[str, Any]:
        """``secret_key`` is stored encrypted and never returned (``has_secret_key``)."""
        target = self.target(org)
        body = self.body
        self.audit(body["endpoint"], access_key=body["access_key"])
        try:
            enc = self.heroes.secrets.encrypt(body["secret_key"])
        except NoEncryptionKey as e:
            raise ApiError(503, str(e), "no_crypt_key") from None
        sv = orm.OrgServer(
            org_id=target.id,
            kind=body.get("kind", "s3"),
            endpoint=body["endpoint"],
            secure=body.get("secure", True),
            region=body.get("region", "us-east-1"),
            access_key=body["access_key"],
            secret_key_enc=enc,
        )
        self.db.add(sv)
        self.db.commit()
        self.audit(f"{sv.id}")
        return server_view(sv, target)


class ServerAPIHandler(PlatformHandler):
    path = "/heroes/admin/organizations/{org}/servers/{server_id}"
    path_params = {"org": schemas.REF, "server_id": {"type": "integer", "minimum": 1, "maximum": 2147483647}}

    @platform_endpoint(
        summary="Remove an organization's object-store server",
        status=204,
        action="server.delete",
    )
    def delete(self, org: str, server_id: str) -> None:
        self.audit(server_id)
        target = self.target(org)
        sid = self.int_arg(server_id, "Server")
        self.remove(self.db.get(orm.OrgServer, sid), target, f"Server {sid}")
        return None


default_handlers = routes(
    OrganizationListAPIHandler,
    OrganizationAPIHandler,
    ClientListAPIHandler,
    ClientAPIHandler,
    ServerListAPIHandler,
    ServerAPIHandler,
)
