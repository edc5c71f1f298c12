"""Migration 0004 (per-submission resource overrides on workflow instances) from a database of the
previous release, and back, on SQLite and PostgreSQL: existing instances keep their data and get no
overrides; downgrading drops only the new column."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from jupyter_heroes import dbutil
from jupyter_heroes.orm import Base


def columns(engine) -> set[str]:
    return {c["name"] for c in inspect(engine).get_columns("workflow_instances")}


def test_upgrade_from_0003_keeps_instances_and_downgrade_drops_only_the_column(database_at):
    url, engine = database_at("0003")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO users (name, email, full_name, created) "
                "VALUES ('alice', '', '', '2025-01-01 00:00:00')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO workflow_templates (org_id, name, version, application_id, description, spec, "
                "projects, state, created_by, created) SELECT id, 't', 1, '', '', '{}', '[]', 'active', '', "
                "'2025-01-01 00:00:00' FROM organizations"
            )
        )
        conn.execute(
            text(
                "INSERT INTO workflow_instances (id, org_id, user_id, template_id, params, state, created, "
                "updated) SELECT 'a1', o.id, u.id, t.id, '{\"n\": 1}', 'completed', '2025-01-01 00:00:00', "
                "'2025-01-01 00:00:00' FROM organizations o, users u, workflow_templates t"
            )
        )
    assert "resource_overrides" not in columns(engine)
    with pytest.raises(dbutil.DatabaseSchemaMismatch, match=r"revision 0003.*heroes upgrade-db"):
        dbutil.check_schema(engine)
    engine.dispose()

    dbutil.upgrade(url)
    engine = dbutil.make_engine(url)
    dbutil.check_schema(engine)
    assert dbutil.head_revision() == "0004" == dbutil.current_revision(engine)
    assert "resource_overrides" in columns(engine)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        row = conn.execute(text("SELECT params, resource_overrides FROM workflow_instances")).one()
        assert row[1] is None and "1" in str(row[0])
    engine.dispose()

    command.downgrade(dbutil.alembic_config(url), "0003")
    engine = dbutil.make_engine(url)
    assert "resource_overrides" not in columns(engine)
    assert {"decisions", "workflow_instances"} <= set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id FROM workflow_instances")).scalar() == "a1"
    engine.dispose()
    dbutil.upgrade(url)  # and up again
    engine = dbutil.make_engine(url)
    dbutil.check_schema(engine)
    engine.dispose()
