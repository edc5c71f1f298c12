"""Migration 0003 (decisions) from a database of the previous release, and back."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from jupyter_heroes import dbutil
from jupyter_heroes.orm import Base

NEW_TABLES = {"decisions", "decision_predictions", "decision_policies", "decision_ear_records"}


def test_upgrade_from_0002_keeps_data_and_downgrade_removes_only_0003(database_at):
    url, engine = database_at("0002")
    assert not NEW_TABLES & set(inspect(engine).get_table_names())
    with pytest.raises(dbutil.DatabaseSchemaMismatch, match=r"revision 0002.*heroes upgrade-db"):
        dbutil.check_schema(engine)
    engine.dispose()

    dbutil.upgrade(url)
    engine = dbutil.make_engine(url)
    dbutil.check_schema(engine)
    assert NEW_TABLES <= set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        assert conn.execute(text("SELECT name FROM organizations")).scalar() == "acme"
    engine.dispose()

    command.downgrade(dbutil.alembic_config(url), "0002")
    engine = dbutil.make_engine(url)
    tables = set(inspect(engine).get_table_names())
    assert not NEW_TABLES & tables and {"organizations", "market_offers", "usage_records"} <= tables
    with engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM organizations")).scalar() == "acme"
    engine.dispose()
    dbutil.upgrade(url)  # and up again
    engine = dbutil.make_engine(url)
    dbutil.check_schema(engine)
    engine.dispose()
