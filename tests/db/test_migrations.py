"""Migrations: an empty database upgrades to head; the start-up check refuses anything else and
names the command that fixes it; the migrated schema matches the models."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from jupyter_heroes import dbutil
from jupyter_heroes.orm import Base


def _sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'heroes.sqlite'}"


def test_empty_database_is_refused_with_the_upgrade_command(empty_db_url):
    engine = dbutil.make_engine(empty_db_url)
    with pytest.raises(dbutil.DatabaseSchemaMismatch, match=r"no schema yet.*heroes upgrade-db"):
        dbutil.check_schema(engine)
    engine.dispose()


def test_upgrade_empty_database_to_head(empty_db_url):
    dbutil.upgrade(empty_db_url)
    engine = dbutil.make_engine(empty_db_url)
    dbutil.check_schema(engine)  # does not raise
    assert dbutil.current_revision(engine) == dbutil.head_revision()
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    # the migrated schema is exactly what the models describe: no drift between orm.py and alembic
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    engine.dispose()


def test_outdated_database_is_refused_naming_both_revisions(empty_db_url):
    dbutil.upgrade(empty_db_url)
    engine = dbutil.make_engine(empty_db_url)
    # pretend the database was left at an older release's revision
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0000old'"))
    head = dbutil.head_revision()
    with pytest.raises(
        dbutil.DatabaseSchemaMismatch, match=rf"revision 0000old.*needs {head}.*heroes upgrade-db"
    ):
        dbutil.check_schema(engine)
    engine.dispose()


def test_upgrade_is_idempotent(tmp_path):
    url = _sqlite_url(tmp_path)
    dbutil.upgrade(url)
    dbutil.upgrade(url)
    engine = dbutil.make_engine(url)
    assert dbutil.current_revision(engine) == dbutil.head_revision()
    engine.dispose()
