"""Migration 0002 (marketplace and accounting) from a database of the previous release, and back."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from jupyter_heroes import dbutil
from jupyter_heroes.orm import Base

NEW_TABLES = {
    "market_offers",
    "market_offer_versions",
    "market_applications",
    "market_application_versions",
    "market_enablements",
    "market_job_pins",
    "budget_reservations",
    "budget_holds",
    "budget_credits",
    "usage_records",
}


def test_upgrade_from_0001_keeps_data_and_downgrade_removes_only_0002(database_at):
    url, engine = database_at("0001")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO budgets (org_id, currency, amount_cents, reserved_cents, spent_cents, on_exhausted, margin) "
                "SELECT id, 'EUR', 1000, 0, 250, 'hold', 1.2 FROM organizations WHERE name = 'acme'"
            )
        )
    assert not NEW_TABLES & set(inspect(engine).get_table_names())
    with pytest.raises(
        dbutil.DatabaseSchemaMismatch, match=rf"revision 0001.*needs {dbutil.head_revision()}"
    ):
        dbutil.check_schema(engine)
    dbutil.upgrade(url)
    engine.dispose()
    engine = dbutil.make_engine(url)
    dbutil.check_schema(engine)
    assert NEW_TABLES <= set(inspect(engine).get_table_names())
    assert NEW_TABLES <= set(Base.metadata.tables)  # registered by importing jupyter_heroes.orm_market
    with engine.connect() as conn:
        assert conn.execute(text("SELECT spent_cents FROM budgets")).scalar() == 250
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()
    from alembic import command

    command.downgrade(dbutil.alembic_config(url), "0001")
    engine = dbutil.make_engine(url)
    tables = set(inspect(engine).get_table_names())
    assert not NEW_TABLES & tables and {"budgets", "organizations", "jobs"} <= tables
    with engine.connect() as conn:
        assert conn.execute(text("SELECT amount_cents FROM budgets")).scalar() == 1000
    engine.dispose()
    dbutil.upgrade(url)  # and up again
