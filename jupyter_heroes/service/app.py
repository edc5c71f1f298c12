"""The HEROES service: a JupyterHub-managed tornado application serving the REST API.

Run by the hub (see :func:`jupyter_heroes.hubconfig.install_heroes`) as
``python -m jupyter_heroes.service``; it listens where ``$JUPYTERHUB_SERVICE_URL`` says and serves
under ``$JUPYTERHUB_SERVICE_PREFIX`` (``/services/heroes/``):

* ``<prefix>/api/v1/...``: the REST API (:mod:`.apihandlers`), its OpenAPI document at
  ``<prefix>/api/v1/openapi.json``;
* ``<prefix>/oauth_callback``: the end of the hub OAuth login of browsers;
* ``<prefix>/``: a browser landing page that logs in and redirects to ``auth/me``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuthCallbackHandler
from sqlalchemy import select
from tornado import web
from tornado.httpserver import HTTPServer
from traitlets import Bool, Integer, List, Unicode, default, validate
from traitlets.config import Application

from .. import __version__, dbutil, orm
from ..background import spawn
from ..crypt import CRYPT_KEY_ENV, SecretBox
from ..log import ecs, setup_logging, strip_query
from . import apihandlers, openapi
from .handlers import NotFoundHandler, RootHandler

log = logging.getLogger("heroes.service")


class HeroesService(Application):
    """The HEROES REST service (identity, administration and, through other modules, workflows)."""

    name = "heroes-service"
    version = __version__
    description = (
        "Jupyter HEROES service: REST API for organizations, projects, roles, clusters and workflows."
    )

    aliases = {
        "db-url": "HeroesService.db_url",
        "port": "HeroesService.port",
        "ip": "HeroesService.ip",
        "platform-org": "HeroesService.platform_org",
        "log-file": "HeroesService.log_file",
        "log-level": "Application.log_level",
        "config": "HeroesService.config_file",
    }
    flags = {
        "upgrade-db": (
            {"HeroesService": {"upgrade_db": True}},
            "Upgrade the HEROES database schema to this version before starting.",
        ),
    }

    config_file = Unicode(
        "",
        help="Python config file to load (c.HeroesService.* settings); empty: none.",
    ).tag(config=True)

    service_url = Unicode(
        help="""URL the service listens on. Default: $JUPYTERHUB_SERVICE_URL as set by the hub for a
        managed service, else http://127.0.0.1:10101. ip and port, when set, override its parts.""",
    ).tag(config=True)

    @default("service_url")
    def _default_service_url(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101")

    ip = Unicode(
        "",
        help="Address to bind. Default: the host of service_url ($JUPYTERHUB_SERVICE_URL).",
    ).tag(config=True)

    port = Integer(
        0,
        help="TCP port to listen on. 0 (default): the port of service_url ($JUPYTERHUB_SERVICE_URL).",
    ).tag(config=True)

    service_prefix = Unicode(
        help="""URL prefix the service is served under through the hub's proxy, ending in '/'.
        Default: $JUPYTERHUB_SERVICE_PREFIX (/services/heroes/ for a service named 'heroes'), else '/'.""",
    ).tag(config=True)

    @default("service_prefix")
    def _default_prefix(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")

    @validate("service_prefix")
    def _slash_prefix(self, proposal: Any) -> str:
        p = proposal["value"] or "/"
        if not p.startswith("/"):
            p = "/" + p
        return p if p.endswith("/") else p + "/"

    db_url = Unicode(
        help="""SQLAlchemy URL of the HEROES database (sqlite:///path or postgresql+psycopg://...).
        Default: $HEROES_DB_URL, else sqlite:///jupyter_heroes.sqlite in the working directory.
        Its schema must be at this version's head (see upgrade_db / `heroes upgrade-db`).""",
    ).tag(config=True)

    @default("db_url")
    def _default_db_url(self) -> str:
        return os.environ.get("HEROES_DB_URL") or "sqlite:///" + str(Path.cwd() / "jupyter_heroes.sqlite")

    upgrade_db = Bool(
        False,
        help="""Apply pending database migrations at start. Default False: an outdated database makes the
        service refuse to start with a message naming `heroes upgrade-db`; back up the database first.""",
    ).tag(config=True)

    max_body_size = Integer(
        1024 * 1024,
        help="""Largest request body accepted, in bytes (default 1 MiB). A larger body is answered with
        400 'body_too_large'. The HTTP server itself drops bodies over 4x this size (at least 8 MiB).""",
    ).tag(config=True)

    @validate("max_body_size")
    def _positive_body(self, proposal: Any) -> int:
        if proposal["value"] < 1024:
            raise ValueError("c.HeroesService.max_body_size must be at least 1024 bytes")
        return proposal["value"]

    max_upload_size = Integer(
        100 * 1024**3,
        help="""Largest file accepted by POST /organization/data/upload, in bytes (default 100 GiB). Uploads
        are streamed to the organization's object store part by part, never held whole in memory, so
        max_body_size does not apply to them; quotas (c.QuotaPolicy.*) are checked against the
        declared Content-Length before the first byte is read.""",
    ).tag(config=True)

    platform_org = Unicode(
        "heroes",
        help="""Name of the platform (HEROES) organization, created at start if missing. Members holding
        organizations:manage there (solution-admin, tenant-admin) reach every organization.""",
    ).tag(config=True)

    platform_admins = List(
        Unicode(),
        help="""Hub usernames made solution-admin of the platform organization at every start (rows with
        source 'local'; removing a name here does not revoke the role, use the API for that).
        Default: $HEROES_PLATFORM_ADMINS (comma-separated), else none.""",
    ).tag(config=True)

    @default("platform_admins")
    def _default_admins(self) -> list[str]:
        return [n.strip() for n in os.environ.get("HEROES_PLATFORM_ADMINS", "").split(",") if n.strip()]

    crypt_key = Unicode(
        help=f"""Fernet key(s) encrypting the secrets stored in the database (cluster private keys, S3
        secret keys), ';'-separated, newest first. Default: ${CRYPT_KEY_ENV}. Without a key the service
        runs but refuses to store secrets (503 'no_crypt_key').""",
    ).tag(config=True)

    @default("crypt_key")
    def _default_crypt_key(self) -> str:
        return os.environ.get(CRYPT_KEY_ENV, "")

    log_file = Unicode(
        "",
        help="""Also write the JSON (ECS) log lines to this file (appended). Default: $HEROES_LOG_FILE,
        else only standard error (which the hub collects for a managed service).""",
    ).tag(config=True)

    @default("log_file")
    def _default_log_file(self) -> str:
        return os.environ.get("HEROES_LOG_FILE", "")

    data_dir = Unicode(
        help="""Directory holding users' files when no object store is configured: workflow inputs are
        read from <data_dir>/<organization>/<user>/<key> and outputs written under
        <data_dir>/<organization>/<user>/results/<instance>/. Default: heroes-data beside a SQLite
        database, else ./heroes-data.""",
    ).tag(config=True)

    @default("data_dir")
    def _default_data_dir(self) -> str:
        return self.beside_database("heroes-data")

    def beside_database(self, name: str) -> str:
        """*name* in the directory of a SQLite database, else in the working directory."""
        if self.db_url.startswith("sqlite:///"):
            return str(Path(self.db_url.removeprefix("sqlite:///")).resolve().parent / name)
        return str(Path(name).resolve())

    pid_file = Unicode(
        "",
        help="Write the service's process id to this file while it runs (for test beds and init scripts).",
    ).tag(config=True)

    cookie_secret = Unicode(
        help="""Hex key signing the service's login cookies (browsers logged in through the hub's OAuth).
        Default: $HEROES_COOKIE_SECRET, else random at each start (browsers then log in again).""",
    ).tag(config=True)

    @default("cookie_secret")
    def _default_cookie_secret(self) -> str:
        return os.environ.get("HEROES_COOKIE_SECRET", "") or os.urandom(32).hex()

    @default("log_level")
    def _log_level_default(self) -> int:
        return logging.INFO

    # --- start-up --------------------------------------------------------------------------------
    def initialize(self, argv: list[str] | None = None) -> None:
        super().initialize(argv)
        if self.config_file:
            self.load_config_file(self.config_file)
        level: Any = self.log_level
        setup_logging(level, log_file=self.log_file or None, service_name="jupyter-heroes-service")
        self.log = logging.getLogger("heroes.service")
        self.secrets = SecretBox(self.crypt_key)
        if not self.secrets.enabled:
            log.warning(
                "no encryption key: clusters with private keys and S3 servers cannot be stored; set $%s",
                CRYPT_KEY_ENV,
                extra=ecs("service.config", "failure", reason="no_crypt_key"),
            )
        self.init_db()
        self.init_platform()
        self.init_data()
        self.init_workflows()
        self.init_decisions()
        self.init_tornado()

    def init_data(self) -> None:
        """Quotas (c.QuotaPolicy.*) and each organization's object store, built on first use and kept."""
        from ..data.tenancy import QuotaPolicy
        from ..workflows.s3staging import OrgStores

        self.quota_policy = QuotaPolicy(parent=self)
        for name in self.quota_policy.org_quotas:  # a bad entry fails at start, naming the setting
            self.quota_policy.quotas_for(name)
        self.org_stores = OrgStores(self.db_factory, self.secrets.decrypt, self.quota_policy, parent=self)

    def init_workflows(self) -> None:
        """The workflow engine: one transport + scheduler per cluster, cluster keys decrypted on use;
        files staged from the organization's object store if it has one, else from data_dir."""
        from ..workflows.engine import BackendPool, WorkflowEngine
        from ..workflows.events import EventBus
        from ..workflows.s3staging import ObjectStoreStager
        from ..workflows.staging import LocalStoreStager

        def key_loader(cluster: orm.Cluster) -> str | None:
            return self.secrets.decrypt(cluster.private_key_enc) if cluster.private_key_enc else None

        events = EventBus()
        stager = ObjectStoreStager(
            self.org_stores.for_org, LocalStoreStager(self.data_dir), events, parent=self
        )
        self.workflows = WorkflowEngine(
            self.db_factory, BackendPool(key_loader, parent=self), stager, events, parent=self
        )

    def init_decisions(self) -> None:
        """The decision module: per-organization runtime predictors (c.OrgPredictors.*) and the
        decide flow (c.DecisionService.*), asking Slurm through the workflow engine's transports."""
        from ..decision.service import DecisionService

        self.decisions = DecisionService(self.db_factory, self.workflows.backends, parent=self)
        preds = self.decisions.predictors
        if preds.state_dir is None:  # c.OrgPredictors.state_dir not set
            preds.state_dir = self.beside_database("heroes-predictors")

    async def warm_decisions(self) -> None:
        """Restore (c.OrgPredictors.state_dir) or rebuild from their history the runtime predictors
        of the most recently active organizations (c.OrgPredictors.warm_orgs), beside the API: their
        first decision need not wait."""
        t0 = time.monotonic()
        preds = self.decisions.predictors
        restored = preds.restored
        read = await preds.warm_up()
        if read:
            log.info(
                "decision: runtime predictors of %d organization(s) ready, %d of them restored from their "
                "saved state; %d finished jobs read in %.1f s",
                len(read),
                preds.restored - restored,
                sum(read.values()),
                time.monotonic() - t0,
                extra=ecs("decision.warmup", "success"),
            )

    def init_db(self) -> None:
        if self.upgrade_db:
            log.info("upgrading the database schema", extra=ecs("db.upgrade"))
            dbutil.upgrade(self.db_url)
        self.engine = dbutil.make_engine(self.db_url)
        dbutil.check_schema(self.engine)  # raises DatabaseSchemaMismatch naming `heroes upgrade-db`
        self.db_factory = dbutil.session_factory(self.engine)

    def init_platform(self) -> None:
        """Create the platform organization and make ``platform_admins`` its solution-admins."""
        with dbutil.session_scope(self.db_factory) as s:
            org = s.scalar(select(orm.Organization).where(orm.Organization.name == self.platform_org))
            if org is None:
                org = orm.Organization(
                    name=self.platform_org, display_name="HEROES platform", kind="platform"
                )
                s.add(org)
                s.flush()
                log.info(
                    "created the platform organization %s",
                    org.name,
                    extra=ecs("organization.create", "success", organization=org.name),
                )
            elif org.kind != "platform":
                raise SystemExit(
                    f"c.HeroesService.platform_org is '{self.platform_org}', but that organization exists with "
                    f"kind '{org.kind}': choose another name for the platform organization"
                )
            for name in self.platform_admins:
                user = s.scalar(select(orm.User).where(orm.User.name == name))
                if user is None:
                    user = orm.User(name=name)
                    s.add(user)
                    s.flush()
                if (
                    s.scalar(
                        select(orm.OrgMember).where(
                            orm.OrgMember.user_id == user.id, orm.OrgMember.org_id == org.id
                        )
                    )
                    is None
                ):
                    s.add(orm.OrgMember(user_id=user.id, org_id=org.id, source="local"))
                q = select(orm.RoleAssignment).where(
                    orm.RoleAssignment.user_id == user.id,
                    orm.RoleAssignment.org_id == org.id,
                    orm.RoleAssignment.role == "solution-admin",
                )
                if s.scalar(q) is None:
                    s.add(
                        orm.RoleAssignment(
                            user_id=user.id, org_id=org.id, role="solution-admin", source="local"
                        )
                    )
                    log.info(
                        "made %s solution-admin of %s (c.HeroesService.platform_admins)",
                        name,
                        org.name,
                        extra=ecs("role.assign", "success", organization=org.name, heroes_user=name),
                    )

    @property
    def api_prefix(self) -> str:
        return self.service_prefix + "api/v1"

    def make_app(self) -> web.Application:
        prefix = self.service_prefix
        api = self.api_prefix
        handlers: list[Any] = [(api + regex, h) for regex, h in apihandlers.default_handlers]
        handlers += [
            (api + r"/openapi\.json", openapi.OpenAPIHandler),
            (api + r"/?", openapi.IndexHandler),
            (prefix + "oauth_callback", HubOAuthCallbackHandler),
            (prefix.rstrip("/") + "/?", RootHandler),
        ]
        settings: dict[str, Any] = dict(
            heroes=self,
            db_factory=self.db_factory,
            api_prefix=api,
            cookie_secret=bytes.fromhex(self.cookie_secret),
            default_handler_class=NotFoundHandler,
            log_function=self.log_request,
            compress_response=False,
            xsrf_cookies=False,
        )
        return web.Application(handlers, **settings)

    def init_tornado(self) -> None:
        self.app = self.make_app()

    def listen_address(self) -> tuple[str, int]:
        url = urlparse(self.service_url)
        ip = self.ip or url.hostname or "127.0.0.1"
        port = self.port or url.port or 10101
        return ip, port

    def log_request(self, handler: web.RequestHandler) -> None:
        status = handler.get_status()
        level = logging.INFO if status < 400 else (logging.WARNING if status < 500 else logging.ERROR)
        if status < 400 and handler.request.method == "GET" and handler.request.path.endswith("openapi.json"):
            level = logging.DEBUG
        user = getattr(handler, "caller_name", lambda: "")()
        ctx = getattr(handler, "ctx", None)
        duration = 1000.0 * handler.request.request_time()
        log.log(
            level,
            "%d %s %s (%s) %.1fms",
            status,
            handler.request.method,
            strip_query(handler.request.uri or ""),
            user or "-",
            duration,
            extra=ecs(
                "http.request",
                "success" if status < 400 else "failure",
                user=user or None,
                method=handler.request.method,
                path=handler.request.path,
                status=status,
                duration_ms=duration,
                organization=ctx.org.name if ctx else None,
                reason=getattr(handler, "error_reason", "") or None,
            ),
        )

    # --- run ---------------------------------------------------------------------------------------
    def start(self) -> None:
        if self.pid_file:
            Path(self.pid_file).write_text(f"{os.getpid()}\n")
        try:
            asyncio.run(self.serve())
        finally:
            if self.pid_file:
                Path(self.pid_file).unlink(missing_ok=True)

    async def serve(self) -> None:
        ip, port = self.listen_address()
        server = HTTPServer(self.app, xheaders=True, max_body_size=max(4 * self.max_body_size, 8 << 20))
        server.listen(port, ip)
        log.info(
            "HEROES service %s listening on http://%s:%d%s (database %s)",
            __version__,
            ip,
            port,
            self.service_prefix,
            self.engine.url.render_as_string(hide_password=True),
            extra=ecs("service.start", "success"),
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        t0 = time.monotonic()
        # recovery (reconciling unfinished instances with their clusters) runs beside the API
        recovery = spawn(self.workflows.start(), "recovering unfinished workflows", self.log)
        warm = spawn(self.warm_decisions(), "rebuilding the runtime predictors", self.log)
        saving = spawn(self.decisions.predictors.keep_saved(), "saving the runtime predictors", self.log)
        try:
            await stop.wait()
        finally:
            server.stop()
            recovery.cancel()
            warm.cancel()
            saving.cancel()
            await self.workflows.stop()
            self.decisions.close()
            await self.workflows.backends.close()
            await self.org_stores.close()
            await server.close_all_connections()
            self.engine.dispose()
            log.info(
                "HEROES service stopped after %.0fs",
                time.monotonic() - t0,
                extra=ecs("service.stop", "success"),
            )


def main(argv: list[str] | None = None) -> None:
    from traitlets import TraitError

    from ..dbutil import DatabaseSchemaMismatch

    app = HeroesService.instance()
    try:
        app.initialize(argv)
    except DatabaseSchemaMismatch as e:
        log.critical("%s", e, extra=ecs("service.start", "failure", reason="schema_mismatch"))
        print(str(e), file=sys.stderr)
        sys.exit(1)
    except (TraitError, ValueError) as e:
        # a bad setting: say which, without a traceback
        log.critical(
            "invalid configuration: %s", e, extra=ecs("service.start", "failure", reason="bad_config")
        )
        print(f"HEROES service: invalid configuration: {e}", file=sys.stderr)
        sys.exit(2)
    app.start()
