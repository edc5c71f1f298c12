"""Database engine, sessions, migrations and the start-up schema check.

The JupyterHub way: the schema is owned by alembic migrations shipped in the package; a service
that finds a database behind head refuses to start and names ``heroes upgrade-db``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

HERE = os.path.dirname(os.path.abspath(__file__))
ALEMBIC_DIR = os.path.join(HERE, "alembic")


class DatabaseSchemaMismatch(RuntimeError):
    """The database is not at the schema this version of jupyter_heroes needs."""


def make_engine(url: str, **kwargs) -> Engine:
    """An engine for *url* (``sqlite:///path`` or ``postgresql+psycopg://...``).

    SQLite gets foreign keys on and a busy timeout so concurrent writers wait instead of failing.
    """
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {"check_same_thread": False, "timeout": 30})
    else:
        kwargs.setdefault("pool_pre_ping", True)
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.close()

    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", ALEMBIC_DIR)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    head = script.get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(url: str, revision: str = "head") -> None:
    """Apply the migrations up to *revision* (``heroes upgrade-db``)."""
    command.upgrade(alembic_config(url), revision)


def check_schema(engine: Engine) -> None:
    """Refuse an outdated (or empty) database, naming the command that fixes it."""
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return
    url = engine.url.render_as_string(hide_password=True)
    if current is None:
        raise DatabaseSchemaMismatch(
            f"The HEROES database at {url} has no schema yet. Create it with: heroes upgrade-db --db-url '{url}'"
        )
    raise DatabaseSchemaMismatch(
        f"The HEROES database at {url} is at schema revision {current}, but this version of jupyter_heroes "
        f"needs {head}. Back up the database, then run: heroes upgrade-db --db-url '{url}'"
    )
